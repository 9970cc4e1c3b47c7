"""The one training loop: every task and method trains through :func:`train_loop`.

Read top to bottom, a step is: batch -> forward -> loss -> backward -> (every N micro-batches)
clip -> optimizer step -> scheduler step, with named callback events in between (the docstring of
:func:`train_loop` shows exactly where). Accelerate supplies device placement, gradient
accumulation, multi-GPU sharding and experiment trackers; bf16 autocast is the loop's own; nothing
else is hidden. The loop's counters are a :class:`~.state.LoopState`; what the task brings (collate,
loss, evaluation, saving the best model) is a :class:`LoopTask`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..artifacts.paths import recover_dir
from ..data.encode import length_grouped_batches
from ..runtime.memory import peak_rss_mb
from ..runtime.precision import autocast_context, cpu_has_native_bf16
from ..schema import TrainingConfig
from .batch import LoopTask, batch_rows
from .callbacks import Callback, CallbackList, LoopContext
from .checkpoint import CHECKPOINT_DIR, load_checkpoint
from .state import Counted, LoopState, RunningLoss
from .steps import Run, checkpoint, end_epoch, log_step, train_batch
from .tracking import make_trackers


@dataclass
class LoopResult:
    best_score: float | None
    best_epoch: int | None
    epochs_run: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    train_samples: int = 0
    train_tokens: int = 0
    peak_rss_mb: float = 0.0
    precision: str = "fp32"
    step_log: list[dict] = field(default_factory=list)  # every log_every_steps updates: step, loss, lr, terms
    metric_for_best: str = "f1"


def build_optimizer(model, cfg: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW with no weight decay on biases and LayerNorm weights (as the Trainer does)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    impl = {"fused": True} if cfg.adamw_impl == "fused" else {"foreach": True}
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate, **impl)


def train_loop(
    model,
    train_items: Sequence,
    lengths: Sequence[int],
    cfg: TrainingConfig,
    run_dir: Path,
    task: LoopTask,
    *,
    precision: str,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    tracker_config: dict | None = None,
) -> LoopResult:
    """Train ``model`` on ``train_items``; ``task.evaluate(model)`` returns the dev metrics of an epoch.

    ``precision`` is ``cfg.precision`` resolved (``fp32`` / ``bf16``; the driver resolves it once a run).
    One micro-batch, top to bottom (``cb.`` marks the callback events of :mod:`.callbacks`; up to
    ``zero_grad`` it is :func:`~.steps.train_batch`, the rest is this loop's, logging :func:`~.steps.log_step`)::

        items = cb.on_batch_items(items)          # a callback may add examples (replay)
        batch = collate(items)
        with accelerator.accumulate(model):
            cb.before_forward(batch)
            loss, outputs = compute_loss(model, batch)          # the task's loss (default: the model's)
            cb.after_forward(batch, outputs, loss)
            terms = cb.extra_loss(batch, outputs)               # {name: tensor}, logged separately
            backward(loss + sum(terms))
            cb.after_backward(batch)                            # adversarial: perturb, forward, backward, restore
            (values logged with ctx.log_term join the terms for logging only)
            if update step: clip gradients; cb.before_optimizer_step()
            optimizer.step(); if update step: scheduler.step(); cb.after_optimizer_step()
            zero_grad()
        count tokens and steps; log every ``log_every_steps`` updates; cb.on_step_end()
        (mid-epoch checkpoint every ``checkpoint_every_steps`` updates)

    Around the steps: ``cb.on_train_begin``, then per epoch ``cb.on_epoch_begin(epoch)`` ... steps ...
    ``evaluate`` -> ``cb.on_evaluate(metrics)`` -> best checkpoint by ``metric_for_best`` (``save_best``;
    every epoch when there is no dev set) -> ``cb.on_epoch_end(record)`` (:func:`~.steps.end_epoch`) -> checkpoint;
    finally ``cb.on_train_end``. With ``resume``, training continues from ``run_dir/checkpoint`` (weights,
    optimizer, scheduler, RNG, counters and callback state) and ends exactly where an uninterrupted
    run with the same seed would.

    **Several processes** (DDP through accelerate; ``tuneforge train --num-processes N``, torchrun,
    ``accelerate launch``): ``cfg.batch_size`` is the *global* batch. Every process draws the same
    length-grouped batches (seeded by ``cfg.seed`` and the epoch) and takes every N-th member of each,
    starting at its rank (:func:`process_shares`), so each example trains exactly once an epoch, the
    shares of a batch have similar lengths, and every process runs the same number of steps (no DDP
    hang). A process whose share of a batch is empty (a last batch smaller than N) runs that batch's
    first member with weight 0: it joins the gradient all-reduce and adds nothing. Each process's loss
    is weighted by its share of ``loss_units(batch)`` (what the loss averages over: labelled tokens,
    texts), so the averaged gradient is the one a single process computes on the whole batch; the
    logged loss, samples and tokens are the whole batch's. Optimizer steps, schedule and checkpoints
    count global batches, so a checkpoint resumes on any number of processes. Seeds: the model is
    initialised from ``cfg.seed`` in every process (DDP also broadcasts process 0's weights); dropout
    and other training randomness in process r draw from ``cfg.seed + r`` (process 0 = a single-process run).
    Under FSDP or DeepSpeed (an accelerate config) the engine keeps part of the optimizer state (and,
    FSDP / ZeRO-3, of the weights) in each process: checkpoints are then the engine's own
    (:func:`~.checkpoint.save_engine_checkpoint`, resumable on the same number of processes), and with
    split weights every process evaluates all of dev and the best model is saved from the gathered weights.
    """
    run = _setup(model, len(train_items), cfg, run_dir, task, precision, resume, callbacks)
    state, hooks, ctx, accelerator = run.state, run.hooks, run.ctx, run.accelerator
    if run.trackers:
        accelerator.init_trackers("tuneforge", config=tracker_config)
    hooks.call("on_train_begin", ctx)
    stopped_early = False
    while state.epoch < cfg.epochs and not state.done:
        epoch = state.epoch
        loader, weightless = _epoch_loader(run, train_items, lengths, epoch)
        hooks.call("on_epoch_begin", ctx, epoch)
        run.model.train()
        progress = _progress(cfg, accelerator, run.batches_per_epoch, state.step_in_epoch, epoch)
        epoch_sums, log_sums = (RunningLoss(state, span, accelerator.device) for span in ("epoch", "log"))
        counted = Counted(state)
        started = log_started = time.perf_counter()
        tokens_here = log_tokens = 0
        for items in loader:
            loss_logged, terms, n_rows, n_tokens = train_batch(run, items, state.step_in_epoch in weightless)
            epoch_sums.add(loss_logged, terms)
            log_sums.add(loss_logged, terms)
            tokens_here += n_tokens
            log_tokens += n_tokens
            state.step_in_epoch += 1
            counted.add(n_rows, n_tokens)
            if accelerator.sync_gradients:
                state.global_step += 1
                if state.global_step % cfg.log_every_steps == 0:
                    log_step(run, log_sums, epoch, log_tokens, log_started)
                    log_tokens, log_started = 0, time.perf_counter()
            if progress is not None:
                progress.update(1)
                if state.step_in_epoch % 10 == 0 or state.step_in_epoch == run.batches_per_epoch:
                    elapsed = time.perf_counter() - started
                    progress.set_postfix(
                        loss=f"{epoch_sums.peek():.4f}",
                        tok_s=f"{float(tokens_here) / max(elapsed, 1e-9):,.0f}",
                    )
            hooks.call("on_step_end", ctx)
            if (
                cfg.checkpoint_every_steps
                and accelerator.sync_gradients
                and state.global_step % cfg.checkpoint_every_steps == 0
                and state.step_in_epoch < run.batches_per_epoch
            ):
                epoch_sums.fold()
                log_sums.fold()
                counted.fold()
                state.train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                checkpoint(run)
        if progress is not None:
            progress.close()
        state.train_seconds += time.perf_counter() - started
        epoch_sums.fold()
        log_sums.fold()
        counted.fold()
        stopped_early = end_epoch(run, epoch, epoch_sums)
        checkpoint(run)
    hooks.call("on_train_end", ctx)
    # The trackers' own finish, not accelerator.end_training(): that also destroys the process group,
    # which a later run in the same processes (compare --in-process, a notebook, torchrun script.py) needs.
    for tracker in accelerator.trackers:
        tracker.finish()

    return LoopResult(
        best_score=state.best_score,
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        stopped_early=stopped_early or state.done and state.epoch < cfg.epochs,
        history=state.history,
        train_seconds=state.train_seconds,
        train_samples=state.train_samples,
        train_tokens=state.train_tokens,
        peak_rss_mb=peak_rss_mb(),
        precision=precision,
        step_log=state.step_log,
        metric_for_best=task.metric_for_best,
    )


def _setup(model, n_items: int, cfg: TrainingConfig, run_dir: Path, task: LoopTask, precision: str,
           resume: bool, callbacks: Sequence[Callback]) -> Run:
    """Threads, accelerator, seeds, optimizer and schedule, callbacks, state (resumed with ``resume``)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    probe = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trackers = make_trackers(cfg.report_to, run_dir)
    accelerator = Accelerator(
        cpu=probe.type == "cpu",  # without it accelerate takes a torchrun launch on CPU for one process
        # bf16 autocast is applied by the loop itself (task_loss below), not through accelerate: its
        # state is a process-wide singleton that refuses a second run with another precision
        # (a notebook, `compare --in-process`, the test suite).
        mixed_precision="no",
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,
        log_with=trackers or None,
    )
    set_seed(cfg.seed, device_specific=True)  # cfg.seed + rank
    if precision == "bf16" and probe.type == "cpu" and not cpu_has_native_bf16():
        accelerator.print("warning: training.precision bf16 on a CPU without AVX512-BF16/AMX runs emulated and slow")
    units_of = task.loss_units or batch_rows
    batches_per_epoch = math.ceil(n_items / cfg.batch_size)
    updates_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
    total_updates = updates_per_epoch * cfg.epochs
    optimizer = build_optimizer(model, cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_updates), total_updates)
    model, optimizer = accelerator.prepare(model, optimizer)
    weights_split, optimizer_split = split_state(accelerator)
    hooks = CallbackList(callbacks)
    state = LoopState()
    if resume:
        _resume(accelerator, model, optimizer, scheduler, hooks, state, cfg, run_dir, batches_per_epoch)

    def task_loss(batch: dict):
        with autocast_context(accelerator.device, precision):
            if task.compute_loss is not None:
                return task.compute_loss(model, batch)
            outputs = model(**batch)
            return outputs.loss, outputs

    ctx = LoopContext(model=model, optimizer=optimizer, scheduler=scheduler, accelerator=accelerator, cfg=cfg,
                      state=state, compute_loss=task_loss, run_dir=run_dir)
    return Run(cfg=cfg, run_dir=run_dir, task=task, accelerator=accelerator, model=model, optimizer=optimizer,
                scheduler=scheduler, hooks=hooks, state=state, ctx=ctx, trackers=trackers,
                batches_per_epoch=batches_per_epoch, units_of=units_of, task_loss=task_loss,
                weights_split=weights_split, optimizer_split=optimizer_split)


def _resume(accelerator, model, optimizer, scheduler, hooks: CallbackList, state: LoopState, cfg: TrainingConfig,
            run_dir: Path, batches_per_epoch: int) -> None:
    """Restore weights, optimizer, scheduler, RNG, callbacks and ``state`` from ``run_dir/checkpoint``, if any."""
    from accelerate.utils import set_seed

    rank, world = accelerator.process_index, accelerator.num_processes
    if accelerator.is_main_process:
        recover_dir(run_dir / CHECKPOINT_DIR)  # one process repairs an interrupted swap, then all read
    accelerator.wait_for_everyone()
    restored = load_checkpoint(run_dir, accelerator.unwrap_model(model), optimizer, scheduler, rank=rank,
                               accelerator=accelerator)
    if restored is None:
        return
    saved_world = restored.pop("world_size", 1)
    if not restored.pop("rank_state_found", True):
        # this process had no counterpart when the checkpoint was written: a fresh stream of its own
        set_seed(cfg.seed + rank + 1_000_003 * (restored["global_step"] + 1))
    missing = hooks.load_state_dict(restored.pop("callbacks", {}))
    if missing:
        accelerator.print(f"warning: the checkpoint holds no state for callback(s) {', '.join(missing)}; "
                          "they start afresh")
    state.load_state_dict(restored)
    accelerator.print(
        f"resuming from {run_dir / CHECKPOINT_DIR}: epoch {state.epoch + 1}, "
        f"step {state.step_in_epoch} of {batches_per_epoch}"
        + (f" (saved by {saved_world} process(es), resumed on {world})" if saved_world != world else "")
    )


def _epoch_loader(run: Run, train_items: Sequence, lengths: Sequence[int], epoch: int):
    """(the loader of this process's shares of the epoch's batches, the steps where its share is empty)."""
    from accelerate.data_loader import prepare_data_loader

    cfg = run.cfg
    batches = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)
    shares, weightless = process_shares(batches, run.rank, run.world)
    # A private generator: starting a DataLoader iterator otherwise draws a seed from the global
    # RNG, which would shift every dropout mask after a mid-epoch resume.
    # The loader yields lists of items; collation happens in the step, after ``on_batch_items``:
    # accelerate's loader reads one batch ahead, so a hook with state (a replay memory's RNG)
    # inside collate_fn would run a step early and a resumed run would draw differently.
    # prepare_data_loader with one process: this process's shares as they are (accelerate's own
    # sharding would pad short batches with repeated examples, or give processes different numbers
    # of batches), in accelerate's loader, which tells ``accumulate`` where the epoch ends.
    loader = prepare_data_loader(
        DataLoader(train_items, batch_sampler=shares, collate_fn=list,
                   generator=torch.Generator().manual_seed(cfg.seed + epoch)),
        num_processes=1, process_index=0, put_on_device=False,
    )
    if run.state.step_in_epoch:
        loader = run.accelerator.skip_first_batches(loader, run.state.step_in_epoch)
    return loader, weightless


def split_state(accelerator) -> tuple[bool, bool]:
    """(weights split over the processes, optimizer state split): FSDP splits both, DeepSpeed ZeRO the
    optimizer state (stages 1-2) or both (stage 3); DDP neither."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return True, True
    if kind == DistributedType.DEEPSPEED:
        return accelerator.state.deepspeed_plugin.zero_stage == 3, True
    return False, False


def process_shares(batches: list[list[int]], rank: int, world: int) -> tuple[list[list[int]], set[int]]:
    """Process ``rank``'s members of each global batch, and the steps where its share is empty.

    A share is every ``world``-th member from ``rank`` on: a length-grouped batch is sorted by length,
    so the shares of one batch have about the same lengths and no process waits long for another.
    Every process gets one share per batch, so all run the same number of steps (DDP needs that). An
    empty share (a batch with fewer members than processes) is filled with the batch's first member
    and listed in the returned set: the loop runs it with weight 0. With one process: the batches.
    """
    if world == 1:
        return batches, set()
    shares = [batch[rank::world] for batch in batches]
    empty = {i for i, members in enumerate(shares) if not members}
    return [members or batch[:1] for members, batch in zip(shares, batches)], empty


def _progress(cfg: TrainingConfig, accelerator, total: int, done: int, epoch: int):
    if not cfg.progress or not accelerator.is_main_process:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
