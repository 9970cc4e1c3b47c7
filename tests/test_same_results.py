"""No behaviour change from a refactor: the same config and seed give the metrics recorded before it.

Two kinds of run. **The demo config cut to a slice** (MiniLM, 400 tweets, lr 5e-4, 3 epochs) is chaotic:
by epoch 3 a difference in the last bit of one fp32 sum (another CPU's matrix kernels: AVX-512 or AMX
here, AVX2 there) has grown into another model (dev F1 0.0 on an Intel Xeon with AMX where an AMD EPYC
recorded 0.1615). So it runs in a child process with the math libraries pinned to code paths every
x86-64 CPU runs the same way (:data:`PINNED_MATH`): MKL's conditional numerical reproducibility in
``COMPATIBLE`` mode (the same SSE2 kernels on Intel and AMD), ATen's vectorised kernels at their
``default`` level (no AVX2/AVX-512 dispatch), oneDNN capped at SSE4.1, and two threads (a parallel sum's
order depends on the thread count). There, F1 values are compared exactly and train losses to 1e-6
relative. Recorded on an Intel Xeon (AMX) in that mode; the same run with MKL also told to stop at AVX2
(``MKL_ENABLE_INSTRUCTIONS=AVX2``, what a CPU without AVX-512 gets) gives bit-identical figures, where the
unpinned run's epoch-3 dev F1 is 0.0 here (train loss 0.25354) and was 0.1615 on the AMD EPYC that first
recorded it (0.25889).

**Two tiny text runs** (a 64-wide BERT, 3 and 6 epochs) are not chaotic: they hold unpinned, in-process,
as recorded at c30149c on an AMD EPYC and checked on the Intel Xeon.

The runs pin ``training.precision: fp32``: the figures were recorded in fp32, before ``auto`` became bf16
on CPUs with native bf16 (a deliberate, measured change of default).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import tuneforge

from conftest import build_tiny_bert

# Code paths of the math libraries that are the same on every x86-64 CPU (see the module docstring).
PINNED_MATH = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
               "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
NER_SLICE_OVERRIDES = ["data.max_train_examples=400", "training.epochs=3", "training.learning_rate=5e-4",
                       "training.batch_size=8", "training.progress=false", "training.precision=fp32",
                       "training.threads=2"]
# tuneforge train examples/wnut16-minilm.yaml --set data.max_train_examples=400 --set training.epochs=3
#   --set training.learning_rate=5e-4 --set training.batch_size=8 --set training.precision=fp32
#   --set training.threads=2, under PINNED_MATH; recorded at 97bd2e6 (the code of c30149c's figures)
NER_SLICE = {
    "history": [(0.6958744812011719, 0.0), (0.3026277160644531, 0.03225806451612903),
                (0.25856794357299806, 0.16080402010050251)],
    "test_f1": 0.05714285714285714,
    "dev_f1": 0.16080402010050251,
}
_CHILD = """
import json, sys
import tuneforge
result = tuneforge.train("examples/wnut16-minilm.yaml", overrides=sys.argv[2:])
m = result.metrics
print(json.dumps({"history": m["history"], "test_f1": m["test"]["f1"], "dev_f1": m["dev"]["f1"]}), file=open(sys.argv[1], "w"))
"""


def train_with_pinned_math(out_dir, overrides: list[str], extra_env: dict | None = None) -> dict:
    """Train in a child process whose math libraries take :data:`PINNED_MATH`'s code paths (they read
    them when they load, so the parent's torch, already loaded, cannot switch)."""
    result_file = out_dir / "result.json"
    env = {**os.environ, **PINNED_MATH, **(extra_env or {})}
    subprocess.run([sys.executable, "-c", _CHILD, str(result_file), *overrides, f"output_dir={out_dir / 'run'}"],
                   env=env, check=True)
    return json.loads(result_file.read_text())
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
    result = train_with_pinned_math(tmp_path, NER_SLICE_OVERRIDES)
    _check(result["history"], NER_SLICE["history"])
    assert result["test_f1"] == NER_SLICE["test_f1"]
    assert result["dev_f1"] == NER_SLICE["dev_f1"]


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
