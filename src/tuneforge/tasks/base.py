"""What a task is: the core every task implements. One module per task in ``tasks/``, one line in
:data:`tuneforge.tasks.REGISTRY`. What only some tools need (data checks, Label Studio/doccano
interchange, continual stages, perturbation, k-shot sampling, R-Drop) are capabilities a task opts
into (:mod:`.capabilities`); the trained model read back is the task's :class:`~.predictor.Predictor`.

A task class is instantiated once per run with the validated config (``task = Task(cfg)``); the one
driver (:func:`tuneforge.driver.train_run`) asks it, in this order:

1. **config**: ``Options`` / ``Model`` / ``Data`` / ``Encoding`` are the task's own ``task:``,
   ``model:``, ``data:`` and ``encoding:`` sections (subclasses of the shared ones); keys another task defines are errors.
2. **data**: :meth:`Task.prepare_data` reads train/dev/test (:meth:`read`, ``data.split``), lets
   the task normalise them (:meth:`normalise`), builds the label space (:meth:`label_list`), checks
   dev/test against it (:meth:`check_labels`), cuts ``data.max_train_examples``, draws
   ``data.k_shot`` examples per label (the :class:`~.capabilities.KShotSampling` capability) and counts
   (:meth:`describe`).
3. **model**: :meth:`build_model` (pre-trained body + this task's head), then the adaptation method.
4. **encoding**: :meth:`encode` (examples -> model inputs and their lengths) and :meth:`collator`;
   :meth:`before_train` sees the model as training starts (a preference task takes its reference);
   :meth:`callbacks` attaches the task's own behaviour to the loop (the masked-LM task saves its
   masking RNG through one, so a resumed run draws the same masks).
5. **loss**: :meth:`loss` (default: the model's own) and :meth:`loss_units` (what it averages over,
   which weighs the processes' shares of a batch), handed to the loop.
6. **saving**: :meth:`model_meta` -> ``tuneforge.json`` next to the weights (what the predictor needs).
7. **scoring**: :meth:`evaluate_dev` each epoch; ``metric_for_best`` / ``greater_is_better`` name
   the default best-checkpoint metric; after training, the saved model is loaded as the task's
   :class:`Predictor` and scores dev and test; :meth:`write_outputs` writes the task's files.

A task must implement :meth:`Task.read`, :meth:`Task.label_list`, :meth:`Task.load_pretrained`,
:meth:`Task.encode`, :meth:`Task.collator` and its ``Predictor``; every other method is a hook with a
default (``tests/test_task_interface.py`` writes a whole task in under 100 lines).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from ..data.readers import split_examples
from ..data.sampling import describe_sample
from ..errors import ConfigError, TuneforgeError
from ..runtime.models import load_tokenizer
from ..schema import DataConfig, EncodingConfig, ModelConfig, TaskOptions
from .capabilities import KShotSampling, Perturbable, require
from .predictor import Predictor, evaluate_across_processes


@dataclass
class TaskData:
    """The splits of a run, its label space, and the data report that goes into metrics.json."""

    splits: dict[str, list]
    labels: list[str]
    report: dict


def hold_out_documents(d: DataConfig, splits: dict[str, list], report: dict) -> None:
    """Language modelling on raw text: hold out ``data.eval_share`` of the documents (at most
    ``data.max_eval_documents``) for evaluation when no dev set or split is given."""
    if not splits["dev"] and d.split is None and d.eval_share > 0:
        train, dev = split_examples(splits["train"], [1 - d.eval_share, d.eval_share], d.split_seed)
        if d.max_eval_documents is not None and len(dev) > d.max_eval_documents:
            train, dev = train + dev[d.max_eval_documents:], dev[: d.max_eval_documents]
        splits["train"], splits["dev"] = train, dev
        report["held_out"] = {"share": d.eval_share, "documents": len(dev), "seed": d.split_seed}


class Task:
    """The interface described in the module docstring, with the defaults most tasks share."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    Model: ClassVar[type[ModelConfig]] = ModelConfig
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
    # other task types whose runs ``model.init_from`` may continue (besides this task's own): a
    # preference run starts from an SFT run's weights
    CONTINUES: ClassVar[tuple[str, ...]] = ()
    # optional modules this task cannot run without, as (module, pyproject extra): checked before any
    # work (the run folder, data or model), so a missing one is one line naming the extra
    REQUIRES: ClassVar[tuple[tuple[str, str], ...]] = ()

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
            require(self, KShotSampling, "data.k_shot", ConfigError)
            seed = d.k_shot_seed if d.k_shot_seed is not None else self.cfg.training.seed
            splits["train"], report["k_shot"] = self.sample_k_shot(splits["train"], labels, d.k_shot, seed)
            print(describe_sample(report["k_shot"]))
        if d.augment is not None:
            require(self, Perturbable, "data.augment", ConfigError)
            splits["train"], report["augment"] = self.augment(splits["train"], d.augment)
        report.update(self.describe(splits, labels))
        self.labels = labels
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
        m = self.cfg.model
        return load_tokenizer(m.name_or_path, m.revision, m.trust_remote_code)

    @classmethod
    def load_saved_tokenizer(cls, folder: Path, full_model: bool, trust_remote_code: bool = False):
        """The tokenizer saved beside a trained model (``tuneforge.load``); None for a task whose model
        reads no text (its :meth:`load_tokenizer` gave None, so none was saved)."""
        if full_model:
            return load_tokenizer(str(folder), trust_remote_code=trust_remote_code)
        from transformers import AutoTokenizer

        # No config.json here (only the method's weights); the saved tokenizer carries its own
        # settings (pad token, add_prefix_space), so it loads as it was saved.
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)

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

    def before_train(self, model, tokenizer, items: Sequence, data: TaskData, precision: str) -> None:
        """The model as training starts (method applied, ``model.init_from`` loaded, before a resumed
        checkpoint is read) and the encoded training items: what the task must take from them before
        the first step (a preference task's reference model). Default: nothing."""

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
        labels = batch.get("labels")
        if labels is None or not torch.is_tensor(labels) or labels.is_floating_point():
            return batch["input_ids"].shape[0]
        return (labels != -100).sum()
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

    @classmethod
    def summary(cls, metrics: dict) -> str:
        """``entity F1 {'dev': 0.61, 'test': 0.58}`` for the end of ``tuneforge train``."""
        metric = metrics.get("metric_for_best", cls.metric_for_best)
        scores = {k: round(metrics[k][metric], 4) for k in ("dev", "test") if metric in metrics.get(k, {})}
        if not scores:
            return "no dev or test set scored"
        return f"{cls.score_name if metric == cls.metric_for_best else metric} {scores}"
