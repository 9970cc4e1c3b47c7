"""The saved model folder (``RUN/model``): the one place that writes and reads it.

Layout: whatever the method saves (a full Hugging Face model in safetensors for ``full``), the
tokenizer, and ``tuneforge.json`` (task, labels, method, window settings). Written to a temporary
folder and renamed, so a reader never sees half a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import TuneforgeError
from .models import load_sequence_classifier, load_token_classifier, load_tokenizer
from .paths import atomic_dir

MODEL_DIR = "model"
META_FILE = "tuneforge.json"
# the saved meta's task -> the loader of the plain transformers class that reads the folder
MODEL_LOADERS = {"token_classification": load_token_classifier, "text_classification": load_sequence_classifier}


def save_model(folder: Path, model, tokenizer, method, meta: dict) -> None:
    """Write ``model`` (as ``method`` saves it), its tokenizer and ``meta`` into ``folder`` atomically."""
    from transformers.utils import logging as hf_logging

    # transformers shows a progress bar for writing even a one-file model; it only adds noise here
    hf_logging.disable_progress_bar()
    try:
        with atomic_dir(folder) as tmp:
            method.save(model, tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / META_FILE).write_text(json.dumps(dict(meta, method=method.name), indent=1), encoding="utf-8")
    finally:
        hf_logging.enable_progress_bar()


def find_model_folder(run: str | Path) -> Path:
    """``run`` may be a run folder or its ``model/`` folder."""
    run = Path(run)
    for candidate in (run / MODEL_DIR, run):
        if (candidate / META_FILE).exists():
            return candidate
    raise TuneforgeError(f"{run}: no trained model here (expected {run / MODEL_DIR / META_FILE}); give a run folder")


def load_model(run: str | Path, device: str | None = None):
    """(model in eval mode on ``device``, tokenizer, meta) from a run folder."""
    folder = find_model_folder(run)
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(str(folder))
    task = meta.get("task", "token_classification")
    if task not in MODEL_LOADERS:
        raise TuneforgeError(f"{folder / META_FILE}: unknown task {task!r}; this tuneforge knows {', '.join(MODEL_LOADERS)}")
    model = MODEL_LOADERS[task](str(folder))
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(target).eval()
    return model, tokenizer, meta
