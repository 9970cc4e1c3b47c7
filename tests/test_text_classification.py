"""Text classification end to end on tiny randomly initialised models built in the test."""

import json

import numpy as np
import pytest
import torch
import yaml

import tuneforge
from tuneforge.training.callbacks import StepFunction
from tuneforge.api import train
from tuneforge.cli import main
from tuneforge.data.encode import encode_texts, long_text_spans
from tuneforge.data.readers import TextExample, read_text_file
from tuneforge.errors import ConfigError, DataError
from tuneforge.runtime.models import load_sequence_classifier
from tuneforge.tasks.text_classification import (
    TextClassifier,
    class_weight_vector,
    decide,
    tune_thresholds,
)

TOPICS = [
    ("mary visited paris today", "travel"),
    ("john went to london", "travel"),
    ("she lives in berlin", "travel"),
    ("google and apple met", "business"),
    ("microsoft works with apple", "business"),
    ("he said the city was new", "chat"),
    ("she met john today", "chat"),
]

ENTITY_TYPES = [  # multi-label: which kinds of names does the sentence mention (none is allowed)
    ("john smith lives in new york", ["person", "place"]),
    ("google and apple met in london", ["org", "place"]),
    ("mary visited paris", ["person", "place"]),
    ("microsoft works with apple", ["org"]),
    ("john met mary", ["person"]),
    ("the city was new", []),
    ("he went to berlin", ["place"]),
]


def write_csv(path, rows, header=("text", "label")):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def text_config(model, train_file, out, dev=None, test=None, task=None, **training) -> dict:
    settings = {"epochs": 40, "batch_size": 8, "learning_rate": 1e-2, "warmup_ratio": 0.0, "seed": 7, "progress": False}
    settings.update(training)
    data = {"train": str(train_file), "dev": str(dev or train_file), "test": str(test or train_file)}
    return {
        "task": {"type": "text_classification", **(task or {})},
        "model": {"name_or_path": str(model)},
        "data": data,
        "encoding": {"max_length": 32, "stride": 8},
        "training": settings,
        "output_dir": str(out),
    }


# ---------------------------------------------------------------------------------------------
# Training to 1.0 and what the run folder holds


@pytest.fixture(scope="module")
def bert64(tmp_path_factory):
    """The shared tiny BERT, 64 wide: at 32 wide [CLS] learns multi-label sets too slowly for a quick test."""
    from conftest import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert-64"), hidden=64)


@pytest.fixture(scope="module")
def single_label_run(bert64, tmp_path_factory):
    data = write_csv(tmp_path_factory.mktemp("topics") / "topics.csv", TOPICS)
    out = tmp_path_factory.mktemp("runs") / "topics"
    # full batches: a tiny random BERT reads a sentence through [CLS] and needs steady gradients
    # class weights switch the loss to the task's compute_loss hook: the same loop, another loss
    return train(text_config(bert64, data, out, task={"class_weights": "balanced"})), data


def test_single_label_overfits_to_accuracy_one(single_label_run):
    result, _ = single_label_run
    for split in ("dev", "test"):
        assert result.metrics[split]["accuracy"] == 1.0
        assert result.metrics[split]["f1"] == result.metrics[split]["macro_f1"] == 1.0
    run = result.run_dir
    for name in ("config.yaml", "metrics.json", "report.txt", "model/model.safetensors", "model/tuneforge.json",
                 "confusion_test.png", "test_predictions.jsonl"):
        assert (run / name).exists(), name
    assert not (run / "checkpoint").exists()
    assert result.metrics["test"]["scores"]["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 3]]
    assert (run / "confusion_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.metrics["data"]["class_weights"] == pytest.approx({"business": 7 / 6, "chat": 7 / 6, "travel": 7 / 9})
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert "decode" not in saved["task"] and "tag_column" not in saved["data"]  # the other task's options
    assert "macro avg" in (run / "report.txt").read_text()


def test_predict_gives_labels_with_probabilities(single_label_run):
    result, _ = single_label_run
    model = tuneforge.load(result.run_dir)
    assert isinstance(model, TextClassifier)
    out = model.predict(["Mary visited Paris today", "Google and Apple met"])
    assert [r["label"] for r in out] == ["travel", "business"]
    for r in out:
        assert set(r["probabilities"]) == {"business", "chat", "travel"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-3
        assert r["probability"] == max(r["probabilities"].values())


def test_save_load_round_trip_and_plain_transformers(single_label_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    result, _ = single_label_run
    folder = result.run_dir / "model"
    ours = tuneforge.load(result.run_dir, precision="fp32")  # parity with plain transformers' fp32 pipeline
    plain = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(["mary visited paris today", "he said the city was new"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        a = ours.model(**batch).logits
        b = plain(**batch).logits
        c = tuneforge.load(folder).model(**batch).logits
    assert torch.equal(a, b) and torch.equal(a, c)
    assert plain.config.id2label == {0: "business", 1: "chat", 2: "travel"}
    classify = pipeline("text-classification", model=plain, tokenizer=tokenizer)
    (mine,) = ours.predict("he said the city was new")
    (theirs,) = classify("he said the city was new")
    assert theirs["label"] == mine["label"] == "chat"
    assert theirs["score"] == pytest.approx(mine["probability"], abs=1e-4)


@pytest.fixture(scope="module")
def multi_label_run(bert64, tmp_path_factory):
    data = write_jsonl(tmp_path_factory.mktemp("types") / "types.jsonl",
                       [{"text": t, "labels": labels} for t, labels in ENTITY_TYPES])
    out = tmp_path_factory.mktemp("runs") / "types"
    return train(text_config(bert64, data, out, task={"multi_label": True}))


def test_multi_label_overfits_to_micro_f1_one(multi_label_run):
    m = multi_label_run.metrics
    assert m["test"]["f1"] == m["test"]["micro_f1"] == 1.0
    assert m["test"]["subset_accuracy"] == 1.0 and m["test"]["hamming_loss"] == 0.0
    meta = json.loads((multi_label_run.run_dir / "model" / "tuneforge.json").read_text())
    assert meta["multi_label"] is True and len(meta["thresholds"]) == 3  # tuned on dev, saved with the model
    assert m["thresholds"] == dict(zip(meta["labels"], meta["thresholds"]))
    model = tuneforge.load(multi_label_run.run_dir)
    assert model.model.config.problem_type == "multi_label_classification"
    (r,) = model.predict("google and apple met in london")
    assert r["labels"] == ["org", "place"] and set(r["probabilities"]) == {"org", "person", "place"}
    (none,) = model.predict("the city was new")
    assert none["labels"] == []


def test_chinese_character_vocabulary_and_mixed_text(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizer

    texts = [
        ("这本书很好", "正面"), ("我喜欢这个app", "正面"), ("质量很好，推荐", "正面"),
        ("太差了，不推荐", "负面"), ("我不喜欢这个app", "负面"), ("质量很差", "负面"),
    ]
    chars = sorted({c for t, _ in texts for c in t if c not in "app"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "app"] + chars
    folder = tmp_path / "tiny-chinese-bert"
    folder.mkdir()
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, tokenize_chinese_chars=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    loaded = tuneforge.runtime.models.load_tokenizer(str(folder))
    assert loaded.tokenize("我喜欢这个app") == ["我", "喜", "欢", "这", "个", "app"]  # one token per character

    data = write_jsonl(tmp_path / "reviews.jsonl", [{"text": t, "label": y} for t, y in texts])
    result = train(text_config(folder, data, tmp_path / "run"))
    assert result.metrics["test"]["accuracy"] == 1.0
    model = tuneforge.load(result.run_dir)
    assert [r["label"] for r in model.predict(["我不喜欢这个app", "这本书很好"])] == ["负面", "正面"]
    report = (result.run_dir / "report.txt").read_text(encoding="utf-8")
    assert "正面" in report and "负面" in report


def test_text_pairs_reach_the_model_as_pairs(tiny_bert, tmp_path):
    rows = [("john went to london", "john", "yes"), ("john went to london", "mary", "no"),
            ("mary visited paris", "mary", "yes"), ("mary visited paris", "john", "no")]
    data = write_csv(tmp_path / "pairs.csv", rows, header=("sentence", "name", "answer"))
    cfg = text_config(tiny_bert, data, tmp_path / "run", epochs=60)
    cfg["data"].update(text_column="sentence", text_pair_column="name", label_column="answer")
    result = train(cfg)
    assert result.metrics["test"]["accuracy"] == 1.0
    model = tuneforge.load(result.run_dir)
    (inp,), _ = encode_texts([TextExample("mary visited paris", text_pair="john")], model.tokenizer, None, 32)
    tokens = model.tokenizer.convert_ids_to_tokens(inp.input_ids)
    assert tokens == ["[CLS]", "mary", "visited", "paris", "[SEP]", "john", "[SEP]"]
    assert inp.token_type_ids == [0, 0, 0, 0, 0, 1, 1]
    assert [r["label"] for r in model.predict([("mary visited paris", "john"), ("mary visited paris", "mary")])] == ["no", "yes"]


# ---------------------------------------------------------------------------------------------
# Long texts: each strategy feeds the model exactly the tokens it claims


LONG = " ".join("abcdefghijklmnopqrstuvwxyz0123456789")  # 36 one-token words


@pytest.fixture(scope="module")
def fresh_classifier(tiny_bert):
    from tuneforge.runtime.models import load_tokenizer

    torch.manual_seed(0)
    model = load_sequence_classifier(str(tiny_bert), ["a", "b"]).eval()
    return model, load_tokenizer(str(tiny_bert))


def ids_reaching_model(model, tokenizer, meta) -> list[list[int]]:
    seen = []

    def record(module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        seen.extend(row[m.bool()].tolist() for row, m in zip(ids, mask))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        TextClassifier(model, tokenizer, meta).predict([LONG], batch_size=1)
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("strategy", ["head", "tail", "head_tail", "windows"])
def test_long_text_strategy_covers_what_it_claims(fresh_classifier, strategy):
    model, tokenizer = fresh_classifier
    content = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert len(content) == 36
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    meta = {"labels": ["a", "b"], "multi_label": False, "thresholds": None, "max_length": 12, "stride": 4,
            "long_text": strategy, "head_fraction": 0.3, "window_pooling": "mean"}
    seen = ids_reaching_model(model, tokenizer, meta)
    expected = {
        "head": [content[:10]],
        "tail": [content[-10:]],
        "head_tail": [content[:3] + content[-7:]],
        "windows": [content[s:e] for s, e in [(0, 10), (6, 16), (12, 22), (18, 28), (24, 34), (30, 36)]],
    }[strategy]
    assert sorted(seen) == sorted([[cls] + part + [sep] for part in expected])
    if strategy == "windows":  # every token reaches the model
        assert set(t for row in seen for t in row[1:-1]) == set(content)


def test_windows_pool_the_window_logits(fresh_classifier):
    model, tokenizer = fresh_classifier
    meta = {"labels": ["a", "b"], "multi_label": False, "thresholds": None, "max_length": 12, "stride": 4,
            "long_text": "windows", "head_fraction": 0.25, "window_pooling": "mean"}
    inputs, stats = encode_texts([TextExample(LONG)], tokenizer, None, 12, "windows", 4)
    assert stats.long_examples == 1 and stats.tokens_not_seen == 0 and len(inputs) == 6
    with torch.inference_mode():
        per_window = [model(input_ids=torch.tensor([x.input_ids])).logits[0] for x in inputs]
    expected = torch.softmax(torch.stack(per_window).mean(0), -1)
    probs = TextClassifier(model, tokenizer, meta).predict_proba([TextExample(LONG)], batch_size=4)[0]
    assert np.allclose(probs, expected.numpy(), atol=1e-5)


def test_cut_tokens_are_counted_not_hidden(tiny_tokenizer):
    _, stats = encode_texts([TextExample(LONG), TextExample("a b")], tiny_tokenizer, None, 12, "head_tail", 4)
    assert stats.long_examples == 1 and stats.tokens_not_seen == 26
    assert "26 of 38 tokens not seen by the model" in stats.describe()


def test_long_text_spans_stay_within_budget():
    for n in range(1, 60):
        for strategy in ("head", "tail", "head_tail"):
            (spans,) = long_text_spans(n, 10, strategy, 0.25, 3)
            assert sum(e - s for s, e in spans) == min(n, 10)
        windows = long_text_spans(n, 10, "windows", 0.25, 3)
        assert all(len(w) == 1 and w[0][1] - w[0][0] <= 10 for w in windows)
        assert set().union(*(range(*w[0]) for w in windows)) == set(range(n))


# ---------------------------------------------------------------------------------------------
# Metrics and thresholds


def test_single_label_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    from tuneforge.evaluation.metrics import single_label_scores

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d"]
    for _ in range(50):
        n = int(rng.integers(1, 40))
        gold, pred = rng.integers(0, 4, n).tolist(), rng.integers(0, 4, n).tolist()
        ours = single_label_scores(gold, pred, labels)
        idx = list(range(4))
        assert ours["accuracy"] == accuracy_score(gold, pred)
        for avg in ("micro", "macro", "weighted"):
            assert ours[avg]["f1"] == f1_score(gold, pred, labels=idx, average=avg, zero_division=0)
        ref = classification_report(gold, pred, labels=idx, target_names=labels, output_dict=True, zero_division=0)
        for label in labels:
            for key, ref_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"), ("support", "support")):
                assert ours["per_class"][label][key] == ref[label][ref_key]
        assert ours["confusion_matrix"] == confusion_matrix(gold, pred, labels=idx).tolist()


def test_multi_label_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    from tuneforge.evaluation.metrics import multi_label_scores

    rng = np.random.default_rng(1)
    for _ in range(50):
        gold = rng.integers(0, 2, (int(rng.integers(1, 30)), 5))
        pred = rng.integers(0, 2, gold.shape)
        ours = multi_label_scores(gold, pred, list("vwxyz"))
        assert ours["subset_accuracy"] == accuracy_score(gold, pred)
        assert ours["hamming_loss"] == hamming_loss(gold, pred)
        for avg in ("micro", "macro", "weighted"):
            assert ours[avg]["f1"] == f1_score(gold, pred, average=avg, zero_division=0)


def test_threshold_tuning_improves_dev_f1():
    from tuneforge.evaluation.metrics import multi_label_scores

    # label 0 is under-confident (positives at 0.3-0.4), label 1 over-confident (negatives at 0.6-0.7)
    gold = np.array([[1, 0], [1, 1], [0, 0], [0, 1], [1, 0], [0, 0]])
    probs = np.array([[0.35, 0.65], [0.4, 0.9], [0.1, 0.6], [0.15, 0.8], [0.3, 0.7], [0.2, 0.62]])
    before = multi_label_scores(gold, decide(probs, True, [0.5, 0.5]), ["x", "y"])["micro"]["f1"]
    thresholds = tune_thresholds(probs, gold)
    after = multi_label_scores(gold, decide(probs, True, thresholds), ["x", "y"])["micro"]["f1"]
    assert after == 1.0 > before
    assert 0.2 < thresholds[0] <= 0.3 and 0.7 < thresholds[1] <= 0.8
    # no evidence either way keeps 0.5
    assert tune_thresholds(np.array([[0.9], [0.1]]), np.array([[0], [0]])) == [0.5]


def test_balanced_class_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    examples = [TextExample("x", [y]) for y in "aaabbc"]
    ours = class_weight_vector("balanced", examples, ["a", "b", "c"])
    assert np.allclose(ours, compute_class_weight("balanced", classes=np.array(list("abc")), y=list("aaabbc")))
    assert class_weight_vector({"c": 3.0}, examples, ["a", "b", "c"]) == [1.0, 1.0, 3.0]
    with pytest.raises(ConfigError, match="'z' is not in the training data"):
        class_weight_vector({"z": 2.0}, examples, ["a", "b", "c"])


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming file:line and what to do


@pytest.mark.parametrize("content,line,message", [
    ("sentence,label\nhello,a\n", 1, "no column 'text' in the header (columns: sentence, label); set data.text_column"),
    ("text,label\nhello,a\n   ,b\n", 3, "empty text in column 'text'"),
    ("text,label\nhello,a\nworld,\n", 3, "empty label in column 'label'"),
    ("text,label\nhello,a\n\"two\nlines\",b\nthree,c,extra\n", 5, "found 3 field(s) where the header has 2"),
    ("text,label\n", 1, "no rows found below the header"),
])
def test_bad_csv_names_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_text_file(path)
    assert str(err.value).startswith(f"{path}:{line}: {message}")


@pytest.mark.parametrize("record,message,multi", [
    ({"label": "a"}, 'missing "text": a string', False),
    ({"text": "", "label": "a"}, 'empty "text"', False),
    ({"text": "hi"}, 'missing "label": one label', False),
    ({"text": "hi", "labels": ["a"]}, "set task.multi_label: true", False),
    ({"text": "hi", "labels": "a,b"}, None, True),
    ({"text": "hi", "labels": [1]}, 'missing "labels": a list of label strings', True),
])
def test_bad_jsonl_names_file_and_line(tmp_path, record, message, multi):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine", "labels" if multi else "label": ["a"] if multi else "a"}, record])
    if message is None:  # a lone string is one label
        assert read_text_file(path, multi_label=True)[1].labels == ["a,b"]
        return
    with pytest.raises(DataError) as err:
        read_text_file(path, multi_label=multi)
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value)


def test_tsv_is_read_without_quoting(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text('text\tlabel\nhe said "hi\tgreeting\n', encoding="utf-8")
    (ex,) = read_text_file(path)
    assert ex.text == 'he said "hi' and ex.labels == ["greeting"] and ex.line == 2


def test_config_rejects_options_of_the_other_task(tiny_bert, tmp_path):
    from tuneforge.config import config_from_dict

    base = text_config(tiny_bert, tmp_path / "x.csv", tmp_path / "run")
    for key, value, message in [
        ("task.decode", "argmax", "'task.decode' does not apply to task.type text_classification"),
        ("data.tag_column", 2, "'data.tag_column' does not apply to task.type text_classification"),
        ("task.class_weights", "balanced", None),
        ("task.long_text", "middle", "bad value for 'task.long_text'"),
    ]:
        overrides = [f"{key}={value}"] + (["task.multi_label=true"] if message is None else [])
        with pytest.raises(ConfigError) as err:
            config_from_dict(base, overrides=overrides)
        assert (message or "'task.class_weights' is for single-label tasks") in str(err.value)
    ner = {"model": {"name_or_path": "x"}, "data": {"train": "a.conll"}, "task": {"multi_label": True}}
    with pytest.raises(ConfigError, match="'task.multi_label' does not apply to task.type token_classification"):
        config_from_dict(ner)


def test_unknown_label_at_eval_names_file_and_line(single_label_run, tmp_path):
    result, _ = single_label_run
    path = write_csv(tmp_path / "eval.csv", [("mary visited paris", "travel"), ("apple", "fruit")])
    with pytest.raises(DataError, match=rf"{path}:3: label 'fruit' was never seen in training"):
        tuneforge.evaluate(result.run_dir, path)


# ---------------------------------------------------------------------------------------------
# The same commands as NER


def test_cli_train_eval_predict(bert64, tmp_path, capsys):
    data = write_csv(tmp_path / "topics.csv", TOPICS)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(text_config(bert64, data, tmp_path / "run", epochs=30)), encoding="utf-8")
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Classification report" in out and "macro F1" in out

    assert main(["eval", str(tmp_path / "run"), str(data), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == 1.0
    assert "accuracy 1.0000 on 7 texts" in capsys.readouterr().out

    texts = tmp_path / "texts.txt"
    texts.write_text("Mary visited Paris today\n\nGoogle and Apple met\n", encoding="utf-8")
    assert main(["predict", str(tmp_path / "run"), str(texts), "--out", str(tmp_path / "p.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == ["travel", None, "business"]

    assert main(["predict", str(tmp_path / "run"), str(data)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == [y for _, y in TOPICS]

    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,travel\n,chat\n", encoding="utf-8")
    assert main(["train", str(config), "--set", f"data.train={bad}", "--overwrite"]) == 2
    assert f"{bad}:3: empty text" in capsys.readouterr().err


def test_resume_after_interrupt_matches_uninterrupted(tiny_bert, tmp_path):
    data = write_jsonl(tmp_path / "types.jsonl", [{"text": t, "labels": labels} for t, labels in ENTITY_TYPES])
    base = text_config(tiny_bert, data, tmp_path / "full", task={"multi_label": True}, epochs=4, batch_size=2)
    full = train(base)
    cfg = dict(base, output_dir=str(tmp_path / "interrupted"))

    def interrupt(step):
        if step == 10:  # mid-epoch 3 (4 batches an epoch), after the end-of-epoch-2 checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[StepFunction(interrupt)])
    resumed = train(cfg, resume=True)
    assert resumed.metrics["history"] == full.metrics["history"]
    assert resumed.metrics["test"] == full.metrics["test"] and resumed.metrics["thresholds"] == full.metrics["thresholds"]
    a = (tmp_path / "full" / "model" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "interrupted" / "model" / "model.safetensors").read_bytes()
