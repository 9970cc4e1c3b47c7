"""Generation: batched with left padding and the KV cache (``model.generate``), greedy or sampled,
stop strings, a seed; one prompt can stream its answer piece by piece.

transformers' ``generate`` does the decoding (its logits processors, KV cache and stop-string
matching are well kept); what is ours: prompts rendered by the run's chat template, batches sorted by
length so little padding is computed, the stop string cut from the answer (as OpenAI's API does),
and a finish reason per answer (``stop``: the end-of-turn token or a stop string; ``length``:
``max_new_tokens`` reached).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import torch

from ...errors import ConfigError
from ...runtime.precision import autocast_context


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: Optional[int] = None

    def check(self) -> "GenerationSettings":
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens {self.max_new_tokens}: give 1 or more")
        if self.temperature < 0:
            raise ConfigError(f"temperature {self.temperature}: give 0 (greedy) or more")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p {self.top_p}: give a value in (0, 1]")
        if any(not s for s in self.stop):
            raise ConfigError("stop: an empty stop string would end every answer at once")
        return self


def _generate_kwargs(tokenizer, settings: GenerationSettings, stop_ids: list[int]) -> dict:
    kwargs = {"max_new_tokens": settings.max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
              "eos_token_id": stop_ids, "use_cache": True}
    if settings.temperature > 0:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if settings.stop:
        kwargs.update(stop_strings=list(settings.stop), tokenizer=tokenizer)
    return kwargs


def end_token_ids(model, tokenizer) -> list[int]:
    """Tokens that end an answer: the tokenizer's eos (ChatML's <|im_end|>) and the model's own."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stop if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


@torch.inference_mode()
def generate_texts(model, tokenizer, prompts: Sequence[str], settings: GenerationSettings, precision: str = "fp32",
                   batch_size: int = 16) -> list[dict]:
    """``[{"text", "finish_reason", "prompt_tokens", "completion_tokens"}]`` for each prompt, in order."""
    settings.check()
    device = next(model.parameters()).device
    stop_ids = end_token_ids(model, tokenizer)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # little padding per batch
    results: list[dict | None] = [None] * len(prompts)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    for begin in range(0, len(order), batch_size):
        chunk = order[begin: begin + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):  # left padding: every prompt ends where generation starts
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i], dtype=torch.long)
            mask[row, width - len(encoded[i]):] = 1
        with autocast_context(device, precision):
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 **_generate_kwargs(tokenizer, settings, stop_ids))
        for row, i in enumerate(chunk):
            new = out[row, width:].tolist()
            ended = next((k for k, t in enumerate(new) if t in stop_ids), None)
            tokens = new[:ended] if ended is not None else [t for t in new if t != tokenizer.pad_token_id]
            text, stopped = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), settings.stop)
            finished = ended is not None or stopped or len(tokens) < settings.max_new_tokens
            results[i] = {"text": text, "finish_reason": "stop" if finished else "length",
                          "prompt_tokens": len(encoded[i]), "completion_tokens": len(tokens) + (ended is not None)}
    model.train(was_training)
    return results  # type: ignore[return-value]


def stream_text(model, tokenizer, prompt: str, settings: GenerationSettings, precision: str = "fp32") -> Iterator[str]:
    """The answer to one prompt, piece by piece as it is generated (``TextIteratorStreamer``); a stop
    string ends the stream before it is shown."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    settings.check()
    device = next(model.parameters()).device
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(device)
    kwargs = _generate_kwargs(tokenizer, settings, end_token_ids(model, tokenizer))
    errors: list[BaseException] = []
    cancelled = threading.Event()

    class Cancelled(StoppingCriteria):  # a stop string shown, or the reader gone: generation ends at the next token
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

    def run() -> None:
        try:
            with torch.inference_mode(), autocast_context(device, precision):
                model.generate(**enc, streamer=streamer, stopping_criteria=StoppingCriteriaList([Cancelled()]),
                               **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
            streamer.end()

    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    model.eval()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    shown, held = "", ""
    longest_stop = max((len(s) for s in settings.stop), default=0)
    ended = False  # the streamer's end mark was read: reading on would wait forever
    try:
        for piece in streamer:
            held += piece
            text, stopped = cut_at_stop(shown + held, settings.stop)
            if stopped:
                if len(text) > len(shown):
                    yield text[len(shown):]
                break
            # hold back what could be the start of a stop string
            safe = len(held) - (longest_stop - 1) if longest_stop else len(held)
            if safe > 0:
                yield held[:safe]
                shown, held = shown + held[:safe], held[safe:]
        else:
            ended = True
            if held:
                yield held
    finally:  # also when the caller stops reading (GeneratorExit): the worker must not run on
        cancelled.set()
        if not ended:
            for _ in streamer:  # drain to the end mark, so the worker's queue puts never block
                pass
        worker.join()
    if errors:
        raise errors[0]
