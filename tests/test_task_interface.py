"""The task interface: a task defined here, registered with one line, trains end to end through
``tuneforge.train`` on the one driver; best-checkpoint metrics are configurable; every run draws curves."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest
import torch
import yaml

import tuneforge
from tuneforge.config import config_from_dict
from tuneforge.schema import TaskOptions
from tuneforge.errors import ConfigError
from tuneforge.artifacts.paths import atomic_write_text
from tuneforge.tasks import REGISTRY, register_task
from tuneforge.tasks.base import Task
from tuneforge.tasks.predictor import Predictor

from conftest import tiny_config


# ---------------------------------------------------------------------------------------------
# A small task written as a user would: sentence scoring (regression) from JSONL


class ScoreOptions(TaskOptions):
    type: str = "sentence_score"
    target_scale: float = 1.0  # a task-specific option, validated like any other key


class ScorePredictor(Predictor):
    def read(self, path, format="auto", labelled=True):
        return read_scores(path, labelled)

    def _values(self, texts, batch_size=64):
        self.model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(texts[i:i + batch_size], padding=True, return_tensors="pt")
                out += self.model(**batch).logits[:, 0].tolist()
        return np.array(out) * self.meta["target_scale"]

    def predict(self, inputs, batch_size=64):
        texts = [inputs] if isinstance(inputs, str) else [x["text"] if isinstance(x, dict) else x for x in inputs]
        return [{"text": t, "score": round(float(v), 4)} for t, v in zip(texts, self._values(texts, batch_size))]

    def evaluate_examples(self, examples, batch_size=64):
        predicted = self._values([e["text"] for e in examples], batch_size)
        gold = np.array([e["score"] for e in examples])
        mse = float(np.mean((predicted - gold) ** 2))
        return {"mse": mse, "examples": len(examples)}, f"mean squared error {mse:.4f}\n", predicted

    def headline(self, metrics):
        return f"mse {metrics['mse']:.4f}"


def read_scores(path, labelled=True):
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    return [{"text": r["text"], "score": float(r["score"]) if labelled else None} for r in rows]


class SentenceScore(Task):
    name = "sentence_score"
    Options = ScoreOptions
    Predictor = ScorePredictor
    metric_for_best: ClassVar[str] = "mse"
    greater_is_better: ClassVar[bool] = False
    score_name = "mse"

    def read(self, path, labelled=True):
        return read_scores(path, labelled)

    def label_list(self, train):
        return ["score"]

    @classmethod
    def load_pretrained(cls, name_or_path, labels=None, meta=None, revision=None, trust_remote_code=False,
                        announce_new_head=True):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=1, problem_type="regression")

    def encode(self, tokenizer, examples, labels):
        scale = self.cfg.task.target_scale
        items = [dict(tokenizer(e["text"]), labels=e["score"] / scale) for e in examples]
        return items, [len(x["input_ids"]) for x in items], type("Stats", (), {"describe": lambda s: "plain"})()

    def collator(self, tokenizer):
        def collate(items):
            batch = tokenizer.pad([{k: v for k, v in x.items() if k != "labels"} for x in items], return_tensors="pt")
            batch = dict(batch, labels=torch.tensor([x["labels"] for x in items], dtype=torch.float))
            batch["n_tokens"] = int(batch["attention_mask"].sum())
            return batch
        return collate

    def model_meta(self, labels):
        return dict(super().model_meta(labels), target_scale=self.cfg.task.target_scale)

    def write_outputs(self, run_dir, split, examples, predictions, metrics, predictor):
        atomic_write_text(run_dir / f"{split}_scores.txt", "\n".join(f"{p:.4f}" for p in predictions) + "\n")


SCORES = [("mary visited paris today", 1.0), ("john went to london", -1.0), ("paris is a city", 1.0),
          ("google and apple met", -1.0), ("she lives in paris", 1.0), ("he said the city was new", -1.0)]


@pytest.fixture()
def registered_task():
    register_task(SentenceScore)  # the one registry line a new task needs
    yield SentenceScore
    REGISTRY.pop(SentenceScore.name)


def test_a_task_defined_in_the_test_trains_end_to_end(registered_task, tiny_bert, tmp_path):
    data = tmp_path / "scores.jsonl"
    data.write_text("".join(json.dumps({"text": t, "score": s}) + "\n" for t, s in SCORES), encoding="utf-8")
    cfg = tiny_config(tiny_bert, tmp_path, tmp_path / "run", epochs=30, batch_size=6, learning_rate=3e-3)
    cfg["task"] = {"type": "sentence_score", "target_scale": 2.0}
    cfg["data"] = {"train": str(data), "dev": str(data), "test": str(data)}

    result = tuneforge.train(cfg)

    history = [h["dev_mse"] for h in result.metrics["history"]]
    assert result.metrics["metric_for_best"] == "mse"
    assert result.metrics["best_epoch"] == 1 + int(np.argmin(history))  # lower is better for this task
    assert result.metrics["test"]["mse"] < 0.05 < history[0]  # it learned: 1.0 would be a constant guess
    assert (result.run_dir / "test_scores.txt").exists() and (result.run_dir / "curves.png").exists()
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["task"]["target_scale"] == 2.0

    model = tuneforge.load(result.run_dir)
    assert isinstance(model, ScorePredictor)
    scores = [row["score"] for row in model.predict(["paris is a city", "google and apple met"])]
    assert scores[0] > 0.5 and scores[1] < -0.5
    metrics, report = tuneforge.evaluate(result.run_dir, data)
    assert metrics["mse"] == pytest.approx(result.metrics["test"]["mse"], abs=1e-6)
    assert "mean squared error" in report


def test_a_registered_task_validates_its_own_options(registered_task, tiny_bert, tmp_path):
    base = {"model": {"name_or_path": str(tiny_bert)}, "data": {"train": "x.jsonl"}, "task": {"type": "sentence_score"}}
    assert config_from_dict(base).task.target_scale == 1.0
    with pytest.raises(ConfigError, match="'task.decode' does not apply to task.type sentence_score"):
        config_from_dict(base, overrides=["task.decode=argmax"])
    with pytest.raises(ConfigError, match="bad value for 'task.target_scale'"):
        config_from_dict(base, overrides=["task.target_scale=big"])
    with pytest.raises(ConfigError, match="'task.type'.*choose one of token_classification, text_classification"):
        config_from_dict(dict(base, task={"type": "summarisation"}))


# ---------------------------------------------------------------------------------------------
# metric_for_best and curves on the built-in tasks


@pytest.fixture(scope="module")
def accuracy_run(tiny_bert, tmp_path_factory):
    from conftest import write_conll

    data = tmp_path_factory.mktemp("data")
    for name in ("train", "dev", "test"):
        write_conll(data / f"{name}.conll")
    # 6 sentences in batches of 2: 3 steps an epoch, logged once an epoch to RUN/logs/metrics.jsonl
    cfg = tiny_config(tiny_bert, data, tmp_path_factory.mktemp("runs") / "acc", epochs=6, log_every_steps=3,
                      metric_for_best="token_accuracy", greater_is_better=False, report_to=["jsonl"])
    return tuneforge.train(cfg)


def test_metric_for_best_and_direction_come_from_the_config(accuracy_run):
    history = [h["dev_token_accuracy"] for h in accuracy_run.metrics["history"]]
    # greater_is_better false: the first epoch with the lowest accuracy is the one kept
    assert accuracy_run.metrics["best_epoch"] == 1 + int(np.argmin(history))
    assert accuracy_run.metrics["metric_for_best"] == "token_accuracy"


def test_step_log_averages_the_losses_the_epochs_report(accuracy_run):
    records = [json.loads(line) for line in (accuracy_run.run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["config"]["training.log_every_steps"] == 3
    train = [r for r in records if "train/loss" in r]
    dev = [r for r in records if "dev/token_accuracy" in r]
    history = accuracy_run.metrics["history"]
    assert [r["step"] for r in train] == [3, 6, 9, 12, 15, 18] == [r["step"] for r in dev]
    # a log interval of one epoch averages exactly the losses the epoch's history reports
    assert [r["train/loss"] for r in train] == [h["train_loss"] for h in history]
    assert [r["dev/token_accuracy"] for r in dev] == [h["dev_token_accuracy"] for h in history]
    assert all(r["train/learning_rate"] == pytest.approx(5e-3 * (1 - r["step"] / 18)) for r in train)
    png = (accuracy_run.run_dir / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_unknown_metric_for_best_names_the_choices(tiny_bert, ner_files, tmp_path):
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=1, metric_for_best="bleu")
    with pytest.raises(ConfigError, match="training.metric_for_best: .*'bleu'.*choose one of f1, precision"):
        tuneforge.train(cfg)
