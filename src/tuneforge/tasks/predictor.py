"""What ``tuneforge.load(RUN)`` returns: a trained model of one task, read back from its run folder.

A :class:`Predictor` reads files, predicts, evaluates and formats; the task module that trains a
model also defines its predictor (``Task.Predictor``). :func:`evaluate_across_processes` and
:func:`predict_across_processes` share the work out over the processes of a run.
"""

from __future__ import annotations

import inspect
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..errors import InputError, TuneforgeError
from ..runtime import distributed
from ..runtime.precision import resolve_precision


@dataclass
class Units:
    """One example as the separate decisions a model makes on it, with a probability table.

    A sentence's units are its words (classes: the tags); a single-label text has one unit (classes:
    the labels); a multi-label text has one unit per label (classes: absent, present). Active
    learning scores uncertainty on these tables and the label-noise check compares them with the
    gold classes, so neither needs to know the task.
    """

    names: list[str]  # what each unit is (a word, a label name), for reports
    classes: list[str]  # the columns of ``probabilities``
    probabilities: np.ndarray  # (units, classes), rows sum to 1
    gold: list[int] | None = None  # gold class per unit when labelled; -1 for a label the model never saw


class Predictor:
    """A trained model of one task, loaded from a run folder (``tuneforge.load``).

    Subclasses implement :meth:`read`, :meth:`predict` and either :meth:`predict_outputs` +
    :meth:`score_outputs` (scoring shares out over processes) or :meth:`evaluate_examples`; the rest
    has defaults. ``meta`` is the model folder's ``tuneforge.json``.
    """

    output_formats: ClassVar[tuple[str, ...]] = ("jsonl",)

    def __init__(self, model, tokenizer, meta: dict, precision: str = "auto"):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.labels: list[str] = meta.get("labels", [])
        self.precision = resolve_precision(precision, next(model.parameters()).device, phase="inference")
        # what runs, for metrics.json and predict's report (the loader sets it for int8 and onnx)
        self.runtime = {"engine": "torch", "precision": self.precision}

    def load_run_model(self, run):
        """Another run's model (a preference run's starting model, to score against): the loader sets
        this to its own ``load_model``; a predictor built by hand has none."""
        raise TuneforgeError(f"this predictor was not read by tuneforge.load, so it cannot read {run}")

    def prepare_loaded(self) -> None:
        """Called once by the loader on a model read from its folder, never on a model still training
        (``evaluate_dev`` wraps the training model too): settle its weights for inference. Default: nothing."""

    @property
    def task_name(self) -> str:
        return self.meta.get("task", "")

    # --- files
    def read(self, path, format: str = "auto", labelled: bool = True, **options) -> list:  # pragma: no cover
        raise NotImplementedError

    def read_inputs(self, path, format: str = "auto", **options) -> list:
        """Unlabelled inputs for ``predict`` (default: :meth:`read` without labels)."""
        return self.read(path, format, labelled=False, **options)

    def read_options(self) -> list[str]:
        """The keyword options :meth:`read` takes (columns, schemes...), for callers that pass them through."""
        params = inspect.signature(self.read).parameters
        return [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY or n not in ("path", "format", "labelled")]

    # --- predictions
    def predict(self, inputs, batch_size: int = 64) -> list[dict]:  # pragma: no cover
        raise NotImplementedError

    def inputs_from_request(self, texts: list | None = None, tokens: list | None = None) -> list:
        """A request's JSON fields (``POST /v1/predict``) as the inputs :meth:`predict` takes.

        ``texts``: raw strings; ``tokens``: pre-split word lists, for tasks that label words. The
        default takes strings only; an :class:`~tuneforge.errors.InputError` says what else to send.
        """
        if tokens is not None:
            raise InputError(f"'tokens': a {self.task_name.replace('_', ' ')} model takes 'texts' (strings)")
        for i, text in enumerate(texts or []):
            if not isinstance(text, str):
                raise InputError(f"'texts[{i}]': expected a string")
        return list(texts or [])

    def info(self) -> dict:
        """What a client needs to know about this model (``GET /v1/models``)."""
        return {"task": self.task_name, "method": self.meta.get("method", "full"), "labels": list(self.labels)}

    def predict_outputs(self, examples: Sequence, batch_size: int = 64) -> list:  # pragma: no cover
        """One picklable output per example, all that scoring needs (tags, probabilities...).

        Implementing it (with :meth:`score_outputs`) lets a run of several processes share the
        examples out and gather the outputs back (:func:`evaluate_across_processes`); a predictor
        that only implements :meth:`evaluate_examples` is evaluated whole in every process.
        """
        raise NotImplementedError

    def score_outputs(self, examples: Sequence, outputs: list) -> tuple[dict, str, Any]:  # pragma: no cover
        """(metrics, report text, predictions) from :meth:`predict_outputs`' outputs for all ``examples``."""
        raise NotImplementedError

    def evaluate_examples(self, examples: Sequence, batch_size: int = 64) -> tuple[dict, str, Any]:
        """(metrics, report text, predictions) for labelled examples."""
        return self.score_outputs(examples, self.predict_outputs(examples, batch_size))

    def evaluate_on(self, examples: Sequence, labels: Sequence[str], batch_size: int = 64) -> dict:  # pragma: no cover
        """Metrics on data that annotates only ``labels`` (a continual stage's test set): what the
        model predicts outside them is not counted against it, and labels it never learned score 0."""
        raise NotImplementedError

    def to_json(self, result: dict) -> str:
        """One prediction as JSON: a line of ``tuneforge predict``'s JSONL and an element of the
        server's ``results`` (the two are byte-identical for the same inputs)."""
        return json.dumps(result, ensure_ascii=False)

    def units(self, examples: Sequence, batch_size: int = 64) -> list[Units]:
        """Per example, the model's probability table over its units (see :class:`Units`); ``gold``
        is filled for labelled examples. Active learning and the label-noise check use it."""
        raise TuneforgeError(
            f"a {self.task_name.replace('_', ' ')} model gives no per-example probabilities; "
            "active learning and the label-noise check need a task whose Predictor implements units()"
        )

    def annotation(self, example, result: dict):  # pragma: no cover
        """One :meth:`predict` result as a :class:`tuneforge.data.interchange.Annotation` (spans or
        choices, with the model's scores): what Label Studio pre-annotations are made of."""
        raise NotImplementedError

    def format_output(self, results: list[dict], output_format: str = "jsonl") -> str:
        return "".join(self.to_json(r) + "\n" for r in results)

    def count_output(self, results: list[dict]) -> dict[str, int]:
        """What ``predict`` results hold, as counts that add up over chunks (``{"predictions": n}``)."""
        return {"predictions": len(results)}

    def describe_output(self, results: list[dict]) -> str:
        return describe_counts(self.count_output(results))

    def headline(self, metrics: dict) -> str:
        """One line summing up ``metrics`` (printed by ``tuneforge eval``)."""
        return f"f1 {metrics['f1']:.4f}"


def check_read_options(predictor: Predictor, options: dict) -> dict:
    """The options a caller set (not None) that this predictor's ``read`` takes; any other is an error."""
    given = {k: v for k, v in options.items() if v is not None}
    known = set(predictor.read_options())
    unknown = sorted(set(given) - known)
    if unknown:
        flag = "--" + unknown[0].replace("_", "-")
        raise TuneforgeError(f"{flag} does not apply to a {predictor.task_name.replace('_', ' ')} model")
    return given


def describe_counts(counts: dict[str, int]) -> str:
    """``{"predictions": 3, "entities": 5}`` -> ``3 predictions (5 entities)``."""
    first, *rest = counts.items()
    text = f"{first[1]} {first[0]}"
    return text + (f" ({', '.join(f'{v} {k}' for k, v in rest)})" if rest else "")


def evaluate_across_processes(predictor: Predictor, examples: Sequence, batch_size: int = 64) -> tuple[dict, str, Any]:
    """``predictor.evaluate_examples(examples)`` in a run of one or several processes.

    With several, each process predicts a contiguous share of the examples and the outputs are
    gathered back in order in every process (:func:`tuneforge.runtime.distributed.map_in_order`), so every
    example is scored exactly once and the metrics are those of one process on the same predictions;
    every process returns the same metrics. A predictor without :meth:`Predictor.predict_outputs`
    evaluates all examples in every process (same result, no speed-up).
    """
    shareable = type(predictor).predict_outputs is not Predictor.predict_outputs
    if distributed.world_size() == 1 or not shareable:
        return predictor.evaluate_examples(examples, batch_size)
    outputs = distributed.map_in_order(lambda share: predictor.predict_outputs(share, batch_size), examples)
    return predictor.score_outputs(examples, outputs)


def predict_across_processes(
    predictor: Predictor, examples: Sequence, write: Callable[[str], None], output_format: str = "jsonl",
    batch_size: int = 64, chunk_size: int | None = None,
) -> dict[str, int]:
    """Predict ``examples`` and pass the formatted output to ``write`` in input order, one piece at a time.

    The input goes in chunks (``chunk_size`` examples; default 100 batches a process), so memory stays
    bounded however large it is. With several processes each chunk is cut into one contiguous share per
    process; each predicts and formats its share, and process 0 receives the shares in order and
    writes them: one ordered output, each input exactly once. ``write`` is called in process 0 only,
    which also gets the summed :meth:`Predictor.count_output` (an empty dict elsewhere).
    """
    chunk = chunk_size or 100 * batch_size * distributed.world_size()
    totals = Counter(predictor.count_output([]))
    for begin in range(0, len(examples), chunk):
        part = examples[begin: begin + chunk]
        start, end = distributed.share(len(part))
        results = predictor.predict(list(part[start:end]), batch_size) if end > start else []
        piece = (predictor.format_output(results, output_format), predictor.count_output(results)) if results else ("", {})
        for text, counts in distributed.gather_to_main(piece) or []:
            if text:
                write(text)
            totals.update(counts)
    return dict(totals) if distributed.is_main() else {}
