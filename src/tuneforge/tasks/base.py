"""What a task is. One module per task in ``tasks/``, one line in :data:`tuneforge.tasks.REGISTRY`.

A task class is instantiated once per run with the validated config (``task = Task(cfg)``); the one
driver (:func:`tuneforge.driver.train_run`) asks it, in this order:

1. **config**: ``Options`` / ``Data`` / ``Encoding`` are the task's own ``task:``, ``data:`` and
   ``encoding:`` sections (subclasses of the shared ones); keys another task defines are errors.
2. **data**: :meth:`Task.prepare_data` reads train/dev/test (:meth:`read`, ``data.split``), lets
   the task normalise them (:meth:`normalise`), builds the label space (:meth:`label_list`), checks
   dev/test against it (:meth:`check_labels`), cuts ``data.max_train_examples``, draws
   ``data.k_shot`` examples per label (:meth:`sample_k_shot`) and counts (:meth:`describe`).
3. **model**: :meth:`build_model` (pre-trained body + this task's head), then the adaptation method.
4. **encoding**: :meth:`encode` (examples -> model inputs and their lengths) and :meth:`collator`;
   :meth:`callbacks` attaches the task's own behaviour to the loop (the masked-LM task saves its
   masking RNG through one, so a resumed run draws the same masks).
5. **loss**: :meth:`loss` (default: the model's own) and :meth:`loss_units` (what it averages over,
   which weighs the processes' shares of a batch), handed to the loop.
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
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..config import DataConfig, EncodingConfig, TaskOptions
from ..data.readers import split_examples
from ..errors import InputError, TuneforgeError


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

    Subclasses implement :meth:`read`, :meth:`predict` and either :meth:`predict_outputs` +
    :meth:`score_outputs` (scoring shares out over processes) or :meth:`evaluate_examples`; the rest
    has defaults. ``meta`` is the model folder's ``tuneforge.json``.
    """

    output_formats: ClassVar[tuple[str, ...]] = ("jsonl",)

    def __init__(self, model, tokenizer, meta: dict, precision: str = "auto"):
        from ..training.loop import resolve_precision

        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.labels: list[str] = meta.get("labels", [])
        self.precision = resolve_precision(precision, next(model.parameters()).device, phase="inference")
        # what runs, for metrics.json and predict's report (the loader sets it for int8 and onnx)
        self.runtime = {"engine": "torch", "precision": self.precision}

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
    # False for a task that needs no training examples (zero-shot): a learning curve draws it once, flat
    uses_training_data: ClassVar[bool] = True
    # ``training`` values this task needs unless the config sets them (as methods' DEFAULT_TRAINING)
    DEFAULT_TRAINING: ClassVar[dict] = {}
    # few-shot approaches of this task by name: config changes (dotted keys) that `tuneforge curve`
    # and `compare` can run next to the adaptation methods, e.g. {"setfit": {"task.type": "setfit"}}
    APPROACHES: ClassVar[dict[str, dict]] = {}

    def __init__(self, cfg):
        self.cfg = cfg

    # --- data
    def read(self, path: str, labelled: bool = True) -> list:  # pragma: no cover
        raise NotImplementedError

    def normalise(self, splits: dict[str, list], report: dict) -> None:
        """Repair or normalise the read examples in place (tag schemes...); note what changed in ``report``."""

    def label_list(self, train: Sequence) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def extend_labels(self, known: Sequence[str], found: Sequence[str]) -> list[str]:
        """A grown label space: ``known`` (a previous run's, in its order, so its head rows keep their
        index) followed by the labels of ``found`` it lacks."""
        return list(known) + [label for label in found if label not in known]

    def mark_annotated(self, examples: Sequence, labels: Sequence[str]) -> None:
        """Record on ``examples`` that they annotate only ``labels`` (a continual stage's data).
        The default does nothing: a classifier's example names its class whatever other classes exist."""

    # --- what `tuneforge data check` asks of a task (tuneforge.data.checks)
    @classmethod
    def sniff(cls, path: str, records: list[dict]) -> bool:
        """Whether a data file looks like this task's (``records``: the first JSON objects of a JSON or
        JSONL file, the first Label Studio tasks of an export, else []; up to
        :data:`tuneforge.data.checks.SNIFF_RECORDS`). Judge on all of them: one record may carry no
        label. Used to pick the task of ``tuneforge data check|convert FILE`` when ``--task`` is not given."""
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

    def write_labelled(self, examples: Sequence, path: str | Path) -> dict:  # pragma: no cover
        """Write labelled (normalised) examples to a JSONL file; return the ``data:`` settings under which
        :meth:`read` reads them back as they are (active-learning rounds write their labelled sets this way)."""
        raise NotImplementedError

    def check_labels(self, splits: dict[str, list], labels: list[str], report: dict) -> None:
        """Refuse data the label space cannot score (a dev/test label training never saw...)."""

    def describe(self, splits: dict[str, list], labels: list[str]) -> dict:
        return {"examples": {name: len(ex) for name, ex in splits.items()}}

    def prepare_data(self, known_labels: Sequence[str] | None = None) -> TaskData:
        """Read, split and normalise the data; the labels come from the whole training portion, before
        any ``max_train_examples`` cut, so a quick run on a slice still knows every label dev and test use
        (or from ``data.labels`` when given).

        ``known_labels`` (a run continued from another, ``model.init_from``) come first; labels only
        they hold are ones this data does not annotate (:meth:`mark_annotated`, reported)."""
        d = self.cfg.data
        splits, report = self.read_splits()
        self.normalise(splits, report)
        found = self.label_list(splits["train"])
        labels = found
        if d.labels is not None:
            missing = [label for label in found if label not in d.labels]
            if missing:
                raise TuneforgeError(f"{report['train_file']}: label {missing[0]!r} is not in data.labels "
                                     f"({', '.join(d.labels)}); add it there or fix the data")
            labels = list(d.labels)
        if known_labels:
            labels = self.extend_labels(known_labels, labels)
            unannotated = [label for label in known_labels if label not in found]
            if unannotated:
                self.mark_annotated(splits["train"], found)
                report["labels_not_annotated"] = unannotated
        self.check_labels(splits, labels, report)
        if d.max_train_examples is not None and len(splits["train"]) > d.max_train_examples:
            report["train_truncated_from"] = len(splits["train"])
            splits["train"] = splits["train"][: d.max_train_examples]
        if d.k_shot is not None:
            seed = d.k_shot_seed if d.k_shot_seed is not None else self.cfg.training.seed
            splits["train"], report["k_shot"] = self.sample_k_shot(splits["train"], labels, d.k_shot, seed)
            from ..data.sampling import describe_sample

            print(describe_sample(report["k_shot"]))
        if d.augment is not None:
            splits["train"], report["augment"] = self.augment(splits["train"], d.augment)
        report.update(self.describe(splits, labels))
        self.labels = labels
        return TaskData(splits, labels, report)

    def augment(self, examples: list, cfg) -> tuple[list, dict]:
        """The training examples followed by ``cfg.copies`` noisy copies of each (``data.augment``): the
        copies of example i take the perturbations in turn, starting at the i-th, at ``cfg.rate`` of their
        words each (:mod:`tuneforge.data.perturb`, the noise ``--perturb`` measures); labels kept."""
        from ..data.perturb import perturb_examples

        seed = cfg.seed if cfg.seed is not None else self.cfg.training.seed
        names, added, changed, words = cfg.perturb, [], {}, 0
        for copy in range(cfg.copies):
            for k, name in enumerate(names):
                picked = examples[(k - copy) % len(names)::len(names)]  # the i with (i + copy) % len == k
                if not picked:
                    continue
                noisy, stats = perturb_examples(picked, name, cfg.rate, seed + copy, self)
                added += noisy
                changed[name] = changed.get(name, 0) + stats.changed
                words += stats.words
        report = {"copies": cfg.copies, "added": len(added), "rate": cfg.rate, "seed": seed,
                  "words": words, "changed": changed}
        print(f"augment: {len(examples):,} training examples + {len(added):,} noisy copies; "
              + ", ".join(f"{name} changed {n:,}" for name, n in changed.items())
              + f" of {words:,} words ({sum(changed.values()) / max(words, 1):.1%})")
        return list(examples) + added, report

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

    def sample_k_shot(self, train: Sequence, labels: list[str], k: int, seed: int) -> tuple[list, dict]:
        """``k`` training examples per label, deterministic by ``seed``: (the sample, a report of counts
        per label and labels short of ``k``). See :mod:`tuneforge.data.sampling`."""
        from ..errors import ConfigError

        raise ConfigError(f"data.k_shot: task {self.name} has no k-shot sampler; remove data.k_shot")

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

    def callbacks(self) -> list:
        """The task's own :class:`~tuneforge.training.callbacks.Callback` objects, asked for after
        :meth:`collator` (default: none)."""
        return []

    def tokenizer_inputs(self, examples: Sequence) -> list:
        """What the tokenizer reads of each example: a text, or a list of words (vocabulary statistics,
        ``vocab:`` blocks). Default: the text and, for pairs, the second text."""
        out: list = []
        for ex in examples:
            out.append(ex.text)
            if getattr(ex, "text_pair", None):
                out.append(ex.text_pair)
        return out

    def loss(self, model, batch: dict):
        """``(loss, outputs)`` of one batch; the default is the model's own loss."""
        outputs = model(**batch)
        return outputs.loss, outputs

    def loss_units(self, batch: dict):
        """How many things :meth:`loss` averages over in ``batch`` (a 0-dim tensor or an int).

        With several processes each takes a share of every batch; its loss is weighted by its share of
        these units, so the gradient is the one a single process gets on the whole batch. The default
        matches Hugging Face heads' mean losses: labelled positions (labels other than -100) for
        integer labels, rows for float labels (regression, multi-label) or none.
        """
        import torch

        labels = batch.get("labels")
        if labels is None or not torch.is_tensor(labels) or labels.is_floating_point():
            return batch["input_ids"].shape[0]
        return (labels != -100).sum()
    def model_inputs(self, batch: dict) -> dict:
        """What of a training batch the model takes when it is called without labels (a teacher)."""
        return {k: v for k, v in batch.items() if k != "labels"}

    def output_rows(self, batch: dict, logits):
        """The rows of ``logits`` that carry a prediction, as (rows x labels): every row by default;
        a token task keeps the positions its words are read from."""
        return logits.reshape(-1, logits.shape[-1])

    def distillation_loss(self, batch: dict, student_logits, teacher_logits, temperature: float = 1.0):
        """KL(teacher || student) over the teacher's labels (the first columns of the student's:
        a grown label space keeps the old labels first), on softened distributions, times T²
        (Hinton et al., 2015). Zero when the student's old-label outputs equal the teacher's."""
        import torch.nn.functional as F

        n_old = teacher_logits.shape[-1]
        student = self.output_rows(batch, student_logits[..., :n_old]).float() / temperature
        teacher = self.output_rows(batch, teacher_logits).float() / temperature
        if not len(student):
            return student.sum()
        kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")
        return kl * temperature ** 2

    # --- continual-learning data (``tuneforge continual split``)
    # True when a stage's data is the same examples with only its labels kept (token tasks: every
    # sentence stays, other types become O); False when a stage keeps only the examples of its labels
    stages_relabel: ClassVar[bool] = False

    def label_kinds(self, labels: Sequence[str]) -> list[str]:
        """What stages are made of: the labels themselves (entity types for token tasks)."""
        return list(labels)

    def labels_of_kinds(self, labels: Sequence[str], kinds: Sequence[str]) -> list[str]:
        """The labels of ``labels`` a stage annotating ``kinds`` uses."""
        return [label for label in labels if label in kinds]

    def kind_counts(self, examples: Sequence) -> dict[str, int]:
        """How often each kind occurs in ``examples`` (to deal kinds into stages of similar size)."""
        from collections import Counter

        return dict(Counter(label for ex in examples for label in (getattr(ex, "labels", None) or [])))

    def restrict_examples(self, examples: Sequence, labels: Sequence[str]) -> list:  # pragma: no cover
        """``examples`` as data that annotates only ``labels`` would hold them (copies)."""
        raise NotImplementedError

    def write_examples(self, examples: Sequence, folder: Path, name: str) -> Path:  # pragma: no cover
        """Write labelled examples as a file this task reads with the run's data settings; returns its path."""
        raise NotImplementedError

    # --- saving and scoring
    def model_meta(self, labels: list[str]) -> dict:
        """What ``tuneforge.json`` keeps besides task, method and base model: enough to predict as trained."""
        e = self.cfg.encoding
        return {"labels": list(labels), "max_length": e.max_length, "stride": e.stride}

    def before_save(self, model, tokenizer, meta: dict, precision: str) -> None:
        """Last touches before the (best) model is written: a head fitted on the training embeddings
        (SetFit), for example. ``meta`` is what ``tuneforge.json`` will hold and may be updated."""

    def predictor(self, model, tokenizer, meta: dict, precision: str = "fp32") -> Predictor:
        return self.Predictor(model, tokenizer, meta, precision)

    def evaluate_dev(self, model, tokenizer, examples: Sequence, meta: dict, precision: str) -> dict:
        """Dev metrics of the model being trained (the loop picks the best checkpoint by them)."""
        metrics, _, _ = evaluate_across_processes(
            self.predictor(model, tokenizer, meta, precision), examples, self.cfg.training.eval_batch_size)
        return metrics

    def final_metrics(self, predictor: Predictor) -> dict:
        """Extra keys for metrics.json from the saved model (tuned thresholds...)."""
        return {}

    def write_outputs(self, run_dir: Path, split: str, examples: Sequence, predictions: Any,
                      metrics: dict, predictor: Predictor) -> None:
        """Files a split's scoring leaves in the run folder (test predictions, plots)."""

    # --- hooks for training regimes and robustness checks
    def prediction_divergence(self, batch: dict, logits_a, logits_b):
        """How far apart two predictions of the same batch are (a scalar tensor to minimise): R-Drop's
        consistency term (:mod:`tuneforge.training.adversarial`), averaged over what the loss scores."""
        from ..errors import ConfigError

        raise ConfigError(f"adversarial.method rdrop: task {self.name!r} defines no prediction_divergence; "
                          "use fgm or pgd, or add the hook to the task")

    @classmethod
    def example_words(cls, example) -> list[str]:
        """The words of an example that character noise may change (:mod:`tuneforge.data.perturb`)."""
        raise TuneforgeError(f"task {cls.name!r} defines no example_words; its data cannot be perturbed")

    @classmethod
    def with_words(cls, example, words: list[str]):
        """A copy of ``example`` with its :meth:`example_words` replaced by ``words`` (as many); labels kept."""
        raise TuneforgeError(f"task {cls.name!r} defines no with_words; its data cannot be perturbed")

    @classmethod
    def read_file(cls, path, format: str = "auto", **options) -> list:
        """Labelled examples from a file without a run or config (``tuneforge data perturb``); the
        keyword options are the file's columns/keys, as the task's readers name them."""
        raise TuneforgeError(f"task {cls.name!r} defines no read_file")

    @classmethod
    def write_file(cls, examples: Sequence, path, format: str = "auto", **options) -> None:
        """Write examples as :meth:`read_file` reads them (atomically)."""
        raise TuneforgeError(f"task {cls.name!r} defines no write_file")

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


def describe_counts(counts: dict[str, int]) -> str:
    """``{"predictions": 3, "entities": 5}`` -> ``3 predictions (5 entities)``."""
    first, *rest = counts.items()
    text = f"{first[1]} {first[0]}"
    return text + (f" ({', '.join(f'{v} {k}' for k, v in rest)})" if rest else "")


def evaluate_across_processes(predictor: Predictor, examples: Sequence, batch_size: int = 64) -> tuple[dict, str, Any]:
    """``predictor.evaluate_examples(examples)`` in a run of one or several processes.

    With several, each process predicts a contiguous share of the examples and the outputs are
    gathered back in order in every process (:func:`tuneforge.distributed.map_in_order`), so every
    example is scored exactly once and the metrics are those of one process on the same predictions;
    every process returns the same metrics. A predictor without :meth:`Predictor.predict_outputs`
    evaluates all examples in every process (same result, no speed-up).
    """
    from .. import distributed

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
    from collections import Counter

    from .. import distributed

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
