"""Several processes, one run: who writes, who waits, how work is shared out and gathered back.

Every process of a distributed run (``tuneforge train --num-processes N``, ``torchrun``, ``accelerate
launch``) runs the same driver on its own copy of the data and model. The rules, in one place:

- **Process 0 writes, prints and decides**: it prepares the run folder, writes every file and prints
  progress; the others wait at the places where they need its files (:func:`main_first`, :func:`barrier`).
  An error process 0 meets (a non-empty run folder...) is raised in every process, so none hangs.
- **Work is shared in contiguous shares** (:func:`share`): process ``r`` of ``n`` takes the r-th slice of
  a list, and :func:`gather_in_order` puts the shares' results back in list order on every process,
  each item exactly once (no padding duplicates to drop).
- **Nothing here starts processes or needs accelerate**: it reads ``torch.distributed``'s state, so a
  predictor used from plain Python (no process group) just runs everything itself.
  :func:`init_processes` joins the group a launcher set up (accelerate's ``PartialState``; gloo on CPU).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Sequence, TypeVar

from ..errors import TuneforgeError

T = TypeVar("T")


_ALONE = False


def _group():
    import torch.distributed as dist

    return dist if not _ALONE and dist.is_available() and dist.is_initialized() else None


@contextmanager
def alone():
    """Inside, this process acts as if it were the only one: it shares nothing out and gathers nothing
    (for work every process must do whole, such as evaluating a model whose weights are split)."""
    global _ALONE
    saved, _ALONE = _ALONE, True
    try:
        yield
    finally:
        _ALONE = saved


def launched_distributed() -> bool:
    """True in a process a launcher started as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_processes():
    """Join the process group of a distributed launch (no-op in a single process); returns accelerate's state.

    accelerate only treats ``LOCAL_RANK``/``WORLD_SIZE`` as a CPU launch when told ``cpu=True``; without
    it, every process of ``torchrun`` on a CPU machine believes it is alone (rank 0 of 1) and all of them
    write the same run folder. So: CPU (gloo) when there is no GPU, else the GPU backend (NCCL).
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    group = _group()
    return group.get_rank() if group else 0


def world_size() -> int:
    group = _group()
    return group.get_world_size() if group else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    group = _group()
    if group and group.get_world_size() > 1:
        group.barrier()


def print_main(*args, **kwargs) -> None:
    """``print`` in process 0 only."""
    if is_main():
        print(*args, **kwargs)


def broadcast(value: T) -> T:
    """Process 0's ``value`` in every process (picklable objects)."""
    group = _group()
    if not group or group.get_world_size() == 1:
        return value
    box = [value]
    group.broadcast_object_list(box, src=0)
    return box[0]


def main_first(function: Callable[[], T]) -> T:
    """Run ``function`` in process 0 while the others wait; its result (or its error) reaches every process.

    For preparing what the others then read (the run folder, a saved model). An error is raised in
    every process; only process 0's carries the original type (a ``DataError`` keeps its file and line),
    the others raise a plain ``TuneforgeError``/``RuntimeError`` with the same message and print nothing.
    """
    if world_size() == 1:
        return function()
    outcome: tuple[str, Any] = ("ok", None)
    error: BaseException | None = None
    if is_main():
        try:
            outcome = ("ok", function())
        except TuneforgeError as exc:
            outcome, error = ("user", str(exc)), exc
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others have been told
            outcome, error = ("bug", f"process 0 failed: {type(exc).__name__}: {exc}"), exc
    kind, value = broadcast(outcome)
    if error is not None:
        raise error
    if kind == "user":
        raise TuneforgeError(value)
    if kind == "bug":
        raise RuntimeError(value)
    return value


def share(n_items: int, rank_: int | None = None, size: int | None = None) -> tuple[int, int]:
    """``[start, end)`` of process ``rank_``'s contiguous share of ``n_items`` (sizes differ by at most one).

    The same cut as accelerate's ``PartialState.split_between_processes``, written out because it must
    also work where no accelerate state exists (a predictor used from plain Python).
    """
    rank_ = rank() if rank_ is None else rank_
    size = world_size() if size is None else size
    base, extra = divmod(n_items, size)
    start = rank_ * base + min(rank_, extra)
    return start, start + base + (1 if rank_ < extra else 0)


def gather_in_order(local: list) -> list:
    """Every process's list, concatenated in process order, in every process (``all_gather_object``)."""
    group = _group()
    if not group or group.get_world_size() == 1:
        return list(local)
    parts: list = [None] * group.get_world_size()
    group.all_gather_object(parts, list(local))
    return [item for part in parts for item in part]


def gather_to_main(value: T) -> list[T] | None:
    """Every process's ``value`` in process order, in process 0 (None elsewhere): for results only it writes."""
    group = _group()
    if not group or group.get_world_size() == 1:
        return [value]
    parts: list | None = [None] * group.get_world_size() if is_main() else None
    group.gather_object(value, parts, dst=0)
    return parts


def map_in_order(function: Callable[[Sequence], list], items: Sequence) -> list:
    """``function(items)`` computed in shares, one per process, and gathered back in order in every process.

    ``function`` maps a list to a list of the same length (one result per item). With one process it
    is simply ``function(items)``.
    """
    if world_size() == 1:
        return list(function(items))
    start, end = share(len(items))
    mine = list(function(items[start:end])) if end > start else []
    if len(mine) != end - start:
        raise RuntimeError(f"expected {end - start} results for this process's share, got {len(mine)}")
    return gather_in_order(mine)


@contextmanager
def quiet_unless_main():
    """Silence standard output, library warnings and progress bars in every process but 0 (the CLI's
    "only process 0 prints"); errors still reach standard error."""
    if is_main():
        yield
        return
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    saved_stdout, level = sys.stdout, hf_logging.get_verbosity()
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.close()
        sys.stdout = saved_stdout
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def leave_processes() -> None:
    """Leave the process group, if this process joined one, before it exits (the end of a CLI command in
    a launched process). A group left to interpreter shutdown can abort in gloo's threads ("terminate
    called without an active exception", exit code 1 after all the work was done)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch_local(n_processes: int, argv: Sequence[str]) -> int:
    """Run ``python -m tuneforge ARGV`` as ``n_processes`` processes on this machine; returns the exit status.

    torch's own launcher (``torchrun``'s ``elastic_launch``) with a rendezvous on a free loopback port,
    no restarts. Each process gets ``cores / n_processes`` threads unless ``OMP_NUM_THREADS`` is set.
    A failing process stops the others; its exit status is returned without torchrun's failure report
    (process 0 has printed the one-line error already).
    """
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    saved = os.environ.get("OMP_NUM_THREADS")
    if saved is None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n_processes))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=n_processes, run_id=f"tuneforge-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.1,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "tuneforge", *argv)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else 1
    except SignalException:  # Ctrl-C or a kill of this launcher: the processes are stopped too
        raise KeyboardInterrupt from None
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    return 0
