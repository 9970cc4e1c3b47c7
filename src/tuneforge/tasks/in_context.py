"""In-context text classification with a decoder LLM: k labelled demonstrations per class in the
prompt, the label chosen by the model's summed log-likelihood of each label's verbaliser — no output
is generated or parsed, so the answer is always one of the labels (constrained to the label set by
construction). ``task.k: 0`` is zero-shot.

- **verbaliser**: ``task.verbalisers[label]``, else ``data.label_descriptions[label]`` when it is one
  string, else the label's name; scored as the continuation of the prompt (a space before it in a
  plain prompt), its token log-probabilities summed.
- **demonstrations**: drawn once from the training file with ``training.seed`` (k per class, k + 1
  kept so that one matching the scored text can be dropped: a demonstration is never the scored
  example), in a seeded order; identical for every text and every run with that seed.
- **prompt**: the model's chat template (``task.prompt: chat``, a user turn per text and an assistant
  turn per answer) or plain ``Text: ...\\nLabel: ...`` lines. A prompt longer than the model's context
  loses demonstrations from the front until it fits; how many is counted (``metrics.json``:
  ``in_context``); a text that does not fit even alone is an error.
- **calibration** (``task.calibrate``, Zhao et al. 2021): the label probabilities of a content-free
  input (``"N/A"``) with the same demonstrations divide each text's, so the prompt's own bias toward a
  label is taken out.
"""

from __future__ import annotations

import copy
import inspect
import random
from typing import ClassVar, Literal, Optional, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator

from ..data.readers import TextExample
from ..errors import ConfigError, TuneforgeError
from ..runtime.models import load_causal_lm, load_tokenizer
from ..runtime.precision import autocast_context
from .base import TaskData
from .causal_lm.config import DecoderModelConfig
from .text_classification import TextClassification, TextClassificationData, TextClassificationOptions, TextClassifier

CONTENT_FREE = "N/A"


class InContextOptions(TextClassificationOptions):
    type: str = "in_context_classification"
    k: int = Field(default=8, ge=0, description="demonstrations per class in the prompt (0: zero-shot)")
    prompt: Literal["chat", "plain"] = Field(default="chat", description="chat template or plain Text:/Label: lines")
    instruction: str = Field(default="Classify the text. Answer with one of: {labels}.",
                             description="the first line (system turn in chat); {labels} is the verbaliser list")
    verbalisers: Optional[dict[str, str]] = Field(default=None, description="label: the words scored for it")
    calibrate: bool = Field(default=False, description="divide by a content-free input's label probabilities")
    max_prompt_tokens: Optional[int] = Field(default=None, ge=8,
                                             description="prompt budget; default the model's context length")

    @model_validator(mode="after")
    def _check(self) -> "InContextOptions":
        if self.multi_label:
            raise ValueError("'task.multi_label': in-context classification picks one label per text")
        if self.class_weights is not None:
            raise ValueError("'task.class_weights': an in-context model has no training loss to weigh; remove it")
        return self


class InContextData(TextClassificationData):
    @model_validator(mode="after")
    def _check_k_shot(self) -> "InContextData":
        if self.k_shot is not None:
            raise ValueError("'data.k_shot': in-context classification takes task.k demonstrations per class")
        return self


def verbalisers(labels: Sequence[str], given: dict | None, descriptions: dict | None) -> list[str]:
    """The words scored for each label, in label order (see the module docstring)."""
    given, descriptions = given or {}, descriptions or {}
    unknown = sorted(set(given) - set(labels))
    if unknown:
        raise ConfigError(f"task.verbalisers: {unknown[0]!r} is not a label (labels: {', '.join(labels)})")
    out = []
    for label in labels:
        text = given.get(label, descriptions.get(label) if isinstance(descriptions.get(label), str) else label)
        out.append(str(text))
    return out


def draw_demonstrations(train: Sequence[TextExample], labels: Sequence[str], k: int, seed: int) -> list[dict]:
    """k + 1 ``{"text", "label"}`` per class (fewer where a class has fewer), in a seeded order."""
    rng = random.Random(seed)
    drawn = []
    for label in labels:
        pool = [ex.text for ex in train if ex.labels and ex.labels[0] == label]
        pool = list(dict.fromkeys(pool))  # a text twice in the file is one demonstration
        drawn += [{"text": t, "label": label} for t in rng.sample(pool, min(k + 1, len(pool)))] if k else []
    rng.shuffle(drawn)
    return drawn


def demonstrations_for(drawn: Sequence[dict], labels: Sequence[str], k: int, text: str) -> list[dict]:
    """The k per class of ``drawn`` shown with ``text``: never ``text`` itself, the seeded order kept."""
    left = {label: k for label in labels}
    chosen = []
    for demo in drawn:
        if demo["text"] != text and left[demo["label"]] > 0:
            left[demo["label"]] -= 1
            chosen.append(demo)
    return chosen


def render_prompt(tokenizer, settings: dict, demos: Sequence[dict], text: str) -> str:
    """The prompt before a verbaliser: chat turns or plain lines, demonstrations answered."""
    words = dict(zip(settings["labels"], settings["verbalisers"]))
    instruction = settings["instruction"].format(labels=", ".join(settings["verbalisers"]))
    if settings["prompt"] == "plain":
        lines = [instruction, ""] + [f"Text: {d['text']}\nLabel: {words[d['label']]}\n" for d in demos]
        return "\n".join(lines + [f"Text: {text}\nLabel:"])
    messages = [{"role": "system", "content": instruction}]
    for d in demos:
        messages += [{"role": "user", "content": d["text"]}, {"role": "assistant", "content": words[d["label"]]}]
    messages.append({"role": "user", "content": text})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@torch.inference_mode()
def prefix_cache(model, prefix_ids: Sequence[int], precision: str = "fp32"):
    """The KV cache of a prompt's shared beginning (the instruction and demonstrations), computed once."""
    device = next(model.parameters()).device
    with autocast_context(device, precision):
        out = model(input_ids=torch.tensor([list(prefix_ids)], device=device), use_cache=True)
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def _cache_keyword(model) -> str:
    """transformers 5.x names the KV cache argument ``cache`` (``past_key_values`` before, now deprecated)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def continuation_logprobs(model, tokenizer, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]],
                          precision: str = "fp32", past=None) -> np.ndarray:
    """Summed log p(continuation | prompt) for each continuation: one padded batch, right padding.
    With ``past`` (:func:`prefix_cache` of the tokens before ``prompt_ids``), only the rest is computed."""
    rows = [list(prompt_ids) + list(c) for c in continuations]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    device = next(model.parameters()).device
    extra = {}
    if past is not None:
        past = copy.deepcopy(past)  # the forward pass appends to it
        past.batch_repeat_interleave(len(rows))
        mask = torch.cat([torch.ones((len(rows), past.get_seq_length()), dtype=mask.dtype), mask], dim=1)
        extra = {_cache_keyword(model): past, "use_cache": True}
    with autocast_context(device, precision):
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **extra).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    out = np.zeros(len(rows))
    for i, c in enumerate(continuations):
        positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(c))
        out[i] = logp[i, positions.to(device), torch.tensor(list(c), device=device)].sum().item()
    return out


class InContextClassifier(TextClassifier):
    """A decoder that classifies by in-context demonstrations; rows and metrics are a classifier's."""

    def __init__(self, model, tokenizer, meta: dict, precision: str = "fp32"):
        super().__init__(model, tokenizer, meta, precision)
        self.settings: dict = meta["in_context"]
        self.counts = {"texts": 0, "demonstrations_dropped": 0, "prompts_shortened": 0}
        self._prior: np.ndarray | None = None
        self._previous: list[int] | None = None  # the last prompt's tokens, and the shared beginning's cache
        self._prefix: tuple[list[int], object] | None = None

    def _continuations(self) -> list[list[int]]:
        lead = "" if self.settings["prompt"] == "chat" else " "
        return [self.tokenizer(lead + v, add_special_tokens=False)["input_ids"] for v in self.settings["verbalisers"]]

    def _budget(self) -> int:
        limit = self.settings.get("max_prompt_tokens") or getattr(self.model.config, "max_position_embeddings", None)
        return int(limit or 10 ** 9)

    def prompt_ids(self, text: str, count: bool = True) -> list[int]:
        """The tokens of ``text``'s prompt, demonstrations dropped from the front until prompt and the
        longest verbaliser fit the budget."""
        s = self.settings
        demos = demonstrations_for(s["demonstrations"], s["labels"], s["k"], text)
        longest = max(len(c) for c in self._continuations())
        dropped = 0
        while True:
            ids = self.tokenizer(render_prompt(self.tokenizer, s, demos, text), add_special_tokens=False)["input_ids"]
            if len(ids) + longest <= self._budget():
                break
            if not demos:
                raise TuneforgeError(f"in-context: a text of {len(ids)} prompt tokens does not fit the model's "
                                     f"context of {self._budget()} even with no demonstrations; shorten it")
            demos, dropped = demos[1:], dropped + 1
        if count:
            self.counts["texts"] += 1
            self.counts["demonstrations_dropped"] += dropped
            self.counts["prompts_shortened"] += bool(dropped)
        return ids

    def label_logprobs(self, text: str, count: bool = True) -> np.ndarray:
        """The verbalisers' summed log-probabilities after ``text``'s prompt. The prompts of a run share
        their beginning (instruction, demonstrations): its KV cache is computed once, from the first two
        prompts' common tokens, and each text computes only its own end (the same scores; SmolLM2, k = 8,
        2 loaded cores: 19.5 s a text before, 4.7 s a text over 8 texts with the first two uncached)."""
        ids = self.prompt_ids(text, count)
        cached = self._prefix
        known = cached[0] if cached is not None else self._previous
        if known is not None and (cached is None or ids[:len(cached[0])] != cached[0]):
            # a first shared beginning, or a shorter one (two texts began alike): (re)computed once
            shared = next((i for i, (a, b) in enumerate(zip(known, ids)) if a != b), min(len(known), len(ids)))
            shared = min(shared, len(ids) - 1)
            if shared >= 16:
                self._prefix = cached = (ids[:shared], prefix_cache(self.model, ids[:shared], self.precision))
        self._previous = ids
        if cached is not None and len(ids) > len(cached[0]) and ids[:len(cached[0])] == cached[0]:
            return continuation_logprobs(self.model, self.tokenizer, ids[len(cached[0]):], self._continuations(),
                                         self.precision, past=cached[1])
        return continuation_logprobs(self.model, self.tokenizer, ids, self._continuations(), self.precision)

    def predict_proba(self, examples: Sequence[TextExample], batch_size: int = 64,
                      pad_multiple: int | None = None) -> np.ndarray:
        if any(ex.text_pair is not None for ex in examples):
            raise TuneforgeError("in-context classification scores single texts; this input has text pairs")
        scores = np.stack([self.label_logprobs(ex.text) for ex in examples]) if examples else np.zeros((0, 0))
        proba = torch.softmax(torch.from_numpy(scores), dim=-1).numpy()
        if self.settings["calibrate"] and len(examples):
            if self._prior is None:
                prior = torch.softmax(torch.from_numpy(self.label_logprobs(CONTENT_FREE, count=False)), -1).numpy()
                self._prior = prior
            proba = proba / self._prior
            proba = proba / proba.sum(axis=1, keepdims=True)
        return proba

    def score_outputs(self, examples, outputs):
        """A classifier's scores, and how many prompts lost demonstrations since the last scoring."""
        metrics, report, probabilities = super().score_outputs(examples, outputs)
        metrics["in_context"] = dict(self.counts, k=self.settings["k"], calibrate=self.settings["calibrate"])
        self.counts = dict.fromkeys(self.counts, 0)
        if metrics["in_context"]["prompts_shortened"]:
            report += (f"\nin-context: {metrics['in_context']['prompts_shortened']} prompts too long for the context "
                       f"lost {metrics['in_context']['demonstrations_dropped']} demonstrations")
        return metrics, report, probabilities


class InContextClassification(TextClassification):
    """Text classification by a decoder LLM's in-context demonstrations (see the module docstring)."""

    name = "in_context_classification"
    Options = InContextOptions
    Model = DecoderModelConfig  # a decoder by name, folder or GGUF file (model.gguf_file, model.dtype)
    Data = InContextData
    Predictor = InContextClassifier
    DEFAULT_TRAINING: ClassVar[dict] = {"epochs": 0}

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.training.epochs != 0:
            raise ConfigError("training.epochs: in-context classification does not train; set it to 0 (or leave it unset)")
        if cfg.method.name != "full":
            raise ConfigError(f"method.name {cfg.method.name}: in-context classification trains nothing; "
                              "remove the method block")

    def prepare_data(self, known_labels=None) -> TaskData:
        data = super().prepare_data(known_labels)
        self._drawn = draw_demonstrations(data.splits["train"], data.labels, self.cfg.task.k, self.cfg.training.seed)
        data.report["demonstrations"] = len(self._drawn)
        self.class_weights = None
        return data

    @classmethod
    def load_pretrained(cls, name_or_path, labels=None, meta=None, revision=None, trust_remote_code=False,
                        announce_new_head=True):
        """The decoder as it is (``AutoModelForCausalLM``): nothing is added or trained."""
        return load_causal_lm(name_or_path, revision, trust_remote_code)

    def build_model(self, labels: list[str]):
        m = self.cfg.model
        return load_causal_lm(m.name_or_path, m.revision, m.trust_remote_code, m.gguf_file, m.dtype,
                              m.attn_implementation)

    def load_tokenizer(self):
        m = self.cfg.model
        return load_tokenizer(m.name_or_path, m.revision, m.trust_remote_code, m.gguf_file)

    def encode(self, tokenizer, examples, labels):
        class Nothing:
            def describe(self) -> str:
                return "in-context: nothing to encode for training"

        return [], [], Nothing()

    def model_meta(self, labels: list[str]) -> dict:
        t, d = self.cfg.task, self.cfg.data
        settings = {"k": t.k, "prompt": t.prompt, "instruction": t.instruction, "calibrate": t.calibrate,
                    "labels": list(labels), "verbalisers": verbalisers(labels, t.verbalisers, d.label_descriptions),
                    "demonstrations": self._drawn, "max_prompt_tokens": t.max_prompt_tokens, "seed": self.cfg.training.seed}
        return dict(super().model_meta(labels), in_context=settings)
