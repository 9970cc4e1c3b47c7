"""``tuneforge compare``: every adaptation method on the same data and split, side by side.

Each member (method x seed) is a normal run folder ``OUT/<method>-seed<seed>/`` trained by
:func:`tuneforge.api.train`; OUT is ``out`` or else the config's ``output_dir``. Members that finished are read
back, interrupted ones resume from their checkpoint, so re-running an interrupted compare
continues where it stopped. Results, per method as mean ± std over seeds, go to ``compare.csv``,
``compare.md`` and ``compare.png`` (test F1 against trainable-parameter share).

Budgets: a method's measured defaults (``DEFAULT_TRAINING``: learning rate, epochs) replace the
config's ``training`` values for that method, because PEFT methods want a higher learning rate and
more epochs than full fine-tuning; ``same_budget=True`` gives every method the config's values.
``--set`` overrides apply to every member and win over method defaults.

By default each member trains in its own process: peak memory is a per-process high-water mark,
so members sharing one process would report the largest earlier member's peak.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from .config import Config, config_from_dict, load_config
from .errors import ConfigError, TuneforgeError
from .methods import REGISTRY, method_training_defaults
from .paths import atomic_write_bytes, atomic_write_text
from .training.checkpoint import CHECKPOINT_DIR

COMPARE_FILES = ("compare.md", "compare.csv", "compare.png")
CSV_COLUMNS = [
    "method", "seeds", "learning_rate", "epochs", "trainable_params", "total_params", "trainable_pct",
    "dev_f1_mean", "dev_f1_std", "test_f1_mean", "test_f1_std", "train_seconds_mean", "train_seconds_std",
    "tokens_per_second_mean", "tokens_per_second_std", "peak_rss_mb_mean", "peak_rss_mb_std", "weights_mb",
]


@dataclass
class Member:
    method: str
    seed: int
    config: Config

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def finished(self) -> bool:
        return run_finished(self.run_dir)


def run_finished(run_dir: Path) -> bool:
    """A run folder whose training completed (metrics written, checkpoint removed)."""
    return (run_dir / "metrics.json").exists() and not (run_dir / CHECKPOINT_DIR).exists()


@dataclass
class CompareResult:
    out_dir: Path
    rows: list[dict]

    @property
    def files(self) -> dict[str, Path]:
        return {name: self.out_dir / name for name in COMPARE_FILES}


def _base_tree(config: Config | dict | str | Path) -> dict:
    if isinstance(config, Config):
        return config.model_dump(mode="json")
    if isinstance(config, dict):
        return copy.deepcopy(config)
    load_config(config)  # one-line errors for a bad file before anything runs
    return yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}


def plan_members(
    config: Config | dict | str | Path, methods: Sequence[str], seeds: int = 1,
    overrides: list[str] | None = None, same_budget: bool = False, out: str | Path | None = None,
) -> tuple[Path, list[Member]]:
    """The compare folder and its members, every member config validated before anything trains."""
    unknown = [m for m in methods if m not in REGISTRY]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(REGISTRY)}")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods: {', '.join(methods)} names a method twice")
    if seeds < 1:
        raise ConfigError("--seeds: give at least 1")
    tree = _base_tree(config)
    base = config_from_dict(tree, overrides=overrides)
    out_dir = Path(out or base.output_dir)
    if (out_dir / "config.yaml").exists():
        raise ConfigError(f"{out_dir}: this is a single run's folder; give compare its own folder with --out")
    members = []
    for i in range(seeds):
        seed = base.training.seed + i
        for name in methods:
            member = copy.deepcopy(tree)
            block = member.get("method") or {}
            member["method"] = block if block.get("name", "full") == name else {"name": name}
            training = dict(member.get("training") or {})
            if not same_budget:
                for key in method_training_defaults(name):
                    training.pop(key, None)
            member["training"] = training
            extra = [f"training.seed={seed}", f"output_dir={out_dir / f'{name}-seed{seed}'}"]
            members.append(Member(name, seed, config_from_dict(member, source=f"compare member {name}",
                                                                overrides=list(overrides or []) + extra)))
    return out_dir, members


def train_member(config: Config, isolate: bool) -> None:
    """Train one run of a multi-run experiment (compare, active-learning simulation) into its
    ``output_dir``, resuming it if an earlier attempt was interrupted.

    ``isolate``: in its own process (so its peak memory is its own); its config and printed output
    go beside the run folder (``members/``); progress bars and errors (stderr) still reach the terminal.
    """
    run_dir = Path(config.output_dir)
    resume = run_dir.exists() and any(run_dir.iterdir())
    if not isolate:
        from . import api

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


def compare(
    config: Config | dict | str | Path, methods: Sequence[str], seeds: int = 1, overrides: list[str] | None = None,
    same_budget: bool = False, isolate: bool = True, out: str | Path | None = None,
) -> CompareResult:
    """Train every method x seed (skipping finished members) and write the comparison files.

    ``out`` (default: the config's ``output_dir``) holds the member runs and the three files.
    """
    out_dir, members = plan_members(config, methods, seeds, overrides, same_budget, out)
    for k, member in enumerate(members, 1):
        state = "done" if member.finished else ("resuming" if member.run_dir.exists() else "training")
        print(f"compare [{k}/{len(members)}] {member.method} seed {member.seed}: {state} ({member.run_dir})",
              flush=True)
        if not member.finished:
            train_member(member.config, isolate)
    rows = summarise(members, isolated=isolate)
    write_outputs(out_dir, rows, members)
    return CompareResult(out_dir=out_dir, rows=rows)


# ---------------------------------------------------------------------------------------------
# Summary


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that are not None (0 for one value)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(members: Sequence[Member], isolated: bool = True) -> list[dict]:
    """One row per method, in the order given: mean and sample std over its seeds."""
    from .artifacts import weights_size_bytes

    rows = []
    for name in dict.fromkeys(m.method for m in members):
        runs = [m for m in members if m.method == name]
        metrics = [json.loads((m.run_dir / "metrics.json").read_text(encoding="utf-8")) for m in runs]
        params = metrics[0]["parameters"]
        row = {
            "method": name, "seeds": len(runs),
            "learning_rate": runs[0].config.training.learning_rate, "epochs": runs[0].config.training.epochs,
            "trainable_params": params["trainable"], "total_params": params["total"],
            "trainable_pct": 100.0 * params["trainable"] / params["total"],
            "weights_mb": weights_size_bytes(runs[0].run_dir) / 2**20,
        }
        series = {
            "dev_f1": [m.get("dev", {}).get("f1") for m in metrics],
            "test_f1": [m.get("test", {}).get("f1") for m in metrics],
            "train_seconds": [m["training"]["seconds"] for m in metrics],
            "tokens_per_second": [m["training"]["tokens_per_second"] for m in metrics],
            # a process's peak RSS includes every earlier member when they share the process
            "peak_rss_mb": [m["training"]["peak_rss_mb"] if isolated else None for m in metrics],
        }
        for key, values in series.items():
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)
        rows.append(row)
    return rows


def _pm(mean, std, digits: int) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def format_markdown(rows: Sequence[dict], members: Sequence[Member]) -> str:
    base = members[0].config
    full = next((r for r in rows if r["method"] == "full"), None)
    lines = [
        "# Adaptation methods compared",
        "",
        f"Model `{base.model.name_or_path}`, training data `{base.data.train}`"
        + (f" (split {list(base.data.split)}, seed {base.data.split_seed})" if base.data.split else "")
        + (f", first {base.data.max_train_examples} training sentences" if base.data.max_train_examples else "")
        + f"; {rows[0]['seeds']} seed(s) from {base.training.seed}; mean ± std over seeds.",
        "",
        "| method | lr | epochs | trainable params | % of model | dev F1 | test F1 | test F1 / full | "
        "train time (s) | tokens/s | peak RSS (MB) | saved weights (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = (
            f"{100 * r['test_f1_mean'] / full['test_f1_mean']:.0f}%"
            if full and full["test_f1_mean"] and r["test_f1_mean"] is not None else "—"
        )
        lines.append(
            f"| {r['method']} | {r['learning_rate']:g} | {r['epochs']} | {r['trainable_params']:,} | "
            f"{r['trainable_pct']:.3g}% | {_pm(r['dev_f1_mean'], r['dev_f1_std'], 4)} | "
            f"{_pm(r['test_f1_mean'], r['test_f1_std'], 4)} | {ratio} | "
            f"{_pm(r['train_seconds_mean'], r['train_seconds_std'], 1)} | "
            f"{_pm(r['tokens_per_second_mean'], r['tokens_per_second_std'], 0)} | "
            f"{_pm(r['peak_rss_mb_mean'], r['peak_rss_mb_std'], 0)} | {r['weights_mb']:.2f} |"
        )
    settings = {m.method: m.config.method.model_dump(mode="json") for m in members}
    lines += [
        "",
        "Method settings: " + "; ".join(f"`{json.dumps(s)}`" for s in settings.values()),
        "",
        "Trainable parameters include the task head; % of model is of all parameters in that run's "
        "model (the base plus what the method adds). Saved weights: the method's files in `RUN/model/` "
        "(everything but the base model for parameter-efficient methods). Peak RSS is the training "
        "process's resident memory (— when members shared one process).",
        "",
        "![test F1 against trainable-parameter share](compare.png)",
        "",
        "Member runs: " + ", ".join(f"`{m.run_dir.name}/`" for m in members),
        "",
    ]
    return "\n".join(lines)


def format_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r[k] is None else r[k]) for k in CSV_COLUMNS})
    return buffer.getvalue()


def render_png(rows: Sequence[dict]) -> bytes:
    """Test F1 (± std) against trainable-parameter share, log x; marker area grows with training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["test_f1_mean"] is not None]
    longest = max((r["train_seconds_mean"] or 0 for r in shown), default=0) or 1
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in shown:
        size = 40 + 460 * (r["train_seconds_mean"] or 0) / longest
        ax.errorbar(r["trainable_pct"], r["test_f1_mean"], yerr=r["test_f1_std"] or None, fmt="none",
                    ecolor="0.4", capsize=3, zorder=1)
        ax.scatter(r["trainable_pct"], r["test_f1_mean"], s=size, alpha=0.7, zorder=2)
        ax.annotate(f"{r['method']} ({r['train_seconds_mean']:.0f}s)", (r["trainable_pct"], r["test_f1_mean"]),
                    textcoords="offset points", xytext=(8, 6), fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (% of model, log scale)")
    ax.set_ylabel("test entity F1")
    ax.set_title("Adaptation methods: test F1 vs trainable share (marker size: training time)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_outputs(out_dir: Path, rows: Sequence[dict], members: Sequence[Member]) -> None:
    atomic_write_text(out_dir / "compare.csv", format_csv(rows))
    atomic_write_bytes(out_dir / "compare.png", render_png(rows))
    atomic_write_text(out_dir / "compare.md", format_markdown(rows, members))
