"""Continuous batching for decoder LLMs: concurrent requests share one forward pass per generated token.

A request's prompt is prefilled when it is admitted (at a step boundary, with the other newcomers of
that step), its KV cache rows joined to the running batch's, and from then on it advances one token a
step with everyone else; it leaves at its end token, its ``max_new_tokens`` or when it is cancelled (a
client gone, a stop string seen), freeing its row for the next request waiting. Rows are
left-padded: every row's next token is written at the same cache position, each row's attention mask
hides its padding and its position ids count only its own tokens (as ``model.generate`` does with
left padding), so a row's tokens do not depend on who shares the batch beyond float rounding.

Why not a library: transformers' ``generate`` batches a fixed set of prompts with one set of
sampling settings; its continuous-batching manager (paged attention) takes one generation config for
every request and is marked experimental; vLLM and TGI are servers of their own, not something to run
a tuneforge run folder (or several LoRA runs on one base) inside our ASGI app. What is ours is the
schedule and the cache rows; the forward pass and the ``DynamicCache`` are transformers'.

Several models (runs) can be served by one engine: each has its own running batch, and the worker
thread steps them in turn, calling the model's ``activate`` first (a peft adapter switch when runs
share one base).
"""

from __future__ import annotations

import inspect
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

import torch
from transformers import DynamicCache

from .precision import autocast_context


@dataclass
class Sampling:
    """One request's decoding: greedy at temperature 0, else top-p sampling from its own generator."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: Optional[int] = None


@dataclass
class Sequence:
    """One answer being generated. ``on_event(kind, value)`` is called from the worker thread:
    ``("token", id)`` for each new token, then ``("end", finish_reason)`` (``stop``: an end token;
    ``length``: max_new_tokens; ``cancelled``) or ``("error", exception)``."""

    key: Hashable
    prompt_ids: list[int]
    sampling: Sampling
    on_event: Callable[[str, object], None]
    submitted: float = field(default_factory=time.monotonic)
    tokens: list[int] = field(default_factory=list)
    cancelled: bool = False
    generator: Optional[torch.Generator] = None

    def cancel(self) -> None:
        """Leave at the next step boundary (thread-safe: a flag the worker reads)."""
        self.cancelled = True


@dataclass
class ServedDecoder:
    """A model the engine steps: ``activate`` makes a shared module compute this model (peft)."""

    model: torch.nn.Module
    end_ids: list[int]
    pad_id: int
    precision: str = "fp32"
    activate: Callable[[], None] = lambda: None

    @property
    def cache_argument(self) -> str:
        """transformers >= 5.2x names the forward's cache ``cache`` (``past_key_values`` before, now
        deprecated); a peft model passes it through to its base model's forward."""
        if not hasattr(self, "_cache_argument"):
            inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            names = inspect.signature(type(inner).forward).parameters
            self._cache_argument = "cache" if "cache" in names else "past_key_values"
        return self._cache_argument


@dataclass
class StepStats:
    key: Hashable
    rows: int  # sequences advanced by this step (batch occupancy)
    joined: int  # of them, prefilled this step
    seconds: float


class QueueFull(Exception):
    """The engine already holds ``max_queue`` requests waiting for a row."""


class _Batch:
    """The running rows of one model: their sequences, the KV cache, the attention mask."""

    def __init__(self):
        self.rows: list[Sequence] = []
        self.cache = None  # transformers DynamicCache, batch dimension = rows
        self.mask: torch.Tensor | None = None  # (rows, cached length)
        self.last: torch.Tensor | None = None  # (rows, 1): each row's newest token, not yet in the cache

    def __len__(self) -> int:
        return len(self.rows)


def _cache_layers(cache):
    layers = getattr(cache, "layers", None)
    if layers is None or any(getattr(layer, "is_sliding", False) or not hasattr(layer, "keys") for layer in layers):
        raise TypeError("continuous batching needs a model whose cache is plain key/value tensors "
                        "(transformers' DynamicLayer); sliding-window caches are not joined")
    return layers


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    extra = width - t.shape[dim]
    if extra == 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _join(batch: _Batch, cache, mask: torch.Tensor, last: torch.Tensor, rows: list[Sequence]) -> None:
    """Append prefilled rows (their cache, mask and first token) to the running batch, left-padding
    whichever side is shorter so all rows end at the same cache position."""
    if batch.cache is None:
        batch.cache, batch.mask, batch.last, batch.rows = cache, mask, last, list(rows)
        return
    width = max(batch.mask.shape[1], mask.shape[1])
    for old, new in zip(_cache_layers(batch.cache), _cache_layers(cache)):
        old.keys = torch.cat([_left_pad(old.keys, width, 2), _left_pad(new.keys, width, 2)], dim=0)
        old.values = torch.cat([_left_pad(old.values, width, 2), _left_pad(new.values, width, 2)], dim=0)
    batch.mask = torch.cat([_left_pad(batch.mask, width, 1), _left_pad(mask, width, 1)], dim=0)
    batch.last = torch.cat([batch.last, last], dim=0)
    batch.rows += rows


def _keep(batch: _Batch, keep: list[int]) -> None:
    """Drop the rows not in ``keep``, and the cache columns that are now padding in every row."""
    if not keep:
        batch.rows, batch.cache, batch.mask, batch.last = [], None, None, None
        return
    if len(keep) < len(batch.rows):
        index = torch.tensor(keep, device=batch.mask.device)
        batch.cache.batch_select_indices(index)
        batch.mask, batch.last = batch.mask[index], batch.last[index]
        batch.rows = [batch.rows[i] for i in keep]
    used = batch.mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else batch.mask.shape[1]
    if start > 0:
        for layer in _cache_layers(batch.cache):
            layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
        batch.mask = batch.mask[:, start:]


def _choose(logits: torch.Tensor, rows: list[Sequence]) -> list[int]:
    """Each row's next token from its last-position logits (float32), by its own sampling settings."""
    greedy = logits.argmax(dim=-1).tolist()
    chosen = []
    for i, seq in enumerate(rows):
        s = seq.sampling
        if s.temperature <= 0:
            chosen.append(greedy[i])
            continue
        probs = torch.softmax(logits[i] / s.temperature, dim=-1)
        if s.top_p < 1.0:
            ordered, order = probs.sort(descending=True)
            outside = ordered.cumsum(-1) - ordered > s.top_p  # keep the smallest set reaching top_p
            ordered[outside] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, ordered)
        if seq.generator is None:
            seq.generator = torch.Generator(device=logits.device)
            seq.generator.manual_seed(s.seed if s.seed is not None else torch.seed())
        chosen.append(int(torch.multinomial(probs, 1, generator=seq.generator)))
    return chosen


class ContinuousEngine:
    """``submit(Sequence)`` from any thread; one worker thread runs every model's steps.

    ``max_running``: rows per model's batch; ``max_queue``: requests waiting for a row (``submit``
    raises :class:`QueueFull` beyond it). ``on_step(StepStats)`` and ``on_queue(waiting)`` report to
    metrics (from the worker thread).
    """

    def __init__(self, models: dict[Hashable, ServedDecoder], max_running: int = 16, max_queue: int = 256,
                 on_step: Callable[[StepStats], None] | None = None, on_queue: Callable[[int], None] | None = None):
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self.models = models
        self.max_running, self.max_queue = max_running, max_queue
        self.on_step, self.on_queue = on_step, on_queue
        self._waiting: deque[Sequence] = deque()
        self._batches = {key: _Batch() for key in models}
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._turns = itertools.cycle(list(models))

    # --- lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="tuneforge-generate", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish every request already submitted, then end the worker."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def waiting(self) -> int:
        return len(self._waiting)

    def occupancy(self) -> int:
        return sum(len(b) for b in self._batches.values())

    # --- requests
    def submit(self, seq: Sequence) -> None:
        if seq.key not in self.models:
            raise KeyError(seq.key)
        with self._lock:
            if self._stopping:
                raise RuntimeError("the engine is stopping")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests already wait for a row")
            self._waiting.append(seq)
            self._report_queue()
            self._lock.notify_all()

    def _report_queue(self) -> None:
        if self.on_queue is not None:
            self.on_queue(len(self._waiting))

    # --- the worker
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self.occupancy():
                    if self._stopping:
                        return
                    self._lock.wait()
            for _ in range(len(self.models)):  # each model with work gets one step, in turn
                key = next(self._turns)
                newcomers = self._admit(key)
                if newcomers or len(self._batches[key]):
                    self._step(key, newcomers)

    def _admit(self, key) -> list[Sequence]:
        """Waiting requests for ``key`` that fit in its batch now, oldest first; cancelled ones leave."""
        room = self.max_running - len(self._batches[key])
        taken = []
        with self._lock:
            kept = deque()
            for seq in self._waiting:
                if seq.cancelled:
                    seq.on_event("end", "cancelled")
                elif seq.key == key and len(taken) < room:
                    taken.append(seq)
                else:
                    kept.append(seq)
            self._waiting = kept
            if taken:
                self._report_queue()
        return taken

    def _step(self, key, newcomers: list[Sequence]) -> None:
        """One token for every running row, then the newcomers' prompts prefilled (their first token)
        and joined: every row gains exactly one token a step."""
        served, batch = self.models[key], self._batches[key]
        started, running = time.perf_counter(), len(batch)
        try:
            served.activate()
            device = next(served.model.parameters()).device
            with torch.inference_mode(), autocast_context(device, served.precision):
                if running:
                    self._decode(served, batch)
                    self._finish_rows(served, batch)
                if newcomers:
                    joining = self._prefill(served, newcomers, device)
                    self._finish_rows(served, joining)
                    if len(joining):
                        _join(batch, joining.cache, joining.mask, joining.last, joining.rows)
        except Exception as exc:  # every row of this model fails with it; the engine goes on
            for seq in batch.rows + [s for s in newcomers if s not in batch.rows]:
                seq.on_event("error", exc)
            _keep(batch, [])
            return
        if self.on_step is not None:
            self.on_step(StepStats(key, running + len(newcomers), len(newcomers), time.perf_counter() - started))

    def _prefill(self, served: ServedDecoder, rows: list[Sequence], device) -> _Batch:
        """The newcomers' prompts run together (left-padded): a batch of their own, each row with its
        first token."""
        width = max(len(s.prompt_ids) for s in rows)
        ids = torch.full((len(rows), width), served.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, seq in enumerate(rows):
            ids[r, width - len(seq.prompt_ids):] = torch.tensor(seq.prompt_ids, dtype=torch.long)
            mask[r, width - len(seq.prompt_ids):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=served.model.config)
        out = served.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                           logits_to_keep=1, **{served.cache_argument: cache})
        first = _choose(out.logits[:, -1, :].float(), rows)
        for seq, token in zip(rows, first):
            seq.tokens.append(token)
            seq.on_event("token", token)
        joining = _Batch()
        joining.rows, joining.cache, joining.mask = list(rows), cache, mask  # filled in place
        joining.last = torch.tensor(first, device=device).unsqueeze(1)
        return joining

    def _decode(self, served: ServedDecoder, batch: _Batch) -> None:
        """Feed every row's newest token; each gets its next one."""
        width = batch.mask.shape[1]
        mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch), 1))], dim=1)
        positions = mask.sum(-1, keepdim=True) - 1  # a row's own token count: its padding is not counted
        out = served.model(input_ids=batch.last, attention_mask=mask, position_ids=positions,
                           use_cache=True, cache_position=torch.tensor([width], device=mask.device),
                           **{served.cache_argument: batch.cache})
        chosen = _choose(out.logits[:, -1, :].float(), batch.rows)
        for seq, token in zip(batch.rows, chosen):
            seq.tokens.append(token)
            seq.on_event("token", token)
        batch.mask = mask  # the cache grew in place
        batch.last = torch.tensor(chosen, device=mask.device).unsqueeze(1)

    def _finish_rows(self, served: ServedDecoder, batch: _Batch) -> None:
        """Rows at an end token, at max_new_tokens or cancelled leave (their events sent)."""
        keep = []
        for i, seq in enumerate(batch.rows):
            if seq.cancelled:
                seq.on_event("end", "cancelled")
            elif seq.tokens and seq.tokens[-1] in served.end_ids:
                seq.on_event("end", "stop")
            elif len(seq.tokens) >= seq.sampling.max_new_tokens:
                seq.on_event("end", "length")
            else:
                keep.append(i)
        _keep(batch, keep)


__all__ = ["ContinuousEngine", "QueueFull", "Sampling", "Sequence", "ServedDecoder", "StepStats"]
