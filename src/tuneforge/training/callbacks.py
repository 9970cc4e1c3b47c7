"""Behaviour that attaches to the one training loop at named events.

A callback subclasses :class:`Callback` and overrides the events it needs; every event receives the
:class:`LoopContext` (model, optimizer, accelerator, counters, and the loop's own ``compute_loss`` and
``backward``). Where each event fires inside a step is shown in :mod:`tuneforge.training.loop`.

=========================  ==================================================================
event                      typical use
=========================  ==================================================================
on_train_data(data)        before encoding (the driver calls it): add training examples
                           (joint training), encode examples of one's own (a replay memory)
on_train_begin / end       set up or release resources; anchors (EWC), teachers (LwF)
on_epoch_begin / end       per-epoch schedules; ``on_epoch_end`` sees the epoch's history record
on_batch_items(items)      return the list of examples to collate: may add some (replay memory)
before_forward(batch)      inspect or change the collated batch
after_forward(batch, out)  see the task loss and the model outputs
extra_loss(batch, out)     return ``{name: tensor}`` terms added to the task loss, logged separately
after_backward(batch)      gradients exist: perturb, run a second forward/backward, restore (adversarial);
                           ``ctx.log_term(name, value)`` logs what it computed beside the loss
before_optimizer_step      gradients are final (accumulated, clipped); only on update steps
after_optimizer_step       weights changed; only on update steps
on_step_end                a micro-batch is fully done and counted (``ctx.state['global_step']``)
on_evaluate(metrics)       dev metrics of the epoch, before the best checkpoint is chosen
=========================  ==================================================================

State: ``state_dict()`` returns a flat ``{key: value}`` of JSON values and tensors;
``load_state_dict`` gets it back. The loop saves it in every checkpoint, so ``--resume`` continues
a run with stateful callbacks exactly.

Several processes: every process has its own callback objects and calls every event; ``on_batch_items``
sees that process's share of the batch, and a process whose share is empty (see the loop) skips it for
that step. Each process's state is saved; on resume a process gets its own back, or process 0's when
the checkpoint was written by fewer processes. ``extra_loss`` terms are added as they are in every
process (DDP averages them); ``ctx.backward`` weighs a loss over the batch by the process's share. ``name`` (default: the class name) keys the state and the
logged loss terms; two callbacks in one run need different names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .state import LoopState

EVENTS = (
    "on_train_data", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_batch_items", "before_forward",
    "after_forward", "extra_loss", "after_backward", "before_optimizer_step", "after_optimizer_step",
    "on_step_end", "on_evaluate",
)


@dataclass
class TrainData:
    """What ``on_train_data`` sees: the run's raw training examples (a hook may add to the list), its
    label space, and ``encode(examples) -> items``, the task's encoding with this run's tokenizer and labels."""

    examples: list
    labels: list[str]
    encode: Callable[[Sequence], list]


@dataclass
class LoopContext:
    """What a callback may read and use. ``state`` holds the loop's counters (``epoch``,
    ``step_in_epoch``, ``global_step``, ``history``...); callbacks read it and keep their own state."""

    model: Any
    optimizer: Any
    scheduler: Any
    accelerator: Any
    cfg: Any  # TrainingConfig
    state: LoopState
    compute_loss: Callable[[dict], tuple[torch.Tensor, Any]]  # (loss, outputs) of the task on a batch
    run_dir: Any = None
    extra: dict = field(default_factory=dict)  # free room for cooperating callbacks
    logged: dict = field(default_factory=dict)  # values logged this micro-batch (see log_term)
    # this process's weight for a loss over its share of the batch (1 with one process; see the loop)
    batch_weight: Any = 1.0

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of a loss over this step's batch (a mean, as the task loss), through accelerate
        (gradient accumulation, mixed precision). With several processes it is weighted by
        ``batch_weight``, as the task loss is, so the averaged gradient is the whole batch's."""
        self.accelerator.backward(loss * self.batch_weight if self.accelerator.num_processes > 1 else loss)

    def log_term(self, name: str, value: torch.Tensor) -> None:
        """Log a value of this micro-batch beside the loss (``train_<name>`` in the history, trackers and
        step log), without adding it to the loss: what ``after_backward`` computed (an adversarial loss).
        Averaged over micro-batches like the task loss; name it ``<callback name>.<what>``."""
        self.logged[name] = value.detach()

    @property
    def unwrapped_model(self):
        return self.accelerator.unwrap_model(self.model)


class Callback:
    """Override the events you need; each default does nothing."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def on_train_data(self, data: TrainData) -> None: ...

    def on_train_begin(self, ctx: LoopContext) -> None: ...

    def on_train_end(self, ctx: LoopContext) -> None: ...

    def on_epoch_begin(self, ctx: LoopContext, epoch: int) -> None: ...

    def on_epoch_end(self, ctx: LoopContext, record: dict) -> None: ...

    def on_batch_items(self, ctx: LoopContext, items: list) -> list:
        return items

    def before_forward(self, ctx: LoopContext, batch: dict) -> None: ...

    def after_forward(self, ctx: LoopContext, batch: dict, outputs: Any, loss: torch.Tensor) -> None: ...

    def extra_loss(self, ctx: LoopContext, batch: dict, outputs: Any) -> dict[str, torch.Tensor]:
        return {}

    def after_backward(self, ctx: LoopContext, batch: dict) -> None: ...

    def before_optimizer_step(self, ctx: LoopContext) -> None: ...

    def after_optimizer_step(self, ctx: LoopContext) -> None: ...

    def on_step_end(self, ctx: LoopContext) -> None: ...

    def on_evaluate(self, ctx: LoopContext, metrics: dict) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class CallbackList:
    """Calls every callback's event in order; the loop talks to this alone."""

    def __init__(self, callbacks: Sequence[Callback] = ()):
        self.callbacks = list(callbacks)
        names = [cb.name for cb in self.callbacks]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"two callbacks named {duplicated[0]!r}; give each its own name")

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def call(self, event: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(*args)

    def on_batch_items(self, ctx: LoopContext, items: list) -> list:
        for cb in self.callbacks:
            items = cb.on_batch_items(ctx, items)
        return items

    def extra_loss(self, ctx: LoopContext, batch: dict, outputs: Any) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for cb in self.callbacks:
            for key, value in cb.extra_loss(ctx, batch, outputs).items():
                terms[f"{cb.name}.{key}" if key else cb.name] = value
        return terms

    def state_dict(self) -> dict[str, dict]:
        return {cb.name: cb.state_dict() for cb in self.callbacks}

    def load_state_dict(self, saved: dict[str, dict]) -> list[str]:
        """Restore each callback's state; returns the names the checkpoint had no state for."""
        missing = []
        for cb in self.callbacks:
            if cb.name in saved:
                cb.load_state_dict(saved[cb.name])
            elif cb.state_dict():
                missing.append(cb.name)
        return missing


class StepFunction(Callback):
    """A plain function of the global step, called at ``on_step_end`` (quick hooks, interrupts in tests)."""

    def __init__(self, function: Callable[[int], None], name: str | None = None):
        self.function = function
        self._name = name or f"step_function_{id(function):x}"

    @property
    def name(self) -> str:
        return self._name

    def on_step_end(self, ctx: LoopContext) -> None:
        self.function(ctx.state["global_step"])
