"""Capabilities: what only some tools ask of a task, each a class a task opts into by inheriting it.

The core every task implements is :class:`tuneforge.tasks.base.Task`. A tool that needs more names the
capability it needs and, for a task without it, says so in one line (:func:`require`), instead of a
base class growing a method per tool. Each capability lists the methods a task implements (those that
raise ``NotImplementedError`` here) and carries the defaults most tasks share.

==================  =================================================  ==========================
capability          asked for by                                       token · text · MLM · zero-shot · SetFit
==================  =================================================  ==========================
DataChecks          ``tuneforge data check``                           yes · yes · no · yes · yes
Interchange         ``data convert``, ``label suggest|simulate``       yes · yes · no · yes · yes
ContinualStages     ``tuneforge continual``, ``model.init_from``       yes · yes · no · yes · yes
KShotSampling       ``data.k_shot``                                    yes · yes · no · yes · yes
Perturbable         ``eval --perturb``, ``data perturb``, augment      yes · yes · no · yes · yes
Consistency         ``adversarial.method: rdrop``                      yes · yes · no · yes · yes
==================  =================================================  ==========================
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import ClassVar, Sequence

import torch.nn.functional as F

from ..data.perturb import perturb_examples
from ..errors import TuneforgeError


def supports(task, capability: type) -> bool:
    """Whether ``task`` (a task class or instance) has ``capability``."""
    return issubclass(task if isinstance(task, type) else type(task), capability)


def require(task, capability: type, what: str, error: type[TuneforgeError] = TuneforgeError) -> None:
    """Stop with one line when ``task`` lacks ``capability``: ``what`` names the tool or key that needs it."""
    if not supports(task, capability):
        raise error(f"{what}: task {task.name!r} has no {capability.__name__} capability "
                    f"({capability.NEEDED_FOR}); choose a task that has it, or add it to the task")



class DataChecks:
    """What the data checks ask of a task: file sniffing, label counts and signatures, token ids (`tuneforge data check`)."""

    NEEDED_FOR: ClassVar[str] = "tuneforge data check"

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


class Interchange:
    """A labelled example as a Label Studio / doccano annotation, and labelled examples written back (`tuneforge data convert` and active-learning rounds)."""

    NEEDED_FOR: ClassVar[str] = "tuneforge data convert and active-learning rounds"

    def to_annotation(self, example):  # pragma: no cover
        """A labelled example as a :class:`tuneforge.data.interchange.Annotation` (Label Studio / doccano export)."""
        raise NotImplementedError

    def write_labelled(self, examples: Sequence, path: str | Path) -> dict:  # pragma: no cover
        """Write labelled (normalised) examples to a JSONL file; return the ``data:`` settings under which
        :meth:`read` reads them back as they are (active-learning rounds write their labelled sets this way)."""
        raise NotImplementedError


class ContinualStages:
    """Stages by label kind, examples restricted to a stage's labels, and LwF's distillation (`tuneforge continual` (split and the strategies))."""

    NEEDED_FOR: ClassVar[str] = "tuneforge continual (split and the strategies)"

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
        return dict(Counter(label for ex in examples for label in (getattr(ex, "labels", None) or [])))

    def restrict_examples(self, examples: Sequence, labels: Sequence[str]) -> list:  # pragma: no cover
        """``examples`` as data that annotates only ``labels`` would hold them (copies)."""
        raise NotImplementedError

    def write_examples(self, examples: Sequence, folder: Path, name: str) -> Path:  # pragma: no cover
        """Write labelled examples as a file this task reads with the run's data settings; returns its path."""
        raise NotImplementedError

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
        n_old = teacher_logits.shape[-1]
        student = self.output_rows(batch, student_logits[..., :n_old]).float() / temperature
        teacher = self.output_rows(batch, teacher_logits).float() / temperature
        if not len(student):
            return student.sum()
        kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")
        return kl * temperature ** 2


class KShotSampling:
    """``k`` training examples per label, drawn by the task (`data.k_shot`)."""

    NEEDED_FOR: ClassVar[str] = "data.k_shot"

    def sample_k_shot(self, train: Sequence, labels: list[str], k: int, seed: int) -> tuple[list, dict]:
        """``k`` training examples per label, deterministic by ``seed``: (the sample, a report of counts
        per label and labels short of ``k``). See :mod:`tuneforge.data.sampling`."""
        raise NotImplementedError


class Perturbable:
    """The words character noise may change, and examples rebuilt around changed words (`eval --perturb`, `data perturb`, `data.augment`)."""

    NEEDED_FOR: ClassVar[str] = "eval --perturb, data perturb, data.augment"

    @classmethod
    def example_words(cls, example) -> list[str]:
        """The words of an example that character noise may change (:mod:`tuneforge.data.perturb`)."""
        raise NotImplementedError

    @classmethod
    def with_words(cls, example, words: list[str]):
        """A copy of ``example`` with its :meth:`example_words` replaced by ``words`` (as many); labels kept."""
        raise NotImplementedError

    @classmethod
    def read_file(cls, path, format: str = "auto", **options) -> list:  # pragma: no cover
        """Labelled examples from a file without a run or config (``tuneforge data perturb``); the
        keyword options are the file's columns/keys, as the task's readers name them."""
        raise NotImplementedError

    @classmethod
    def write_file(cls, examples: Sequence, path, format: str = "auto", **options) -> None:
        """Write examples as :meth:`read_file` reads them (atomically)."""
        raise NotImplementedError

    def augment(self, examples: list, cfg) -> tuple[list, dict]:
        """The training examples followed by ``cfg.copies`` noisy copies of each (``data.augment``): the
        copies of example i take the perturbations in turn, starting at the i-th, at ``cfg.rate`` of their
        words each (:mod:`tuneforge.data.perturb`, the noise ``--perturb`` measures); labels kept."""
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


class Consistency:
    """How far apart two predictions of one batch are (`adversarial.method: rdrop`)."""

    NEEDED_FOR: ClassVar[str] = "adversarial.method: rdrop"

    def prediction_divergence(self, batch: dict, logits_a, logits_b):
        """How far apart two predictions of the same batch are (a scalar tensor to minimise): R-Drop's
        consistency term (:mod:`tuneforge.training.adversarial`), averaged over what the loss scores."""
        raise NotImplementedError
