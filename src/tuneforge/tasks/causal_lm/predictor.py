"""A decoder run loaded from its folder: loss and perplexity on text or conversations, answers to
prompts (batched, or streamed one at a time), and exact match / ROUGE-L / chrF / BLEU of its answers
against labelled conversations."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterator, Sequence

import torch

from ...data.readers import read_documents
from ...data.readers.chat import read_conversations, read_prompts
from ...data.records import ChatExample, TextExample
from ...errors import InputError
from ...evaluation.generation import describe_generation_scores, score_generations
from ...runtime.precision import autocast_context, cast_linear_weights
from ..predictor import Predictor
from .encoding import DecoderCollator, encode_conversations, encode_text_blocks, render_prompt
from .generation import GenerationSettings, generate_texts, stream_text
from .loss import summed_loss


class DecoderModel(Predictor):
    """``predict`` / ``generate`` answer prompts; ``evaluate_examples`` scores loss, perplexity and,
    for conversations with answers, the generated answers."""

    generative = True  # tuneforge serve answers it on the OpenAI routes too

    def __init__(self, model, tokenizer, meta: dict, precision: str = "auto"):
        super().__init__(model, tokenizer, meta, precision)
        self.generation = GenerationSettings(max_new_tokens=meta.get("max_new_tokens", 128))

    def prepare_loaded(self) -> None:
        # bf16: the linear weights cast once rather than at every generated token (same outputs;
        # benchmarks/RESULTS.md "Decoder LLMs": generation tokens/s)
        cast_linear_weights(self.model, self.precision)

    @property
    def chat(self) -> bool:
        """True for an SFT run (prompts go through its chat template), False for raw-text continuation."""
        return bool(self.meta.get("chat"))

    # --- files
    def read(self, path, format: str = "auto", labelled: bool = True, text_column=None, messages_column=None) -> list:
        if self.chat:
            return read_conversations(path, format, messages_column or self.meta.get("messages_column"), labelled)
        return read_documents(path, format, text_column or self.meta.get("text_column", "text"))

    def read_inputs(self, path, format: str = "auto", text_column=None, messages_column=None) -> list:
        return read_prompts(path, format)

    def configure(self, max_new_tokens: int | None = None, temperature: float | None = None,
                  top_p: float | None = None, stop: Sequence[str] | None = None, seed: int | None = None) -> None:
        """Generation settings for :meth:`predict` (``tuneforge predict --temperature ...``); None keeps one."""
        given = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                 "stop": list(stop) if stop is not None else None, "seed": seed}
        self.generation = replace(self.generation, **{k: v for k, v in given.items() if v is not None}).check()

    # --- prompts
    def prompt_text(self, item) -> str:
        """What the model continues: a string, a list of chat messages or a ChatExample, rendered by the
        run's chat template (SFT) or taken as text (causal LM)."""
        if isinstance(item, ChatExample):
            messages = item.prompt_messages
        elif isinstance(item, str):
            messages = [{"role": "user", "content": item}]
        elif isinstance(item, TextExample):
            messages = [{"role": "user", "content": item.text}]
        else:
            messages = list(item)
        if not self.chat:
            return "\n".join(m["content"] for m in messages)
        return render_prompt(self.tokenizer, messages)

    def generate(self, inputs, batch_size: int = 16, **settings) -> list[dict]:
        """Answers to ``inputs`` (one or a list of strings, message lists or ChatExamples):
        ``[{"text", "finish_reason", "prompt_tokens", "completion_tokens"}]``. ``settings``:
        ``max_new_tokens``, ``temperature`` (0: greedy), ``top_p``, ``stop``, ``seed``."""
        if isinstance(inputs, (str, ChatExample)) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], dict)):
            inputs = [inputs]
        current = self.generation
        if settings:
            self.configure(**settings)
        try:
            return generate_texts(self.model, self.tokenizer, [self.prompt_text(x) for x in inputs], self.generation,
                                  self.precision, batch_size)
        finally:
            self.generation = current

    def stream(self, item, **settings) -> Iterator[str]:
        """The answer to one prompt, piece by piece."""
        current = self.generation
        if settings:
            self.configure(**settings)
        chosen, self.generation = self.generation, current
        return stream_text(self.model, self.tokenizer, self.prompt_text(item), chosen, self.precision)

    def predict(self, inputs, batch_size: int = 16) -> list[dict]:
        if isinstance(inputs, (str, ChatExample)):
            inputs = [inputs]
        answers = generate_texts(self.model, self.tokenizer, [self.prompt_text(x) for x in inputs], self.generation,
                                 self.precision, batch_size)
        results = []
        for item, answer in zip(inputs, answers):
            prompt = item.prompt_messages if isinstance(item, ChatExample) else item
            results.append({"prompt": prompt, **answer})
        return results

    def inputs_from_request(self, texts: list | None = None, tokens: list | None = None) -> list:
        if tokens is not None:
            raise InputError("'tokens': a generative model takes 'texts' (prompts)")
        return super().inputs_from_request(texts, tokens)

    def count_output(self, results: list[dict]) -> dict[str, int]:
        return {"answers": len(results), "tokens generated": sum(r["completion_tokens"] for r in results)}

    # --- scoring
    @torch.inference_mode()
    def losses(self, examples: Sequence, batch_size: int = 16) -> dict:
        m = self.meta
        if self.chat:
            rows, stats = encode_conversations(self.tokenizer, examples, m["max_length"],
                                               m.get("assistant_only_loss", True))
        else:
            rows, stats = encode_text_blocks(self.tokenizer, [ex.text for ex in examples], m["max_length"])
        collate = DecoderCollator(self.tokenizer.pad_token_id)
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        total, count = 0.0, 0
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))
        for start in range(0, len(order), batch_size):
            batch = collate([rows[i] for i in order[start:start + batch_size]])
            batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
            with autocast_context(device, self.precision):
                summed, tokens = summed_loss(self.model, batch)
            total, count = total + summed, count + tokens
        self.model.train(was_training)
        loss = total / count if count else float("nan")
        return {"loss": loss, "perplexity": math.exp(loss) if count else float("nan"), "predicted_tokens": count,
                "encoding": stats.describe()}

    def evaluate_examples(self, examples: Sequence, batch_size: int = 16, generations: int | None = None):
        """Loss and perplexity; for conversations with answers, also the first ``generations``
        (default: the run's ``task.eval_generations``) answered greedily and scored."""
        metrics = self.losses(examples, batch_size)
        report = f"loss {metrics['loss']:.4f} · perplexity {metrics['perplexity']:.2f} over {metrics['predicted_tokens']:,} tokens\n"
        n = self.meta.get("eval_generations", 0) if generations is None else generations
        answered = [ex for ex in examples if isinstance(ex, ChatExample) and ex.reference is not None][:n]
        predictions = None
        if answered:
            settings = GenerationSettings(max_new_tokens=self.meta.get("max_new_tokens", 128))
            predictions = generate_texts(self.model, self.tokenizer, [self.prompt_text(ex) for ex in answered],
                                         settings, self.precision, batch_size)
            scores = score_generations([p["text"] for p in predictions], [ex.reference for ex in answered])
            metrics.update(scores)
            report += describe_generation_scores(scores) + " (greedy)\n"
        return metrics, report, predictions

    def headline(self, metrics: dict) -> str:
        text = f"perplexity {metrics['perplexity']:.2f} (loss {metrics['loss']:.4f}) over {metrics['predicted_tokens']:,} tokens"
        if "rouge_l" in metrics:
            text += f"; {describe_generation_scores(metrics)}"
        return text
