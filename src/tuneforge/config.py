"""The typed run config: YAML in, validated, saved with the run so any result can be reproduced.

Unknown keys are errors (``extra="forbid"``) and every error names the dotted key at fault.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .errors import ConfigError, TuneforgeError


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


class _Strict(BaseModel):
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


class ModelConfig(_Strict):
    name_or_path: str = Field(description="Hub name or local folder; `pkg:PACKAGE/path` for a packaged model")
    revision: Optional[str] = None
    trust_remote_code: bool = False
    init_from: Optional[str] = Field(
        default=None,
        description="a finished run folder to continue from: its trained weights, its labels first, "
        "labels this run's data adds appended (new head rows; the old rows are kept bit-identical)",
    )


class AugmentConfig(_Strict):
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
        from .data.perturb import parse_perturbations

        try:
            return parse_perturbations(value)
        except TuneforgeError as exc:
            raise ValueError(str(exc).replace("--perturb: ", "")) from None


class DataConfig(_Strict):
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


class EncodingConfig(_Strict):
    """How examples become model inputs; a task may add keys in a subclass."""

    max_length: int = Field(default=128, ge=8, description="tokens per window, special tokens included")
    stride: int = Field(default=32, ge=0, description="tokens shared by consecutive windows of a long input")

    @model_validator(mode="after")
    def _check_stride(self) -> "EncodingConfig":
        if self.stride >= self.max_length - 4:
            raise ValueError("stride must be smaller than max_length minus the special tokens")
        return self


class TrainingConfig(_Strict):
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


class TaskOptions(_Strict):
    """The ``task:`` block: ``type`` picks a task from :data:`tuneforge.tasks.REGISTRY`; the task's own
    subclass of this adds its options (``decode`` for NER, ``multi_label`` for classifiers...)."""

    type: str = "token_classification"


# ---------------------------------------------------------------------------------------------
# Adaptation methods: one block per method, chosen by ``method.name``. Defaults for each method's
# learning rate and epochs live with the method (``tuneforge.methods.<name>.DEFAULT_TRAINING``)
# and fill ``training.*`` keys the config does not set; see ``Config._apply_method_defaults``.


class FullMethodConfig(_Strict):
    """Every parameter trains."""

    name: Literal["full"] = "full"


class FreezeMethodConfig(_Strict):
    """The head trains, plus the top ``train_top_layers`` transformer layers."""

    name: Literal["freeze"]
    train_top_layers: int = Field(default=0, ge=0, description="0 = head only")


class LoraMethodConfig(_Strict):
    """Low-rank updates (peft) on ``target_modules``; defaults per architecture cover attention and FFN."""

    name: Literal["lora"]
    r: int = Field(default=16, ge=1)
    alpha: float = Field(default=32, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    target_modules: Optional[list[str]] = Field(
        default=None, description="module name suffixes; default: every attention and FFN linear layer"
    )
    use_dora: bool = False
    use_rslora: bool = False
    train_new_tokens: bool = Field(
        default=True, description="train the embedding rows a vocabulary extension added (peft trainable tokens)"
    )


class IA3MethodConfig(_Strict):
    """Learned rescaling vectors (peft IA3) on keys, values and the FFN."""

    name: Literal["ia3"]
    target_modules: Optional[list[str]] = Field(default=None, description="default: peft's per-architecture list")
    feedforward_modules: Optional[list[str]] = None


class PromptMethodConfig(_Strict):
    """Trainable virtual tokens prepended to the input (peft prompt tuning or P-tuning)."""

    name: Literal["prompt"]
    kind: Literal["prompt_tuning", "p_tuning", "prefix"] = "prompt_tuning"
    num_virtual_tokens: int = Field(default=20, ge=1)
    encoder_hidden_size: Optional[int] = Field(default=None, ge=1, description="p_tuning's prompt encoder width")


class AdapterMethodConfig(_Strict):
    """Bottleneck adapters: houlsby (after attention and FFN) or pfeiffer (after FFN only)."""

    name: Literal["adapter"]
    style: Literal["houlsby", "pfeiffer"] = "pfeiffer"
    reduction_factor: int = Field(default=16, ge=1, description="hidden size / bottleneck size")
    activation: Literal["relu", "gelu"] = "relu"


class BitFitMethodConfig(_Strict):
    """Bias terms (and the head) only."""

    name: Literal["bitfit"]


MethodConfig = Annotated[
    Union[
        FullMethodConfig, FreezeMethodConfig, LoraMethodConfig, IA3MethodConfig, PromptMethodConfig,
        AdapterMethodConfig, BitFitMethodConfig,
    ],
    Field(discriminator="name"),
]
METHOD_NAMES = ("full", "freeze", "lora", "ia3", "prompt", "adapter", "bitfit")


# ---------------------------------------------------------------------------------------------
# Adversarial training: the ``adversarial:`` block, one shape per method (``method`` picks it).
# The callbacks live in ``tuneforge.training.adversarial``; perturbations are added to the word-
# embedding output, per example, with L2 norms (so epsilon is in units of embedding-vector length).


class FGMConfig(_Strict):
    """Fast gradient method: one step of length ``epsilon`` along the loss gradient (L2-normalised per example)."""

    method: Literal["fgm"]
    # 0.1: the measured best of 0.1 / 0.3 / 1.0 (WNUT-16, 3 seeds; README "Measured: plain, FGM, PGD
    # and R-Drop"): at 1.0 MiniLM learns no entity at all, at 0.3 it learns less than plain
    epsilon: float = Field(default=0.1, gt=0, description="L2 length of each example's perturbation")
    weight: float = Field(default=1.0, gt=0, description="alpha in L = L_task + alpha * L_adv")


class PGDConfig(_Strict):
    """Projected gradient descent: ``steps`` ascent steps of length ``alpha``, projected into the ``epsilon`` ball."""

    method: Literal["pgd"]
    # FGM's measured radius; the step keeps the ratio alpha = 0.3 x epsilon of the first defaults
    epsilon: float = Field(default=0.1, gt=0, description="radius of each example's L2 ball")
    alpha: float = Field(default=0.03, gt=0, description="length of one ascent step")
    steps: int = Field(default=3, ge=1, description="ascent steps (forward passes) per batch")
    weight: float = Field(default=1.0, gt=0, description="alpha in L = L_task + alpha * L_adv")


class RDropConfig(_Strict):
    """R-Drop: a second forward pass (another dropout mask); the two predictions are pulled together by a KL term."""

    method: Literal["rdrop"]
    weight: float = Field(default=1.0, gt=0, description="weight of the symmetric KL between the two passes")


AdversarialConfig = Annotated[Union[FGMConfig, PGDConfig, RDropConfig], Field(discriminator="method")]
ADVERSARIAL_METHODS = ("fgm", "pgd", "rdrop")
# each discriminated section and its tag key, for error messages that name what the user wrote
_UNION_SECTIONS = {"method": ("name", METHOD_NAMES), "adversarial": ("method", ADVERSARIAL_METHODS)}


class VocabConfig(_Strict):
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


class Config(_Strict):
    """A whole run. ``task``, ``data`` and ``encoding`` are the chosen task's own classes (see
    :func:`config_class`), so every key a task does not define is an error naming it."""

    task: TaskOptions = Field(default_factory=TaskOptions)
    model: ModelConfig
    data: DataConfig
    encoding: EncodingConfig = Field(default_factory=EncodingConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    method: MethodConfig = Field(default_factory=FullMethodConfig)
    adversarial: Optional[AdversarialConfig] = Field(
        default=None, description="adversarial / consistency training (fgm, pgd, rdrop); none by default"
    )
    vocab: Optional[VocabConfig] = Field(default=None, description="extend the vocabulary before training")
    output_dir: str = "runs/latest"

    @field_validator("output_dir")
    @classmethod
    def _output_dir_can_be_a_folder(cls, value: str) -> str:
        """Checked here, before any work: a file where the run folder (or a folder above it) must go."""
        path = Path(value)
        for place in (path, *path.parents):
            if place.exists():
                if not place.is_dir():
                    raise PydanticCustomError(
                        "not_a_folder", "{place} is a file; set output_dir to a folder path", {"place": str(place)}
                    )
                break
        return value

    @model_validator(mode="before")
    @classmethod
    def _apply_method_defaults(cls, tree: Any) -> Any:
        """Fill ``training`` keys the config leaves unset with the method's measured defaults.

        PEFT methods want a higher learning rate and more epochs than full fine-tuning; a value the
        config sets explicitly always wins. The saved ``config.yaml`` holds the resolved values.
        """
        if not isinstance(tree, dict):
            return tree
        method = tree.get("method") or {}
        if isinstance(method, dict) and "name" not in method:
            tree = dict(tree, method={"name": "full", **method})  # no name: full fine-tuning, as before
        name = method.get("name", "full") if isinstance(method, dict) else getattr(method, "name", "full")
        if not isinstance(name, str):
            return tree  # not a method name at all: validation reports 'method.name'
        from .methods import method_training_defaults

        defaults = {**_task_training_defaults(tree), **method_training_defaults(name)}
        if not defaults:
            return tree
        training = tree.get("training") or {}
        if isinstance(training, BaseModel):
            return tree  # an already validated section: its values are settled
        if not isinstance(training, dict):
            return tree
        return dict(tree, training={**defaults, **training})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _task_training_defaults(tree: dict) -> dict:
    """A task's own ``training`` defaults (a zero-shot task: ``epochs: 0``); empty for an unknown type."""
    from .tasks import REGISTRY

    task = REGISTRY.get(_task_type(tree))
    return dict(getattr(task, "DEFAULT_TRAINING", {}) or {})


_CONFIG_CLASSES: dict[type, type[Config]] = {}


def config_class(task_type: str) -> type[Config]:
    """The Config subclass whose ``task``/``data``/``encoding`` sections are ``task_type``'s own classes."""
    from .tasks import get_task

    task = get_task(task_type)
    if task not in _CONFIG_CLASSES:
        sections = {"task": task.Options, "data": task.Data, "encoding": task.Encoding}
        namespace = {"__annotations__": dict(sections), "__module__": __name__}
        namespace["task"] = Field(default_factory=task.Options)
        namespace["encoding"] = Field(default_factory=task.Encoding)
        _CONFIG_CLASSES[task] = type(f"{task.__name__}Config", (Config,), namespace)
    return _CONFIG_CLASSES[task]


def _task_type(tree: dict) -> str:
    section = tree.get("task")
    if isinstance(section, BaseModel):
        return section.type
    if isinstance(section, dict) and section.get("type") is not None:
        return section["type"]
    return TaskOptions.model_fields["type"].default


def _key_of_other_task(section: str, key: str) -> str | None:
    """The task type that defines ``section.key`` when the chosen one does not (for a precise error)."""
    from .tasks import REGISTRY

    for name, task in REGISTRY.items():
        if key in {"task": task.Options, "data": task.Data, "encoding": task.Encoding}[section].model_fields:
            return name
    return None


def _error_key(err: dict) -> str:
    loc = list(err["loc"])
    union = _UNION_SECTIONS.get(str(loc[0])) if loc else None
    if union and len(loc) > 1 and loc[1] in union[1]:
        del loc[1]  # pydantic names the union member; the user wrote method.KEY / adversarial.KEY
    # other unions name their member by type ("literal['balanced']", "dict[str,float]"): not a key
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and "[" in p))


def _describe_error(err: dict, key: str, task_type: str) -> str:
    shown = _printable(key) or "(top level)"
    union = _UNION_SECTIONS.get(key.split(".")[0])
    if err["type"] in ("union_tag_invalid", "union_tag_not_found") and union:
        return f"bad value for '{shown}.{union[0]}': choose one of {', '.join(union[1])}"
    if err["type"] == "extra_forbidden":
        loc = key.split(".")
        owner = _key_of_other_task(loc[0], loc[1]) if len(loc) == 2 and loc[0] in ("task", "data", "encoding") else None
        if owner:
            return f"'{shown}' does not apply to task.type {task_type}; remove it"
        return f"unknown key '{shown}'; remove it or check its spelling"
    if err["type"] == "missing":
        return f"missing required key '{shown}'"
    if err["type"] == "value_error" and err["msg"].startswith("Value error, '"):
        return err["msg"].removeprefix("Value error, ")  # a cross-key check naming its key
    return f"bad value for '{shown}': {err['msg']}"


def _format_validation_error(
    exc: ValidationError, source: str, task_type: str, overrides: dict[str, str] | None = None
) -> str:
    """One line: each problem under where its value came from, the file or the ``--set`` that set it."""
    by_origin: dict[str, list[str]] = {}
    errors = [(_error_key(err), err) for err in exc.errors()]
    keys = [key for key, _ in errors]
    for key, err in errors:
        if any(other.startswith(key + ".") for other in keys if key):
            continue  # a union member that fails deeper says more than the one that fails here
        problem = _describe_error(err, key, task_type)
        if problem.startswith("'"):
            key = problem[1:].split("'", 1)[0]  # a cross-key check: the key it names
        by_origin.setdefault(_origin(key, source, overrides), []).append(problem)
    return "; ".join(f"{origin}: " + "; ".join(problems) for origin, problems in by_origin.items())


def _origin(key: str, source: str, overrides: dict[str, str] | None) -> str:
    """Where the value of ``key`` came from: the ``--set`` that set it (or its section), else ``source``."""
    origin = source
    for set_key, pair in (overrides or {}).items():
        if key and (key == set_key or key.startswith(set_key + ".") or set_key.startswith(key + ".")):
            origin = _shown_set(pair)
    return origin


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error.

    Plain YAML keeps the last of two ``training:`` sections, silently dropping the first.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` merges on purpose
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:
                    continue  # an unhashable key: the base constructor reports it
                if first is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"key {key!r} appears twice (first on line {first.line + 1}); keep one",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep)


def _load_yaml(text: str, where: str) -> Any:
    """YAML text -> Python; a syntax error or a duplicate key names ``where`` and the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = f"{where}:{mark.line + 1}" if mark is not None and not where.startswith("--set") else where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        hint = "; quote the value, e.g. KEY='...'" if where.startswith("--set") else ""
        raise ConfigError(f"{place}: not valid YAML ({problem}){hint}") from None


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{_shown_set(dotted)}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _printable(text: str) -> str:
    """``text`` with line breaks and other control characters escaped: an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _shown_set(pair: str) -> str:
    """``--set KEY=VALUE`` as the user typed it (control characters escaped)."""
    return f"--set {_printable(pair)}"


def _split_override(pair: str) -> tuple[str, str]:
    key, sep, raw = pair.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. training.epochs=3")
    return key.strip(), raw


def parse_overrides(pairs: list[str] | None) -> dict:
    """``["training.epochs=3", "model.name_or_path=bert-base-cased"]`` -> nested dict (values parsed as YAML)."""
    tree: dict = {}
    for pair in pairs or []:
        key, raw = _split_override(pair)
        _set_dotted(tree, key, _load_yaml(raw, _shown_set(pair)) if raw != "" else "")
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(tree: dict, source: str = "config", overrides: list[str] | None = None) -> Config:
    """Validate a config tree (plus ``--set`` overrides) against its task's config class."""
    from .tasks import REGISTRY

    tree = _merge(tree, parse_overrides(overrides))
    origins = {_split_override(pair)[0]: pair for pair in overrides or []}
    task_type = _task_type(tree)
    if not isinstance(task_type, str) or task_type not in REGISTRY:
        raise ConfigError(
            f"{_origin('task.type', source, origins)}: bad value for 'task.type': {task_type!r}; "
            f"choose one of {', '.join(REGISTRY)}"
        )
    try:
        return config_class(task_type).model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, task_type, origins)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    return config_from_dict(read_config_tree(path), source=str(path), overrides=overrides)


def read_config_tree(path: str | Path) -> dict:
    """A config file's YAML mapping, unvalidated (one-line errors for a missing file or bad YAML)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give the config's YAML file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror}); check the file's permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: invalid UTF-8 (byte 0x{data[exc.start]:02x}); re-save the config as UTF-8") from None
    tree = _load_yaml(text, str(path)) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model:, data:, training: ...)")
    return tree


def method_config_from_dict(tree: dict, source: str = "method"):
    """A validated method block (as saved in a model folder's tuneforge.json)."""
    try:
        return TypeAdapter(MethodConfig).validate_python(tree)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {exc.errors()[0]['msg']}") from None
