"""The run config: assembled from the registries, YAML in, validated, saved with the run so any
result can be reproduced.

The shared sections and the base class are in :mod:`tuneforge.schema`; each method's block is its
module's ``Config`` (:data:`tuneforge.methods.REGISTRY`), each training regime's block its own
(:data:`tuneforge.training.regimes.SECTIONS`), each task's ``task``/``data``/``encoding`` sections its
classes (:data:`tuneforge.tasks.REGISTRY`). Unknown keys are errors (``extra="forbid"``) and every error
names the dotted key at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional, Union

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator

from .errors import ConfigError
from .methods import REGISTRY as METHODS
from .methods import method_training_defaults
from .schema import RunConfig, TaskOptions
from .tasks import REGISTRY, get_task
from .training.regimes import SECTIONS as REGIME_SECTIONS



def method_union():
    """The method block: one shape per registered method (built-in or :func:`~tuneforge.methods.register_method`),
    chosen by ``method.name``. Defaults for each method's learning rate and epochs live with the method
    (``DEFAULT_TRAINING``) and fill ``training.*`` keys the config does not set (``Config._apply_method_defaults``)."""
    return Annotated[Union[tuple(method.Config for method in METHODS.values())], Field(discriminator="name")]


MethodConfig = method_union()  # the built-in methods' union; config_class() rebuilds it as methods register
_ADVERSARIAL_TAG, _ADVERSARIAL_CONFIGS = REGIME_SECTIONS["adversarial"]
AdversarialConfig = Annotated[Union[_ADVERSARIAL_CONFIGS], Field(discriminator=_ADVERSARIAL_TAG)]
ADVERSARIAL_METHODS = tuple(c.model_fields[_ADVERSARIAL_TAG].annotation.__args__[0] for c in _ADVERSARIAL_CONFIGS)
# each discriminated section and its tag key, for error messages that name what the user wrote
_UNION_SECTIONS = {"method": ("name", METHODS), "adversarial": (_ADVERSARIAL_TAG, ADVERSARIAL_METHODS)}


_BUILT_IN_METHODS = tuple(METHODS)


class Config(RunConfig):
    """A whole run. ``task``, ``data`` and ``encoding`` are the chosen task's own classes (see
    :func:`config_class`), so every key a task does not define is an error naming it."""

    method: MethodConfig = Field(default_factory=METHODS["full"].Config)
    adversarial: Optional[AdversarialConfig] = Field(
        default=None, description="adversarial / consistency training (fgm, pgd, rdrop); none by default"
    )

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
        defaults = {**_task_training_defaults(tree), **method_training_defaults(name)}
        if not defaults:
            return tree
        training = tree.get("training") or {}
        if isinstance(training, BaseModel):
            return tree  # an already validated section: its values are settled
        if not isinstance(training, dict):
            return tree
        return dict(tree, training={**defaults, **training})


def _task_training_defaults(tree: dict) -> dict:
    """A task's own ``training`` defaults (a zero-shot task: ``epochs: 0``); empty for an unknown type."""
    task = REGISTRY.get(_task_type(tree))
    return dict(getattr(task, "DEFAULT_TRAINING", {}) or {})


_CONFIG_CLASSES: dict[tuple, type[Config]] = {}


def config_class(task_type: str) -> type[Config]:
    """The Config subclass whose ``task``/``data``/``encoding`` sections are ``task_type``'s own classes
    and whose ``method`` block takes every method registered now."""
    task = get_task(task_type)
    key = (task, tuple(METHODS))
    if key not in _CONFIG_CLASSES:
        sections = {"task": task.Options, "model": task.Model, "data": task.Data, "encoding": task.Encoding}
        if key[1] != tuple(_BUILT_IN_METHODS):
            sections["method"] = method_union()
        namespace = {"__annotations__": dict(sections), "__module__": __name__}
        namespace["task"] = Field(default_factory=task.Options)
        namespace["encoding"] = Field(default_factory=task.Encoding)
        if "method" in sections:
            namespace["method"] = Field(default_factory=METHODS["full"].Config)
        _CONFIG_CLASSES[key] = type(f"{task.__name__}Config", (Config,), namespace)
    return _CONFIG_CLASSES[key]


def _task_type(tree: dict) -> str:
    section = tree.get("task")
    if isinstance(section, BaseModel):
        return section.type
    if isinstance(section, dict) and section.get("type") is not None:
        return section["type"]
    return TaskOptions.model_fields["type"].default


def _key_of_other_task(section: str, key: str) -> str | None:
    """The task type that defines ``section.key`` when the chosen one does not (for a precise error)."""
    for name, task in REGISTRY.items():
        if key in {"task": task.Options, "model": task.Model, "data": task.Data,
                   "encoding": task.Encoding}[section].model_fields:
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
        owner = _key_of_other_task(loc[0], loc[1]) if len(loc) == 2 and loc[0] in ("task", "model", "data", "encoding") else None
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


def merge_trees(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_trees(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(tree: dict, source: str = "config", overrides: list[str] | None = None) -> Config:
    """Validate a config tree (plus ``--set`` overrides) against its task's config class."""
    tree = merge_trees(tree, parse_overrides(overrides))
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
        return TypeAdapter(method_union()).validate_python(tree)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {exc.errors()[0]['msg']}") from None
