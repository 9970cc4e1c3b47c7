"""The config's building blocks, below every part that brings its own section.

:class:`StrictModel` is the base of every config section (unknown keys are errors; numbers finite and
never written as true/false). The sections every task shares are here (``model``, ``data``,
``encoding``, ``training``, ``task``, ``vocab``) and so is :class:`RunConfig`, a whole run's shape; a
task subclasses the ``task``/``data``/``encoding`` sections, a method or a training regime defines its
own block beside its code (``methods/lora.py``, ``training/adversarial.py``), and :mod:`tuneforge.config`
assembles the run's config class from their registries.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .data.perturb import parse_perturbations
from .errors import TuneforgeError


def _union_members(annotation) -> list:
    """``Optional[Union[A, dict[str, float]]]`` -> ``[A, dict[str, float], NoneType]``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _union_members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(annotation) for m in _union_members(arg)]
    return [annotation]


def _bool_where_number(annotation, value) -> bool:
    """Whether ``value`` holds true/false where ``annotation`` wants a number, at any depth.

    pydantic reads ``epochs: true`` as 1 and ``learning_rate: true`` as 1.0; a bool there is
    always a slip, so it is refused instead.
    """
    members = _union_members(annotation)
    if isinstance(value, bool):
        return bool not in members and any(m in (int, float) for m in members)
    containers = [m for m in members if get_origin(m) in (list, tuple, dict)]
    if isinstance(value, dict):
        return any(_bool_where_number(get_args(m)[1], v) for m in containers if get_origin(m) is dict
                   for v in value.values())
    if isinstance(value, (list, tuple)):
        for m in containers:
            args = [a for a in get_args(m) if a is not Ellipsis]
            if get_origin(m) is not dict and args:
                return any(_bool_where_number(args[min(i, len(args) - 1)], v) for i, v in enumerate(value))
    return False


class StrictModel(BaseModel):
    """Every config section: unknown keys are errors, and numbers are checked in this one place.

    Numbers must be finite (``.inf`` and ``.nan`` are YAML floats, and a learning rate of inf
    trains to nan without complaint) and must not be written as true/false.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _no_bool_for_numbers(cls, tree: Any, handler) -> Any:
        # a model-level check: pydantic refuses field "before" validators on union discriminators
        if isinstance(tree, dict):
            for key, value in tree.items():
                field = cls.model_fields.get(key)
                if field is not None and _bool_where_number(field.annotation, value):
                    raise ValidationError.from_exception_data(cls.__name__, [{
                        "type": PydanticCustomError("bool_not_number", "true/false is not a number; write a number"),
                        "loc": (key,), "input": value,
                    }])
        return handler(tree)


class ModelConfig(StrictModel):
    name_or_path: str = Field(description="Hub name or local folder; `pkg:PACKAGE/path` for a packaged model")
    revision: Optional[str] = None
    trust_remote_code: bool = False
    init_from: Optional[str] = Field(
        default=None,
        description="a finished run folder to continue from: its trained weights, its labels first, "
        "labels this run's data adds appended (new head rows; the old rows are kept bit-identical)",
    )


class AugmentConfig(StrictModel):
    """Noisy copies of the training examples (the character noise of ``--perturb``), labels kept."""

    perturb: list[str] = Field(
        default=["typo", "drop", "swap"],
        description="perturbations to draw from (names of `tuneforge eval --perturb`); each copy of an "
                    "example gets one of them, in turn",
    )
    rate: float = Field(default=0.1, gt=0, le=1, description="share of a copy's words to change")
    copies: int = Field(default=1, ge=1, description="noisy copies of every training example")
    seed: Optional[int] = Field(default=None, description="noise seed; default: training.seed")

    @field_validator("perturb", mode="before")
    @classmethod
    def _names(cls, value):
        try:
            return parse_perturbations(value)
        except TuneforgeError as exc:
            raise ValueError(str(exc).replace("--perturb: ", "")) from None


class DataConfig(StrictModel):
    """Where the data is and how it is cut; each task adds its own keys (columns, schemes) in a subclass."""

    train: str
    dev: Optional[str] = None
    test: Optional[str] = None
    format: str = "auto"
    split: Optional[tuple[float, float, float]] = Field(
        default=None,
        description="train/dev/test ratios to cut `train` into when dev/test files are not given",
    )
    split_seed: int = 42
    max_train_examples: Optional[int] = Field(default=None, ge=1, description="use only the first N after splitting")
    k_shot: Optional[int] = Field(
        default=None, ge=1,
        description="few-shot: train on k examples per class (per entity type for NER), sampled by the task",
    )
    k_shot_seed: Optional[int] = Field(default=None, description="seed of the k-shot draw; default: training.seed")
    augment: Optional[AugmentConfig] = Field(
        default=None, description="train on the examples plus noisy copies of them (typos, dropped or swapped letters)",
    )
    labels: Optional[list[str]] = Field(
        default=None,
        description="the label space, as the task lists it (NER: IOB2 tags with O; classifiers: class names); "
                    "default: what the training data holds. Fixed when a small training set may lack some.",
    )

    # the formats the task reads; a task's subclass narrows it
    FORMATS: ClassVar[tuple[str, ...]] = ("auto",)

    @model_validator(mode="after")
    def _check_split(self) -> "DataConfig":
        if self.format not in self.FORMATS:
            raise ValueError(
                f"'data.format' {self.format} is not read by this task; use one of {', '.join(self.FORMATS)}"
            )
        if self.split is not None:
            if any(r < 0 for r in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
                raise ValueError("split ratios must be non-negative and sum to 1")
            if self.dev or self.test:
                raise ValueError("give either split or dev/test files, not both")
        return self


class EncodingConfig(StrictModel):
    """How examples become model inputs; a task may add keys in a subclass."""

    max_length: int = Field(default=128, ge=8, description="tokens per window, special tokens included")
    stride: int = Field(default=32, ge=0, description="tokens shared by consecutive windows of a long input")

    @model_validator(mode="after")
    def _check_stride(self) -> "EncodingConfig":
        if self.stride >= self.max_length - 4:
            raise ValueError("stride must be smaller than max_length minus the special tokens")
        return self


class TrainingConfig(StrictModel):
    epochs: int = Field(default=5, ge=0, description="0: no training; the model as built is saved and scored")
    min_steps: Optional[int] = Field(
        default=None, ge=1,
        description="few-shot: pass over a small training set several times per epoch to reach this many updates",
    )
    batch_size: int = Field(default=16, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    max_grad_norm: Optional[float] = Field(default=1.0, gt=0)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    seed: int = 42
    early_stopping_patience: Optional[int] = Field(default=None, ge=1, description="epochs without dev gain")
    group_by_length: bool = True
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: the measured best per hardware (bf16 autocast on GPUs with bf16 and on CPUs with "
                    "AVX512-BF16/AMX, else fp32; training.loop.AUTO_PRECISION)",
    )
    checkpoint_every_steps: Optional[int] = Field(
        default=None, ge=1, description="also checkpoint mid-epoch every N optimizer steps"
    )
    threads: Optional[int] = Field(default=None, ge=1, description="torch intra-op threads (CPU)")
    adamw_impl: Literal["foreach", "fused"] = Field(
        default="fused", description="torch AdamW kernel; fused measured 1.23x faster training on CPU, same losses"
    )
    pad_to_multiple_of: Optional[int] = Field(
        default=None, ge=1, description="round each batch's length up (fewer distinct shapes for bf16 kernels)"
    )
    progress: bool = True
    metric_for_best: Optional[str] = Field(
        default=None, description="dev metric that picks the best checkpoint; default: the task's (entity F1, macro-F1...)"
    )
    greater_is_better: Optional[bool] = Field(
        default=None, description="default: the task's for its own metric, else false for names ending in 'loss'"
    )
    report_to: list[Literal["tensorboard", "mlflow", "jsonl"]] = Field(
        default_factory=list, description="experiment trackers (accelerate's), writing under RUN/logs/"
    )
    log_every_steps: int = Field(default=10, ge=1, description="optimizer steps between train-loss log entries")


class TaskOptions(StrictModel):
    """The ``task:`` block: ``type`` picks a task from :data:`tuneforge.tasks.REGISTRY`; the task's own
    subclass of this adds its options (``decode`` for NER, ``multi_label`` for classifiers...)."""

    type: str = "token_classification"


class VocabConfig(StrictModel):
    """Vocabulary extension before the model is built (``tuneforge vocab extend`` as a config block):
    the ``add`` entries the corpus needs most join the tokenizer, the embeddings grow to match
    (:mod:`tuneforge.vocab`); the extended model is written to ``RUN/vocab`` and training starts from it."""

    add: int = Field(ge=1, description="how many characters/words to add at most")
    corpus: Optional[list[str]] = Field(
        default=None, description="raw text files or folders (.txt one document a line, .jsonl); default: data.train"
    )
    kinds: Literal["characters", "words", "both"] = Field(
        default="both", description="characters that become [UNK], words split into min_pieces or more pieces, or both"
    )
    min_count: int = Field(default=2, ge=1, description="ignore candidates seen fewer times in the corpus")
    min_pieces: int = Field(default=3, ge=2, description="a word is a candidate from this many pieces on")
    init: Literal["pieces", "mean"] = Field(
        default="pieces", description="new rows: mean of the old pieces' rows (else the mean row), or the mean row"
    )
    noise_std: float = Field(default=0.01, ge=0, description="Gaussian noise added to each new row")
    seed: int = 42




class RunConfig(StrictModel):
    """A whole run's shape. :class:`tuneforge.config.Config` fills in ``method`` and ``adversarial`` from
    the method and regime registries, and :func:`tuneforge.config.config_class` the chosen task's own
    ``task``/``data``/``encoding`` classes, so every key a task does not define is an error naming it."""

    task: TaskOptions = Field(default_factory=TaskOptions)
    model: ModelConfig
    data: DataConfig
    encoding: EncodingConfig = Field(default_factory=EncodingConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    method: Any = None  # the methods' union (tuneforge.config.Config)
    adversarial: Any = None  # the regimes' union (tuneforge.config.Config)
    vocab: Optional[VocabConfig] = Field(default=None, description="extend the vocabulary before training")
    output_dir: str = "runs/latest"

    @field_validator("output_dir")
    @classmethod
    def _output_dir_can_be_a_folder(cls, value: str) -> str:
        """Checked here, before any work: a file where the run folder (or a folder above it) must go."""
        path = Path(value)
        if not path.name or path.resolve() == Path(path.resolve().anchor):
            raise PydanticCustomError(  # "/" or ".": no sibling lock file or staging folder can go beside it
                "no_folder_name", "{value} is not a folder a run can own; set output_dir to a named folder such as "
                "runs/latest", {"value": value})
        for place in (path, *path.parents):
            if place.exists():
                if not place.is_dir():
                    raise PydanticCustomError(
                        "not_a_folder", "{place} is a file; set output_dir to a folder path", {"place": str(place)}
                    )
                break
        return value

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
