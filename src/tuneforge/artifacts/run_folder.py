"""A run folder's life: lock it, decide what may happen to what is there, and replace it only when
the new run is complete.

- **Lock**: ``.NAME.lock`` beside the folder, held with ``flock`` for the whole run (the kernel drops it
  when the process dies, even by ``kill -9``). A second run into the same ``output_dir`` stops with
  one line instead of racing the first; ``--overwrite`` cannot pull a folder from under a running process.
- **What is there** (:func:`inspect`): nothing, a finished run, a run with a checkpoint (resumable),
  a start that failed before any checkpoint (only ``config.yaml``), or something that is not a
  tuneforge run folder at all — which is never deleted, ``--overwrite`` or not.
- **Overwrite**: the new run trains in a hidden sibling (``.NAME.new``) and is swapped in only when it
  has finished; a typo in the data path, a crash or Ctrl-C leaves the old run as it was.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..errors import TuneforgeError

CHECKPOINT_DIR = "checkpoint"  # the loop's (training.checkpoint.CHECKPOINT_DIR); repeated to keep this module light

ABSENT, EMPTY, FAILED_START, RESUMABLE, FINISHED, FOREIGN = (
    "absent", "empty", "failed start", "resumable", "finished", "foreign")


def inspect(run_dir: Path) -> str:
    """What ``run_dir`` holds, as one of the states above."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return ABSENT
    if not run_dir.is_dir():
        return FOREIGN
    entries = {p.name for p in run_dir.iterdir()}
    if not entries:
        return EMPTY
    if "config.yaml" not in entries:
        return FOREIGN
    if CHECKPOINT_DIR in entries:
        return RESUMABLE
    if "metrics.json" in entries and "model" in entries:
        return FINISHED
    if entries <= {"config.yaml", "logs"}:
        return FAILED_START  # stopped before its first checkpoint and model: nothing worth keeping
    if "model" in entries:
        return RESUMABLE  # a model but no checkpoint: stopped between the two writes; --resume restarts it
    return FOREIGN


def staging_dir(run_dir: Path) -> Path:
    return Path(run_dir).with_name(f".{Path(run_dir).name}.new")


def plan(run_dir: Path, resume: bool, overwrite: bool) -> tuple[Path, bool]:
    """Where this run writes (the run folder, or a staging sibling for ``--overwrite``) and whether it
    resumes a checkpoint there. Raises one-line errors for what must not happen."""
    state = inspect(run_dir)
    if state == FOREIGN:
        what = "a file" if Path(run_dir).is_file() else "a folder that is not a tuneforge run folder"
        raise TuneforgeError(
            f"{run_dir}: output_dir is {what}; tuneforge never deletes or writes into it — set output_dir to "
            "a new folder (or an existing run folder)"
        )
    if resume:
        if state == FINISHED:
            raise TuneforgeError(f"{run_dir}: this run already finished; nothing to resume")
        return Path(run_dir), state == RESUMABLE
    if state in (ABSENT, EMPTY, FAILED_START):
        return Path(run_dir), False
    if not overwrite:
        raise TuneforgeError(
            f"{run_dir}: output folder holds a {'finished' if state == FINISHED else 'resumable'} run; pass --resume "
            "to continue it, --overwrite to replace it (the old run stays until the new one finishes), or set "
            "output_dir to a new folder"
        )
    staging = staging_dir(run_dir)
    shutil.rmtree(staging, ignore_errors=True)  # an earlier --overwrite that did not finish
    return staging, False


def commit(target: Path, run_dir: Path) -> None:
    """Put a finished staging folder in place of ``run_dir`` (no-op when the run wrote in place)."""
    target, run_dir = Path(target), Path(run_dir)
    if target == run_dir:
        return
    old = run_dir.with_name(f".{run_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if run_dir.exists():
        os.replace(run_dir, old)
    os.replace(target, run_dir)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def locked(run_dir: Path):
    """Hold ``.NAME.lock`` beside ``run_dir`` for the block; a second holder gets a one-line error."""
    run_dir = Path(run_dir)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): run without the lock
        yield
        return
    path = run_dir.with_name(f".{run_dir.name}.lock")
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
    except OSError as exc:
        raise TuneforgeError(f"{run_dir}: cannot write the run's lock file {path} ({exc.strerror}); set output_dir "
                             "to a folder you can write") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise TuneforgeError(
                f"{run_dir}: another tuneforge run is writing this folder ({holder}); wait for it to finish or "
                "set output_dir to a new folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``["training.learning_rate: 0.0001 in the run, 0.001 now", ...]`` between two config dumps."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} in the run, {b!r} now")
    return out
