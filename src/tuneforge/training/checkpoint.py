"""Resumable training state, written atomically.

A checkpoint folder holds the trainable weights (safetensors), optimizer and scheduler state
(``torch.save``; read back with ``weights_only=True``, so nothing is unpickled beyond tensors and
plain containers), the RNG states, the loop's counters and the callbacks' state (their tensors in
``callbacks.safetensors``, the rest in ``state.json``). It is written to a temporary folder
and swapped in with one rename, so ``kill -9`` at any moment leaves either the previous complete
checkpoint or the new one.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import TuneforgeError
from ..methods.base import trainable_tensors
from ..paths import atomic_dir, recover_dir

CHECKPOINT_DIR = "checkpoint"


def _split_callback_state(saved: dict[str, dict]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON part, tensors keyed ``callback/key``) of the callbacks' states."""
    plain: dict[str, dict] = {}
    tensors: dict[str, torch.Tensor] = {}
    for name, values in saved.items():
        plain[name] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{name}/{key}"] = value.detach().contiguous().cpu()
            else:
                plain[name][key] = value
    return plain, tensors


def _join_callback_state(plain: dict, tensors: dict[str, torch.Tensor]) -> dict[str, dict]:
    joined = {name: dict(values) for name, values in plain.items()}
    for key, value in tensors.items():
        name, _, sub = key.partition("/")
        joined.setdefault(name, {})[sub] = value
    return joined


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, state: dict, callbacks: dict | None = None) -> None:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    py_version, py_state, py_gauss = random.getstate()
    plain, tensors = _split_callback_state(callbacks or {})
    state = dict(state, python_rng=[py_version, list(py_state), py_gauss], callbacks=plain)
    with atomic_dir(Path(run_dir) / CHECKPOINT_DIR) as tmp:
        if tensors:
            save_file(tensors, str(tmp / "callbacks.safetensors"))
        save_file(trainable_tensors(model), str(tmp / "trainable.safetensors"))
        save_file(rng, str(tmp / "rng.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")


def _read(path: Path, reader):
    """``reader(path)``; a damaged or tampered file is one error naming it, not a traceback."""
    try:
        return reader(path)
    except (SafetensorError, pickle.UnpicklingError, EOFError, OSError, RuntimeError, ValueError) as exc:
        # RuntimeError: torch's zip reader on a cut file; UnpicklingError: weights_only refused a global
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TuneforgeError(
            f"{path}: damaged checkpoint file ({why}); delete {path.parent} to restart the run from scratch"
        ) from None


def load_checkpoint(run_dir: Path, model, optimizer, scheduler) -> dict | None:
    """Restore everything in place and return the loop state; None if there is no checkpoint.

    The callbacks' saved states come back under ``state["callbacks"]`` (name -> state dict).
    """
    folder = recover_dir(Path(run_dir) / CHECKPOINT_DIR)
    if folder is None or not (folder / "state.json").exists():
        return None
    weights = _read(folder / "trainable.safetensors", lambda p: load_file(str(p)))
    missing = set(weights) - set(model.state_dict())
    if missing:
        raise TuneforgeError(
            f"{folder}: the checkpoint does not match the model (unexpected {sorted(missing)[:3]}); "
            "resume with the config the run started with"
        )
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(_read(folder / "optimizer.pt", lambda p: torch.load(p, weights_only=True)))
    scheduler.load_state_dict(_read(folder / "scheduler.pt", lambda p: torch.load(p, weights_only=True)))
    rng = _read(folder / "rng.safetensors", lambda p: load_file(str(p)))
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    state = _read(folder / "state.json", lambda p: json.loads(p.read_text(encoding="utf-8")))
    version, py_state, gauss = state.pop("python_rng")
    random.setstate((version, tuple(py_state), gauss))
    extra = folder / "callbacks.safetensors"
    tensors = _read(extra, lambda p: load_file(str(p))) if extra.exists() else {}
    state["callbacks"] = _join_callback_state(state.get("callbacks") or {}, tensors)
    return state
