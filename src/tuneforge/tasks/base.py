"""What a task is. One module per task in ``tasks/``, one line in :data:`tuneforge.tasks.REGISTRY`.

A task class is instantiated once per run with the validated config (``task = Task(cfg)``); the one
driver (:func:`tuneforge.driver.train_run`) asks it, in this order:

1. **config**: ``Options`` / ``Data`` / ``Encoding`` are the task's own ``task:``, ``data:`` and
   ``encoding:`` sections (subclasses of the shared ones); keys another task defines are errors.
2. **data**: :meth:`Task.prepare_data` reads train/dev/test (:meth:`read`, ``data.split``), lets
   the task normalise them (:meth:`normalise`), builds the label space (:meth:`label_list`), checks
   dev/test against it (:meth:`check_labels`), cuts ``data.max_train_examples`` and counts
   (:meth:`describe`).
3. **model**: :meth:`build_model` (pre-trained body + this task's head), then the adaptation method.
4. **encoding**: :meth:`encode` (examples -> model inputs and their lengths) and :meth:`collator`.
5. **loss**: :meth:`loss` (default: the model's own), handed to the loop.
6. **saving**: :meth:`model_meta` -> ``tuneforge.json`` next to the weights (what the predictor needs).
7. **scoring**: :meth:`evaluate_dev` each epoch; ``metric_for_best`` / ``greater_is_better`` name
   the default best-checkpoint metric; after training, the saved model is loaded as the task's
   :class:`Predictor` and scores dev and test; :meth:`write_outputs` writes the task's files.

A :class:`Predictor` is what ``tuneforge.load(RUN)`` returns: read files, predict, evaluate, format.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from ..config import DataConfig, EncodingConfig, TaskOptions
from ..data.readers import split_examples
from ..errors import TuneforgeError


@dataclass
class TaskData:
    """The splits of a run, its label space, and the data report that goes into metrics.json."""

    splits: dict[str, list]
    labels: list[str]
    report: dict


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

    Subclasses implement :meth:`read`, :meth:`predict` and :meth:`evaluate_examples`; the rest has
    defaults. ``meta`` is the model folder's ``tuneforge.json``.
    """

    output_formats: ClassVar[tuple[str, ...]] = ("jsonl",)

    def __init__(self, model, tokenizer, meta: dict, precision: str = "auto"):
        from ..training.loop import resolve_precision

        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.labels: list[str] = meta.get("labels", [])
        self.precision = resolve_precision(precision, next(model.parameters()).device)

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

    def evaluate_examples(self, examples: Sequence, batch_size: int = 64) -> tuple[dict, str, Any]:  # pragma: no cover
        """(metrics, report text, predictions) for labelled examples."""
        raise NotImplementedError

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
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)

    def describe_output(self, results: list[dict]) -> str:
        return f"{len(results)} predictions"

    def headline(self, metrics: dict) -> str:
        """One line summing up ``metrics`` (printed by ``tuneforge eval``)."""
        return f"f1 {metrics['f1']:.4f}"


class Task:
    """The interface described in the module docstring, with the defaults most tasks share."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    Data: ClassVar[type[DataConfig]] = DataConfig
    Encoding: ClassVar[type[EncodingConfig]] = EncodingConfig
    Predictor: ClassVar[type[Predictor]] = Predictor
    metric_for_best: ClassVar[str] = "f1"
    greater_is_better: ClassVar[bool] = True
    score_name: ClassVar[str] = "F1"  # what the headline metric is called in summaries

    def __init__(self, cfg):
        self.cfg = cfg

    # --- data
    def read(self, path: str, labelled: bool = True) -> list:  # pragma: no cover
        raise NotImplementedError

    def normalise(self, splits: dict[str, list], report: dict) -> None:
        """Repair or normalise the read examples in place (tag schemes...); note what changed in ``report``."""

    def label_list(self, train: Sequence) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    # --- what `tuneforge data check` asks of a task (tuneforge.data.checks)
    @classmethod
    def sniff(cls, path: str, first_record) -> bool:
        """Whether a data file looks like this task's (``first_record``: the first JSON object of a JSON
        or JSONL file, the first Label Studio task of an export, else None). Used to pick the task of
        ``tuneforge data check FILE`` when ``--task`` is not given."""
        return False

    def label_counts(self, examples: Sequence) -> dict[str, int]:  # pragma: no cover
        """How often each label occurs (entities by type for NER, texts per class for classifiers)."""
        raise NotImplementedError

    def label_signature(self, example) -> tuple:  # pragma: no cover
        """The example's labels as a hashable value: two copies of a text with different signatures conflict."""
        raise NotImplementedError

    def check_token_ids(self, tokenizer, examples: Sequence) -> list[list[int]]:  # pragma: no cover
        """Each example's token ids as the model would read it whole (special tokens included, no cut)."""
        raise NotImplementedError

    def long_input_handling(self) -> str:
        """What happens to an input longer than ``encoding.max_length`` (said in the check report)."""
        return "split into overlapping windows"

    def to_annotation(self, example):  # pragma: no cover
        """A labelled example as a :class:`tuneforge.data.interchange.Annotation` (Label Studio / doccano export)."""
        raise NotImplementedError

    def write_examples(self, examples: Sequence, path: str | Path) -> dict:  # pragma: no cover
        """Write labelled (normalised) examples to a JSONL file; return the ``data:`` settings under which
        :meth:`read` reads them back as they are (active-learning rounds write their labelled sets this way)."""
        raise NotImplementedError

    def check_labels(self, splits: dict[str, list], labels: list[str], report: dict) -> None:
        """Refuse data the label space cannot score (a dev/test label training never saw...)."""

    def describe(self, splits: dict[str, list], labels: list[str]) -> dict:
        return {"examples": {name: len(ex) for name, ex in splits.items()}}

    def prepare_data(self) -> TaskData:
        """Read, split and normalise the data; the labels come from the whole training portion, before
        any ``max_train_examples`` cut, so a quick run on a slice still knows every label dev and test use."""
        d = self.cfg.data
        splits, report = self.read_splits()
        self.normalise(splits, report)
        labels = self.label_list(splits["train"])
        if d.labels is not None:
            missing = [label for label in labels if label not in d.labels]
            if missing:
                raise TuneforgeError(f"{report['train_file']}: label {missing[0]!r} is not in data.labels "
                                     f"({', '.join(d.labels)}); add it there or fix the data")
            labels = list(d.labels)
        self.check_labels(splits, labels, report)
        if d.max_train_examples is not None and len(splits["train"]) > d.max_train_examples:
            report["train_truncated_from"] = len(splits["train"])
            splits["train"] = splits["train"][: d.max_train_examples]
        report.update(self.describe(splits, labels))
        return TaskData(splits, labels, report)

    def read_splits(self) -> tuple[dict[str, list], dict]:
        """train/dev/test as read (``data.split`` applied, nothing normalised yet) and the report's start."""
        d = self.cfg.data
        train = self.read(d.train)
        report: dict = {"train_file": getattr(train[0], "source", None) or d.train if train else d.train}
        if d.split is not None:
            train, dev, test = split_examples(train, d.split, d.split_seed)
            report["split"] = {"ratios": list(d.split), "seed": d.split_seed}
        else:
            dev = self.read(d.dev) if d.dev else []
            test = self.read(d.test) if d.test else []
        return {"train": train, "dev": dev, "test": test}, report

    def data_summary(self, data: TaskData) -> str:
        """The first line the driver prints: how much data."""
        return f"{data.report.get('examples', {name: len(ex) for name, ex in data.splits.items()})} examples"

    # --- model
    def load_tokenizer(self):
        from ..models import load_tokenizer

        m = self.cfg.model
        return load_tokenizer(m.name_or_path, m.revision, m.trust_remote_code)

    def build_model(self, labels: list[str]):
        """The pre-trained model with a fresh head for ``labels``."""
        m = self.cfg.model
        return self.load_pretrained(m.name_or_path, labels, {}, m.revision, m.trust_remote_code)

    @classmethod
    def load_pretrained(cls, name_or_path: str, labels: list[str] | None = None, meta: dict | None = None,
                        revision: str | None = None, trust_remote_code: bool = False,
                        announce_new_head: bool = True):  # pragma: no cover
        """A transformers model of this task's class; with ``labels``, a fresh head sized for them.
        The loader also uses it: a saved full model (``labels`` None) or a base model for saved method weights."""
        raise NotImplementedError

    # --- encoding and loss
    def encode(self, tokenizer, examples: Sequence, labels: list[str]) -> tuple[list, list[int], Any]:  # pragma: no cover
        """(model inputs, their lengths in tokens, stats with a ``describe()``) for training."""
        raise NotImplementedError

    def collator(self, tokenizer):  # pragma: no cover
        raise NotImplementedError

    def loss(self, model, batch: dict):
        """``(loss, outputs)`` of one batch; the default is the model's own loss."""
        outputs = model(**batch)
        return outputs.loss, outputs

    # --- saving and scoring
    def model_meta(self, labels: list[str]) -> dict:
        """What ``tuneforge.json`` keeps besides task, method and base model: enough to predict as trained."""
        e = self.cfg.encoding
        return {"labels": list(labels), "max_length": e.max_length, "stride": e.stride}

    def predictor(self, model, tokenizer, meta: dict, precision: str = "fp32") -> Predictor:
        return self.Predictor(model, tokenizer, meta, precision)

    def evaluate_dev(self, model, tokenizer, examples: Sequence, meta: dict, precision: str) -> dict:
        """Dev metrics of the model being trained (the loop picks the best checkpoint by them)."""
        metrics, _, _ = self.predictor(model, tokenizer, meta, precision).evaluate_examples(
            examples, self.cfg.training.eval_batch_size)
        return metrics

    def final_metrics(self, predictor: Predictor) -> dict:
        """Extra keys for metrics.json from the saved model (tuned thresholds...)."""
        return {}

    def write_outputs(self, run_dir: Path, split: str, examples: Sequence, predictions: Any,
                      metrics: dict, predictor: Predictor) -> None:
        """Files a split's scoring leaves in the run folder (test predictions, plots)."""

    @classmethod
    def summary(cls, metrics: dict) -> str:
        """``entity F1 {'dev': 0.61, 'test': 0.58}`` for the end of ``tuneforge train``."""
        metric = metrics.get("metric_for_best", cls.metric_for_best)
        scores = {k: round(metrics[k][metric], 4) for k in ("dev", "test") if metric in metrics.get(k, {})}
        if not scores:
            return "no dev or test set scored"
        return f"{cls.score_name if metric == cls.metric_for_best else metric} {scores}"


def check_read_options(predictor: Predictor, options: dict) -> dict:
    """The options a caller set (not None) that this predictor's ``read`` takes; any other is an error."""
    given = {k: v for k, v in options.items() if v is not None}
    known = set(predictor.read_options())
    unknown = sorted(set(given) - known)
    if unknown:
        flag = "--" + unknown[0].replace("_", "-")
        raise TuneforgeError(f"{flag} does not apply to a {predictor.task_name.replace('_', ' ')} model")
    return given
