"""Resumable training state, written atomically.

A checkpoint folder holds the trainable weights (safetensors), optimizer and scheduler state
(``torch.save``; read back with ``weights_only=True``, so nothing is unpickled beyond tensors and
plain containers), the RNG states, the loop's counters and the callbacks' state (their tensors in
``callbacks.safetensors``, the rest in ``state.json``); in a run of several processes, process r's
RNG and callback states in ``rank-r/`` (the loop counters count global batches, so any number of
processes can resume it). Under FSDP / DeepSpeed the weights and optimizer state are the engine's own,
written by accelerate's ``save_state`` into ``engine/`` (:func:`save_engine_checkpoint`). It is written to a temporary folder
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

from ..errors import ConfigError, TuneforgeError
from ..methods.base import trainable_tensors
from ..artifacts.paths import atomic_dir, new_temporary_dir, recover_dir, swap_in_dir
from ..runtime.distributed import barrier, broadcast, is_main

CHECKPOINT_DIR = "checkpoint"
ENGINE_STATE_DIR = "engine"  # accelerate's save_state inside a checkpoint, under FSDP / DeepSpeed


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


def rank_state(callbacks: dict | None = None) -> dict:
    """What differs between the processes of a run: RNG states and callback states (this process's)."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    py_version, py_state, py_gauss = random.getstate()
    return {"rng": rng, "python_rng": [py_version, list(py_state), py_gauss], "callbacks": callbacks or {}}


def _write_rank_state(folder: Path, ranked: dict) -> dict:
    """Tensors to ``rng.safetensors`` / ``callbacks.safetensors`` in ``folder``; returns the JSON part."""
    plain, tensors = _split_callback_state(ranked["callbacks"])
    if tensors:
        save_file(tensors, str(folder / "callbacks.safetensors"))
    save_file(ranked["rng"], str(folder / "rng.safetensors"))
    return {"python_rng": ranked["python_rng"], "callbacks": plain}


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, state: dict, ranks: list[dict]) -> None:
    """Write the checkpoint; ``ranks[r]`` is process r's :func:`rank_state` (one entry with one process).

    Weights, optimizer, scheduler and loop counters are the same in every process and written once;
    process 0's RNG and callback state sit beside them (the single-process layout), process r's in
    ``rank-r/``.
    """
    with atomic_dir(Path(run_dir) / CHECKPOINT_DIR) as tmp:
        top = _write_rank_state(tmp, ranks[0])
        for r, ranked in enumerate(ranks[1:], start=1):
            (tmp / f"rank-{r}").mkdir()
            extra = _write_rank_state(tmp / f"rank-{r}", ranked)
            (tmp / f"rank-{r}" / "state.json").write_text(json.dumps(extra), encoding="utf-8")
        save_file(trainable_tensors(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        full = dict(state, world_size=len(ranks), **top)
        (tmp / "state.json").write_text(json.dumps(full, indent=1), encoding="utf-8")


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _read_torch(path: Path):
    return torch.load(path, weights_only=True)


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


def save_engine_checkpoint(accelerator, run_dir: Path, scheduler, state: dict, ranks: list[dict] | None) -> None:
    """The checkpoint when FSDP or DeepSpeed splits the weights or optimizer state over the processes.

    Every process calls it: accelerate's ``save_state`` writes the model and optimizer as the engine
    keeps them (each process its part), process 0 adds the scheduler, the loop state and every
    process's RNG and callback state (``ranks``, its :func:`gather_to_main`), and swaps the folder in.
    Such a checkpoint resumes on the same number of processes (the parts are per process).
    """

    final = Path(run_dir) / CHECKPOINT_DIR
    tmp = Path(broadcast(str(new_temporary_dir(final)) if is_main() else None))
    accelerator.save_state(str(tmp / ENGINE_STATE_DIR))
    barrier()
    if is_main():
        top = _write_rank_state(tmp, ranks[0])
        for r, ranked in enumerate(ranks[1:], start=1):
            (tmp / f"rank-{r}").mkdir()
            extra = _write_rank_state(tmp / f"rank-{r}", ranked)
            (tmp / f"rank-{r}" / "state.json").write_text(json.dumps(extra), encoding="utf-8")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        full = dict(state, world_size=len(ranks), engine_state=ENGINE_STATE_DIR, **top)
        (tmp / "state.json").write_text(json.dumps(full, indent=1), encoding="utf-8")
        swap_in_dir(tmp, final)
    barrier()


def load_checkpoint(run_dir: Path, model, optimizer, scheduler, rank: int = 0, accelerator=None) -> dict | None:
    """Restore everything in place and return the loop state; None if there is no checkpoint.

    ``rank``: this process; it gets its own RNG and callback states back when the checkpoint has them
    (``state["rank_state_found"]``), else process 0's callback states and no RNG change (the caller
    seeds it). The callbacks' states come back under ``state["callbacks"]`` (name -> state dict);
    ``state["world_size"]`` is how many processes wrote it.
    """
    folder = recover_dir(Path(run_dir) / CHECKPOINT_DIR)
    if folder is None or not (folder / "state.json").exists():
        return None
    state = _read(folder / "state.json", _read_json)
    state.setdefault("world_size", 1)
    if state.get("engine_state"):
        # written by save_engine_checkpoint: the engine's own files, one part per process
        world = accelerator.num_processes if accelerator is not None else 1
        if accelerator is None or state["world_size"] != world:
            raise ConfigError(
                f"{folder}: this checkpoint was written by FSDP/DeepSpeed on {state['world_size']} processes, "
                f"which keep a part each; resume it with the same accelerate config on {state['world_size']} processes"
            )
        accelerator.load_state(str(folder / state.pop("engine_state")))
    else:
        weights = _read(folder / "trainable.safetensors", lambda p: load_file(str(p)))
        missing = set(weights) - set(model.state_dict())
        if missing:
            raise TuneforgeError(
                f"{folder}: the checkpoint does not match the model (unexpected {sorted(missing)[:3]}); "
                "resume with the config the run started with"
            )
        model.load_state_dict(weights, strict=False)
        optimizer.load_state_dict(_read(folder / "optimizer.pt", _read_torch))
    scheduler.load_state_dict(_read(folder / "scheduler.pt", _read_torch))
    own = folder if rank == 0 else folder / f"rank-{rank}"
    found = (own / "rng.safetensors").exists()
    source = own if found else folder
    ranked = state if source == folder else _read(own / "state.json", _read_json)
    if found:
        rng = _read(own / "rng.safetensors", lambda p: load_file(str(p)))
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available():
            states = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda"))]
            if states:
                torch.cuda.set_rng_state_all(states)
        version, py_state, gauss = ranked["python_rng"]
        random.setstate((version, tuple(py_state), gauss))
    state.pop("python_rng", None)
    extra = source / "callbacks.safetensors"
    tensors = _read(extra, lambda p: load_file(str(p))) if extra.exists() else {}
    state["callbacks"] = _join_callback_state(ranked.get("callbacks") or {}, tensors)
    state["rank_state_found"] = found
    return state
