"""The one training loop: every task and method trains through :func:`train_loop`.

Read top to bottom, a step is: batch -> forward -> loss -> backward -> (every N micro-batches)
clip -> optimizer step -> scheduler step. Accelerate supplies device placement, bf16 autocast,
gradient accumulation and multi-GPU sharding; nothing else is hidden.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader

from ..config import TrainingConfig
from ..data.encode import length_grouped_batches
from .checkpoint import CHECKPOINT_DIR, load_checkpoint, save_checkpoint


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


def resolve_precision(precision: str, device: torch.device) -> str:
    """What ``auto`` means, by measurement (benchmarks/RESULTS.md):

    - GPU with bf16 support: bf16 autocast, for training and inference;
    - CPU: fp32. On an AVX512-BF16 CPU bf16 autocast trained MiniLM 1.4x faster, but one seed's
      WNUT-16 test F1 came out 2.2 points lower (benchmarks/RESULTS.md); until more seeds settle
      it, ``precision: bf16`` is an opt-in (``cpu_has_native_bf16`` says whether it can pay).
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "fp32"


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
    on_step: Sequence[Callable[[int], None]] = (),
    compute_loss: Callable[[object, dict], torch.Tensor] | None = None,
) -> LoopResult:
    """Train ``model`` on ``train_items``; ``evaluate(model)`` returns dev metrics with an ``f1`` key.

    The best model by dev F1 is handed to ``save_best`` (every epoch when there is no dev set).
    With ``resume``, training continues from ``run_dir/checkpoint`` and ends exactly where an
    uninterrupted run with the same seed would. ``compute_loss(model, batch)`` replaces the
    model's own loss when a task needs another (class weights, say).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    probe = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.precision, probe)
    if precision == "bf16" and probe.type == "cpu" and not cpu_has_native_bf16():
        print("warning: training.precision bf16 on a CPU without AVX512-BF16/AMX runs emulated and slow")
    accelerator = Accelerator(
        mixed_precision="bf16" if precision == "bf16" else "no",
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,
    )
    batches_per_epoch = math.ceil(len(train_items) / cfg.batch_size)
    updates_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
    total_updates = updates_per_epoch * cfg.epochs
    optimizer = build_optimizer(model, cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_updates), total_updates)
    model, optimizer = accelerator.prepare(model, optimizer)

    state = {
        "epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_score": None, "best_epoch": None,
        "bad_epochs": 0, "history": [], "epoch_loss_sum": 0.0, "epoch_loss_count": 0,
        "train_seconds": 0.0, "train_samples": 0, "train_tokens": 0, "done": False,
    }
    if resume:
        restored = load_checkpoint(run_dir, accelerator.unwrap_model(model), optimizer, scheduler)
        if restored is not None:
            state.update(restored)
            accelerator.print(
                f"resuming from {run_dir / CHECKPOINT_DIR}: epoch {state['epoch'] + 1}, "
                f"step {state['step_in_epoch']} of {batches_per_epoch}"
            )

    def checkpoint() -> None:
        if accelerator.is_main_process:
            save_checkpoint(run_dir, accelerator.unwrap_model(model), optimizer, scheduler, state)

    stopped_early = False
    while state["epoch"] < cfg.epochs and not state["done"]:
        epoch = state["epoch"]
        batches = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)
        # A private generator: starting a DataLoader iterator otherwise draws a seed from the global
        # RNG, which would shift every dropout mask after a mid-epoch resume.
        loader = accelerator.prepare(
            DataLoader(train_items, batch_sampler=batches, collate_fn=collate,
                       generator=torch.Generator().manual_seed(cfg.seed + epoch))
        )
        if state["step_in_epoch"]:
            loader = accelerator.skip_first_batches(loader, state["step_in_epoch"])
        model.train()
        progress = _progress(cfg, accelerator, batches_per_epoch, state["step_in_epoch"], epoch)
        loss_sum = torch.zeros((), device=accelerator.device)
        loss_count = 0
        started = time.perf_counter()
        tokens_here = 0
        for batch in loader:
            n_tokens = batch.pop("n_tokens")
            n_tokens = int(n_tokens.sum()) if torch.is_tensor(n_tokens) else int(n_tokens)
            with accelerator.accumulate(model):
                loss = compute_loss(model, batch) if compute_loss else model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            # Keep the running loss on the device: no host sync per step.
            loss_sum += loss.detach()
            loss_count += 1
            tokens_here += n_tokens
            state["step_in_epoch"] += 1
            state["train_samples"] += batch["input_ids"].shape[0]
            state["train_tokens"] += n_tokens
            if accelerator.sync_gradients:
                state["global_step"] += 1
            if progress is not None:
                progress.update(1)
                if state["step_in_epoch"] % 10 == 0 or state["step_in_epoch"] == batches_per_epoch:
                    elapsed = time.perf_counter() - started
                    progress.set_postfix(
                        loss=f"{(loss_sum.item() + state['epoch_loss_sum']) / (loss_count + state['epoch_loss_count']):.4f}",
                        tok_s=f"{tokens_here / max(elapsed, 1e-9):,.0f}",
                    )
            for hook in on_step:
                hook(state["global_step"])
            if (
                cfg.checkpoint_every_steps
                and accelerator.sync_gradients
                and state["global_step"] % cfg.checkpoint_every_steps == 0
                and state["step_in_epoch"] < batches_per_epoch
            ):
                state["epoch_loss_sum"] += loss_sum.item()
                state["epoch_loss_count"] += loss_count
                state["train_seconds"] += time.perf_counter() - started
                loss_sum.zero_()
                loss_count, started = 0, time.perf_counter()
                checkpoint()
        if progress is not None:
            progress.close()
        state["train_seconds"] += time.perf_counter() - started
        state["epoch_loss_sum"] += loss_sum.item()
        state["epoch_loss_count"] += loss_count
        record = {
            "epoch": epoch + 1,
            "train_loss": state["epoch_loss_sum"] / max(state["epoch_loss_count"], 1),
        }
        improved = True
        if evaluate is not None:
            dev = evaluate(accelerator.unwrap_model(model))
            record.update({f"dev_{k}": v for k, v in dev.items() if isinstance(v, (int, float))})
            score = dev["f1"]
            improved = state["best_score"] is None or score > state["best_score"]
            if improved:
                state["best_score"], state["best_epoch"] = score, epoch + 1
                state["bad_epochs"] = 0
            else:
                state["bad_epochs"] += 1
        else:
            state["best_epoch"] = epoch + 1
        if improved and accelerator.is_main_process:
            save_best(accelerator.unwrap_model(model))
        state["history"].append(record)
        accelerator.print(_describe_epoch(record, cfg.epochs, improved and evaluate is not None))
        state.update(epoch=epoch + 1, step_in_epoch=0, epoch_loss_sum=0.0, epoch_loss_count=0)
        if cfg.early_stopping_patience and state["bad_epochs"] >= cfg.early_stopping_patience:
            accelerator.print(f"early stopping: no dev F1 gain for {state['bad_epochs']} epoch(s)")
            state["done"] = stopped_early = True
        checkpoint()

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
    )


def _progress(cfg: TrainingConfig, accelerator, total: int, done: int, epoch: int):
    if not cfg.progress or not accelerator.is_main_process:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)


def _describe_epoch(record: dict, epochs: int, best: bool) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"train loss {record['train_loss']:.4f}"]
    if "dev_f1" in record:
        parts.append(f"dev F1 {record['dev_f1']:.4f}" + (" (best)" if best else ""))
    return " · ".join(parts)
