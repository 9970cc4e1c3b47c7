"""The training loop's state: its counters (:class:`LoopState`, what a checkpoint holds) and the running
sums of a span of micro-batches that fold into them (:class:`RunningLoss`, :class:`Counted`).

``LoopState.state_dict()`` is the ``state`` a checkpoint has always held (the same keys, values and
order), and ``load_state_dict`` reads one back, so checkpoints of earlier versions resume exactly.
Callbacks see the state as ``ctx.state``; it is also a mapping of those keys (``ctx.state["global_step"]``).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch


@dataclass(eq=False)
class LoopState(MutableMapping):
    """The loop's counters; every field is a key of the checkpoint's ``state.json``."""

    epoch: int = 0  # epochs done (the one running, counted from 0)
    step_in_epoch: int = 0  # micro-batches done in this epoch
    global_step: int = 0  # optimizer updates done
    best_score: float | None = None
    best_epoch: int | None = None  # counted from 1
    bad_epochs: int = 0  # epochs since the best, for early stopping
    history: list[dict] = field(default_factory=list)  # one record an epoch
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    train_seconds: float = 0.0
    train_samples: int = 0
    train_tokens: int = 0
    done: bool = False  # early stopping ended the run
    step_log: list[dict] = field(default_factory=list)  # every log_every_steps updates
    log_loss_sum: float = 0.0
    log_loss_count: int = 0
    epoch_terms: dict[str, float] = field(default_factory=dict)
    log_terms: dict[str, float] = field(default_factory=dict)
    # keys a checkpoint held that are no field (another version's): kept and written back as they were
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``state``: the fields in order, then any extra keys."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Take the values of ``saved`` (a checkpoint's ``state``); keys it lacks keep their values."""
        for key, value in saved.items():
            self[key] = value

    # the mapping of the checkpoint keys, as the state was a dict
    def _is_field(self, key: str) -> bool:
        return key != "extra" and key in self.__dataclass_fields__

    def __getitem__(self, key: str) -> Any:
        if self._is_field(key):
            return getattr(self, key)
        return self.extra[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if self._is_field(key):
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __delitem__(self, key: str) -> None:
        if self._is_field(key):
            raise TypeError(f"the loop state's {key!r} cannot be removed")
        del self.extra[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.state_dict())

    def __len__(self) -> int:
        return len(self.state_dict())


class Counted:
    """Training samples and tokens seen, folded into the state where the loss sums fold: with several
    processes they are the whole batch's counts, device tensors from the step's all-reduce, read
    (one host sync) only here."""

    def __init__(self, state: LoopState):
        self.state, self.samples, self.tokens = state, 0, 0

    def add(self, samples, tokens) -> None:
        self.samples += samples
        self.tokens += tokens

    def fold(self) -> None:
        self.state.train_samples += int(self.samples)
        self.state.train_tokens += int(self.tokens)
        self.samples = self.tokens = 0


class RunningLoss:
    """Sums of the task loss and the extra terms over a span of micro-batches (an epoch, a log interval).

    They stay on the device between host syncs and are folded into the state (as floats, keys
    ``{span}_loss_sum``, ``{span}_loss_count``, ``{span}_terms``) at checkpoints and when read, so a
    resumed run adds up exactly as an unbroken one: both fold at the same steps.
    """

    def __init__(self, state: LoopState, span: str, device):
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
