"""Continual learning on tiny models built in the test: label growth, the strategies' pieces, the sequence
driver (naive forgets, replay and EWC forget less), resume, and `continual split`."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch
import yaml

import tuneforge
from tuneforge.loading import load_model
from tuneforge.cli import main
from tuneforge.config import config_from_dict
from tuneforge.workflows.continual import load_plan, run_continual
from tuneforge.data.encode import Collator, encode_examples
from tuneforge.data.readers import TokenExample, read_token_file
from tuneforge.driver import build_prepared_model, initial_labels
from tuneforge.errors import ConfigError
from tuneforge.tasks import make_task
from tuneforge.training.callbacks import StepFunction
from tuneforge.training.continual import EWC, ReservoirMemory, sequence_summary

from conftest import tiny_config, write_conll

PEOPLE = [  # stage 1 annotates PER
    ("john smith works at microsoft", "B-PER I-PER O O O"),
    ("mary said today", "B-PER O O"),
    ("he met john in the city", "O O B-PER O O O"),
    ("she visited mary", "O O B-PER"),
]
PLACES = [  # stage 2 annotates LOC; its O words were never people
    ("she went to paris today", "O O O B-LOC O"),
    ("he lives in london", "O O O B-LOC"),
    ("the city of berlin is new", "O O O B-LOC O O"),
    ("paris and london", "B-LOC O B-LOC"),
]


def stage_files(folder, name, sentences):
    (folder / name).mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        write_conll(folder / name / f"{split}.conll", sentences)
    return {"name": name, "train": str(folder / name / "train.conll"), "test": str(folder / name / "test.conll")}


def continual_config(tiny_bert, tmp_path, strategies, **continual):
    cfg = tiny_config(tiny_bert, tmp_path, tmp_path / "cl", epochs=12, learning_rate=1e-2, batch_size=2)
    del cfg["data"]["dev"], cfg["data"]["test"]
    cfg["continual"] = {
        "stages": [stage_files(tmp_path, "people", PEOPLE), stage_files(tmp_path, "places", PLACES)],
        "strategies": strategies, **continual,
    }
    return cfg


def trained_run(tiny_bert, tmp_path, name, sentences, method=None, epochs=3):
    (tmp_path / name).mkdir()
    write_conll(tmp_path / name / "train.conll", sentences)
    cfg = tiny_config(tiny_bert, tmp_path, tmp_path / name / "run", epochs=epochs)
    cfg["data"] = {"train": str(tmp_path / name / "train.conll")}
    if method:
        cfg["method"] = method
    return cfg, tuneforge.train(cfg).run_dir


# ---------------------------------------------------------------------------------------------
# Label growth


@pytest.mark.parametrize("method", [None, {"name": "lora", "r": 4}])
def test_grown_head_keeps_old_rows_bit_identical(tiny_bert, tmp_path, method):
    cfg, run = trained_run(tiny_bert, tmp_path, "first", PEOPLE, method)
    old_model, tokenizer, meta = load_model(run, device="cpu")
    assert meta["labels"] == ["O", "B-PER", "I-PER"]
    write_conll(tmp_path / "places.conll", PLACES)
    grown = config_from_dict(dict(cfg, data={"train": str(tmp_path / "places.conll")},
                                  model=dict(cfg["model"], init_from=str(run)), output_dir=str(tmp_path / "next")))
    task = make_task(grown)
    known = initial_labels(grown, task)
    data = task.prepare_data(known_labels=known)
    assert data.labels == ["O", "B-PER", "I-PER", "B-LOC"]
    assert data.report["labels_not_annotated"] == ["B-PER", "I-PER"]
    model = build_prepared_model(grown, task, data.labels, known).eval()

    def head(m):
        return {n: p for n, p in m.named_parameters() if "classifier" in n and "original_module" not in n}

    old_head, new_head = head(old_model), head(model)
    assert set(old_head) == set(new_head)
    for name, old in old_head.items():
        assert torch.equal(new_head[name][:3], old)  # bit-identical old rows
        assert new_head[name].shape[0] == 4
    batch = tokenizer(["john met mary in paris"], return_tensors="pt")
    with torch.no_grad():  # same weights; a 4-row matmul may round differently from a 3-row one
        torch.testing.assert_close(model(**batch).logits[..., :3], old_model(**batch).logits, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="same method block"):
        other = {"name": "bitfit"} if method else {"name": "lora", "r": 4}
        initial_labels(config_from_dict(dict(grown.model_dump(mode="json"), method=other)), task)


def test_masked_o_words_leave_unannotated_types_out_of_the_loss(tiny_bert, tiny_tokenizer):
    from tuneforge.runtime.models import load_token_classifier

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    ex = TokenExample(words="john went to paris".split(), tags=["O", "O", "O", "B-LOC"], annotated=("LOC",))
    cfg = config_from_dict(tiny_config(tiny_bert, tiny_bert, tiny_bert / "unused"))
    task = make_task(cfg)
    task.labels = labels
    torch.manual_seed(0)
    model = load_token_classifier(str(tiny_bert), labels, announce_new_head=False).eval()
    (masked,), _ = encode_examples([ex], tiny_tokenizer, {t: i for i, t in enumerate(labels)}, 32, 4,
                                   mask_unannotated=True)
    assert masked.excluded_for_o == (1, 2)
    batch = Collator(tiny_tokenizer.pad_token_id, n_labels=5)([masked])
    batch.pop("n_tokens")
    loss, outputs = task.loss(model, batch)
    logits, gold = outputs.logits[0], batch["labels"][0]
    expected = []
    for pos in range(len(gold)):
        if gold[pos] < 0:
            continue
        row = logits[pos].clone()
        if gold[pos] == 0:
            row[[1, 2]] = float("-inf")  # an unannotated O may be a person: PER left out of its softmax
        expected.append(-torch.log_softmax(row, -1)[gold[pos]])
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)
    ex.annotated = None  # fully annotated: the model's own loss, untouched
    (plain,), _ = encode_examples([ex], tiny_tokenizer, {t: i for i, t in enumerate(labels)}, 32, 4,
                                  mask_unannotated=True)
    batch = Collator(tiny_tokenizer.pad_token_id, n_labels=5)([plain])
    batch.pop("n_tokens")
    assert "o_excluded" not in batch
    assert task.loss(model, batch)[0].item() == pytest.approx(model(**batch).loss.item(), rel=0, abs=0)


# ---------------------------------------------------------------------------------------------
# Strategy pieces


def test_replay_memory_is_bounded_and_a_uniform_sample():
    from scipy.stats import chisquare

    stream, capacity, trials = 100, 10, 4000
    counts = [0] * stream
    for trial in range(trials):
        memory = ReservoirMemory(capacity, seed=1000 + trial)
        for item in range(stream):
            memory.add(item)
            assert len(memory.items) <= capacity
        assert len(memory.items) == capacity and len(set(memory.items)) == capacity
        for item in memory.items:
            counts[item] += 1
    # each item is kept with probability capacity / stream: counts must be consistent with that
    assert chisquare(counts).pvalue > 0.01
    early, late = sum(counts[:50]), sum(counts[50:])
    assert abs(early - late) < 0.05 * (early + late)
    assert ReservoirMemory(3, seed=5).extend(range(50)).items == ReservoirMemory(3, seed=5).extend(range(50)).items


def test_ewc_penalty_is_zero_at_the_anchor_and_its_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    ewc = EWC(fisher, anchor, lam=7.0)
    ewc.attach(model)
    assert ewc.penalty().item() == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    penalty = ewc.penalty()
    penalty.backward()
    eps = 1e-6
    for name, param in model.named_parameters():
        flat = param.data.view(-1)
        for i in range(flat.numel()):
            saved = flat[i].item()
            flat[i] = saved + eps
            up = ewc.penalty().item()
            flat[i] = saved - eps
            down = ewc.penalty().item()
            flat[i] = saved
            assert param.grad.view(-1)[i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9)


def test_ewc_holds_no_new_head_rows():
    head = torch.nn.Linear(3, 5)
    ewc = EWC({"weight": torch.ones(3, 3), "bias": torch.ones(3)}, {"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}, 1.0)
    ewc.attach(head)
    (_, f_w, a_w), (_, f_b, _) = ewc.held
    assert f_w.shape == (5, 3) and torch.equal(f_w[3:], torch.zeros(2, 3)) and torch.equal(f_w[:3], torch.ones(3, 3))
    assert torch.equal(a_w[3:], head.weight.detach()[3:]) and torch.equal(f_b[3:], torch.zeros(2))


def test_lwf_with_the_same_model_as_teacher_gives_zero_distillation_loss(tiny_bert, tiny_tokenizer):
    from tuneforge.runtime.models import load_sequence_classifier, load_token_classifier

    ner = make_task(config_from_dict(tiny_config(tiny_bert, tiny_bert, tiny_bert / "unused")))
    torch.manual_seed(0)
    model = load_token_classifier(str(tiny_bert), ["O", "B-PER", "I-PER"], announce_new_head=False).eval()
    windows, _ = encode_examples([TokenExample(words=w.split(), tags=t.split()) for w, t in PEOPLE], tiny_tokenizer,
                                 {"O": 0, "B-PER": 1, "I-PER": 2}, 32, 4)
    batch = Collator(tiny_tokenizer.pad_token_id)(windows)
    batch.pop("n_tokens")
    logits = model(**ner.model_inputs(batch)).logits
    assert ner.distillation_loss(batch, logits, logits.clone(), 2.0).item() == 0.0
    grown = torch.cat([logits, torch.randn(*logits.shape[:2], 2)], -1)  # a student with two more labels
    assert ner.distillation_loss(batch, grown, logits, 2.0).item() == 0.0
    assert ner.distillation_loss(batch, grown, logits + torch.randn_like(logits), 2.0).item() > 0.01
    for multi in (False, True):
        cfg = tiny_config(tiny_bert, tiny_bert, tiny_bert / "unused")
        cfg["task"] = {"type": "text_classification", "multi_label": multi}
        cls = make_task(config_from_dict(cfg))
        clf = load_sequence_classifier(str(tiny_bert), ["a", "b", "c"], multi, announce_new_head=False).eval()
        out = clf(**tiny_tokenizer(["john met mary", "paris"], padding=True, return_tensors="pt")).logits
        assert cls.distillation_loss({}, out, out.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-7)
        assert cls.distillation_loss({}, out + 1.0 * torch.randn_like(out), out, 2.0).item() > 0.001


def test_sequence_summary_definitions():
    matrix = [[0.8, 0.0, 0.1], [0.5, 0.7, 0.0], [0.4, 0.6, 0.9]]
    s = sequence_summary(matrix, initial=[0.0, 0.05, 0.0])
    assert s["average_final"] == pytest.approx((0.4 + 0.6 + 0.9) / 3)
    assert s["average_forgetting"] == pytest.approx(((0.8 - 0.4) + (0.7 - 0.6)) / 2)
    assert s["backward_transfer"] == pytest.approx(((0.4 - 0.8) + (0.6 - 0.7)) / 2)
    assert s["forward_transfer"] == pytest.approx(((0.0 - 0.05) + (0.0 - 0.0)) / 2)


# ---------------------------------------------------------------------------------------------
# Sequences


def test_naive_forgets_and_replay_and_ewc_forget_less(tiny_bert, tmp_path):
    # unannotated O trained as O: the setting where fine-tuning on the new stage erases the old types
    cfg = continual_config(tiny_bert, tmp_path, ["naive", "replay", "ewc"],
                           replay={"memory_size": 4, "per_batch": 2}, ewc={"lambda": 1e6})
    cfg["task"] = {"unannotated": "o"}
    plan = load_plan(cfg)
    result = run_continual(plan)
    rows = {r["strategy"]: r for r in result["rows"]}
    first = rows["naive"]["matrix_mean"][0][0]
    assert first == 1.0  # the first stage is learned (train = test here) and shared by every strategy
    assert all(r["matrix_mean"][0][0] == first for r in rows.values())
    forgetting = {name: r["average_forgetting_mean"] for name, r in rows.items()}
    assert forgetting["naive"] >= 0.5, forgetting
    assert forgetting["replay"] <= forgetting["naive"] - 0.3, forgetting
    assert forgetting["ewc"] <= forgetting["naive"] - 0.2, forgetting  # measured: 1.0 / 0.0 / 0.6
    out = plan.out_dir
    assert {p.name for p in out.glob("continual*")} == {
        "continual.md", "continual.csv", "continual-old-stages.png",
        *(f"continual-heatmap-{s}.png" for s in ("naive", "replay", "ewc"))}
    with open(out / "continual.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["strategy"] for r in table] == ["naive"] * 3 + ["replay"] * 3 + ["ewc"] * 3
    assert float(table[0]["after_people_on_people"]) == 1.0
    stage2 = json.loads((out / "seed7" / "replay" / "stage2-places" / "metrics.json").read_text())
    assert stage2["data"]["labels_not_annotated"] == ["B-PER", "I-PER"]
    assert (out / "seed7" / "replay" / "stage2-places" / "model" / "tuneforge.json").exists()
    assert "| naive | 1 |" in (out / "continual.md").read_text()


def test_an_interrupted_sequence_resumes_exactly(tiny_bert, tmp_path, monkeypatch):
    import tuneforge.workflows.continual as continual

    cfg = continual_config(tiny_bert, tmp_path, ["replay"], replay={"memory_size": 3, "per_batch": 1})
    cfg["training"]["epochs"] = 2
    reference = run_continual(load_plan(cfg, out=tmp_path / "reference"))
    original = continual._strategy_callbacks

    def interrupted(plan, strategy, seed, k, previous):
        def stop(step):
            if step == 3:
                raise KeyboardInterrupt
        return original(plan, strategy, seed, k, previous) + [StepFunction(stop, name="stop")]

    monkeypatch.setattr(continual, "_strategy_callbacks", interrupted)
    plan = load_plan(cfg, out=tmp_path / "again")
    with pytest.raises(KeyboardInterrupt):
        run_continual(plan)
    assert (plan.run_dir("replay", 7, 1) / "checkpoint").exists()
    monkeypatch.setattr(continual, "_strategy_callbacks", original)
    stage1_model = (plan.run_dir("replay", 7, 0) / "model" / "model.safetensors").stat().st_mtime_ns
    resumed = run_continual(plan)
    assert (plan.run_dir("replay", 7, 0) / "model" / "model.safetensors").stat().st_mtime_ns == stage1_model
    for name in ("replay",):
        done = json.loads((plan.run_dir(name, 7, 1) / "metrics.json").read_text())
        ref = json.loads((tmp_path / "reference" / "seed7" / name / "stage2-places" / "metrics.json").read_text())
        assert done["history"] == ref["history"]
    assert [r["matrix_mean"] for r in resumed["rows"]] == [r["matrix_mean"] for r in reference["rows"]]


def test_continual_config_errors(tiny_bert, tmp_path):
    cfg = continual_config(tiny_bert, tmp_path, ["naive"])
    with pytest.raises(ConfigError, match="continual.strategies"):
        load_plan(dict(cfg, continual=dict(cfg["continual"], strategies=["naive", "sgd"])))
    with pytest.raises(ConfigError, match="at least two stages"):
        load_plan(dict(cfg, continual=dict(cfg["continual"], stages=cfg["continual"]["stages"][:1])))
    with pytest.raises(ConfigError, match="no 'continual:' block"):
        load_plan({k: v for k, v in cfg.items() if k != "continual"})
    with pytest.raises(ConfigError, match="--strategies: unknown"):
        load_plan(cfg, strategies=["gem"])


# ---------------------------------------------------------------------------------------------
# continual split


def test_split_by_entity_type_annotates_each_stage_with_its_types(tiny_bert, tmp_path, capsys):
    write_conll(tmp_path / "all.conll", PEOPLE + PLACES + [("google met john in paris", "B-ORG O B-PER O B-LOC")])
    cfg = tiny_config(tiny_bert, tmp_path, tmp_path / "runs")
    write_conll(tmp_path / "held.conll", PEOPLE[:2] + PLACES[:2])
    cfg["data"] = {"train": str(tmp_path / "all.conll"), "dev": str(tmp_path / "held.conll"),
                   "test": str(tmp_path / "held.conll")}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["continual", "split", str(tmp_path / "base.yaml"), "--by", "type", "--groups", "PER;LOC,ORG",
                 "--out", str(tmp_path / "st")]) == 0
    stages = yaml.safe_load((tmp_path / "st" / "stages.yaml").read_text())
    assert [s["name"] for s in stages] == ["s1-PER", "s2-LOC-ORG"]
    read = {s["name"]: {k: read_token_file(tmp_path / "st" / s[k]) for k in ("train", "dev", "test")} for s in stages}
    tags1 = {t for part in read["s1-PER"].values() for ex in part for t in ex.tags}
    tags2 = {t for part in read["s2-LOC-ORG"].values() for ex in part for t in ex.tags}
    assert tags1 <= {"O", "B-PER", "I-PER"} and tags2 <= {"O", "B-LOC", "B-ORG"}
    train_words = [[" ".join(ex.words) for ex in read[name]["train"]] for name in read]
    assert not set(train_words[0]) & set(train_words[1])  # disjoint training sentences
    assert len(train_words[0]) + len(train_words[1]) == 9  # every training sentence is in one stage
    assert [" ".join(e.words) for e in read["s1-PER"]["test"]] == [" ".join(e.words) for e in read["s2-LOC-ORG"]["test"]]
    plan = load_plan(tmp_path / "st" / "continual.yaml", overrides=["training.epochs=1"])
    assert [s.name for s in plan.stages] == ["s1-PER", "s2-LOC-ORG"] and plan.out_dir == tmp_path / "st" / "runs"


def test_split_by_label_for_a_classifier(tiny_bert, tmp_path):
    rows = [{"text": t, "label": label} for t, label in [
        ("mary visited paris", "travel"), ("john went to london", "travel"), ("google met apple", "business"),
        ("microsoft works", "business"), ("he said hi", "chat"), ("she met john", "chat")] * 2]
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config(tiny_bert, tmp_path, tmp_path / "runs")
    cfg["task"] = {"type": "text_classification"}
    cfg["data"] = {"train": str(tmp_path / "all.jsonl"), "split": [0.5, 0.25, 0.25]}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["continual", "split", str(tmp_path / "base.yaml"), "--by", "label", "--groups", "travel,chat;business",
                 "--out", str(tmp_path / "st")]) == 0
    stages = yaml.safe_load((tmp_path / "st" / "stages.yaml").read_text())
    for stage, allowed in zip(stages, ({"travel", "chat"}, {"business"})):
        labels = {json.loads(line)["label"] for line in (tmp_path / "st" / stage["train"]).read_text().splitlines()}
        assert labels and labels <= allowed


def test_classifier_scores_on_a_stage_count_only_its_labels():
    from sklearn.metrics import f1_score

    from tuneforge.tasks.text_classification import TextClassifier

    class Fixed(TextClassifier):
        def __init__(self, probabilities):
            self.labels, self.multi_label, self.meta = ["a", "b", "c"], False, {}
            self._p = probabilities

        def predict_proba(self, examples, batch_size=64):
            return self._p

    import numpy as np
    from tuneforge.data.readers import TextExample

    gold = ["a", "a", "b", "d"]  # "d" is a label the model never learned
    pred = np.eye(3)[[0, 2, 1, 0]]
    metrics = Fixed(pred).evaluate_on([TextExample(text="x", labels=[g]) for g in gold], ["a", "b", "d"])
    names = ["a", "b", "c", "d"]
    expected = f1_score([names.index(g) for g in gold], [0, 2, 1, 0], labels=[0, 1, 3], average="macro", zero_division=0)
    assert metrics["f1"] == pytest.approx(expected) and metrics["accuracy"] == 0.5
