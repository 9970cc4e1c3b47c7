"""Bottleneck adapters, written here in a few lines.

``peft`` has no bottleneck adapters, and AdapterHub's ``adapters`` package pins an older
``transformers`` than ours, so this module inserts them itself:

- **Houlsby** (Houlsby et al., 2019): an adapter after the attention output projection and one
  after the FFN output projection of every layer;
- **Pfeiffer** (Pfeiffer et al., 2021): after the FFN output projection only.

Each adapter is ``h + up(act(down(h)))`` with ``down: hidden -> hidden / reduction_factor``. It sits
between a sublayer's output projection and that sublayer's residual + LayerNorm, as in both papers.
``up`` starts at zero, so the adapted model starts exactly as the pre-trained one. The body stays
frozen; the adapters and the head train and are the only tensors saved. An adapter is non-linear,
so it cannot be folded into the base weights (no ``export --merge``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from ..errors import TuneforgeError
from ..schema import StrictModel
from .base import SubsetOfBaseMethod, freeze_all_but_head, transformer_layers

# Per architecture, the output projections inside one transformer layer: (attention, FFN).
OUTPUT_PROJECTIONS = {
    "bert": ("attention.output.dense", "output.dense"),
    "roberta": ("attention.output.dense", "output.dense"),
    "xlm-roberta": ("attention.output.dense", "output.dense"),
    "camembert": ("attention.output.dense", "output.dense"),
    "electra": ("attention.output.dense", "output.dense"),
    "deberta": ("attention.output.dense", "output.dense"),
    "deberta-v2": ("attention.output.dense", "output.dense"),
    "distilbert": ("attention.out_lin", "ffn.lin2"),
}


class BottleneckAdapter(nn.Module):
    def __init__(self, hidden: int, bottleneck: int, activation: str):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # identity at the start: training begins from the pre-trained model
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden):
        return hidden + self.up(self.act(self.down(hidden)))


class AdaptedProjection(nn.Module):
    """A sublayer's output projection followed by its adapter."""

    def __init__(self, projection: nn.Linear, adapter: BottleneckAdapter):
        super().__init__()
        self.projection = projection
        self.adapter = adapter

    def forward(self, hidden):
        return self.adapter(self.projection(hidden))


class AdapterMethodConfig(StrictModel):
    """Bottleneck adapters: houlsby (after attention and FFN) or pfeiffer (after FFN only)."""

    name: Literal["adapter"]
    style: Literal["houlsby", "pfeiffer"] = "pfeiffer"
    reduction_factor: int = Field(default=16, ge=1, description="hidden size / bottleneck size")
    activation: Literal["relu", "gelu"] = "relu"


class BottleneckAdapters(SubsetOfBaseMethod):
    name = "adapter"
    Config = AdapterMethodConfig
    # Chosen on dev F1: MiniLM, WNUT-16 train slice of 600 tweets, full dev split, 10 epochs, seed 42
    # (README "Adaptation methods", "How the defaults were chosen"); dev F1 per learning rate:
    # 3e-4 0.186, 1e-3 0.339, 3e-3 0.398, 1e-2 0.442, 3e-2 0.427.
    DEFAULT_TRAINING = {"learning_rate": 1e-2, "epochs": 10}

    def prepare(self, model, cfg):
        model_type = model.config.model_type
        if model_type not in OUTPUT_PROJECTIONS:
            raise TuneforgeError(
                f"method.name=adapter: no adapter placement known for model type {model_type!r} "
                f"(known: {', '.join(sorted(OUTPUT_PROJECTIONS))}); use lora or full"
            )
        freeze_all_but_head(model)
        attention_out, ffn_out = OUTPUT_PROJECTIONS[model_type]
        places = [ffn_out] if cfg.style == "pfeiffer" else [attention_out, ffn_out]
        for layer in transformer_layers(model):
            for place in places:
                parent_name, _, attr = place.rpartition(".")
                parent = layer.get_submodule(parent_name)
                projection = getattr(parent, attr)
                if isinstance(projection, AdaptedProjection):
                    continue
                hidden = projection.out_features
                adapter = BottleneckAdapter(hidden, max(1, hidden // cfg.reduction_factor), cfg.activation)
                adapter.to(device=projection.weight.device, dtype=projection.weight.dtype)
                setattr(parent, attr, AdaptedProjection(projection, adapter))
        return model

    def merge(self, model):
        raise TuneforgeError(
            "export --merge: adapters are non-linear bottlenecks and cannot be folded into the base "
            "weights; load this run with tuneforge.load instead"
        )
