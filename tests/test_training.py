"""End-to-end training on a tiny randomly initialised BERT built in the test."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import tuneforge
from tuneforge.training.callbacks import StepFunction
from tuneforge.api import train

from conftest import tiny_config, train_and_kill_9


@pytest.fixture(scope="module")
def overfit_run(tiny_bert, tmp_path_factory):
    from conftest import write_conll

    data = tmp_path_factory.mktemp("data")
    for name in ("train", "dev", "test"):
        write_conll(data / f"{name}.conll")
    cfg = tiny_config(tiny_bert, data, tmp_path_factory.mktemp("runs") / "overfit")
    return train(cfg)


def test_tiny_bert_overfits_to_entity_f1_one(overfit_run):
    assert overfit_run.metrics["test"]["f1"] == 1.0
    assert overfit_run.metrics["dev"]["f1"] == 1.0
    run_dir = overfit_run.run_dir
    for name in ("config.yaml", "metrics.json", "report.txt", "model/model.safetensors", "model/tuneforge.json"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "checkpoint").exists()
    assert not list((run_dir / "model").glob("*.bin"))  # safetensors only
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["training"]["epochs"] == 40 and saved["model"]["trust_remote_code"] is False


def test_predictions_on_raw_text_carry_spans_and_offsets(overfit_run):
    model = tuneforge.load(overfit_run.run_dir)
    (result,) = model.predict("John Smith lives in New York")
    assert result["tags"] == ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    assert [(e["type"], e["text"], e["start_char"], e["end_char"]) for e in result["entities"]] == [
        ("PER", "John Smith", 0, 10), ("LOC", "New York", 20, 28)
    ]
    assert all(0 < e["confidence"] <= 1 for e in result["entities"])


def test_save_load_round_trip_gives_identical_logits(overfit_run):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    folder = overfit_run.run_dir / "model"
    ours = tuneforge.load(overfit_run.run_dir)
    plain = AutoModelForTokenClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(["john smith lives in new york", "mary visited paris"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        a = ours.model(**batch).logits
        b = plain(**batch).logits
        c = tuneforge.load(overfit_run.run_dir).model(**batch).logits
    assert torch.equal(a, b) and torch.equal(a, c)
    # the plain pipeline reads the same per-word argmax (every word here is one vocabulary entry)
    tagger = pipeline("token-classification", model=plain, tokenizer=tokenizer, ignore_labels=[])
    ours.decode = "argmax"
    (mine,) = ours.predict([["john", "smith", "lives", "in", "new", "york"]])
    assert [e["entity"] for e in tagger("john smith lives in new york")] == mine["tags"]


def test_int8_inference_quantizes_every_linear_and_keeps_the_predictions(overfit_run, tmp_path):
    from tuneforge.api import evaluate

    fp32 = tuneforge.load(overfit_run.run_dir, precision="fp32")
    int8 = tuneforge.load(overfit_run.run_dir, precision="int8")
    linears = [m for m in fp32.model.modules() if type(m) is torch.nn.Linear]
    quantized = [m for m in int8.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(quantized) == len(linears) > 0
    assert not [m for m in int8.model.modules() if type(m) is torch.nn.Linear]
    words = "john smith lives in new york".split()
    (a,) = fp32.predict([words])
    (b,) = int8.predict([words])
    assert a["tags"] == b["tags"] == ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    assert max(abs(x - y) for x, y in zip(a["confidences"], b["confidences"])) < 0.05
    test_file = yaml.safe_load((overfit_run.run_dir / "config.yaml").read_text())["data"]["test"]
    metrics, _ = evaluate(overfit_run.run_dir, test_file, precision="int8")
    assert metrics["f1"] == 1.0


def test_windowed_prediction_matches_and_covers_long_inputs(overfit_run):
    model = tuneforge.load(overfit_run.run_dir)
    words = "john smith lives in new york".split()
    long_words = (words + ["and"]) * 12  # 84 words: needs several 32-token windows
    (short,) = model.predict([words])
    (long,) = model.predict([long_words])
    assert len(long["tags"]) == len(long_words) == len(long["confidences"])
    # fits in one window either way: identical predictions whatever the window size
    model.max_length = 128
    (wide,) = model.predict([words])
    assert wide["tags"] == short["tags"] and wide["confidences"] == short["confidences"]


def test_resume_after_interrupt_matches_uninterrupted(tiny_bert, ner_files, tmp_path):
    base = tiny_config(tiny_bert, ner_files, tmp_path / "full", epochs=4, checkpoint_every_steps=2)
    full = train(base)

    cfg = dict(base, output_dir=str(tmp_path / "interrupted"))

    def interrupt(step):
        if step == 7:  # mid-epoch 3, after the step-6 checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[StepFunction(interrupt)])
    assert (tmp_path / "interrupted" / "checkpoint" / "state.json").exists()
    resumed = train(cfg, resume=True)
    assert resumed.metrics["history"] == full.metrics["history"]
    assert resumed.metrics["test"] == full.metrics["test"]
    a = (tmp_path / "full" / "model" / "model.safetensors").read_bytes()
    b = (tmp_path / "interrupted" / "model" / "model.safetensors").read_bytes()
    assert a == b


def test_resume_mid_epoch_matches_uninterrupted(tiny_bert, ner_files, tmp_path):
    # 6 sentences, batch 2: 3 steps an epoch. Checkpoint every step, stop at step 5 (epoch 2, step 2):
    # the resumed run restarts from the step-4 checkpoint, one step into epoch 2.
    base = tiny_config(tiny_bert, ner_files, tmp_path / "full", epochs=3, checkpoint_every_steps=1)
    full = train(base)
    cfg = dict(base, output_dir=str(tmp_path / "interrupted"))

    def interrupt(step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[StepFunction(interrupt)])
    state = json.loads((tmp_path / "interrupted" / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)
    resumed = train(cfg, resume=True)
    assert resumed.metrics["history"] == full.metrics["history"]
    a = (tmp_path / "full" / "model" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "interrupted" / "model" / "model.safetensors").read_bytes()


def test_resume_after_kill_9(tiny_bert, ner_files, tmp_path):
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "killed", epochs=60, checkpoint_every_steps=1)
    train_and_kill_9(cfg, tmp_path / "config.yaml")
    resumed = train(cfg, resume=True)
    reference = train(dict(cfg, output_dir=str(tmp_path / "reference")))
    assert resumed.metrics["history"] == reference.metrics["history"]
    assert resumed.metrics["test"] == reference.metrics["test"]


def test_refuses_to_overwrite_a_run_without_flag(overfit_run, tmp_path):
    saved = yaml.safe_load((overfit_run.run_dir / "config.yaml").read_text())
    with pytest.raises(tuneforge.TuneforgeError, match="holds a finished run; pass --resume .* --overwrite"):
        train(saved)


def test_never_deletes_a_folder_that_is_not_a_run(tiny_bert, ner_files, tmp_path):
    # output_dir pointed at the folder holding the training data: refused, even with --overwrite
    cfg = tiny_config(tiny_bert, ner_files, ner_files, epochs=1)
    for overwrite in (False, True):
        with pytest.raises(tuneforge.TuneforgeError, match="not a tuneforge run folder; tuneforge never deletes"):
            train(cfg, overwrite=overwrite)
    assert sorted(p.name for p in ner_files.iterdir()) == ["dev.conll", "test.conll", "train.conll"]


def test_overwrite_keeps_the_old_run_until_the_new_one_is_ready(overfit_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(overfit_run.run_dir, run)
    before = (run / "model" / "model.safetensors").read_bytes()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["output_dir"] = str(run)
    bad = dict(cfg, data=dict(cfg["data"], train=str(tmp_path / "typo.conll")))
    with pytest.raises(tuneforge.TuneforgeError, match="typo.conll"):
        train(bad, overwrite=True)  # a typo in the data path ...
    assert (run / "model" / "model.safetensors").read_bytes() == before  # ... destroys nothing

    def crash(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(dict(cfg, training=dict(cfg["training"], epochs=2)), overwrite=True, callbacks=[StepFunction(crash)])
    assert (run / "model" / "model.safetensors").read_bytes() == before  # interrupted: the old run stands
    result = train(dict(cfg, training=dict(cfg["training"], epochs=2)), overwrite=True)
    assert result.run_dir == run and result.metrics["epochs_run"] == 2
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run")) == [".run.lock"]


def test_a_failed_start_does_not_block_the_rerun_and_resume_names_the_changed_key(tiny_bert, ner_files, tmp_path):
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=1)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(cfg))  # what an earlier failed start left
    assert train(cfg).metrics["epochs_run"] == 1  # no "not empty" refusal

    def stop(step):
        if step == 2:
            raise KeyboardInterrupt

    cfg3 = dict(cfg, training=dict(cfg["training"], epochs=3, checkpoint_every_steps=1),
                output_dir=str(tmp_path / "run3"))
    with pytest.raises(KeyboardInterrupt):
        train(cfg3, callbacks=[StepFunction(stop)])
    changed = dict(cfg3, training=dict(cfg3["training"], learning_rate=1e-3))
    with pytest.raises(tuneforge.ConfigError, match=r"differs .*: training.learning_rate: 0.005 in the run, 0.001 now"):
        train(changed, resume=True)


def test_two_runs_into_one_folder_at_once_are_refused(tiny_bert, ner_files, tmp_path):
    from tuneforge.artifacts.run_folder import locked

    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=1)
    with locked(tmp_path / "run"):  # as a running process holds it
        probe = subprocess.run(
            [sys.executable, "-c", "import sys, tuneforge; tuneforge.train(dict(%r), overwrite=True)" % cfg],
            capture_output=True, text=True,
        )
    assert probe.returncode != 0 and "another tuneforge run is writing this folder (pid " in probe.stderr
    assert not (tmp_path / "run").exists()
    assert train(cfg).metrics["epochs_run"] == 1  # the lock is gone with its holder


def test_viterbi_never_emits_invalid_iob2():
    from tuneforge.tasks.token_classification import allowed_transitions, decode

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    rng = np.random.default_rng(0)
    for _ in range(200):
        logits = rng.normal(size=(rng.integers(1, 12), len(labels))) * 3
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        tags = decode(logp, labels, "viterbi", allowed_transitions(labels)).tags
        prev = "O"
        for t in tags:
            if t.startswith("I-"):
                assert prev in (f"B-{t[2:]}", t)
            prev = t
        argmax = [labels[k] for k in logp.argmax(-1)]
        valid = all(not t.startswith("I-") or p in (f"B-{t[2:]}", t) for p, t in zip(["O"] + argmax, argmax))
        if valid:
            assert tags == argmax
