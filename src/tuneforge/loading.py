"""A run folder read back: the saved model onto its base, as its task's predictor, merged or as ONNX.

The one place that knows both the model folder's files (:mod:`tuneforge.artifacts.model_folder`) and
the registries that give them meaning (the task that built the model, the method that saved it).
``tuneforge.load``, the driver's final scoring, the server's pool and the workflows all load here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .artifacts.model_folder import (
    META_FILE, find_model_folder, read_folder_meta, require_safetensors, check_weight_files, save_model,
)
from .artifacts.paths import resolve_path
from .config import method_config_from_dict
from .errors import TuneforgeError
from .methods import get_method
from .runtime.models import check_max_length, load_tokenizer, quantize_for_inference
from .runtime.onnx import ONNX_DIR, ONNX_FILE, OnnxModel, require_onnxruntime, write_onnx_folder
from .tasks import REGISTRY, get_task

ENGINES = ("torch", "onnx")


def _load_onto_base(folder: Path, meta: dict, method, task, trust_remote_code: bool = False):
    base = meta.get("base_model")
    if not base:
        raise TuneforgeError(f"{folder / META_FILE}: no base_model recorded; this {method.name} run cannot be loaded")
    # base["trust_remote_code"] records how the run was trained; it is never obeyed: a run folder
    # from elsewhere must not be able to switch on running its code. Only the caller can.
    base_path = Path(resolve_path(base["name_or_path"]))
    if base_path.is_dir() and not base.get("gguf_file"):  # a GGUF file holds tensors, never pickles
        require_safetensors(base_path, "the base model")
    model = task.load_pretrained(
        base["name_or_path"], meta["labels"], meta, revision=base.get("revision"),
        trust_remote_code=trust_remote_code, announce_new_head=False,
    )
    method_cfg = method_config_from_dict(meta.get("method_config") or {"name": method.name}, str(folder / META_FILE))
    return method.load(model, folder, method_cfg)


def load_model(run: str | Path, device: str | None = None, trust_remote_code: bool = False):
    """(model in eval mode on ``device``, tokenizer, meta) from a run folder.

    ``trust_remote_code`` is for a base model whose code lives on the hub; it is off unless the
    caller turns it on, whatever the run folder says.
    """
    from transformers.utils import logging as hf_logging

    # a progress bar for reading a local folder is noise on stderr, where errors go
    hf_logging.disable_progress_bar()
    try:
        return _load_model(run, device, trust_remote_code)
    finally:
        hf_logging.enable_progress_bar()


def _load_model(run: str | Path, device: str | None, trust_remote_code: bool):
    folder = find_model_folder(run)
    meta = read_folder_meta(folder)
    check_weight_files(folder)
    task = _task_of(folder, meta)
    method = get_method(meta.get("method", "full"))
    require_safetensors(folder, "the run's model folder")
    tokenizer = task.load_saved_tokenizer(folder, method.stores_full_model, trust_remote_code)
    if method.stores_full_model:
        model = task.load_pretrained(str(folder), meta=meta, trust_remote_code=trust_remote_code)
    else:
        model = _load_onto_base(folder, meta, method, task, trust_remote_code)
    if tokenizer is not None and isinstance(meta.get("max_length"), int):
        check_max_length(model.config, tokenizer, meta["max_length"], where=f"{folder / META_FILE}: max_length")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(target).eval()
    return model, tokenizer, meta


def continue_from(model, run: str | Path, n_old_labels: int) -> None:
    """Fill ``model`` (built and prepared as the run being started, its labels those of ``run`` followed
    by new ones) with every tensor ``run`` trained and saved. Head tensors sized for the old labels fill
    the first ``n_old_labels`` rows, bit for bit; the new rows keep their fresh initialisation."""
    previous, _, _ = load_model(run, device="cpu")
    old, new = previous.state_dict(), model.state_dict()
    if set(old) != set(new):
        odd = sorted(set(old) ^ set(new))
        raise TuneforgeError(f"model.init_from: {run} holds a different model ({odd[0]} is in one but not the "
                             "other); continue with the same model and method settings")
    with torch.no_grad():
        for name, target in new.items():
            source = old[name]
            if source.shape == target.shape:
                target.copy_(source)
            elif source.shape[1:] == target.shape[1:] and source.shape[0] == n_old_labels < target.shape[0]:
                target[:n_old_labels].copy_(source)
            else:
                raise TuneforgeError(f"model.init_from: {run}: {name} has shape {tuple(source.shape)}, this run's "
                                     f"{tuple(target.shape)}; continue with the same model and method settings")


def _task_of(folder: Path, meta: dict):
    name = meta.get("task", "token_classification")
    if name not in REGISTRY:
        raise TuneforgeError(f"{folder / META_FILE}: unknown task {name!r}; this tuneforge knows {', '.join(REGISTRY)}")
    meta["task"] = name
    return REGISTRY[name]


def load_predictor(run: str | Path, device: str | None = None, precision: str = "auto", engine: str = "torch"):
    """The trained model of a run as its task's predictor (``tuneforge.load``).

    ``precision``: ``auto`` (the measured best for the hardware: ``training.loop.AUTO_PRECISION``),
    ``fp32``, ``bf16`` (autocast) or ``int8`` (dynamic int8 linear layers, CPU only).
    ``engine``: ``torch``, or ``onnx`` (ONNX Runtime on the CPU, fp32 or int8; the model is exported
    into ``RUN/onnx/`` on first use). A folder written by ``export --onnx`` always runs on ONNX Runtime.
    ``predictor.runtime`` says what runs: ``{"engine": ..., "precision": ...}``.
    """
    if engine not in ENGINES:
        raise TuneforgeError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    base = base_decoder_source(run)
    if base is not None:
        if engine != "torch":
            raise TuneforgeError(f"--engine {engine}: {run} is a base decoder model, served by torch")
        return _base_decoder_predictor(*base, device, precision)
    folder = find_model_folder(run)
    meta = read_folder_meta(folder)
    if engine == "onnx" or meta.get("engine") == "onnx":
        from transformers import AutoTokenizer

        if precision not in ("auto", "fp32", "int8"):
            raise TuneforgeError(f"--precision {precision}: the onnx engine runs fp32 or int8")
        folder = onnx_folder_for(run)
        meta = read_folder_meta(folder)
        model = OnnxModel(folder, int8=precision == "int8")
        predictor = get_task(_task_of(folder, meta).name).Predictor(model, AutoTokenizer.from_pretrained(folder), meta,
                                                                    "fp32")
        predictor.runtime = {"engine": "onnx", "precision": "int8" if precision == "int8" else "fp32"}
        return predictor
    model, tokenizer, meta = load_model(run, device)
    if precision == "int8":
        model = quantize_for_inference(model)
    predictor = get_task(meta["task"]).Predictor(model, tokenizer, meta, "fp32" if precision == "int8" else precision)
    predictor.load_run_model = lambda other: load_model(other, str(next(model.parameters()).device))[0]
    predictor.prepare_loaded()
    predictor.runtime = {"engine": "torch", "precision": "int8" if precision == "int8" else predictor.precision}
    return predictor


def base_decoder_source(run: str | Path) -> tuple[str, str | None] | None:
    """(folder, GGUF file name or None) when ``run`` is not a run folder but a decoder model as published:
    a ``.gguf`` file, a folder holding one GGUF file and no ``config.json``, or a Hugging Face folder
    whose ``config.json`` names a ``...ForCausalLM`` architecture. None for anything else."""
    text = str(run)
    where = Path(resolve_path(text))
    if where.is_file() and where.suffix == ".gguf":
        return str(where.parent), where.name
    if not where.is_dir() or (where / META_FILE).exists() or (where / "model" / META_FILE).exists():
        return None
    config = where / "config.json"
    if config.is_file():
        try:
            architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        except (ValueError, OSError, AttributeError):
            return None
        return (str(where), None) if any(str(a).endswith("ForCausalLM") for a in architectures) else None
    ggufs = sorted(where.glob("*.gguf"))
    return (str(where), ggufs[0].name) if len(ggufs) == 1 else None


def _base_decoder_predictor(folder: str, gguf_file: str | None, device: str | None, precision: str):
    """A published decoder as the sft predictor (its tokenizer's chat template renders the prompts) or,
    without a chat template, the causal_lm predictor (raw-text continuation); nothing trained."""
    if gguf_file is None:
        require_safetensors(Path(folder), "the model")
    tokenizer = load_tokenizer(folder, None, False, gguf_file)
    chat = bool(getattr(tokenizer, "chat_template", None))
    task = get_task("sft" if chat else "causal_lm")
    meta = {"task": task.name, "method": "full", "labels": [], "chat": chat,
            "base_model": {"name_or_path": folder, "gguf_file": gguf_file}}
    model = task.load_pretrained(folder, meta=meta, gguf_file=gguf_file)
    model.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))).eval()
    if precision == "int8":
        model = quantize_for_inference(model)
    predictor = task.Predictor(model, tokenizer, meta, "fp32" if precision == "int8" else precision)
    predictor.prepare_loaded()
    predictor.runtime = {"engine": "torch", "precision": "int8" if precision == "int8" else predictor.precision}
    return predictor


def export_merged(run: str | Path, out: str | Path) -> Path:
    """Fold the run's method into the base weights; write a plain Hugging Face model folder to ``out``.

    The result needs neither tuneforge nor peft (``AutoModelFor...from_pretrained(out)``) and is
    also a tuneforge model folder (method ``full``).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise TuneforgeError(f"{out}: output folder is not empty; choose a new folder")
    model, tokenizer, meta = load_model(run, device="cpu")
    merged = get_method(meta.get("method", "full")).merge(model)
    for param in merged.parameters():
        param.requires_grad_(True)  # a plain model, as from_pretrained would give it
    merged_meta = {k: v for k, v in meta.items() if k not in ("method", "method_config")}
    merged_meta["merged_from"] = meta.get("method", "full")
    save_model(out, merged, tokenizer, get_method("full"), merged_meta)
    return out


def export_onnx(run: str | Path, out: str | Path, quantize: str | None = None) -> Path:
    """Write ``run``'s model as an ONNX model folder at ``out`` (atomically); ``quantize="int8"`` adds
    ONNX Runtime's dynamic int8 quantisation of the weights (``model.int8.onnx``)."""
    require_onnxruntime()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise TuneforgeError(f"{out}: output folder is not empty; choose a new folder")
    model, tokenizer, meta = load_model(run, device="cpu")
    method = get_method(meta.get("method", "full"))
    try:
        model = method.merge(model)  # a plain transformers model exports most cleanly
    except TuneforgeError:
        pass  # adapters / prompts do not fold; their wrapped model is exported as it runs
    return write_onnx_folder(model, tokenizer, meta, out, find_model_folder(run), quantize)


def onnx_folder_for(run: str | Path, quantize: str | None = None) -> Path:
    """``RUN/onnx/``, exported on first use (and reused while the model it came from is unchanged)."""
    folder = find_model_folder(run)
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    if meta.get("engine") == "onnx":
        return folder
    target = folder.parent / ONNX_DIR if folder.name == "model" else folder / ONNX_DIR
    source_mtime = max(p.stat().st_mtime for p in folder.iterdir())
    if (target / ONNX_FILE).exists() and (target / ONNX_FILE).stat().st_mtime >= source_mtime:
        return target
    if target.exists():
        shutil.rmtree(target)
    return export_onnx(run, target, quantize)
