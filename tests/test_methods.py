"""Adaptation methods on a tiny BERT: which parameters train, what is saved, load and merge round trips.

Hand counts use the tiny BERT of conftest: hidden 32, 2 layers, FFN 64, 6 labels (the head is
32 x 6 + 6 = 198 parameters).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from tuneforge.artifacts.model_folder import save_model
from tuneforge.loading import export_merged, load_model
from tuneforge.config import config_from_dict, method_config_from_dict
from tuneforge.errors import ConfigError, TuneforgeError
from tuneforge.methods import count_parameters, get_method
from tuneforge.runtime.models import load_token_classifier

LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "B-PER", "I-PER"]
HIDDEN, FFN, LAYERS = 32, 64, 2
HEAD = HIDDEN * len(LABELS) + len(LABELS)


def linear(n_in, n_out):
    return n_in * n_out + n_out


LAYER = 3 * linear(HIDDEN, HIDDEN) + linear(HIDDEN, HIDDEN) + linear(HIDDEN, FFN) + linear(FFN, HIDDEN) + 4 * HIDDEN
# biases of one layer: q, k, v, attention output, attention LayerNorm, FFN in, FFN out, output LayerNorm
LAYER_BIASES = 3 * HIDDEN + HIDDEN + HIDDEN + FFN + HIDDEN + HIDDEN
LORA_R = 4
# r x (in + out) for q, k, v, attention output (32 -> 32), FFN in (32 -> 64), FFN out (64 -> 32)
LORA_LAYER = LORA_R * (4 * 2 * HIDDEN + 2 * (HIDDEN + FFN))
BOTTLENECK = HIDDEN // 4
ADAPTER = linear(HIDDEN, BOTTLENECK) + linear(BOTTLENECK, HIDDEN)
# peft's IA3 for BERT scales key and value outputs (32 each) and the inputs of both "output.dense"
# layers, which it treats as feed-forward (attention output: 32 in, FFN output: 64 in)
IA3_LAYER = HIDDEN + HIDDEN + HIDDEN + FFN

METHODS = {
    "freeze-head": ({"name": "freeze"}, HEAD),
    "freeze-top1": ({"name": "freeze", "train_top_layers": 1}, HEAD + LAYER),
    "bitfit": ({"name": "bitfit"}, HEAD + LAYERS * LAYER_BIASES + HIDDEN),  # + embedding LayerNorm bias
    "lora": ({"name": "lora", "r": LORA_R}, HEAD + LAYERS * LORA_LAYER),
    "lora-qv-dora": ({"name": "lora", "r": LORA_R, "target_modules": ["query", "value"], "use_dora": True},
                     # DoRA adds one magnitude vector (out features) per adapted layer
                     HEAD + LAYERS * (2 * LORA_R * 2 * HIDDEN + 2 * HIDDEN)),
    "ia3": ({"name": "ia3"}, HEAD + LAYERS * IA3_LAYER),
    "prompt": ({"name": "prompt", "num_virtual_tokens": 4}, HEAD + 4 * HIDDEN),
    "p_tuning": ({"name": "prompt", "kind": "p_tuning", "num_virtual_tokens": 4, "encoder_hidden_size": 8},
                 # an MLP prompt encoder: embedding 4 x 32, then 32 -> 8 -> 8 -> 32
                 HEAD + 4 * HIDDEN + linear(HIDDEN, 8) + linear(8, 8) + linear(8, HIDDEN)),
    "adapter-pfeiffer": ({"name": "adapter", "reduction_factor": 4}, HEAD + LAYERS * ADAPTER),
    "adapter-houlsby": ({"name": "adapter", "style": "houlsby", "reduction_factor": 4}, HEAD + 2 * LAYERS * ADAPTER),
}
MERGEABLE = ["freeze-top1", "bitfit", "lora", "ia3"]
# peft saves P-tuning's prompt encoder as the prompts it computes (4 x 32), not as the MLP
SAVED = {"p_tuning": HEAD + 4 * HIDDEN}


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    return tiny_tokenizer(["john smith lives in new york", "mary visited paris"], return_tensors="pt", padding=True)


def prepared(tiny_bert, method_block):
    cfg = method_config_from_dict(method_block)
    torch.manual_seed(0)
    model = load_token_classifier(str(tiny_bert), LABELS, announce_new_head=False)
    return get_method(cfg.name).prepare(model, cfg), cfg


def pretend_trained(model) -> None:
    """Move every trainable tensor away from its initial value (LoRA's B and adapters' up start at 0)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def logits(model, batch):
    model.eval()
    with torch.inference_mode():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def save_run(folder, model, tokenizer, cfg, tiny_bert):
    meta = {"task": "token_classification", "labels": LABELS, "max_length": 32, "stride": 8, "decode": "viterbi",
            "base_model": {"name_or_path": str(tiny_bert)}, "method_config": cfg.model_dump(mode="json")}
    save_model(folder, model, tokenizer, get_method(cfg.name), meta)


def saved_tensors(folder) -> dict[str, int]:
    sizes = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                sizes[key] = f.get_slice(key).get_shape()
    return {k: int(torch.tensor(v).prod()) for k, v in sizes.items()}


@pytest.mark.parametrize("variant", list(METHODS))
def test_exactly_the_intended_parameters_train(tiny_bert, variant):
    block, expected = METHODS[variant]
    model, _ = prepared(tiny_bert, block)
    trainable, total = count_parameters(model)
    assert trainable == expected
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("classifier" in n for n in names), "the head always trains"
    if block["name"] == "bitfit":
        assert all(n.endswith("bias") or n.startswith("classifier.") for n in names)
    full_model = load_token_classifier(str(tiny_bert), LABELS, announce_new_head=False)
    assert count_parameters(get_method("full").prepare(full_model, None))[0] == sum(
        p.numel() for p in full_model.parameters())


@pytest.mark.parametrize("variant", list(METHODS))
def test_save_holds_only_trained_tensors_and_load_is_bit_identical(tiny_bert, tiny_tokenizer, batch, tmp_path, variant):
    block, expected = METHODS[variant]
    model, cfg = prepared(tiny_bert, block)
    pretend_trained(model)
    before = logits(model, batch)
    save_run(tmp_path / "model", model, tiny_tokenizer, cfg, tiny_bert)
    assert sum(saved_tensors(tmp_path / "model").values()) == SAVED.get(variant, expected)
    assert not list((tmp_path / "model").glob("*.bin"))
    loaded, _, meta = load_model(tmp_path, device="cpu")
    assert meta["method"] == cfg.name and meta["base_model"]["name_or_path"] == str(tiny_bert)
    after = logits(loaded, batch)
    assert after.shape == (2, batch["input_ids"].shape[1], len(LABELS))
    assert torch.equal(before, after)


@pytest.mark.parametrize("variant", MERGEABLE)
def test_merged_export_matches_and_loads_with_plain_transformers(tiny_bert, tiny_tokenizer, batch, tmp_path, variant):
    from transformers import AutoModelForTokenClassification

    block, _ = METHODS[variant]
    model, cfg = prepared(tiny_bert, block)
    pretend_trained(model)
    save_run(tmp_path / "run" / "model", model, tiny_tokenizer, cfg, tiny_bert)
    unmerged = logits(load_model(tmp_path / "run", device="cpu")[0], batch)
    export_merged(tmp_path / "run", tmp_path / "merged")
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    plain = AutoModelForTokenClassification.from_pretrained(tmp_path / "merged")
    assert type(plain).__name__ == "BertForTokenClassification"
    assert torch.allclose(logits(plain, batch), unmerged, atol=1e-5, rtol=0)
    meta = json.loads((tmp_path / "merged" / "tuneforge.json").read_text())
    assert meta["method"] == "full" and meta["merged_from"] == cfg.name


@pytest.mark.parametrize("variant", ["adapter-houlsby", "prompt"])
def test_unmergeable_methods_say_why(tiny_bert, tiny_tokenizer, tmp_path, variant):
    block, _ = METHODS[variant]
    model, cfg = prepared(tiny_bert, block)
    save_run(tmp_path / "run" / "model", model, tiny_tokenizer, cfg, tiny_bert)
    with pytest.raises(TuneforgeError, match="cannot be folded"):
        export_merged(tmp_path / "run", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_prefix_tuning_on_an_encoder_is_a_config_error(tiny_bert):
    with pytest.raises(ConfigError, match="method.kind"):
        prepared(tiny_bert, {"name": "prompt", "kind": "prefix", "num_virtual_tokens": 4})


def test_method_defaults_fill_unset_training_keys_only():
    base = {"model": {"name_or_path": "m"}, "data": {"train": "t"}}
    lora = config_from_dict(dict(base, method={"name": "lora"}))
    assert (lora.training.learning_rate, lora.training.epochs) == (
        get_method("lora").DEFAULT_TRAINING["learning_rate"], get_method("lora").DEFAULT_TRAINING["epochs"])
    mine = config_from_dict(dict(base, method={"name": "lora"}, training={"learning_rate": 0.5}))
    assert mine.training.learning_rate == 0.5 and mine.training.epochs == get_method("lora").DEFAULT_TRAINING["epochs"]
    full = config_from_dict(base)
    assert (full.method.name, full.training.learning_rate, full.training.epochs) == ("full", 5e-5, 5)
    # the saved config holds resolved values and reads back equal
    assert config_from_dict(lora.model_dump(mode="json")) == lora


@pytest.mark.parametrize("block, message", [
    ({"name": "lora", "rank": 8}, "unknown key 'method.rank'"),
    ({"name": "lora", "r": 0}, "bad value for 'method.r'"),
    ({"name": "adapters"}, "bad value for 'method.name'"),
    ({"name": "adapter", "style": "parallel"}, "bad value for 'method.style'"),
])
def test_bad_method_settings_name_the_key(block, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"model": {"name_or_path": "m"}, "data": {"train": "t"}, "method": block})


@pytest.mark.parametrize("variant", ["freeze-top1", "bitfit", "lora", "ia3", "prompt", "adapter-houlsby"])
def test_methods_compose_with_sequence_classification(tiny_bert, batch, variant):
    from transformers import AutoModelForSequenceClassification

    block, _ = METHODS[variant]
    cfg = method_config_from_dict(block)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    n_head = sum(p.numel() for p in model.classifier.parameters())
    model = get_method(cfg.name).prepare(model, cfg)
    assert n_head < count_parameters(model)[0] < count_parameters(model)[1]
    assert any("classifier" in n for n, p in model.named_parameters() if p.requires_grad)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.requires_grad
