"""Several processes: real 2-process gloo runs on 127.0.0.1 (torchrun, and ``--num-processes``), checked
against single-process runs of the same configs.

The tiny model here has no dropout, so a 2-process run computes the same gradients as one process
(same global batches, shares weighted by their labelled tokens) up to float summation order: losses
agree to 1e-5 and F1 exactly. One torchrun launch does all the multi-process work
(``distributed_worker.py``); each process start costs seconds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import tuneforge
from tuneforge.data.encode import length_grouped_batches
from tuneforge.training.loop import process_shares

from conftest import NER_SENTENCES, build_tiny_bert, tiny_config, write_conll

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
MORE_SENTENCES = [
    ("mary works at google", "B-PER O O B-ORG"),
    ("john visited the city of london today", "B-PER O O O O B-LOC O"),
    ("apple said he was in berlin", "B-ORG O O O O B-LOC"),
]
TRAIN = NER_SENTENCES + MORE_SENTENCES  # 9 sentences, batches of 4: 4 + 4 + 1, so one share is empty


# ---------------------------------------------------------------------------------------------
# Without processes: the cut of batches and inputs


def test_process_shares_cover_each_batch_once_with_equal_step_counts():
    batches = length_grouped_batches([5, 9, 3, 7, 7, 2, 8, 4, 6, 1, 5], 4, seed=1, epoch=0)
    for world in (1, 2, 3, 4, 5):
        per_rank = [process_shares(batches, r, world) for r in range(world)]
        assert all(len(shares) == len(batches) for shares, _ in per_rank)  # no process has an extra step
        for step, batch in enumerate(batches):
            real = [shares[step] for shares, empty in per_rank if step not in empty]
            assert sorted(i for share in real for i in share) == sorted(batch)  # each member exactly once
            for shares, empty in per_rank:
                if step in empty:
                    assert shares[step] == batch[:1] and len(batch) < world  # a weight-0 stand-in
    assert process_shares(batches, 0, 1) == (batches, set())


def test_shares_of_a_list_are_contiguous_and_complete():
    from tuneforge.runtime.distributed import share

    for n in (0, 1, 5, 8):
        cuts = [share(n, r, 3) for r in range(3)]
        assert cuts[0][0] == 0 and cuts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
        assert max(e - s for s, e in cuts) - min(e - s for s, e in cuts) <= 1


def test_shipped_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    folder = REPO / "examples" / "accelerate"
    expected = {
        "multi-gpu.yaml": (DistributedType.MULTI_GPU, 1),
        "two-machines.yaml": (DistributedType.MULTI_GPU, 2),
        "fsdp.yaml": (DistributedType.FSDP, 1),
        "deepspeed-zero2.yaml": (DistributedType.DEEPSPEED, 1),
        "deepspeed-zero3.yaml": (DistributedType.DEEPSPEED, 1),
    }
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(expected)
    for name, (kind, machines) in expected.items():
        config = load_config_from_file(str(folder / name))
        assert config.distributed_type == kind and config.num_machines == machines, name
        assert config.mixed_precision == "bf16"
    fsdp = load_config_from_file(str(folder / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    zero3 = load_config_from_file(str(folder / "deepspeed-zero3.yaml")).deepspeed_config
    assert zero3["zero_stage"] == 3 and zero3["zero3_save_16bit_model"] is True
    assert load_config_from_file(str(folder / "deepspeed-zero2.yaml")).deepspeed_config["zero_stage"] == 2


# ---------------------------------------------------------------------------------------------
# Two processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """One torchrun launch of distributed_worker.py; returns the plan and what each process saw."""
    from test_text_classification import ENTITY_TYPES, text_config, write_jsonl

    root = tmp_path_factory.mktemp("ddp")
    bert = build_tiny_bert(root / "bert", dropout=0.0)
    data = root / "data"
    data.mkdir()
    write_conll(data / "train.conll", TRAIN)
    write_conll(data / "dev.conll")
    write_conll(data / "test.conll")
    runs = root / "runs"

    def ner(name, **training):
        # fp32: the 1- vs 2-process equalities below are to 1e-5; bf16 rounds differently per shape
        return tiny_config(bert, data, runs / name, **{"epochs": 2, "batch_size": 4, "precision": "fp32", **training})

    labels = write_jsonl(root / "types.jsonl", [{"text": t, "labels": ls} for t, ls in ENTITY_TYPES])
    methods = {m: dict(ner(m), method={"name": m}) for m in ("freeze", "lora", "ia3", "prompt", "adapter", "bitfit")}
    methods["lora"]["method"]["dropout"] = 0.0  # no randomness: the processes' dropout streams differ
    methods["text-multi-label"] = text_config(bert, labels, runs / "text", task={"multi_label": True},
                                              epochs=3, batch_size=3, precision="fp32")
    recorded = ner("recorded", report_to=["jsonl"])
    (root / "recorded.yaml").write_text(yaml.safe_dump(recorded))
    texts = root / "texts.txt"
    texts.write_text("".join(f"{words}\n" for words, _ in TRAIN * 3) + "\n", encoding="utf-8")  # a blank line too
    plan = {
        "root": str(root), "runs": str(runs), "recorded": recorded, "recorded_file": str(root / "recorded.yaml"),
        "interrupted": ner("interrupted", epochs=3, checkpoint_every_steps=1), "stop_at": 5, "methods": methods,
        "split": ner("split", epochs=3, checkpoint_every_steps=1),
        "test_file": str(data / "test.conll"), "eval_out": str(root / "eval.json"),
        "predict_input": str(texts), "predict_out": str(root / "predictions.jsonl"),
    }
    (root / "seen").mkdir()
    (root / "plan.json").write_text(json.dumps(plan))
    logs = root / "logs"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "--log-dir", str(logs), "--redirects", "3", "--tee", "0",
               str(TESTS / "distributed_worker.py"), str(root / "plan.json")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=root)
    outputs = {int(p.parent.name): p.read_text() for p in logs.rglob("stdout.log")}
    errors = {int(p.parent.name): p.read_text()[-3000:] for p in logs.rglob("stderr.log")}
    assert done.returncode == 0, (done.stderr[-3000:], errors)
    seen = [json.loads((root / "seen" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    return {"plan": plan, "seen": seen, "stdout": outputs, "stderr": errors, "bert": bert, "root": root}


def train_lengths(runs) -> list[int]:
    """Token lengths of the training windows (one per sentence here), as the loop batches them."""
    from tuneforge.data.encode import encode_examples
    from tuneforge.data.readers import read_token_file
    from tuneforge.runtime.models import load_tokenizer

    examples = read_token_file(runs["plan"]["recorded"]["data"]["train"])
    windows, _ = encode_examples(examples, load_tokenizer(str(runs["bert"])), None, 32, 8)
    assert [w.example for w in windows] == list(range(len(TRAIN)))
    return [len(w.input_ids) for w in windows]


def test_each_example_once_an_epoch_in_length_grouped_shares(two_process_runs):
    plan, seen = two_process_runs["plan"], two_process_runs["seen"]
    assert [s["processes"] for s in seen] == [2, 2]
    lengths = train_lengths(two_process_runs)
    steps = [s["steps"] for s in seen]
    assert len(steps[0]) == len(steps[1]) == 2 * 3  # 2 epochs x 3 global batches, in both processes
    for epoch in range(2):
        batches = length_grouped_batches(lengths, 4, plan["recorded"]["training"]["seed"], epoch)
        mine = [[ids for e, ids in s if e == epoch] for s in steps]
        # process r trains on every 2nd member of each global batch from r on; rank 1's share of the
        # 1-member batch is empty: the step runs (weight 0) without calling on_batch_items
        assert mine[0] == [b[0::2] for b in batches]
        assert mine[1] == [b[1::2] or None for b in batches]
        trained = sorted(i for share in mine[0] + mine[1] if share for i in share)
        assert trained == list(range(len(TRAIN)))  # every example exactly once
        for b in batches:  # length-grouped: each share's lengths interleave the batch's sorted lengths
            assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)


def test_two_processes_train_the_single_process_model(two_process_runs, tmp_path):
    from callbacks_for_tests import EmbeddingNudge, HeadL2

    plan, seen = two_process_runs["plan"], two_process_runs["seen"]
    single = tuneforge.train(dict(plan["recorded"], output_dir=str(tmp_path / "single")),
                             callbacks=[HeadL2(0.01), EmbeddingNudge(0.1)])
    for s in seen:  # every process returns the same metrics
        two = s["metrics"]
        assert [h["train_loss"] for h in two["history"]] == pytest.approx(
            [h["train_loss"] for h in single.metrics["history"]], rel=1e-5)
        assert [h["dev_f1"] for h in two["history"]] == [h["dev_f1"] for h in single.metrics["history"]]
        assert two["training"]["samples"] == single.metrics["training"]["samples"] == 2 * len(TRAIN)
        assert two["training"]["tokens"] == single.metrics["training"]["tokens"]
        assert two["test"] == single.metrics["test"] and two["dev"] == single.metrics["dev"]


def test_gathered_metrics_equal_single_process_scoring(two_process_runs):
    plan, seen = two_process_runs["plan"], two_process_runs["seen"]
    run = Path(plan["recorded"]["output_dir"])
    metrics, _ = tuneforge.evaluate(run, plan["test_file"])
    written = json.loads((run / "metrics.json").read_text())
    for key in ("f1", "precision", "recall", "token_accuracy", "sentences", "words", "entity"):
        assert written["test"][key] == metrics[key]  # the 2-process final scoring, gathered
    sharded_eval = json.loads(Path(plan["eval_out"]).read_text())  # `tuneforge eval` on 2 processes
    assert {k: v for k, v in sharded_eval.items() if k != "seconds"} == {k: v for k, v in metrics.items()
                                                                         if k != "seconds"}
    assert [s["eval_exit"] for s in seen] == [0, 0]


def test_only_process_0_writes_and_prints(two_process_runs):
    seen, out = two_process_runs["seen"], two_process_runs["stdout"]
    split = two_process_runs["plan"]["split"]["output_dir"]  # FSDP/DeepSpeed checkpoints: every process writes its part
    others = [w for w in seen[1]["writes"] if not w[1].startswith(split)]
    assert others == []  # nothing opened for writing, renamed, created or removed in the run folders
    assert any(path.endswith("metrics.json") for _, path in seen[0]["writes"])
    assert any(path.endswith("logs/metrics.jsonl") for _, path in seen[0]["writes"])  # trackers: process 0
    assert out[0].count("epoch 1/2 ·") == 7  # the recorded run and 6 methods, once each
    assert out[1].strip() == ""
    assert "processes: 2 · each takes 1/2 of every batch of 4" in out[0]


def test_an_error_in_process_0_reaches_every_process(two_process_runs):
    seen, err = two_process_runs["seen"], two_process_runs["stderr"]
    assert [s["taken_folder_exit"] for s in seen] == [2, 2]  # both returned; neither waits forever
    assert "output folder holds a finished run" in err[0] and "error:" not in err[1]


def test_every_method_and_the_text_task_train_under_ddp(two_process_runs, tmp_path):
    seen = two_process_runs["seen"]
    for name, history in seen[0]["methods"].items():
        assert history[1]["train_loss"] < history[0]["train_loss"], name  # each method trains on 2 processes
    # the peft wrappers (lora; prompt, whose wrapper shifts the labels) and the text task match one process
    for name in ("lora", "prompt", "text-multi-label"):
        config = two_process_runs["plan"]["methods"][name]
        single = tuneforge.train(dict(config, output_dir=str(tmp_path / name)))
        two = seen[0]["methods"][name]
        assert [h["train_loss"] for h in two] == pytest.approx(
            [h["train_loss"] for h in single.metrics["history"]], rel=1e-5), name
        assert [h["dev_f1"] for h in two] == [h["dev_f1"] for h in single.metrics["history"]], name
    # multi-label thresholds are tuned on the gathered dev probabilities: the same as one process's
    saved = Path(two_process_runs["plan"]["methods"]["text-multi-label"]["output_dir"]) / "model" / "tuneforge.json"
    reference = tmp_path / "text-multi-label" / "model" / "tuneforge.json"
    assert json.loads(saved.read_text())["thresholds"] == json.loads(reference.read_text())["thresholds"]


def test_checkpoint_of_two_processes_resumes_on_one(two_process_runs, tmp_path, capsys):
    from callbacks_for_tests import CountItems

    plan, seen = two_process_runs["plan"], two_process_runs["seen"]
    assert all(s.get("interrupted") for s in seen)
    run = Path(plan["interrupted"]["output_dir"])
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2 and state["global_step"] == 4 and state["step_in_epoch"] == 1
    assert (run / "checkpoint" / "rank-1" / "rng.safetensors").exists()  # process 1's own RNG state
    counted = [state["callbacks"]["CountItems"]["items"],
               json.loads((run / "checkpoint" / "rank-1" / "state.json").read_text())["callbacks"]["CountItems"]["items"]]
    lengths = train_lengths(two_process_runs)
    first_of_epoch_2 = length_grouped_batches(lengths, 4, plan["interrupted"]["training"]["seed"], 1)[0]
    assert counted == [5 + len(first_of_epoch_2[0::2]), 4 + len(first_of_epoch_2[1::2])]  # each its own share

    resumed = tuneforge.train(plan["interrupted"], resume=True, callbacks=[CountItems()])
    assert "saved by 2 process(es), resumed on 1" in capsys.readouterr().out
    reference = tuneforge.train(dict(plan["interrupted"], output_dir=str(tmp_path / "reference")),
                                callbacks=[CountItems()])
    assert [h["train_loss"] for h in resumed.metrics["history"]] == pytest.approx(
        [h["train_loss"] for h in reference.metrics["history"]], rel=1e-5)
    assert [h["dev_f1"] for h in resumed.metrics["history"]] == [h["dev_f1"] for h in reference.metrics["history"]]
    assert resumed.metrics["training"]["samples"] == reference.metrics["training"]["samples"] == 3 * len(TRAIN)
    assert resumed.metrics["test"] == reference.metrics["test"]
    assert not (run / "checkpoint").exists()

    # the FSDP / DeepSpeed code paths, exercised on DDP: an engine checkpoint, resumed on 2 processes
    assert {"engine", "rank-1", "scheduler.pt", "state.json"} <= set(seen[0]["split_checkpoint"])
    split = seen[0]["split"]
    assert [h["train_loss"] for h in split["history"]] == pytest.approx(
        [h["train_loss"] for h in reference.metrics["history"]], rel=1e-5)
    assert [h["dev_f1"] for h in split["history"]] == [h["dev_f1"] for h in reference.metrics["history"]]
    assert split["test"] == reference.metrics["test"]  # the model saved from the gathered state dict


def test_sharded_prediction_is_one_ordered_output(two_process_runs):
    plan, seen = two_process_runs["plan"], two_process_runs["seen"]
    assert [s["predict_exit"] for s in seen] == [0, 0]
    sharded = [json.loads(line) for line in Path(plan["predict_out"]).read_text().splitlines()]
    single = tuneforge.predict(plan["recorded"]["output_dir"],
                               Path(plan["predict_input"]).read_text().splitlines(), batch_size=2)
    assert len(sharded) == len(single) == 3 * len(TRAIN) + 1  # each input line once, the blank one too
    assert [r["words"] for r in sharded] == [r["words"] for r in single]  # in input order
    assert [r["tags"] for r in sharded] == [r["tags"] for r in single]
    for a, b in zip(sharded, single):
        assert a["confidences"] == pytest.approx(b["confidences"], abs=2e-4)
    assert "wrote 28 predictions" in two_process_runs["stderr"][0]


def test_num_processes_starts_processes_and_reports_errors_once(two_process_runs, tmp_path):
    plan = two_process_runs["plan"]
    run = plan["recorded"]["output_dir"]
    out = tmp_path / "p.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "tuneforge", "predict", run, plan["predict_input"], "--out", str(out),
                           "--num-processes", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_text() == Path(plan["predict_out"]).read_text()
    assert done.stderr.count("wrote 28 predictions") == 1
    bad = subprocess.run([sys.executable, "-m", "tuneforge", "predict", run, str(tmp_path / "missing.txt"),
                          "--num-processes", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing.txt: file not found" in errors[0]  # from process 0 alone
    assert "Traceback" not in bad.stderr and "FAILED" not in bad.stderr  # no launcher failure report
