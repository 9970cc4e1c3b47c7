"""The saved model folder (``RUN/model``): the one place that writes and reads it.

Layout: whatever the method saves, the tokenizer, and ``tuneforge.json`` (task, labels, method and
its settings, the base model, window settings). ``full`` saves a complete Hugging Face model; every
other method saves only what it changed (PEFT format for peft methods, ``tuneforge_method.safetensors``
for ours) and is loaded onto the base model named in ``tuneforge.json``. Written to a temporary
folder and renamed, so a reader never sees half a model.

This module knows the folder's files; reading a model back as its task's predictor is
:mod:`tuneforge.loading` (it needs the task and method registries, which sit above this layer).
"""

from __future__ import annotations

import json
from pathlib import Path


from ..errors import TuneforgeError
from .paths import PACKAGE_SCHEME, atomic_dir

MODEL_DIR = "model"
META_FILE = "tuneforge.json"


def portable_base_path(name_or_path: str) -> str:
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
        base["name_or_path"] = portable_base_path(base["name_or_path"])
        meta["base_model"] = base
    # transformers shows a progress bar for writing even a one-file model; it only adds noise here
    hf_logging.disable_progress_bar()
    try:
        with atomic_dir(folder) as tmp:
            method.save(model, tmp, state_dict)
            if tokenizer is not None:  # None: a task whose model reads no text (Task.load_tokenizer)
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


def read_folder_meta(folder: Path) -> dict:
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


def read_meta(run: str | Path) -> dict:
    """A run's ``tuneforge.json`` (task, labels, method, base model); a damaged one is a one-line error."""
    return read_folder_meta(find_model_folder(run))


def weights_size_bytes(run: str | Path) -> int:
    """Bytes of saved weights in a run's model folder (what a deployment has to ship besides the base)."""
    folder = find_model_folder(run)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))
