"""No behaviour change from the task/callback refactor: the same config and seed give the metrics that
were recorded before it (commit c30149c), on the demo config cut to a slice and on two tiny text runs.

F1 values are compared exactly; train losses to 1e-6 relative (a float sum over batches, which another
CPU's BLAS could round differently without changing any prediction). The runs pin
``training.precision: fp32``: the figures were recorded in fp32, before ``auto`` became bf16 on CPUs
with native bf16 (a deliberate, measured change of default).
"""

from __future__ import annotations

import pytest

import tuneforge

from conftest import build_tiny_bert

# tuneforge train examples/wnut16-minilm.yaml --set data.max_train_examples=400 --set training.epochs=3
#   --set training.learning_rate=5e-4 --set training.batch_size=8, recorded at c30149c
NER_SLICE = {
    "history": [(0.6958744812011719, 0.0), (0.3026676940917969, 0.03333333333333333),
                (0.2588911437988281, 0.16149068322981366)],
    "test_f1": 0.08866995073891625,
    "dev_f1": 0.16149068322981366,
}
# tests/test_text_classification.py's TOPICS / ENTITY_TYPES on the 64-wide tiny BERT, recorded at c30149c
TEXT_SINGLE = [(1.0971100330352783, 0.19999999999999998), (1.109023928642273, 0.4444444444444444),
               (1.0963808298110962, 1.0)]
TEXT_MULTI = [(0.6925650238990784, 0.6), (0.6667372584342957, 0.64), (0.6538240313529968, 0.6),
              (0.6551223993301392, 0.6923076923076923), (0.6556499600410461, 0.8888888888888888),
              (0.6330422163009644, 1.0)]


def _check(history, recorded):
    assert [h["dev_f1"] for h in history] == [f1 for _, f1 in recorded]
    assert [h["train_loss"] for h in history] == pytest.approx([loss for loss, _ in recorded], rel=1e-6)


@pytest.mark.slow
def test_demo_config_slice_gives_the_recorded_metrics(tmp_path):
    result = tuneforge.train("examples/wnut16-minilm.yaml", overrides=[
        "data.max_train_examples=400", "training.epochs=3", "training.learning_rate=5e-4",
        "training.batch_size=8", "training.progress=false", "training.precision=fp32", f"output_dir={tmp_path / 'run'}",
    ])
    _check(result.metrics["history"], NER_SLICE["history"])
    assert result.metrics["test"]["f1"] == NER_SLICE["test_f1"]
    assert result.metrics["dev"]["f1"] == NER_SLICE["dev_f1"]


def test_text_runs_give_the_recorded_metrics(tmp_path):
    from test_text_classification import ENTITY_TYPES, TOPICS, text_config, write_csv, write_jsonl

    bert = build_tiny_bert(tmp_path / "bert64", hidden=64)
    data = write_csv(tmp_path / "topics.csv", TOPICS)
    single = tuneforge.train(text_config(bert, data, tmp_path / "single", task={"class_weights": "balanced"}, epochs=3,
                                         precision="fp32"))
    _check(single.metrics["history"], TEXT_SINGLE)
    assert single.metrics["test"]["f1"] == 1.0
    multi_data = write_jsonl(tmp_path / "ml.jsonl", [{"text": t, "labels": labels} for t, labels in ENTITY_TYPES])
    multi = tuneforge.train(text_config(bert, multi_data, tmp_path / "multi", task={"multi_label": True}, epochs=6,
                                        precision="fp32"))
    _check(multi.metrics["history"], TEXT_MULTI)
    assert multi.metrics["test"]["f1"] == 1.0
