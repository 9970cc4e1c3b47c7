"""The saved model folder (``RUN/model``): the one place that writes and reads it.

Layout: whatever the method saves, the tokenizer, and ``tuneforge.json`` (task, labels, method and
its settings, the base model, window settings). ``full`` saves a complete Hugging Face model; every
other method saves only what it changed (PEFT format for peft methods, ``tuneforge_method.safetensors``
for ours) and is loaded onto the base model named in ``tuneforge.json``. Written to a temporary
folder and renamed, so a reader never sees half a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import method_config_from_dict
from .errors import TuneforgeError
from .methods import get_method
from .models import check_max_length, load_tokenizer
from .paths import PACKAGE_SCHEME, atomic_dir

MODEL_DIR = "model"
META_FILE = "tuneforge.json"


def _portable_base_path(name_or_path: str) -> str:
    """A local relative path becomes absolute, so the run loads from any working directory."""
    if name_or_path.startswith(PACKAGE_SCHEME) or not Path(name_or_path).exists():
        return name_or_path  # a packaged model or a hub name
    return str(Path(name_or_path).resolve())


def save_model(folder: Path, model, tokenizer, method, meta: dict, state_dict: dict | None = None) -> None:
    """Write ``model`` (as ``method`` saves it), its tokenizer and ``meta`` into ``folder`` atomically.

    ``meta["base_model"]`` (the model config section) is what non-full methods are loaded onto.
    ``state_dict``: the weights to write when ``model``'s own are split over processes (gathered).
    """
    from transformers.utils import logging as hf_logging

    meta = dict(meta, method=method.name)
    if "base_model" in meta:
        base = dict(meta["base_model"])
        base["name_or_path"] = _portable_base_path(base["name_or_path"])
        meta["base_model"] = base
    # transformers shows a progress bar for writing even a one-file model; it only adds noise here
    hf_logging.disable_progress_bar()
    try:
        with atomic_dir(folder) as tmp:
            method.save(model, tmp, state_dict)
            tokenizer.save_pretrained(tmp)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    finally:
        hf_logging.enable_progress_bar()


def find_model_folder(run: str | Path) -> Path:
    """``run`` may be a run folder or its ``model/`` folder."""
    run = Path(run)
    for candidate in (run / MODEL_DIR, run):
        if (candidate / META_FILE).exists():
            return candidate
    raise TuneforgeError(f"{run}: no trained model here (expected {run / MODEL_DIR / META_FILE}); give a run folder")


PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def require_safetensors(folder: Path, what: str) -> None:
    """Weights are read from safetensors files only: a folder without one is refused (loading would
    fall back to unpickling ``pytorch_model.bin``, which can run code), whatever else it holds."""
    if any(Path(folder).glob("*.safetensors")):
        return
    pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in Path(folder).glob(pattern))
    found = f"only pickle-format weights ({', '.join(pickled[:3])})" if pickled else "no weights"
    raise TuneforgeError(f"{folder}: {what} has {found}; tuneforge loads safetensors files only — "
                         "re-save it with save_pretrained(..., safe_serialization=True)")


def _load_onto_base(folder: Path, meta: dict, method, task, trust_remote_code: bool = False):
    base = meta.get("base_model")
    if not base:
        raise TuneforgeError(f"{folder / META_FILE}: no base_model recorded; this {method.name} run cannot be loaded")
    # base["trust_remote_code"] records how the run was trained; it is never obeyed: a run folder
    # from elsewhere must not be able to switch on running its code. Only the caller can.
    from .paths import resolve_path

    base_path = Path(resolve_path(base["name_or_path"]))
    if base_path.is_dir():
        require_safetensors(base_path, "the base model")
    model = task.load_pretrained(
        base["name_or_path"], meta["labels"], meta, revision=base.get("revision"),
        trust_remote_code=trust_remote_code, announce_new_head=False,
    )
    method_cfg = method_config_from_dict(meta.get("method_config") or {"name": method.name}, str(folder / META_FILE))
    return method.load(model, folder, method_cfg)


def _read_meta(folder: Path) -> dict:
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TuneforgeError(f"{path}: cannot be read ({exc}); restore the run folder or train again") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), list):
        raise TuneforgeError(f"{path}: not a tuneforge model description (no labels); restore the run folder or train again")
    return meta


def check_weight_files(folder: Path) -> None:
    """Every safetensors file in ``folder`` has a whole, readable header; the bad one is named.

    A damaged or replaced file (a pickle renamed to .safetensors, a cut-off download) would
    otherwise surface as a deserialisation traceback from deep inside transformers or peft.
    """
    from safetensors import SafetensorError, safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as exc:
            raise TuneforgeError(f"{path}: damaged weights file ({exc}); restore the run folder or train again") from None


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
    meta = _read_meta(folder)
    check_weight_files(folder)
    task = _task_of(folder, meta)
    method = get_method(meta.get("method", "full"))
    require_safetensors(folder, "the run's model folder")
    if method.stores_full_model:
        tokenizer = load_tokenizer(str(folder), trust_remote_code=trust_remote_code)
        model = task.load_pretrained(str(folder), meta=meta, trust_remote_code=trust_remote_code)
    else:
        from transformers import AutoTokenizer

        # No config.json here (only the method's weights); the saved tokenizer carries its own
        # settings (pad token, add_prefix_space), so it loads as it was saved.
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        model = _load_onto_base(folder, meta, method, task, trust_remote_code)
    if isinstance(meta.get("max_length"), int):
        check_max_length(model.config, tokenizer, meta["max_length"], where=f"{folder / META_FILE}: max_length")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(target).eval()
    return model, tokenizer, meta


def read_meta(run: str | Path) -> dict:
    """A run's ``tuneforge.json`` (task, labels, method, base model); a damaged one is a one-line error."""
    return _read_meta(find_model_folder(run))


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
    from .tasks import REGISTRY

    name = meta.get("task", "token_classification")
    if name not in REGISTRY:
        raise TuneforgeError(f"{folder / META_FILE}: unknown task {name!r}; this tuneforge knows {', '.join(REGISTRY)}")
    meta["task"] = name
    return REGISTRY[name]


ENGINES = ("torch", "onnx")


def load_predictor(run: str | Path, device: str | None = None, precision: str = "auto", engine: str = "torch"):
    """The trained model of a run as its task's predictor (``tuneforge.load``).

    ``precision``: ``auto`` (the measured best for the hardware: ``training.loop.AUTO_PRECISION``),
    ``fp32``, ``bf16`` (autocast) or ``int8`` (dynamic int8 linear layers, CPU only).
    ``engine``: ``torch``, or ``onnx`` (ONNX Runtime on the CPU, fp32 or int8; the model is exported
    into ``RUN/onnx/`` on first use). A folder written by ``export --onnx`` always runs on ONNX Runtime.
    ``predictor.runtime`` says what runs: ``{"engine": ..., "precision": ...}``.
    """
    from .tasks import get_task

    if engine not in ENGINES:
        raise TuneforgeError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    folder = find_model_folder(run)
    meta = _read_meta(folder)
    if engine == "onnx" or meta.get("engine") == "onnx":
        from transformers import AutoTokenizer

        from .onnx_engine import OnnxModel, onnx_folder_for

        if precision not in ("auto", "fp32", "int8"):
            raise TuneforgeError(f"--precision {precision}: the onnx engine runs fp32 or int8")
        folder = onnx_folder_for(run)
        meta = _read_meta(folder)
        model = OnnxModel(folder, int8=precision == "int8")
        predictor = get_task(_task_of(folder, meta).name).Predictor(model, AutoTokenizer.from_pretrained(folder), meta,
                                                                    "fp32")
        predictor.runtime = {"engine": "onnx", "precision": "int8" if precision == "int8" else "fp32"}
        return predictor
    from .models import quantize_for_inference

    model, tokenizer, meta = load_model(run, device)
    if precision == "int8":
        model = quantize_for_inference(model)
    predictor = get_task(meta["task"]).Predictor(model, tokenizer, meta, "fp32" if precision == "int8" else precision)
    predictor.runtime = {"engine": "torch", "precision": "int8" if precision == "int8" else predictor.precision}
    return predictor


def weights_size_bytes(run: str | Path) -> int:
    """Bytes of saved weights in a run's model folder (what a deployment has to ship besides the base)."""
    folder = find_model_folder(run)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


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
