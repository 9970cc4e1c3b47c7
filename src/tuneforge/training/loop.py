"""The one training loop: every task and method trains through :func:`train_loop`.

Read top to bottom, a step is: batch -> forward -> loss -> backward -> (every N micro-batches)
clip -> optimizer step -> scheduler step, with named callback events in between (the docstring of
:func:`train_loop` shows exactly where). Accelerate supplies device placement, bf16 autocast,
gradient accumulation, multi-GPU sharding and experiment trackers; nothing else is hidden.
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader

from ..config import TrainingConfig
from ..data.encode import length_grouped_batches
from .callbacks import Callback, CallbackList, LoopContext
from ..distributed import alone, gather_to_main
from ..paths import recover_dir
from .checkpoint import CHECKPOINT_DIR, load_checkpoint, rank_state, save_checkpoint, save_engine_checkpoint


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


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AVX512-BF16 or AMX), where oneDNN runs bf16 GEMMs natively."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


# What ``precision: auto`` means, per hardware and phase, with the measurement behind each cell
# (README "Precision", benchmarks/RESULTS.md). int8 is never automatic: 99.2% tag agreement with fp32
# on WNUT-16, under the 99.5% we ask of a default.
AUTO_PRECISION = {
    # (hardware, phase): precision
    ("cuda-bf16", "training"): "bf16",    # the standard mixed-precision recipe on Ampere and newer
    ("cuda-bf16", "inference"): "bf16",
    ("cpu-bf16", "training"): "bf16",     # AVX512-BF16/AMX: 2.22x the Trainer vs 1.56x fp32, 3-seed F1 0.519 vs 0.509
    ("cpu-bf16", "inference"): "bf16",    # 1.90x the pipeline vs 1.47x fp32; tags 100% identical to fp32
    ("cpu", "training"): "fp32",          # bf16 is emulated there, and slower
    ("cpu", "inference"): "fp32",
    ("cuda", "training"): "fp32",         # GPUs without bf16
    ("cuda", "inference"): "fp32",
}


def hardware_kind(device: torch.device) -> str:
    """``cuda-bf16`` / ``cuda`` / ``cpu-bf16`` (native bf16 matrix instructions) / ``cpu``."""
    if device.type == "cuda":
        return "cuda-bf16" if torch.cuda.is_bf16_supported() else "cuda"
    return "cpu-bf16" if cpu_has_native_bf16() else "cpu"


def resolve_precision(precision: str, device: torch.device, phase: str = "training") -> str:
    """``auto`` -> the measured best for this hardware and phase (:data:`AUTO_PRECISION`); else as given."""
    if precision != "auto":
        return precision
    return AUTO_PRECISION[(hardware_kind(device), phase)]


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on ``device`` for ``precision == "bf16"``, else nothing (training and inference)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_loop(
    model,
    train_items: Sequence,
    lengths: Sequence[int],
    collate: Callable,
    cfg: TrainingConfig,
    run_dir: Path,
    evaluate: Callable[[object], dict] | None,
    save_best: Callable[[object], None],
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    compute_loss: Callable[[object, dict], tuple[torch.Tensor, object]] | None = None,
    metric_for_best: str = "f1",
    greater_is_better: bool = True,
    tracker_config: dict | None = None,
    loss_units: Callable[[dict], object] | None = None,
) -> LoopResult:
    """Train ``model`` on ``train_items``; ``evaluate(model)`` returns the dev metrics of an epoch.

    One micro-batch, top to bottom (``cb.`` marks the callback events of :mod:`.callbacks`)::

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
    every epoch when there is no dev set) -> ``cb.on_epoch_end(record)`` -> checkpoint; finally
    ``cb.on_train_end``. With ``resume``, training continues from ``run_dir/checkpoint`` (weights,
    optimizer, scheduler, RNG, counters and callback state) and ends exactly where an uninterrupted
    run with the same seed would. ``compute_loss(model, batch) -> (loss, outputs)`` replaces the
    model's own loss when a task needs another (class weights, say).

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
    from accelerate import Accelerator
    from accelerate.data_loader import prepare_data_loader
    from accelerate.utils import send_to_device, set_seed
    from transformers import get_linear_schedule_with_warmup

    from .tracking import make_trackers

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    probe = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.precision, probe)
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
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(cfg.seed, device_specific=True)  # cfg.seed + rank
    if precision == "bf16" and probe.type == "cpu" and not cpu_has_native_bf16():
        accelerator.print("warning: training.precision bf16 on a CPU without AVX512-BF16/AMX runs emulated and slow")
    units_of = loss_units or (lambda batch: batch["input_ids"].shape[0])
    batches_per_epoch = math.ceil(len(train_items) / cfg.batch_size)
    updates_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
    total_updates = updates_per_epoch * cfg.epochs
    optimizer = build_optimizer(model, cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_updates), total_updates)
    model, optimizer = accelerator.prepare(model, optimizer)
    weights_split, optimizer_split = split_state(accelerator)
    hooks = CallbackList(callbacks)

    state = {
        "epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_score": None, "best_epoch": None,
        "bad_epochs": 0, "history": [], "epoch_loss_sum": 0.0, "epoch_loss_count": 0,
        "train_seconds": 0.0, "train_samples": 0, "train_tokens": 0, "done": False,
        "step_log": [], "log_loss_sum": 0.0, "log_loss_count": 0, "epoch_terms": {}, "log_terms": {},
    }
    if resume:
        if accelerator.is_main_process:
            recover_dir(run_dir / CHECKPOINT_DIR)  # one process repairs an interrupted swap, then all read
        accelerator.wait_for_everyone()
        restored = load_checkpoint(run_dir, accelerator.unwrap_model(model), optimizer, scheduler, rank=rank,
                                   accelerator=accelerator)
        if restored is not None:
            saved_world = restored.pop("world_size", 1)
            if not restored.pop("rank_state_found", True):
                # this process had no counterpart when the checkpoint was written: a fresh stream of its own
                set_seed(cfg.seed + rank + 1_000_003 * (restored["global_step"] + 1))
            missing = hooks.load_state_dict(restored.pop("callbacks", {}))
            if missing:
                accelerator.print(f"warning: the checkpoint holds no state for callback(s) {', '.join(missing)}; "
                                  "they start afresh")
            state.update(restored)
            accelerator.print(
                f"resuming from {run_dir / CHECKPOINT_DIR}: epoch {state['epoch'] + 1}, "
                f"step {state['step_in_epoch']} of {batches_per_epoch}"
                + (f" (saved by {saved_world} process(es), resumed on {world})" if saved_world != world else "")
            )

    def task_loss(batch: dict):
        with autocast_context(accelerator.device, precision):
            if compute_loss is not None:
                return compute_loss(model, batch)
            outputs = model(**batch)
            return outputs.loss, outputs

    ctx = LoopContext(model=model, optimizer=optimizer, scheduler=scheduler, accelerator=accelerator, cfg=cfg,
                      state=state, compute_loss=task_loss, run_dir=run_dir)

    def checkpoint() -> None:
        # every process hands its RNG and callback state to process 0, which writes them all
        ranks = gather_to_main(rank_state(hooks.state_dict()))
        if optimizer_split:  # each process holds a part: the engine writes its own (all processes)
            save_engine_checkpoint(accelerator, run_dir, scheduler, state, ranks)
        elif accelerator.is_main_process:
            save_checkpoint(run_dir, accelerator.unwrap_model(model), optimizer, scheduler, state, ranks)

    if trackers:
        accelerator.init_trackers("tuneforge", config=tracker_config)
    hooks.call("on_train_begin", ctx)
    stopped_early = False
    while state["epoch"] < cfg.epochs and not state["done"]:
        epoch = state["epoch"]
        batches = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)
        shares, weightless = process_shares(batches, rank, world)
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
        if state["step_in_epoch"]:
            loader = accelerator.skip_first_batches(loader, state["step_in_epoch"])
        hooks.call("on_epoch_begin", ctx, epoch)
        model.train()
        progress = _progress(cfg, accelerator, batches_per_epoch, state["step_in_epoch"], epoch)
        epoch_sums, log_sums = _RunningLoss(state, "epoch", accelerator.device), _RunningLoss(state, "log", accelerator.device)
        counted = _Counted(state)
        started = log_started = time.perf_counter()
        tokens_here = log_tokens = 0
        for items in loader:
            weightless_step = state["step_in_epoch"] in weightless
            batch = collate(hooks.on_batch_items(ctx, items) if hooks and not weightless_step else items)
            batch = send_to_device(batch, accelerator.device)
            n_tokens = batch.pop("n_tokens")
            n_tokens = int(n_tokens.sum()) if torch.is_tensor(n_tokens) else int(n_tokens)
            n_rows = batch["input_ids"].shape[0]
            with accelerator.accumulate(model):
                hooks.call("before_forward", ctx, batch)
                loss, outputs = task_loss(batch)
                hooks.call("after_forward", ctx, batch, outputs, loss)
                terms = hooks.extra_loss(ctx, batch, outputs) if hooks else {}
                if world > 1:
                    # one all-reduce: the whole batch's units, loss sum, rows and tokens
                    units = 0 if weightless_step else units_of(batch)
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
                    if cfg.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    hooks.call("before_optimizer_step", ctx)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                    hooks.call("after_optimizer_step", ctx)
                optimizer.zero_grad(set_to_none=True)
            del outputs
            epoch_sums.add(loss_logged, terms)
            log_sums.add(loss_logged, terms)
            tokens_here += n_tokens
            log_tokens += n_tokens
            state["step_in_epoch"] += 1
            counted.add(n_rows, n_tokens)
            if accelerator.sync_gradients:
                state["global_step"] += 1
                if state["global_step"] % cfg.log_every_steps == 0:
                    log_sums.fold()
                    entry = {
                        "step": state["global_step"],
                        "epoch": round(epoch + state["step_in_epoch"] / batches_per_epoch, 4),
                        **log_sums.means(),
                        "learning_rate": scheduler.get_last_lr()[0],
                    }
                    log_sums.clear()
                    state["step_log"].append(entry)
                    if trackers:
                        elapsed = time.perf_counter() - log_started
                        accelerator.log(
                            {f"train/{k}": v for k, v in entry.items() if k != "step"}
                            | {"train/tokens_per_second": float(log_tokens) / max(elapsed, 1e-9)},
                            step=state["global_step"],
                        )
                    log_tokens, log_started = 0, time.perf_counter()
            if progress is not None:
                progress.update(1)
                if state["step_in_epoch"] % 10 == 0 or state["step_in_epoch"] == batches_per_epoch:
                    elapsed = time.perf_counter() - started
                    progress.set_postfix(
                        loss=f"{epoch_sums.peek():.4f}",
                        tok_s=f"{float(tokens_here) / max(elapsed, 1e-9):,.0f}",
                    )
            hooks.call("on_step_end", ctx)
            if (
                cfg.checkpoint_every_steps
                and accelerator.sync_gradients
                and state["global_step"] % cfg.checkpoint_every_steps == 0
                and state["step_in_epoch"] < batches_per_epoch
            ):
                epoch_sums.fold()
                log_sums.fold()
                counted.fold()
                state["train_seconds"] += time.perf_counter() - started
                started = time.perf_counter()
                checkpoint()
        if progress is not None:
            progress.close()
        state["train_seconds"] += time.perf_counter() - started
        epoch_sums.fold()
        log_sums.fold()
        counted.fold()
        means = epoch_sums.means()
        record = {"epoch": epoch + 1, "train_loss": means.pop("loss")}
        record.update({f"train_{key}": value for key, value in means.items()})
        improved = True
        if evaluate is not None:
            if weights_split:
                # each forward gathers the split weights, a collective every process must join as often:
                # so every process evaluates all of dev (same metrics everywhere, no speed-up)
                with alone():
                    dev = evaluate(accelerator.unwrap_model(model))
            else:
                dev = evaluate(accelerator.unwrap_model(model))
            hooks.call("on_evaluate", ctx, dev)
            if metric_for_best not in dev:
                from ..errors import ConfigError

                known = ", ".join(k for k, v in dev.items() if isinstance(v, (int, float)))
                raise ConfigError(f"training.metric_for_best: the dev metrics have no {metric_for_best!r}; "
                                  f"choose one of {known}")
            record.update({f"dev_{k}": v for k, v in dev.items() if isinstance(v, (int, float))})
            score = dev[metric_for_best]
            best = state["best_score"]
            improved = best is None or (score > best if greater_is_better else score < best)
            if improved:
                state["best_score"], state["best_epoch"] = score, epoch + 1
                state["bad_epochs"] = 0
            else:
                state["bad_epochs"] += 1
            if trackers:
                accelerator.log({f"dev/{k}": v for k, v in dev.items() if isinstance(v, (int, float))},
                                step=state["global_step"])
        else:
            state["best_epoch"] = epoch + 1
        if improved and weights_split:
            full = accelerator.get_state_dict(model)  # every process takes part; the whole weights in process 0
            if accelerator.is_main_process:
                save_best(accelerator.unwrap_model(model), full)
        elif improved and accelerator.is_main_process:
            save_best(accelerator.unwrap_model(model))
        state["history"].append(record)
        hooks.call("on_epoch_end", ctx, record)
        accelerator.print(_describe_epoch(record, cfg.epochs, metric_for_best, improved and evaluate is not None))
        epoch_sums.clear()
        state.update(epoch=epoch + 1, step_in_epoch=0)
        if cfg.early_stopping_patience and state["bad_epochs"] >= cfg.early_stopping_patience:
            accelerator.print(f"early stopping: no dev {metric_for_best} gain for {state['bad_epochs']} epoch(s)")
            state["done"] = stopped_early = True
        checkpoint()
    hooks.call("on_train_end", ctx)
    # The trackers' own finish, not accelerator.end_training(): that also destroys the process group,
    # which a later run in the same processes (compare --in-process, a notebook, torchrun script.py) needs.
    for tracker in accelerator.trackers:
        tracker.finish()

    return LoopResult(
        best_score=state["best_score"],
        best_epoch=state["best_epoch"],
        epochs_run=state["epoch"],
        stopped_early=stopped_early or state["done"] and state["epoch"] < cfg.epochs,
        history=state["history"],
        train_seconds=state["train_seconds"],
        train_samples=state["train_samples"],
        train_tokens=state["train_tokens"],
        peak_rss_mb=peak_rss_mb(),
        precision=precision,
        step_log=state["step_log"],
        metric_for_best=metric_for_best,
    )


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


class _Counted:
    """Training samples and tokens seen, folded into ``state`` where the loss sums fold: with several
    processes they are the whole batch's counts, device tensors from the step's all-reduce, read
    (one host sync) only here."""

    def __init__(self, state: dict):
        self.state, self.samples, self.tokens = state, 0, 0

    def add(self, samples, tokens) -> None:
        self.samples += samples
        self.tokens += tokens

    def fold(self) -> None:
        self.state["train_samples"] += int(self.samples)
        self.state["train_tokens"] += int(self.tokens)
        self.samples = self.tokens = 0


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


class _RunningLoss:
    """Sums of the task loss and the extra terms over a span of micro-batches (an epoch, a log interval).

    They stay on the device between host syncs and are folded into ``state`` (as floats, keys
    ``{span}_loss_sum``, ``{span}_loss_count``, ``{span}_terms``) at checkpoints and when read, so a
    resumed run adds up exactly as an unbroken one: both fold at the same steps.
    """

    def __init__(self, state: dict, span: str, device):
        self.state, self.span = state, span
        self.loss = torch.zeros((), device=device)
        self.terms: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        self.loss += loss.detach()
        for key, value in terms.items():
            self.terms[key] = self.terms.get(key, 0.0) + value.detach()
        self.count += 1

    def fold(self) -> None:
        s, span = self.state, self.span
        s[f"{span}_loss_sum"] += self.loss.item()
        s[f"{span}_loss_count"] += self.count
        for key, value in self.terms.items():
            s[f"{span}_terms"][key] = s[f"{span}_terms"].get(key, 0.0) + float(value)
        self.loss.zero_()
        self.terms, self.count = {}, 0

    def peek(self) -> float:
        """The mean task loss so far, without folding (for the progress bar)."""
        s = self.state
        return (self.loss.item() + s[f"{self.span}_loss_sum"]) / max(self.count + s[f"{self.span}_loss_count"], 1)

    def means(self) -> dict[str, float]:
        """Mean task loss (``loss``) and terms over the folded span."""
        s, span = self.state, self.span
        n = max(s[f"{span}_loss_count"], 1)
        return {"loss": s[f"{span}_loss_sum"] / n, **{k: v / n for k, v in s[f"{span}_terms"].items()}}

    def clear(self) -> None:
        self.state.update({f"{self.span}_loss_sum": 0.0, f"{self.span}_loss_count": 0, f"{self.span}_terms": {}})


def _progress(cfg: TrainingConfig, accelerator, total: int, done: int, epoch: int):
    if not cfg.progress or not accelerator.is_main_process:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)


def _describe_epoch(record: dict, epochs: int, metric: str, best: bool) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"train loss {record['train_loss']:.4f}"]
    parts += [f"{key.removeprefix('train_')} {value:.4f}" for key, value in record.items()
              if key.startswith("train_") and key != "train_loss"]
    if f"dev_{metric}" in record:
        name = "F1" if metric == "f1" else metric
        parts.append(f"dev {name} {record[f'dev_{metric}']:.4f}" + (" (best)" if best else ""))
    return " · ".join(parts)
