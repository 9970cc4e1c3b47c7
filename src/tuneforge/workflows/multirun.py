"""What the commands that train many ordinary runs share (``compare``, ``curve``).

A **member** is one run folder trained by :func:`tuneforge.api.train` from its own validated config.
Finished members are read back, interrupted ones resume from their checkpoint, so re-running an
interrupted command continues where it stopped. By default each member trains in its own process
(peak memory is a per-process high-water mark; members sharing one process would report the largest
earlier member's peak). Summaries are mean and sample standard deviation over seeds.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from .. import api
from ..artifacts.paths import atomic_write_text
from ..config import Config, load_config
from ..errors import ConfigError, TuneforgeError
from ..methods import REGISTRY as METHODS
from ..methods import method_training_defaults
from ..tasks import get_task
from ..training.checkpoint import CHECKPOINT_DIR

PLAIN = "none"  # the adversarial axis' plain-training setting


def member_label(method: str, adversarial: str | None) -> str:
    """``lora``, or ``lora+fgm`` on compare's adversarial axis."""
    return method if adversarial in (None, PLAIN) else f"{method}+{adversarial}"


@dataclass
class Member:
    method: str  # an adaptation method (compare) or an approach (curve)
    seed: int
    config: Config
    k: int | None = None  # k-shot size (curve); None: the whole training set
    adversarial: str | None = None  # compare's adversarial axis: none (plain), fgm, pgd, rdrop; None: no such axis

    @property
    def label(self) -> str:
        """The row a member belongs to: ``lora``, or ``lora+fgm`` on the adversarial axis."""
        return member_label(self.method, self.adversarial)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def finished(self) -> bool:
        return run_finished(self.run_dir)


def experiment_dir(out: str | Path | None, default: str | Path, what: str) -> Path:
    """The folder of a multi-run experiment (``--out``, else the config's ``output_dir``); never a
    single run's folder, whose files the members would be mixed into. ``what`` names the command."""
    out_dir = Path(out or default)
    if (out_dir / "config.yaml").exists():
        raise ConfigError(f"{out_dir}: this is a single run's folder; give {what} its own folder with --out")
    return out_dir


def base_tree(config: Config | dict | str | Path) -> dict:
    """The config as a plain tree (a file is validated first, for one-line errors before anything runs)."""
    if isinstance(config, Config):
        return config.model_dump(mode="json")
    if isinstance(config, dict):
        return copy.deepcopy(config)
    load_config(config)
    return yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}


def set_method(tree: dict, name: str, same_budget: bool = False) -> dict:
    """``tree`` with adaptation method ``name``: the config's own block when it names that method,
    and (unless ``same_budget``) the method's default learning rate / epochs instead of the config's."""
    block = tree.get("method") or {}
    tree["method"] = block if block.get("name", "full") == name else {"name": name}
    training = dict(tree.get("training") or {})
    if not same_budget:
        for key in method_training_defaults(name):
            training.pop(key, None)
    tree["training"] = training
    return tree


def apply_changes(tree: dict, changes: dict) -> dict:
    """Set dotted keys in ``tree`` (``{"task.type": "setfit"}``); a None value removes the key, so
    the defaults of the task (or method) in force apply."""
    for dotted, value in changes.items():
        node = tree
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return tree


def approach_tree(tree: dict, name: str, task_type: str, same_budget: bool = False) -> dict:
    """The config tree of approach ``name``: an adaptation method, or the task's named approach."""
    approaches = get_task(task_type).APPROACHES
    if name in METHODS:
        return set_method(tree, name, same_budget)
    if name in approaches:
        return apply_changes(tree, dict(approaches[name]))
    raise ConfigError(f"--methods: unknown {name!r}; choose adaptation methods ({', '.join(METHODS)}) "
                      f"or this task's approaches ({', '.join(approaches) or 'none'})")


def run_finished(run_dir: Path) -> bool:
    """A run folder whose training completed (metrics written, checkpoint removed)."""
    run_dir = Path(run_dir)
    return (run_dir / "metrics.json").exists() and not (run_dir / CHECKPOINT_DIR).exists()


def train_member(member: Member, isolate: bool) -> None:
    train_config(member.config, isolate)


def train_config(config: Config, isolate: bool) -> None:
    """Train one run of a multi-run experiment (compare, curve, active-learning simulation, label-noise
    folds) into its ``output_dir``, resuming it if an earlier attempt was interrupted.

    ``isolate``: in its own process (so its peak memory is its own); its config and printed output go
    beside the run folder (``members/``); progress bars and errors (stderr) still reach the terminal.
    """
    run_dir = Path(config.output_dir)
    resume = run_dir.exists() and any(run_dir.iterdir())
    if not isolate:
        api.train(config, resume=resume)
        return
    config_file = run_dir.parent / "members" / f"{run_dir.name}.yaml"
    atomic_write_text(config_file, config.to_yaml())
    command = [sys.executable, "-m", "tuneforge", "train", str(config_file)] + (["--resume"] if resume else [])
    with open(config_file.with_suffix(".log"), "a", encoding="utf-8") as log:
        code = subprocess.run(command, stdout=log, env=dict(os.environ, PYTHONUNBUFFERED="1")).returncode
    if code == 130 or code < 0:
        raise KeyboardInterrupt
    if code != 0:
        raise TuneforgeError(f"{run_dir}: member run failed (exit {code}); its error is printed above")


def train_members(members: Sequence[Member], isolate: bool, command: str) -> None:
    """Train every member not finished yet, in order, saying what each one is doing."""
    for i, member in enumerate(members, 1):
        state = "done" if member.finished else ("resuming" if member.run_dir.exists() else "training")
        what = member.label + (f" k {member.k}" if member.k is not None else "")
        print(f"{command} [{i}/{len(members)}] {what} seed {member.seed}: {state} ({member.run_dir})", flush=True)
        if not member.finished:
            train_member(member, isolate)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def data_description(cfg: Config, unit: str = "examples") -> str:
    """The training data a table's members shared: the file, its split and seed, any cap on examples."""
    d = cfg.data
    return (f"`{d.train}`" + (f" (split {list(d.split)}, seed {d.split_seed})" if d.split else "")
            + (f", first {d.max_train_examples} training {unit}" if d.max_train_examples else ""))


def pm(mean, std, digits: int) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def rows_to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in columns})
    return buffer.getvalue()
