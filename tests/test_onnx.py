"""The ONNX Runtime engine: export, then the same windows, decoding and outputs as the torch path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tuneforge
from tuneforge.cli import main

from conftest import tiny_config, write_conll

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ner_run(tiny_bert, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    for name in ("train", "dev", "test"):
        write_conll(data / f"{name}.conll")
    return tuneforge.train(tiny_config(tiny_bert, data, tmp_path_factory.mktemp("runs") / "ner")), data


LONG = ("john smith lives in new york and " * 12).split()  # several 32-token windows


def test_exported_model_predicts_as_torch_fp32(ner_run, tmp_path):
    result, data = ner_run
    out = tmp_path / "onnx"
    assert main(["export", "--onnx", str(result.run_dir), str(out), "--quantize", "int8"]) == 0
    assert (out / "model.onnx").exists() and (out / "model.int8.onnx").exists() and (out / "tokenizer.json").exists()
    torch_model = tuneforge.load(result.run_dir, precision="fp32")
    onnx_model = tuneforge.load(out)
    assert onnx_model.runtime == {"engine": "onnx", "precision": "fp32"}
    inputs = [LONG, "John Smith lives in New York", ["mary", "visited", "paris"]]
    a, b = torch_model.predict(inputs), onnx_model.predict(inputs)
    assert [r["tags"] for r in a] == [r["tags"] for r in b]
    assert [r["entities"] for r in a] == [r["entities"] for r in b]  # char offsets, spans: same code path
    assert max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra["confidences"], rb["confidences"])) < 1e-4
    # the raw logits agree with torch's too
    batch = torch_model.tokenizer(["john smith lives in new york"], return_tensors="pt")
    with torch.inference_mode():
        reference = torch_model.model(**batch).logits.numpy()
    assert np.abs(onnx_model.model(**batch).logits.numpy() - reference).max() < 1e-4
    metrics, _ = tuneforge.evaluate(out, data / "test.conll", precision="int8")
    assert metrics["f1"] == 1.0 and metrics["runtime"] == {"engine": "onnx", "precision": "int8"}


def test_engine_onnx_on_a_run_folder_exports_once_and_reuses(ner_run, capsys):
    result, data = ner_run
    assert main(["eval", str(result.run_dir), str(data / "test.conll"), "--engine", "onnx"]) == 0
    assert "entity F1 1.0000" in capsys.readouterr().out
    exported = result.run_dir / "onnx" / "model.onnx"
    first = exported.stat().st_mtime_ns
    texts = data / "texts.txt"
    texts.write_text("John Smith lives in New York\n", encoding="utf-8")
    assert main(["predict", str(result.run_dir), str(texts), "--engine", "onnx"]) == 0
    captured = capsys.readouterr()
    row = json.loads(captured.out)
    assert row["tags"] == ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    assert "engine onnx, precision fp32" in captured.err
    assert exported.stat().st_mtime_ns == first  # reused, not exported again


def test_bf16_is_refused_by_the_onnx_engine(ner_run):
    result, _ = ner_run
    with pytest.raises(tuneforge.TuneforgeError, match="the onnx engine runs fp32 or int8"):
        tuneforge.load(result.run_dir, precision="bf16", engine="onnx")


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_methods_export_folded_or_as_they_run(tiny_bert, tmp_path, method):
    from conftest import write_conll as write

    for name in ("train", "dev", "test"):
        write(tmp_path / f"{name}.conll")
    cfg = tiny_config(tiny_bert, tmp_path, tmp_path / "run", epochs=3)
    cfg["method"] = {"name": method}
    result = tuneforge.train(cfg)
    out = tuneforge_export(result.run_dir, tmp_path / "onnx")
    words = ["john", "smith", "lives", "in", "paris"]
    a = tuneforge.load(result.run_dir, precision="fp32").predict([words])[0]
    b = tuneforge.load(out).predict([words])[0]
    assert a["tags"] == b["tags"]
    assert max(abs(x - y) for x, y in zip(a["confidences"], b["confidences"])) < 1e-4


def tuneforge_export(run, out):
    from tuneforge.loading import export_onnx

    return export_onnx(run, out)


def test_text_classifier_with_token_types_exports(tmp_path):
    from conftest import build_tiny_bert
    from test_text_classification import TOPICS, text_config, write_csv

    bert = build_tiny_bert(tmp_path / "bert64", hidden=64)
    data = write_csv(tmp_path / "topics.csv", TOPICS)
    result = tuneforge.train(text_config(bert, data, tmp_path / "run", epochs=20))
    out = tuneforge_export(result.run_dir, tmp_path / "onnx")
    texts = [t for t, _ in TOPICS]
    a = tuneforge.load(result.run_dir, precision="fp32").predict(texts)
    b = tuneforge.load(out).predict(texts)
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert max(abs(a[i]["probabilities"][k] - b[i]["probabilities"][k]) for i in range(len(a))
               for k in a[i]["probabilities"]) < 1e-3
