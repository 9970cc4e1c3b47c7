"""The ONNX Runtime inference engine: export a run's model to ONNX and predict with it.

``tuneforge export --onnx RUN OUT [--quantize int8]`` writes a folder that ``tuneforge.load`` reads
like any model folder: ``model.onnx`` (+ ``model.int8.onnx``), the tokenizer, ``config.json`` and
``tuneforge.json`` (the run's meta plus ``engine: onnx``). ``predict/eval --engine onnx RUN``
exports once into ``RUN/onnx/`` and reuses it.

The session is wrapped in :class:`OnnxModel`, which answers the calls the predictors make of a
transformers model (``model(input_ids=..., attention_mask=...).logits``, ``.config``, ``.eval()``,
``parameters()`` for the device), so windows, decoding and outputs are the torch path's own code.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..artifacts.model_folder import META_FILE
from ..artifacts.paths import atomic_dir
from ..errors import TuneforgeError
from .extras import require_extra

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


def require_onnxruntime(what: str = "the onnx engine"):
    for module in ("onnxruntime", "onnx"):
        require_extra(what, module, "onnx", error=TuneforgeError)


def write_onnx_folder(model, tokenizer, meta: dict, out: Path, source_folder: Path,
                      quantize: str | None = None) -> Path:
    """Write a loaded (merged where it folds) model as an ONNX model folder at ``out`` (atomically);
    ``quantize="int8"`` adds ONNX Runtime's dynamic int8 quantisation of the weights (``model.int8.onnx``)."""
    require_onnxruntime()
    model = model.float().eval()
    names = _input_names(model, tokenizer)
    sample = tokenizer(["tuneforge exports this", "a second, longer example sentence"], padding=True,
                       return_tensors="pt")
    args = tuple(sample[name] if name in sample else torch.zeros_like(sample["input_ids"]) for name in names)
    with atomic_dir(out) as tmp:
        _export(model, args, names, tmp / ONNX_FILE)
        if quantize == "int8":
            quantize_int8(tmp / ONNX_FILE, tmp / INT8_FILE)
        tokenizer.save_pretrained(tmp)
        config = getattr(model, "config", None) or getattr(getattr(model, "base_model", None), "config", None)
        config.save_pretrained(tmp)
        exported = dict(meta, engine="onnx", onnx={"inputs": names, "int8": quantize == "int8"},
                        exported_from=str(source_folder))
        (tmp / META_FILE).write_text(json.dumps(exported, indent=1), encoding="utf-8")
    return out


def _input_names(model, tokenizer) -> list[str]:
    """input_ids and attention_mask, plus token_type_ids where the tokenizer makes them (BERT pairs)."""
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in getattr(tokenizer, "model_input_names", []):
        names.append("token_type_ids")
    return names


def _export(model, args, names: list[str], path: Path) -> None:
    import logging
    import warnings

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    # the exporter logs one warning per torchvision operator it could register, and torchvision is not a need
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # torch's current exporter (torch.export based): the model's own forward with named inputs
            torch.onnx.export(
                (_WithTokenTypes if "token_type_ids" in names else _TextOnly)(model), args, str(path),
                input_names=names, output_names=["logits"],
                dynamic_shapes={name: {0: batch, 1: seq} for name in names}, dynamo=True, verbose=False,
                external_data=False,
            )
    finally:
        quiet.setLevel(level)


class _TextOnly(torch.nn.Module):
    """The model's logits as a function of named tensors (what the exporter traces)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class _WithTokenTypes(_TextOnly):
    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic quantisation: int8 weights per channel, activations quantised per batch."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


class OnnxModel:
    """An ONNX Runtime session that answers like a transformers model to the predictors."""

    training = False

    def __init__(self, folder: str | Path, int8: bool = False, threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoConfig

        folder = Path(folder)
        path = folder / (INT8_FILE if int8 else ONNX_FILE)
        if int8 and not path.exists():
            quantize_int8(folder / ONNX_FILE, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.config = AutoConfig.from_pretrained(folder)
        self.file = path
        self._device_probe = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def __call__(self, **inputs):
        feeds = {}
        for name in self.inputs:
            value = inputs.get(name)
            if value is None:  # token types the caller did not send: all zeros, as the model would default
                value = torch.zeros_like(inputs["input_ids"])
            feeds[name] = value.detach().cpu().numpy().astype(np.int64)
        (logits,) = self.session.run(["logits"], feeds)
        return SimpleNamespace(logits=torch.from_numpy(logits))

    def parameters(self):
        yield self._device_probe

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def to(self, *args, **kwargs):
        return self
