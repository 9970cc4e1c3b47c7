"""Generative NER and classification: a decoder LLM fine-tuned with ``sft`` on a labelled NER or
classification file cast into chat instructions, scored by the encoder tasks' own metrics.

``task.type: generative_ner`` reads the files token classification reads (CoNLL, JSONL, Label
Studio...: ``data.token_column``, ``data.scheme``...) and ``generative_classification`` the files
text classification reads (CSV, JSONL...: ``data.text_column``, ``data.label_column``). Each example
is cast (:mod:`.generative`) into a user turn (``task.template``: ``{types}``/``{labels}`` and
``{text}``) and the assistant's answer (the sentence with inline entity tags; the label's verbaliser),
then trained exactly as ``sft`` trains (loss on the answer, any decoder method: full, LoRA...).

At evaluation every dev/test example (or the first ``task.eval_generations``) is answered greedily,
the answers are parsed back into IOB2 tags or labels and scored as the encoder task scores them:
entity micro-F1 over words (seqeval's definition; ``f1``) for NER, macro-F1 (``f1``) and accuracy for
classification. What could not be read is counted, never raised: ``problems`` in ``metrics.json``
(``unparseable``, ``hallucinated_span``, ``unknown_type``, ``changed_text``, ``malformed``) and in
``report.txt``; ``answers_cut`` counts answers that hit ``task.max_new_tokens``. Classification with
``task.constrained: true`` picks the label whose verbaliser the model finds likeliest after the prompt
(summed token log-probabilities, as ``in_context_classification`` scores), so every answer is a label.
The best checkpoint is chosen by dev loss unless ``training.metric_for_best: f1`` (which generates
answers for dev every epoch). ``test_generations.jsonl`` holds every test answer, parsed.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import ClassVar, Optional, Sequence

import torch
from pydantic import Field, model_validator

from ..artifacts.paths import atomic_write_text
from ..data.readers import (
    TextExample,
    TokenExample,
    check_known_labels,
    check_known_tags,
    check_trainable_labels,
    normalise_to_iob2,
    pretokenize,
    read_text_file,
    read_token_file,
)
from ..data.records import ChatExample
from ..data.sampling import sample_per_class
from ..evaluation.metrics import format_classification_report, format_entity_report
from .causal_lm import SFT, DecoderModel, DecoderTask
from .causal_lm.config import SFTOptions
from .causal_lm.encoding import render_prompt
from .capabilities import KShotSampling
from .causal_lm.generation import GenerationSettings, generate_texts
from .generative import (
    CLASSIFY_TEMPLATE,
    NER_TEMPLATE,
    classification_prompt,
    entity_types,
    inline_answer,
    ner_prompt,
    parse_label_answer,
    parse_ner_answers,
    score_label_answers,
    score_parsed_ner,
)
from .in_context import continuation_logprobs, verbalisers
from .text_classification import TextClassificationData, label_list as text_label_list
from .token_classification import TokenClassificationData
from .token_classification.decoding import label_list as tag_label_list

PROBLEMS = ("unparseable", "hallucinated_span", "unknown_type", "changed_text", "malformed")


class GenerativeOptions(SFTOptions):
    PLACEHOLDERS: ClassVar[tuple[str, ...]] = ()
    template: Optional[str] = Field(default=None, description="the user turn; default: the task's own template")
    eval_generations: Optional[int] = Field(
        default=None, ge=1, description="answer and score only the first N dev/test examples (default: all of them)")

    @model_validator(mode="after")
    def _check_template(self) -> "GenerativeOptions":
        if self.template is not None:
            try:
                names = {name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None}
            except ValueError as exc:
                raise ValueError(f"'task.template' is not a format string ({exc}); write {{{{ and }}}} for braces") from None
            wanted = set(self.PLACEHOLDERS)
            if names - wanted or "text" not in names:
                raise ValueError(f"'task.template' may use {', '.join('{' + p + '}' for p in self.PLACEHOLDERS)} and "
                                 f"must use {{text}}; it uses {', '.join('{' + n + '}' for n in sorted(names)) or 'none'}")
        return self


class GenerativeNEROptions(GenerativeOptions):
    PLACEHOLDERS: ClassVar[tuple[str, ...]] = ("types", "text")
    type: str = "generative_ner"
    max_new_tokens: int = Field(default=256, ge=1, description="the longest answer (the sentence, tagged) generated")


class GenerativeClassificationOptions(GenerativeOptions):
    PLACEHOLDERS: ClassVar[tuple[str, ...]] = ("labels", "text")
    type: str = "generative_classification"
    max_new_tokens: int = Field(default=16, ge=1, description="the longest answer (a label) generated")
    verbalisers: Optional[dict[str, str]] = Field(
        default=None, description="label: the words the model answers for it; default data.label_descriptions or the name")
    constrained: bool = Field(
        default=False, description="pick the label whose verbaliser is likeliest (no free generation, never unparseable)")


class GenerativeClassificationData(TextClassificationData):
    @model_validator(mode="after")
    def _single_texts(self) -> "GenerativeClassificationData":
        if self.text_pair_column is not None:
            raise ValueError("'data.text_pair_column': generative classification casts single texts; remove it")
        return self


# ---------------------------------------------------------------------------------------------
# Casting: the same for training (the task) and scoring (the predictor), from tuneforge.json's settings


class NERCast:
    """A sentence as the user turn asking for its entities and the tagged answer."""

    def __init__(self, settings: dict, labels: Sequence[str]):
        self.settings, self.types = settings, settings["types"]

    def user_turn(self, example) -> str:
        return ner_prompt(example.words, self.types, self.settings["template"])

    def answer(self, example) -> str:
        return inline_answer(example.words, example.tags)

    def conversations(self, examples: Sequence) -> list[ChatExample]:
        return [ChatExample([{"role": "user", "content": self.user_turn(ex)},
                             {"role": "assistant", "content": self.answer(ex)}], ex.source, ex.line) for ex in examples]


class ClassificationCast(NERCast):
    """A text as the user turn asking for its label and the label's verbaliser as the answer."""

    def __init__(self, settings: dict, labels: Sequence[str]):
        self.settings, self.words = settings, dict(zip(labels, settings["verbalisers"]))

    def user_turn(self, example) -> str:
        return classification_prompt(example.text, self.words, self.settings["template"])

    def answer(self, example) -> str:
        return self.words[example.labels[0]]


# ---------------------------------------------------------------------------------------------
# Predictors


class GenerativeModel(DecoderModel):
    """What both generative predictors share: casting examples into prompts and conversations, loss on
    the cast answers, generation of every answer, the scores' report."""

    Cast: ClassVar[type] = NERCast
    PROBLEMS: ClassVar[tuple[str, ...]] = PROBLEMS

    def __init__(self, model, tokenizer, meta: dict, precision: str = "auto"):
        super().__init__(model, tokenizer, meta, precision)
        self.settings: dict = meta["generative"]
        self.cast = self.Cast(self.settings, self.labels)

    def conversations(self, examples: Sequence) -> list[ChatExample]:
        return self.cast.conversations(examples)

    def prompt_text(self, item) -> str:
        if isinstance(item, (TokenExample, TextExample)):
            return render_prompt(self.tokenizer, [{"role": "user", "content": self.cast.user_turn(item)}])
        return super().prompt_text(item)

    def predict_outputs(self, examples: Sequence, batch_size: int = 16) -> list[dict]:
        settings = GenerationSettings(max_new_tokens=self.meta.get("max_new_tokens", 128))
        return generate_texts(self.model, self.tokenizer, [self.prompt_text(ex) for ex in examples], settings,
                              self.precision, batch_size)

    def evaluate_examples(self, examples: Sequence, batch_size: int = 16, generations: int | None = None):
        """Loss and perplexity of the cast answers; unless ``generations`` is 0, the answers generated,
        parsed and scored (the first ``task.eval_generations`` examples, default all)."""
        metrics = self.losses(self.conversations(examples), batch_size)
        report = f"loss {metrics['loss']:.4f} · perplexity {metrics['perplexity']:.2f} of the cast answers\n"
        n = self.meta.get("eval_generations") if generations is None else generations
        if n == 0 or not examples:
            return metrics, report, None
        answered = list(examples)[:n] if n else list(examples)
        scores, text, predictions = self.score_outputs(answered, self.predict_outputs(answered, batch_size))
        return {**metrics, **scores}, report + text, predictions

    def score_outputs(self, examples: Sequence, outputs: list[dict]):
        scores, text, predictions = self.score_answers(examples, [o["text"] for o in outputs])
        scores["answers"] = len(outputs)
        scores["answers_cut"] = sum(o["finish_reason"] == "length" for o in outputs)
        for prediction, output in zip(predictions, outputs):
            prediction["finish_reason"] = output["finish_reason"]
        counted = ", ".join(f"{scores['problems'].get(p, 0)} {p}" for p in self.PROBLEMS)
        text += (f"\nanswers: {len(outputs)} generated (greedy), {scores['answers_cut']} cut at max_new_tokens; "
                 f"problems: {counted}\n")
        return scores, text, predictions

    def headline(self, metrics: dict) -> str:
        if "f1" not in metrics:
            return super().headline(metrics)
        problems = sum(metrics.get("problems", {}).values())
        return f"f1 {metrics['f1']:.4f} over {metrics['answers']} generated answers ({problems} problems counted)"


class GenerativeNERModel(GenerativeModel):
    """Entities by generation: the sentence answered with inline tags, parsed back to IOB2 tags."""

    PROBLEMS = ("malformed", "unknown_type", "changed_text", "hallucinated_span")

    def read(self, path, format: str = "auto", labelled: bool = True) -> list:
        r = self.settings["reader"]
        examples = read_token_file(path, format, r["token_column"], r["tag_column"] if labelled else None,
                                   r["tokens_column"], r["tags_column"])
        if labelled:
            normalise_to_iob2(examples, r["scheme"])
        return examples

    def read_inputs(self, path, format: str = "auto") -> list:
        return self.read(path, format, labelled=False)

    def predict(self, inputs, batch_size: int = 16) -> list[dict]:
        """Tags for each input (a TokenExample, or a string split into words as ``tuneforge predict`` does)."""
        inputs = [inputs] if isinstance(inputs, (str, TokenExample)) else list(inputs)
        examples = [TokenExample(words=pretokenize(x)[0]) if isinstance(x, str) else x for x in inputs]
        outputs = self.predict_outputs(examples, batch_size)
        tags, found = parse_ner_answers(examples, [o["text"] for o in outputs], self.settings["types"])
        return [{"words": ex.words, "tags": t, "generated": o["text"], "problems": dict(f)}
                for ex, t, f, o in zip(examples, tags, found, outputs)]

    def score_answers(self, examples, answers):
        tags, found = parse_ner_answers(examples, answers, self.settings["types"])
        scores = score_parsed_ner(examples, tags, found)
        predictions = [{"source": f"{ex.source}:{ex.line}", "words": ex.words, "gold": ex.tags, "generated": a,
                        "tags": t, "problems": dict(f)} for ex, a, t, f in zip(examples, answers, tags, found)]
        return scores, "Entity report (generated answers parsed to IOB2)\n" + format_entity_report(scores["entity"]), \
            predictions


class GenerativeClassifierModel(GenerativeModel):
    """Labels by generation (parsed from the answer) or, constrained, by the verbalisers' likelihood."""

    Cast = ClassificationCast
    PROBLEMS = ("unparseable",)

    @property
    def words(self) -> dict[str, str]:
        return self.cast.words

    def read(self, path, format: str = "auto", labelled: bool = True) -> list:
        r = self.settings["reader"]
        return read_text_file(path, format, r["text_column"], r["label_column"] if labelled else None)

    def read_inputs(self, path, format: str = "auto") -> list:
        return self.read(path, format, labelled=False)

    @torch.inference_mode()
    def predict_outputs(self, examples: Sequence, batch_size: int = 16) -> list[dict]:
        if not self.settings["constrained"]:
            return super().predict_outputs(examples, batch_size)
        continuations = [self.tokenizer(v, add_special_tokens=False)["input_ids"] for v in self.settings["verbalisers"]]
        was_training = self.model.training
        self.model.eval()
        outputs = []
        for ex in examples:
            ids = self.tokenizer(self.prompt_text(ex), add_special_tokens=False)["input_ids"]
            scores = continuation_logprobs(self.model, self.tokenizer, ids, continuations, self.precision)
            outputs.append({"text": self.settings["verbalisers"][int(scores.argmax())], "finish_reason": "stop"})
        self.model.train(was_training)
        return outputs

    def predict(self, inputs, batch_size: int = 16) -> list[dict]:
        inputs = [inputs] if isinstance(inputs, (str, TextExample)) else list(inputs)
        examples = [TextExample(text=x) if isinstance(x, str) else x for x in inputs]
        outputs = self.predict_outputs(examples, batch_size)
        return [{"text": ex.text, "label": parse_label_answer(o["text"], self.words), "generated": o["text"]}
                for ex, o in zip(examples, outputs)]

    def score_answers(self, examples, answers):
        scores = score_label_answers(examples, answers, self.labels, self.words)
        predictions = [{"source": f"{ex.source}:{ex.line}", "text": ex.text, "gold": ex.labels[0], "generated": a,
                        "label": parse_label_answer(a, self.words)} for ex, a in zip(examples, answers)]
        how = "constrained to the labels" if self.settings["constrained"] else "generated answers parsed"
        return scores, f"Classification report ({how})\n" + format_classification_report(scores["classification"]), \
            predictions


# ---------------------------------------------------------------------------------------------
# Tasks


class GenerativeTask(SFT):
    """What both generative tasks share: SFT on cast examples, scored by the encoder task's metric."""

    score_name = "F1"
    PROMPT_TEMPLATE: ClassVar[str] = ""

    def encode(self, tokenizer, examples, labels):
        cast = self.Predictor.Cast(self.model_meta(labels)["generative"], labels)
        return super().encode(tokenizer, cast.conversations(examples), labels)

    def tokenizer_inputs(self, examples) -> list:
        return [ex.as_text() for ex in examples]

    def settings(self, labels) -> dict:  # pragma: no cover
        raise NotImplementedError

    def model_meta(self, labels) -> dict:
        t = self.cfg.task
        settings = {"template": t.template or self.PROMPT_TEMPLATE, **self.settings(labels)}
        return {**DecoderTask.model_meta(self, labels), "labels": list(labels), "generative": settings,
                "assistant_only_loss": t.assistant_only_loss, "eval_generations": t.eval_generations,
                "max_new_tokens": t.max_new_tokens}

    def evaluate_dev(self, model, tokenizer, examples, meta: dict, precision: str) -> dict:
        metric = self.cfg.training.metric_for_best or self.metric_for_best
        predictor = self.predictor(model, tokenizer, meta, precision)
        metrics, _, _ = predictor.evaluate_examples(examples, self.cfg.training.eval_batch_size,
                                                    0 if metric in ("loss", "perplexity") else None)
        return metrics

    @classmethod
    def summary(cls, metrics: dict) -> str:
        scores = {k: round(metrics[k]["f1"], 4) for k in ("dev", "test") if "f1" in metrics.get(k, {})}
        problems = {k: metrics[k]["problems"] for k in ("dev", "test") if "problems" in metrics.get(k, {})}
        return f"{cls.score_name} {scores} (problems {problems})" if scores else "no dev or test set scored"

    def write_outputs(self, run_dir: Path, split, examples, predictions, metrics, predictor) -> None:
        """``test_generations.jsonl``: each test example's gold, generated answer and what it parsed to."""
        if split == "test" and predictions:
            atomic_write_text(run_dir / "test_generations.jsonl",
                              "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))


class GenerativeNER(GenerativeTask):
    """NER by a decoder trained with sft to copy the sentence with its entities tagged."""

    name = "generative_ner"
    Options = GenerativeNEROptions
    Data = TokenClassificationData
    Predictor = GenerativeNERModel
    score_name = "entity F1"
    PROMPT_TEMPLATE = NER_TEMPLATE

    def read(self, path: str, labelled: bool = True) -> list:
        d = self.cfg.data
        return read_token_file(path, d.format, d.token_column, d.tag_column if labelled else None,
                               d.tokens_column, d.tags_column)

    def normalise(self, splits: dict[str, list], report: dict) -> None:
        for name, examples in splits.items():
            if examples:
                report[f"{name}_scheme"] = normalise_to_iob2(examples, self.cfg.data.scheme).describe()

    def label_list(self, train) -> list[str]:
        return tag_label_list(train)

    def check_labels(self, splits, labels, report) -> None:
        check_trainable_labels(splits["train"])
        for name in ("dev", "test"):
            check_known_tags(splits[name], labels)

    def describe(self, splits, labels) -> dict:
        return {"sentences": {name: len(ex) for name, ex in splits.items()}}

    def data_summary(self, data) -> str:
        return f"{data.report['sentences']} sentences cast into instructions"

    def settings(self, labels) -> dict:
        d = self.cfg.data
        return {"cast": "ner", "types": entity_types(labels),
                "reader": {"token_column": d.token_column, "tag_column": d.tag_column, "tokens_column": d.tokens_column,
                           "tags_column": d.tags_column, "scheme": d.scheme}}


class GenerativeClassification(GenerativeTask, KShotSampling):
    """Single-label text classification by a decoder trained with sft to answer the label."""

    name = "generative_classification"
    Options = GenerativeClassificationOptions
    Data = GenerativeClassificationData
    Predictor = GenerativeClassifierModel
    score_name = "macro-F1"
    PROMPT_TEMPLATE = CLASSIFY_TEMPLATE

    def read(self, path: str, labelled: bool = True) -> list:
        d = self.cfg.data
        return read_text_file(path, d.format, d.text_column, d.label_column if labelled else None)

    def label_list(self, train) -> list[str]:
        return text_label_list(train)

    def sample_k_shot(self, train, labels, k, seed):
        """Exactly ``k`` texts per class, the draw text classification makes for the same seed."""
        return sample_per_class(train, lambda ex: ex.labels[0], k, seed)

    def check_labels(self, splits, labels, report) -> None:
        check_trainable_labels(splits["train"], False)
        for name in ("dev", "test"):
            check_known_labels(splits[name], labels)

    def describe(self, splits, labels) -> dict:
        return {"texts": {name: len(ex) for name, ex in splits.items()}}

    def data_summary(self, data) -> str:
        return f"{data.report['texts']} texts cast into instructions, {len(data.labels)} labels"

    def settings(self, labels) -> dict:
        t, d = self.cfg.task, self.cfg.data
        return {"cast": "classification", "verbalisers": verbalisers(labels, t.verbalisers, d.label_descriptions),
                "constrained": t.constrained, "reader": {"text_column": d.text_column, "label_column": d.label_column}}
