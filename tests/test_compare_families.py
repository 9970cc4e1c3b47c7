"""`tuneforge compare` with members that differ in model and task type: a tiny BERT fine-tuned in full
and with LoRA, a tiny Llama (SmolLM2's tokenizer) in context and trained with LoRA SFT to answer the
label, on one split; one table, one CSV, the cost-vs-quality plot."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from tuneforge.cli import main
from tuneforge.errors import ConfigError
from tuneforge.workflows.compare import compare, load_members, plan_members

from test_fewshot import text_config, topic_files  # noqa: F401  (fixture)
from test_sft import build_tiny_llama, smollm_tokenizer_dir  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, smollm_tokenizer_dir):  # noqa: F811
    return build_tiny_llama(tmp_path_factory.mktemp("families-llama"), smollm_tokenizer_dir)


def families(llama) -> dict:
    decoder = {"model.name_or_path": str(llama), "encoding.max_length": 64}
    return {
        "bert-full": {},
        "bert-lora": {"approach": "lora"},
        "llama-in-context-k1": {"approach": "in_context", "task.k": 1, **decoder},
        "llama-lora-sft": {"approach": "generative", "method.name": "lora", "training.epochs": 2,
                           "training.learning_rate": 1e-3, "task.max_new_tokens": 4, **decoder},
    }


def test_compare_with_mixed_families_writes_one_table(tiny_bert, topic_files, tiny_llama, tmp_path):  # noqa: F811
    cfg = text_config(tiny_bert, topic_files, tmp_path / "cmp", epochs=2)
    members = families(tiny_llama)
    result = compare(cfg, list(members), members=members, isolate=False)
    with open(result.files["compare.csv"]) as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert list(rows) == list(members)
    assert [rows[m]["task"] for m in members] == ["text_classification", "text_classification",
                                                  "in_context_classification", "generative_classification"]
    assert rows["llama-in-context-k1"]["model"] == str(tiny_llama) and rows["bert-full"]["model"] == str(tiny_bert)
    assert rows["llama-lora-sft"]["adaptation"] == "lora"
    for name, row in rows.items():
        metrics = json.loads((result.out_dir / f"{name}-seed7" / "metrics.json").read_text())
        assert float(row["test_f1_mean"]) == pytest.approx(metrics["test"]["f1"])  # the task's own macro-F1
        assert 0 <= float(row["test_f1_mean"]) <= 1
        assert float(row["inference_ms_per_example_mean"]) == pytest.approx(metrics["scoring"]["test"]["ms_per_example"])
        assert metrics["scoring"]["test"]["examples"] == 12
    assert int(rows["llama-in-context-k1"]["trainable_params"]) == 0  # it trains nothing
    assert 0 < int(rows["llama-lora-sft"]["trainable_params"]) < int(rows["llama-lora-sft"]["total_params"])
    assert int(rows["bert-full"]["trainable_params"]) == int(rows["bert-full"]["total_params"])
    assert rows["llama-lora-sft"]["test_problems_mean"] != "" and rows["bert-full"]["test_problems_mean"] == ""
    table = result.files["compare.md"].read_text()
    assert table.startswith("# Model families compared")
    assert sum(line.startswith(f"| {m} |") for m in members for line in table.splitlines()) == len(members)
    assert result.files["compare.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_members_file_and_bad_members(tiny_bert, topic_files, tiny_llama, tmp_path, capsys):  # noqa: F811
    cfg = text_config(tiny_bert, topic_files, tmp_path / "cmp", epochs=1)
    path = tmp_path / "members.yaml"
    path.write_text(yaml.safe_dump({"bert-full": {}, "icl": {"approach": "in_context", "task.k": 0,
                                                            "model.name_or_path": str(tiny_llama)}}))
    members = load_members(path)
    out, planned = plan_members(cfg, list(members), seeds=2, members=members)
    assert [m.run_dir.name for m in planned] == ["bert-full-seed7", "icl-seed7", "bert-full-seed8", "icl-seed8"]
    assert planned[1].config.task.type == "in_context_classification" and planned[1].config.task.k == 0
    with pytest.raises(ConfigError, match="--methods: unknown gpt"):
        plan_members(cfg, ["bert-full", "gpt"], members=members)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping of member names"):
        load_members(path)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    path.write_text(yaml.safe_dump(members))
    assert main(["compare", str(config_file), "--members", str(path), "--in-process"]) == 0
    assert "| icl | in_context_classification |" in capsys.readouterr().out


def test_a_tagger_config_plans_a_generative_ner_member(tiny_bert, ner_files, tiny_llama, tmp_path):
    from conftest import tiny_config

    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "cmp", epochs=1)
    cfg["task"] = {"type": "token_classification", "decode": "viterbi"}
    members = {"bert-full": {}, "llama-sft": {"approach": "generative", "method.name": "lora",
                                              "model.name_or_path": str(tiny_llama)}}
    _, planned = plan_members(cfg, list(members), members=members)
    sft = planned[1].config
    assert sft.task.type == "generative_ner" and sft.method.name == "lora" and sft.encoding.stride is None
    assert sft.data.train == cfg["data"]["train"]  # the same files and split as the tagger
