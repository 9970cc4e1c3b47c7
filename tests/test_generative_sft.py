"""Generative NER and classification trained with sft (tasks/generative_sft.py) on tiny random Llama
models built here with SmolLM2's tokenizer: a CoNLL file cast, trained, answered, parsed and scored
with the encoder metrics; the scoring path's exact numbers on known answers; problems in the report."""

from __future__ import annotations

import json

import pytest

import tuneforge
from tuneforge.config import load_config
from tuneforge.errors import ConfigError
from tuneforge.tasks.generative import inline_answer

from test_generative import CONLL
from test_sft import build_tiny_llama, smollm_tokenizer_dir  # noqa: F401  (fixture)

TEXTS = [("love it", "positive"), ("awful day", "negative"), ("the bus left", "neutral"),
         ("great game", "positive"), ("so sad", "negative"), ("it rained", "neutral")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm_tokenizer_dir):  # noqa: F811
    return build_tiny_llama(tmp_path_factory.mktemp("gen-llama"), smollm_tokenizer_dir, hidden=64)


def _config(model, train, out, task: dict, **training) -> dict:
    return {"task": task, "model": {"name_or_path": str(model)},
            "data": {"train": str(train), "dev": str(train), "test": str(train)}, "encoding": {"max_length": 128},
            "training": {"epochs": 60, "batch_size": 1, "learning_rate": 1e-2, "precision": "fp32", "progress": False,
                         "warmup_ratio": 0.0, **training},
            "output_dir": str(out)}


@pytest.fixture(scope="module")
def ner_run(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen-ner")
    (folder / "train.conll").write_text(CONLL, encoding="utf-8")
    cfg = _config(tiny, folder / "train.conll", folder / "run", {"type": "generative_ner", "max_new_tokens": 40},
                  epochs=150)
    return tuneforge.train(cfg)


def test_a_tiny_decoder_overfits_cast_ner_and_its_answers_parse_back_to_the_gold_tags(ner_run):
    test = ner_run.metrics["test"]
    assert test["f1"] == 1.0 and test["answers"] == 2
    assert test["problems"] == {} and test["answers_with_problems"] == 0
    lines = [json.loads(x) for x in (ner_run.run_dir / "test_generations.jsonl").read_text().splitlines()]
    assert [line["tags"] for line in lines] == [line["gold"] for line in lines]
    assert lines[0]["generated"] == "<geo-loc>Paris</geo-loc> loves Paris <person>Hilton Hilton</person> !"
    report = (ner_run.run_dir / "report.txt").read_text()
    assert "problems: 0 malformed, 0 unknown_type, 0 changed_text, 0 hallucinated_span" in report
    meta = json.loads((ner_run.run_dir / "model" / "tuneforge.json").read_text())
    assert meta["task"] == "generative_ner" and meta["generative"]["types"] == ["company", "geo-loc", "person"]


def test_the_loaded_ner_model_reads_conll_scores_known_answers_exactly_and_counts_problems(ner_run, tmp_path):
    predictor = tuneforge.load(ner_run.run_dir, precision="fp32")
    examples = predictor.read(ner_run.run_dir.parent / "train.conll")
    gold = [inline_answer(ex.words, ex.tags) for ex in examples]
    # the first answer right, the second with its entity's type unknown and a word changed
    wrong = "new york times <3 x>y".replace("new york times", "<city>new york times</city>").replace("x>y", "z")
    answers = [gold[0], wrong]
    outputs = [{"text": a, "finish_reason": "stop"} for a in answers]
    metrics, report, predictions = predictor.score_outputs(examples, outputs)
    # 2 of 3 gold entities found, nothing spurious: P 1, R 2/3, F1 0.8 (seqeval's definition)
    assert metrics["entity"]["micro"]["precision"] == 1.0
    assert metrics["f1"] == pytest.approx(0.8)
    assert metrics["problems"] == {"unknown_type": 1, "changed_text": 1}
    assert metrics["answers_with_problems"] == 1
    assert "1 unknown_type, 1 changed_text" in report
    assert predictions[1]["tags"] == ["O"] * 5
    assert predictor.predict("Paris loves Paris Hilton Hilton !")[0]["tags"] == examples[0].tags


@pytest.fixture(scope="module")
def classification_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen-cls")
    train = folder / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in TEXTS))
    return folder, train


@pytest.mark.parametrize("constrained", [False, True])
def test_generative_classification_overfits_and_scores_macro_f1(tiny, classification_files, constrained):
    folder, train = classification_files
    cfg = _config(tiny, train, folder / f"run-{constrained}",
                  {"type": "generative_classification", "constrained": constrained,
                   "verbalisers": {"neutral": "meh"}}, epochs=60)
    result = tuneforge.train(cfg)
    test = result.metrics["test"]
    assert test["f1"] == 1.0 and test["accuracy"] == 1.0 and test["problems"] == {"unparseable": 0}
    predictor = tuneforge.load(result.run_dir, precision="fp32")
    assert predictor.predict(["it rained"])[0]["label"] == "neutral"
    answers = ["positive", "I'd say negative", "meh", "positive", "no idea", "negative"]
    metrics, report, _ = predictor.score_outputs(predictor.read(train),
                                                 [{"text": a, "finish_reason": "stop"} for a in answers])
    # per class: positive P 2/2 R 2/2; negative P 1/2 R 1/2; neutral P 1/1 R 1/2
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["f1"] == pytest.approx((1.0 + 0.5 + 2 / 3) / 3)
    assert metrics["problems"] == {"unparseable": 1} and "1 unparseable" in report


def test_bad_generative_config_is_one_clear_line(tiny, tmp_path):
    (tmp_path / "t.conll").write_text(CONLL, encoding="utf-8")
    cfg = _config(tiny, tmp_path / "t.conll", tmp_path / "run", {"type": "generative_ner", "template": "Tag {sentence}"})
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"task.template.*must use \{text\}"):
        load_config(tmp_path / "c.yaml")
    cfg["task"] = {"type": "generative_classification", "multi_label": True}
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="multi_label"):
        load_config(tmp_path / "c.yaml")
