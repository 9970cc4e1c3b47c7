"""The method interface: a method defined here, with its config block beside it, is one registry line
(``register_method``); the run config then validates its block, trains it through ``tuneforge.train``
and loads it back through ``tuneforge.load`` — no edit to the config, the driver or the loop."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from pydantic import Field

import tuneforge
from tuneforge.config import config_from_dict
from tuneforge.errors import ConfigError
from tuneforge.methods import REGISTRY, register_method
from tuneforge.methods.base import SubsetOfBaseMethod, freeze_all_but_head
from tuneforge.schema import StrictModel

from conftest import tiny_config


class LayerNormsConfig(StrictModel):
    """The head and every LayerNorm train (a test method)."""

    name: Literal["layer_norms"]
    include_embeddings: bool = Field(default=False, description="also the embeddings' LayerNorm")


class LayerNorms(SubsetOfBaseMethod):
    name = "layer_norms"
    Config = LayerNormsConfig
    DEFAULT_TRAINING = {"learning_rate": 2e-2}

    def prepare(self, model, cfg):
        freeze_all_but_head(model)
        for module_name, module in model.named_modules():
            if isinstance(module, torch.nn.LayerNorm) and (cfg.include_embeddings or "embeddings" not in module_name):
                for param in module.parameters():
                    param.requires_grad_(True)
        return model


@pytest.fixture()
def registered_method():
    register_method(LayerNorms())  # the one registry line a new method needs
    yield LayerNorms
    REGISTRY.pop(LayerNorms.name)


def test_a_method_defined_in_the_test_validates_trains_and_loads(registered_method, tiny_bert, ner_files, tmp_path):
    base = {"model": {"name_or_path": str(tiny_bert)}, "data": {"train": "x.conll"}, "method": {"name": "layer_norms"}}
    cfg = config_from_dict(base)
    assert cfg.method == LayerNormsConfig(name="layer_norms") and cfg.training.learning_rate == 2e-2
    with pytest.raises(ConfigError, match="unknown key 'method.rank'"):
        config_from_dict(base, overrides=["method.rank=4"])

    run = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=3)
    run["method"] = {"name": "layer_norms", "include_embeddings": True}
    result = tuneforge.train(run)

    model = tuneforge.load(result.run_dir)
    trained = {n: p for n, p in model.model.named_parameters() if "LayerNorm" in n or n.startswith("classifier")}
    assert result.metrics["method"] == "layer_norms"
    assert result.metrics["parameters"]["trainable"] == sum(p.numel() for p in trained.values())
    saved = (result.run_dir / "model" / "tuneforge_method.safetensors")
    assert saved.exists() and not (result.run_dir / "model" / "model.safetensors").exists()  # only what trained
    again = tuneforge.load(result.run_dir)
    words = ["john", "smith", "lives", "in", "new", "york"]
    assert model.predict([words]) == again.predict([words])


def test_an_unregistered_method_name_is_refused_with_the_registered_ones(tiny_bert):
    with pytest.raises(ConfigError, match="bad value for 'method.name': choose one of full, freeze, lora"):
        config_from_dict({"model": {"name_or_path": str(tiny_bert)}, "data": {"train": "x.conll"},
                          "method": {"name": "layer_norms"}})
