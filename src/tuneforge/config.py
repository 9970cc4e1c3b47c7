"""The typed run config: YAML in, validated, saved with the run so any result can be reproduced.

Unknown keys are errors (``extra="forbid"``) and every error names the dotted key at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from .errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    name_or_path: str = Field(description="Hub name or local folder; `pkg:PACKAGE/path` for a packaged model")
    revision: Optional[str] = None
    trust_remote_code: bool = False


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
        default="auto", description="auto: bf16 autocast on GPUs that support it, fp32 on CPU"
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


class Config(_Strict):
    """A whole run. ``task``, ``data`` and ``encoding`` are the chosen task's own classes (see
    :func:`config_class`), so every key a task does not define is an error naming it."""

    task: TaskOptions = Field(default_factory=TaskOptions)
    model: ModelConfig
    data: DataConfig
    encoding: EncodingConfig = Field(default_factory=EncodingConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    method: MethodConfig = Field(default_factory=FullMethodConfig)
    output_dir: str = "runs/latest"

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


def _format_validation_error(exc: ValidationError, source: str, task_type: str) -> str:
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        if loc[:1] == ["method"] and len(loc) > 1 and loc[1] in METHOD_NAMES:
            del loc[1]  # pydantic names the union member; the user wrote method.KEY
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            problems.append(f"bad value for '{key}.name': choose one of {', '.join(METHOD_NAMES)}")
        elif err["type"] == "extra_forbidden":
            owner = _key_of_other_task(str(loc[0]), str(loc[1])) if len(loc) == 2 and loc[0] in (
                "task", "data", "encoding") else None
            if owner:
                problems.append(f"'{key}' does not apply to task.type {task_type}; remove it")
            else:
                problems.append(f"unknown key '{key}'; remove it or check its spelling")
        elif err["type"] == "missing":
            problems.append(f"missing required key '{key}'")
        elif err["type"] == "value_error" and err["msg"].startswith("Value error, '"):
            problems.append(err["msg"].removeprefix("Value error, "))  # a cross-key check naming its key
        else:
            problems.append(f"bad value for '{key}': {err['msg']}")
    return f"{source}: " + "; ".join(problems)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: list[str] | None) -> dict:
    """``["training.epochs=3", "model.name_or_path=bert-base-cased"]`` -> nested dict (values parsed as YAML)."""
    tree: dict = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. training.epochs=3")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw != "" else "")
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
    task_type = _task_type(tree)
    if task_type not in REGISTRY:
        raise ConfigError(f"{source}: bad value for 'task.type': {task_type!r}; choose one of {', '.join(REGISTRY)}")
    try:
        return config_class(task_type).model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, task_type)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model:, data:, training: ...)")
    return config_from_dict(tree, source=str(path), overrides=overrides)


def method_config_from_dict(tree: dict, source: str = "method"):
    """A validated method block (as saved in a model folder's tuneforge.json)."""
    try:
        return TypeAdapter(MethodConfig).validate_python(tree)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {exc.errors()[0]['msg']}") from None
