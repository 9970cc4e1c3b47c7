"""The pieces of :func:`~.loop.train_loop`: one micro-batch (:func:`train_batch`), a step-log entry
(:func:`log_step`), the end of an epoch (:func:`end_epoch`) and a checkpoint (:func:`checkpoint`),
each working on the run's :class:`Run` (set up once by the loop). The order of the events is the
one the loop's docstring draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..runtime.distributed import alone, gather_to_main
from ..schema import TrainingConfig
from .batch import LoopTask, pop_counts
from .callbacks import CallbackList, LoopContext
from .checkpoint import rank_state, save_checkpoint, save_engine_checkpoint
from .state import LoopState, RunningLoss

@dataclass
class Run:
    """What one run of the loop works with, set up once by :func:`~.loop.train_loop`."""

    cfg: TrainingConfig
    run_dir: Path
    task: LoopTask
    accelerator: Any
    model: Any  # prepared by accelerate
    optimizer: Any
    scheduler: Any
    hooks: CallbackList
    state: LoopState
    ctx: LoopContext
    trackers: list
    batches_per_epoch: int
    units_of: Callable[[dict], object]
    task_loss: Callable[[dict], tuple[torch.Tensor, Any]]  # the task's loss under the run's autocast
    weights_split: bool
    optimizer_split: bool

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes


def train_batch(run: Run, items: list, weightless_step: bool):
    """One micro-batch, in the order of :func:`~.loop.train_loop`'s diagram, up to ``zero_grad``; returns
    (the whole batch's loss, the terms to log, its rows, its tokens)."""
    from accelerate.utils import send_to_device

    accelerator, hooks, ctx, model, world = run.accelerator, run.hooks, run.ctx, run.model, run.world
    batch = run.task.collate(hooks.on_batch_items(ctx, items) if hooks and not weightless_step else items)
    batch = send_to_device(batch, accelerator.device)
    n_tokens, n_rows = pop_counts(batch)
    with accelerator.accumulate(model):
        hooks.call("before_forward", ctx, batch)
        loss, outputs = run.task_loss(batch)
        hooks.call("after_forward", ctx, batch, outputs, loss)
        terms = hooks.extra_loss(ctx, batch, outputs) if hooks else {}
        if world > 1:
            # one all-reduce: the whole batch's units, loss sum, rows and tokens
            units = 0 if weightless_step else run.units_of(batch)
            mine = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=loss.device) for v in
                                (units, loss.detach().float() * units, 0 if weightless_step else n_rows,
                                 0 if weightless_step else n_tokens)])
            total = accelerator.reduce(mine, reduction="sum")
            # DDP averages the processes' gradients: weigh each by its share of the units
            ctx.batch_weight = mine[0] * world / total[0].clamp_min(1e-12)
            loss_logged, n_rows, n_tokens = total[1] / total[0].clamp_min(1e-12), total[2], total[3]
            accelerator.backward(loss * ctx.batch_weight + sum(terms.values()) if terms
                                 else loss * ctx.batch_weight)
        else:
            loss_logged = loss
            accelerator.backward(loss + sum(terms.values()) if terms else loss)
        hooks.call("after_backward", ctx, batch)
        if ctx.logged:  # values a callback logged (ctx.log_term): averaged and logged like the terms
            terms, ctx.logged = {**terms, **ctx.logged}, {}
        if accelerator.sync_gradients:
            if run.cfg.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), run.cfg.max_grad_norm)
            hooks.call("before_optimizer_step", ctx)
        run.optimizer.step()
        if accelerator.sync_gradients:
            run.scheduler.step()
            hooks.call("after_optimizer_step", ctx)
        run.optimizer.zero_grad(set_to_none=True)
    del outputs
    return loss_logged, terms, n_rows, n_tokens


def log_step(run: Run, log_sums: RunningLoss, epoch: int, log_tokens, log_started: float) -> None:
    """The step log's entry of this update (mean loss and terms since the last, learning rate), and the trackers'."""
    state = run.state
    log_sums.fold()
    entry = {
        "step": state.global_step,
        "epoch": round(epoch + state.step_in_epoch / run.batches_per_epoch, 4),
        **log_sums.means(),
        "learning_rate": run.scheduler.get_last_lr()[0],
    }
    log_sums.clear()
    state.step_log.append(entry)
    if run.trackers:
        elapsed = time.perf_counter() - log_started
        run.accelerator.log(
            {f"train/{k}": v for k, v in entry.items() if k != "step"}
            | {"train/tokens_per_second": float(log_tokens) / max(elapsed, 1e-9)},
            step=state.global_step,
        )


def end_epoch(run: Run, epoch: int, epoch_sums: RunningLoss) -> bool:
    """Dev evaluation, the best model, the epoch's history record, early stopping (True: stop now)."""
    state, hooks, ctx, accelerator, task = run.state, run.hooks, run.ctx, run.accelerator, run.task
    metric = task.metric_for_best
    means = epoch_sums.means()
    record = {"epoch": epoch + 1, "train_loss": means.pop("loss")}
    record.update({f"train_{key}": value for key, value in means.items()})
    improved = True
    if task.evaluate is not None:
        if run.weights_split:
            # each forward gathers the split weights, a collective every process must join as often:
            # so every process evaluates all of dev (same metrics everywhere, no speed-up)
            with alone():
                dev = task.evaluate(accelerator.unwrap_model(run.model))
        else:
            dev = task.evaluate(accelerator.unwrap_model(run.model))
        hooks.call("on_evaluate", ctx, dev)
        if metric not in dev:
            known = ", ".join(k for k, v in dev.items() if isinstance(v, (int, float)))
            raise ConfigError(f"training.metric_for_best: the dev metrics have no {metric!r}; "
                              f"choose one of {known}")
        record.update({f"dev_{k}": v for k, v in dev.items() if isinstance(v, (int, float))})
        score = dev[metric]
        best = state.best_score
        improved = best is None or (score > best if task.greater_is_better else score < best)
        if improved:
            state.best_score, state.best_epoch = score, epoch + 1
            state.bad_epochs = 0
        else:
            state.bad_epochs += 1
        if run.trackers:
            accelerator.log({f"dev/{k}": v for k, v in dev.items() if isinstance(v, (int, float))},
                            step=state.global_step)
    else:
        state.best_epoch = epoch + 1
    if improved and run.weights_split:
        full = accelerator.get_state_dict(run.model)  # every process takes part; the whole weights in process 0
        if accelerator.is_main_process:
            task.save_best(accelerator.unwrap_model(run.model), full)
    elif improved and accelerator.is_main_process:
        task.save_best(accelerator.unwrap_model(run.model))
    state.history.append(record)
    hooks.call("on_epoch_end", ctx, record)
    accelerator.print(describe_epoch(record, run.cfg.epochs, metric, improved and task.evaluate is not None))
    epoch_sums.clear()
    state.epoch, state.step_in_epoch = epoch + 1, 0
    if run.cfg.early_stopping_patience and state.bad_epochs >= run.cfg.early_stopping_patience:
        accelerator.print(f"early stopping: no dev {metric} gain for {state.bad_epochs} epoch(s)")
        state.done = True
        return True
    return False


def checkpoint(run: Run) -> None:
    # every process hands its RNG and callback state to process 0, which writes them all
    ranks = gather_to_main(rank_state(run.hooks.state_dict()))
    if run.optimizer_split:  # each process holds a part: the engine writes its own (all processes)
        save_engine_checkpoint(run.accelerator, run.run_dir, run.scheduler, run.state.state_dict(), ranks)
    elif run.accelerator.is_main_process:
        save_checkpoint(run.run_dir, run.accelerator.unwrap_model(run.model), run.optimizer, run.scheduler,
                        run.state.state_dict(), ranks)


def describe_epoch(record: dict, epochs: int, metric: str, best: bool) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"train loss {record['train_loss']:.4f}"]
    parts += [f"{key.removeprefix('train_')} {value:.4f}" for key, value in record.items()
              if key.startswith("train_") and key != "train_loss"]
    if f"dev_{metric}" in record:
        name = "F1" if metric == "f1" else metric
        parts.append(f"dev {name} {record[f'dev_{metric}']:.4f}" + (" (best)" if best else ""))
    return " · ".join(parts)
