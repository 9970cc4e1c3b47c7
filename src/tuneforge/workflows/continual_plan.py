"""`tuneforge continual`'s plan: the ``continual:`` block (stages, strategies, seeds) read and checked,
and where each stage's run of each strategy goes."""


from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

import yaml
from pydantic import ConfigDict, Field, ValidationError

from ..config import (
    Config,
    config_from_dict,
    merge_trees,
    parse_overrides,
    read_config_tree,
)
from ..errors import ConfigError
from ..schema import StrictModel
from ..tasks import make_task
from ..tasks.capabilities import ContinualStages, require
from .multirun import experiment_dir

STRATEGIES = ("naive", "replay", "ewc", "lwf", "joint")
SCORES_FILE = "continual_scores.json"


class _Section(StrictModel):
    """A ``continual:`` section: strict like every config section, and its keys may be given by alias."""

    model_config = ConfigDict(populate_by_name=True)


class StageSpec(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    train: str
    dev: Optional[str] = None
    test: Optional[str] = None


class ReplayOptions(_Section):
    memory_size: int = Field(default=200, ge=1, description="examples kept from all earlier stages (reservoir)")
    per_batch: int = Field(default=4, ge=1, description="memory examples added to every batch")


class EWCOptions(_Section):
    lam: float = Field(default=3e4, ge=0, alias="lambda", description="weight of the quadratic penalty (not tuned)")
    gamma: float = Field(default=1.0, ge=0, le=1, description="online EWC: decay of earlier stages' Fisher")
    fisher_examples: int = Field(default=256, ge=1, description="training inputs the Fisher is estimated on")


class LwFOptions(_Section):
    weight: float = Field(default=1.0, ge=0)
    temperature: float = Field(default=2.0, gt=0)


class ContinualOptions(_Section):
    stages: Union[list[StageSpec], str]
    strategies: list[Literal["naive", "replay", "ewc", "lwf", "joint"]] = Field(default_factory=lambda: list(STRATEGIES))
    seeds: int = Field(default=1, ge=1)
    replay: ReplayOptions = Field(default_factory=ReplayOptions)
    ewc: EWCOptions = Field(default_factory=EWCOptions)
    lwf: LwFOptions = Field(default_factory=LwFOptions)


@dataclass
class Plan:
    """A validated continual experiment: base config tree, options, stages, output folder."""

    tree: dict
    options: ContinualOptions
    stages: list[StageSpec]
    out_dir: Path
    seeds: list[int]
    _stage_data: dict = field(default_factory=dict)

    def stage_config(self, k: int, seed: int, output_dir: Path, init_from: Path | None) -> Config:
        tree = copy.deepcopy(self.tree)
        stage = self.stages[k]
        data = dict(tree.get("data") or {})
        for key in ("split", "dev", "test"):
            data.pop(key, None)
        data.update({"train": stage.train, **{key: getattr(stage, key) for key in ("dev", "test") if getattr(stage, key)}})
        tree["data"] = data
        tree.setdefault("training", {})["seed"] = seed
        tree.setdefault("model", {})["init_from"] = str(init_from) if init_from else None
        tree["output_dir"] = str(output_dir)
        return config_from_dict(tree, source=f"continual stage {stage.name}")

    def run_dir(self, strategy: str, seed: int, k: int) -> Path:
        base = self.out_dir / f"seed{seed}"
        name = f"stage{k + 1}-{self.stages[k].name}"
        return base / name if k == 0 else base / strategy / name

    def stage_data(self, k: int):
        """(task, its data) of stage ``k`` read once: training examples marked with what they annotate."""
        if k not in self._stage_data:
            cfg = self.stage_config(k, self.seeds[0], self.out_dir / "unused", None)
            task = make_task(cfg)
            require(task, ContinualStages, "tuneforge continual")
            data = task.prepare_data()
            task.mark_annotated(data.splits["train"], data.labels)
            self._stage_data[k] = (task, data)
        return self._stage_data[k]


def load_plan(config: str | Path | dict, overrides: list[str] | None = None, strategies: Sequence[str] | None = None,
              seeds: int | None = None, out: str | Path | None = None) -> Plan:
    """Read and check a continual config (every stage's run config validated before anything trains)."""
    if isinstance(config, dict):
        tree, source, base_dir = copy.deepcopy(config), "continual config", Path.cwd()
    else:
        path = Path(config)
        tree, source, base_dir = read_config_tree(path), str(path), path.parent
    tree = merge_trees(tree, parse_overrides(overrides))
    block = tree.pop("continual", None)
    if not isinstance(block, dict):
        raise ConfigError(f"{source}: no 'continual:' block; add one with the list of stages "
                          "(`tuneforge continual split` writes a config with it)")
    try:
        options = ContinualOptions.model_validate(block)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in ("continual", *err["loc"]))
        raise ConfigError(f"{source}: bad value for '{key}': {err['msg']}") from None
    if strategies:
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown:
            raise ConfigError(f"--strategies: unknown {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
        options.strategies = list(strategies)
    if seeds is not None:
        if seeds < 1:
            raise ConfigError("--seeds: give at least 1")
        options.seeds = seeds
    stages = _read_stages(options.stages, base_dir, source)
    if len(stages) < 2:
        raise ConfigError(f"{source}: 'continual.stages' needs at least two stages")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: two stages are named {sorted(n for n in names if names.count(n) > 1)[0]!r}")
    first = config_from_dict(dict(copy.deepcopy(tree), data=dict(tree.get("data") or {}, train=stages[0].train,
                                                                  split=None, dev=None, test=None)), source)
    if first.model.init_from:
        raise ConfigError(f"{source}: model.init_from is set by `tuneforge continual` for each stage; remove it")
    out_dir = experiment_dir(out, first.output_dir, "continual")
    seed0 = first.training.seed
    plan = Plan(tree, options, stages, out_dir, [seed0 + i for i in range(options.seeds)])
    for k in range(len(stages)):  # every stage's config must validate before anything trains
        plan.stage_config(k, seed0, out_dir / "check", out_dir if k else None)
    return plan


def _read_stages(stages, base_dir: Path, source: str) -> list[StageSpec]:
    if isinstance(stages, list):
        return stages
    path = Path(stages) if Path(stages).is_absolute() else base_dir / stages
    if not path.exists():
        raise ConfigError(f"{source}: continual.stages: {path} not found")
    listed = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    try:
        parsed = [StageSpec.model_validate(item) for item in listed]
    except (ValidationError, TypeError) as exc:
        raise ConfigError(f"{path}: expected a list of stages with name, train, dev, test ({exc})") from None
    for stage in parsed:  # paths in a stages file are relative to it
        for key in ("train", "dev", "test"):
            value = getattr(stage, key)
            if value and not value.startswith("pkg:") and not Path(value).is_absolute():
                setattr(stage, key, str(path.parent / value))
    return parsed
