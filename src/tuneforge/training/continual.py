"""Continual-learning strategies as callbacks and data hooks on the one loop.

A continual sequence trains stage after stage, each stage an ordinary run that continues the previous
stage's model (``model.init_from``: its weights, its labels first, new head rows for new labels). What
a strategy adds to a stage's run:

=========  =====================================================================================
naive      nothing: fine-tune on the new stage's data
replay     :class:`Replay`: ``per_batch`` examples drawn uniformly from a bounded reservoir sample of
           every earlier stage's training examples (:class:`ReservoirMemory`) join each batch
ewc        :class:`EWC`: ``lambda / 2 · Σ F (θ - θ*)²`` with θ* the previous stage's weights and F the
           diagonal Fisher (:func:`diagonal_fisher`), accumulated over stages (online EWC:
           ``F ← γ F + F_stage``; Schwarz et al., 2018)
lwf        :class:`LwF`: distillation of the previous stage's model outputs on its (old) labels
           (Li & Hoiem, 2016), the task's :meth:`~tuneforge.tasks.base.Task.distillation_loss`
joint      :class:`Joint`: every earlier stage's training examples join this stage's (the upper bound)
=========  =====================================================================================

Every strategy's state is either rebuilt the same way on ``--resume`` (memory contents, teacher,
Fisher and anchor come from files of earlier stages) or saved in the checkpoint (the replay draw's
generator), so an interrupted stage resumes exactly. The metrics of a sequence (average final score,
forgetting, backward and forward transfer) are :func:`sequence_summary`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Sequence

import torch

from .callbacks import Callback, LoopContext, TrainData
from ..artifacts.paths import atomic_write_bytes


class ReservoirMemory:
    """A uniform sample of at most ``capacity`` items of a stream of any length (Vitter's algorithm R).

    After ``n`` items have been offered, every one of them is held with probability ``capacity / n``.
    Deterministic in ``seed`` and the order items are offered.
    """

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError("a replay memory needs a capacity of at least 1")
        self.capacity = capacity
        self.items: list = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        slot = self._rng.randrange(self.seen)  # keep the new item with probability capacity / seen
        if slot < self.capacity:
            self.items[slot] = item

    def extend(self, items: Sequence) -> "ReservoirMemory":
        for item in items:
            self.add(item)
        return self


class Replay(Callback):
    """Mix ``per_batch`` examples drawn uniformly (without replacement within a batch) from ``memory``
    (raw examples of earlier stages) into every training batch.

    The memory is encoded with this run's tokenizer and grown label space when the data is prepared
    (``on_train_data``); the draws come from a generator of its own whose state is checkpointed.
    """

    name = "replay"

    def __init__(self, memory: Sequence, per_batch: int = 4, seed: int = 0):
        self.memory = list(memory)
        self.per_batch = per_batch
        self.items: list = []
        self.generator = torch.Generator().manual_seed(seed)
        self.drawn = 0

    def on_train_data(self, data: TrainData) -> None:
        self.items = data.encode(self.memory) if self.memory else []

    def on_batch_items(self, ctx: LoopContext, items: list) -> list:
        if not self.items or not self.per_batch:
            return items
        k = min(self.per_batch, len(self.items))
        picks = torch.randperm(len(self.items), generator=self.generator)[:k].tolist()
        self.drawn += k
        return list(items) + [self.items[i] for i in picks]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.drawn = state["drawn"]


class Joint(Callback):
    """Train on every earlier stage's examples along with this stage's (the upper bound of a sequence)."""

    name = "joint"

    def __init__(self, earlier: Sequence):
        self.earlier = list(earlier)

    def on_train_data(self, data: TrainData) -> None:
        data.examples.extend(self.earlier)


# ---------------------------------------------------------------------------------------------
# EWC


def diagonal_fisher(model, batches, compute_loss) -> dict[str, torch.Tensor]:
    """The empirical diagonal Fisher of ``model``'s trainable parameters: the mean over ``batches`` of the
    squared gradient of the batch loss (gold labels), as Avalanche's ``EWCPlugin`` computes it.

    Computed in eval mode (no dropout), so it is a function of the weights and the data alone.
    ``compute_loss(model, batch) -> (loss, outputs)`` is the task's loss.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = model.training
    model.eval()
    count = 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        loss, _ = compute_loss(model, batch)
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach().float() ** 2
        count += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: f / max(count, 1) for n, f in fisher.items()}


def grow_to(tensor: torch.Tensor, shape: torch.Size, fill: torch.Tensor | None = None) -> torch.Tensor:
    """``tensor`` in ``shape`` when a grown head gave it more rows: the extra rows come from ``fill``
    (or zeros). Any other mismatch is an error."""
    if tensor.shape == shape:
        return tensor
    if tensor.shape[1:] != shape[1:] or tensor.shape[0] > shape[0]:
        raise ValueError(f"cannot grow a tensor of shape {tuple(tensor.shape)} to {tuple(shape)}")
    out = (fill.detach().clone() if fill is not None else torch.zeros(shape, dtype=tensor.dtype)).to(tensor.dtype)
    out[: tensor.shape[0]] = tensor
    return out


class EWC(Callback):
    """Elastic weight consolidation: adds ``lambda / 2 · Σ F (θ - θ*)²`` (logged as ``ewc.penalty``).

    ``fisher`` and ``anchor`` map parameter names (as the prepared model names its trainable ones: with
    LoRA, the LoRA matrices and the head) to tensors; a parameter grown since (new head rows) gets
    zero Fisher there, so new labels train freely. Parameters without a Fisher entry are not held.
    """

    name = "ewc"

    def __init__(self, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], lam: float):
        self.fisher, self.anchor, self.lam = fisher, anchor, lam
        self.held: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []

    @classmethod
    def from_file(cls, path: str | Path, lam: float) -> "EWC":
        from safetensors.torch import load_file

        saved = load_file(str(path))
        fisher = {k.removeprefix("fisher/"): v for k, v in saved.items() if k.startswith("fisher/")}
        anchor = {k.removeprefix("anchor/"): v for k, v in saved.items() if k.startswith("anchor/")}
        return cls(fisher, anchor, lam)

    def attach(self, model) -> None:
        self.held = []
        for name, param in model.named_parameters():
            if param.requires_grad and name in self.fisher:
                dtype = torch.promote_types(param.dtype, torch.float32)  # fp32 at least (bf16 params)
                f = grow_to(self.fisher[name], param.shape).to(param.device, dtype)
                a = grow_to(self.anchor[name], param.shape, fill=param.detach().cpu()).to(param.device, dtype)
                self.held.append((param, f, a))

    def on_train_begin(self, ctx: LoopContext) -> None:
        self.attach(ctx.unwrapped_model)

    def penalty(self) -> torch.Tensor:
        total = sum(((p.to(f.dtype) - a) ** 2 * f).sum() for p, f, a in self.held)
        return 0.5 * self.lam * total

    def extra_loss(self, ctx: LoopContext, batch: dict, outputs) -> dict[str, torch.Tensor]:
        return {"penalty": self.penalty()} if self.held else {}


def save_ewc_state(path: str | Path, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> None:
    """Fisher and anchor in one safetensors file, written atomically (for :meth:`EWC.from_file`)."""
    from safetensors.torch import save


    tensors = {f"fisher/{k}": v.contiguous().cpu() for k, v in fisher.items()}
    tensors |= {f"anchor/{k}": v.detach().contiguous().cpu() for k, v in anchor.items()}
    atomic_write_bytes(path, save(tensors))


def online_fisher(previous: dict[str, torch.Tensor] | None, new: dict[str, torch.Tensor],
                  gamma: float) -> dict[str, torch.Tensor]:
    """Online EWC's running Fisher: ``gamma · previous + new`` (a previous tensor grows to the new shape)."""
    if not previous:
        return dict(new)
    return {n: f + gamma * grow_to(previous[n], f.shape) if n in previous else f for n, f in new.items()}


# ---------------------------------------------------------------------------------------------
# LwF


class LwF(Callback):
    """Learning without forgetting: the previous stage's model (``teacher``, frozen, eval mode) reads each
    batch; the task's distillation loss pulls the student's old-label outputs towards the teacher's,
    weighted by ``weight`` (logged as ``lwf.distill``). ``load_teacher(device)`` gives the teacher when
    training begins (a finished run read back), and it is let go when training ends."""

    name = "lwf"

    def __init__(self, task, teacher=None, load_teacher: Callable[[str], object] | None = None, weight: float = 1.0,
                 temperature: float = 2.0):
        self.task, self.teacher, self.load_teacher = task, teacher, load_teacher
        self.weight, self.temperature = weight, temperature

    def on_train_begin(self, ctx: LoopContext) -> None:
        if self.teacher is None:
            self.teacher = self.load_teacher(str(ctx.accelerator.device))
        self.teacher.eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)

    def extra_loss(self, ctx: LoopContext, batch: dict, outputs) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher_logits = self.teacher(**self.task.model_inputs(batch)).logits
        loss = self.task.distillation_loss(batch, outputs.logits, teacher_logits, self.temperature)
        return {"distill": self.weight * loss}

    def on_train_end(self, ctx: LoopContext) -> None:
        self.teacher = None if self.load_teacher is not None else self.teacher  # free the memory


# ---------------------------------------------------------------------------------------------
# Metrics of a sequence


def sequence_summary(matrix: Sequence[Sequence[float]], initial: Sequence[float] | None = None) -> dict:
    """From ``matrix[i][j]``, the score on stage j's test set after training stage i (T x T):
    - ``average_final``: mean of the last row;
    - ``average_forgetting`` (Chaudhry et al., 2018): over stages j < T, the best score stage j ever
      had before the last stage minus its final score, averaged;
    - ``backward_transfer`` (Lopez-Paz & Ranzato, 2017): mean of ``R[T][j] - R[j][j]``, j < T;
    - ``forward_transfer``: mean of ``R[j-1][j] - b_j``, j > 1, with ``b_j`` the untrained model's
      score (``initial``); None without it.
    """
    t = len(matrix)
    final = list(matrix[-1])
    out = {"average_final": sum(final) / t, "average_forgetting": None, "backward_transfer": None,
           "forward_transfer": None}
    if t > 1:
        out["average_forgetting"] = sum(max(matrix[i][j] for i in range(j, t - 1)) - final[j]
                                        for j in range(t - 1)) / (t - 1)
        out["backward_transfer"] = sum(final[j] - matrix[j][j] for j in range(t - 1)) / (t - 1)
        if initial is not None:
            out["forward_transfer"] = sum(matrix[j - 1][j] - initial[j] for j in range(1, t)) / (t - 1)
    return out
