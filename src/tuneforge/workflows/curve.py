"""``tuneforge curve``: learning curves — test score against training-set size, per approach, over seeds.

Every (approach, k, seed) is an ordinary run folder ``OUT/<approach>-k<k>-seed<seed>/`` (``kfull`` for
the whole training set) trained through :mod:`tuneforge.workflows.multirun` (resumable, one process each); the
k-shot draw (``data.k_shot``) and training both use the member's seed. An approach is an adaptation
method (``full``: plain fine-tuning, ``lora``, ``bitfit``...) or one of the task's named few-shot
approaches (``Task.APPROACHES``: ``setfit`` and ``zero_shot`` for text classification,
``prototypes`` and ``prototypes_ft`` for NER). An approach whose task uses no training examples
(zero-shot) runs once, ``OUT/<approach>/``, and is drawn as a flat line.

``curve.csv`` / ``curve.md`` hold one row per (approach, k): seeds, training examples, dev/test scores
(the task's headline F1 and macro-F1) as mean ± std; ``curve.png`` draws test F1 against k with
±1 std bands.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..artifacts.paths import atomic_write_bytes, atomic_write_text
from ..config import Config, config_from_dict
from ..errors import ConfigError
from ..evaluation.plots import png_bytes
from ..tasks import get_task
from .multirun import (
    Member,
    apply_changes,
    approach_tree,
    base_tree,
    data_description,
    experiment_dir,
    mean_std,
    pm,
    rows_to_csv,
    set_method,
    train_members,
)

CURVE_FILES = ("curve.md", "curve.csv", "curve.png")
CSV_COLUMNS = [
    "approach", "k", "seeds", "train_examples_mean", "dev_f1_mean", "dev_f1_std", "test_f1_mean", "test_f1_std",
    "test_macro_f1_mean", "test_macro_f1_std", "train_seconds_mean", "train_seconds_std",
]


@dataclass
class CurveResult:
    out_dir: Path
    rows: list[dict]

    @property
    def files(self) -> dict[str, Path]:
        return {name: self.out_dir / name for name in CURVE_FILES}


def parse_ks(text: str) -> list[int | None]:
    """``"8,16,32,64,full"`` -> ``[8, 16, 32, 64, None]`` (None: the whole training set)."""
    ks: list[int | None] = []
    for part in (p.strip() for p in text.split(",")):
        if part == "full":
            ks.append(None)
        elif part.isdigit() and int(part) > 0:
            ks.append(int(part))
        else:
            raise ConfigError(f"--k {text!r}: give positive integers and/or 'full', e.g. 8,16,32,64,full")
    if not ks or len(set(ks)) != len(ks):
        raise ConfigError(f"--k {text!r}: give each size once")
    return ks


def plan_curve(
    config: Config | dict | str | Path, ks: Sequence[int | None], methods: Sequence[str], seeds: int = 1,
    overrides: list[str] | None = None, out: str | Path | None = None, full_seeds: int | None = None,
) -> tuple[Path, list[Member]]:
    """The curve folder and its members, every member config validated before anything trains."""
    if not methods or len(set(methods)) != len(methods):
        raise ConfigError(f"--methods: give each approach once ({', '.join(methods) or 'none given'})")
    if seeds < 1 or (full_seeds is not None and full_seeds < 1):
        raise ConfigError("--seeds: give at least 1")
    tree = base_tree(config)
    base = config_from_dict(tree, overrides=overrides)
    out_dir = experiment_dir(out, base.output_dir, "the curve")
    members: list[Member] = []
    trees = {}
    for name in methods:
        member_tree = approach_tree(copy.deepcopy(tree), name, base.task.type)
        probe = config_from_dict(member_tree, source=f"curve approach {name}", overrides=overrides)
        if get_task(probe.task.type).uses_training_data:
            trees[name] = member_tree
        else:  # zero-shot: one run, drawn flat
            members.append(Member(name, base.training.seed, config_from_dict(
                member_tree, source=f"curve approach {name}", overrides=list(overrides or []) + [
                    f"output_dir={out_dir / name}"])))
    # smallest k first and every approach at each (k, seed): an interrupted curve has comparable points
    for k in ks:
        n_seeds = full_seeds if k is None and full_seeds is not None else seeds
        size = "full" if k is None else k
        for i in range(n_seeds):
            seed = base.training.seed + i
            for name, member_tree in trees.items():
                sized = apply_changes(copy.deepcopy(member_tree), {"data.k_shot": k})
                extra = [f"training.seed={seed}", f"output_dir={out_dir / f'{name}-k{size}-seed{seed}'}"]
                members.append(Member(name, seed, config_from_dict(
                    sized, source=f"curve member {name} k {size}", overrides=list(overrides or []) + extra), k))
    return out_dir, members


def curve(
    config: Config | dict | str | Path, ks: Sequence[int | None], methods: Sequence[str], seeds: int = 1,
    overrides: list[str] | None = None, isolate: bool = True, out: str | Path | None = None,
    full_seeds: int | None = None, summarise_only: bool = False,
) -> CurveResult:
    """Train every member not finished yet and write curve.md, curve.csv and curve.png
    (``summarise_only``: train nothing, summarise the members that finished)."""
    out_dir, members = plan_curve(config, ks, methods, seeds, overrides, out, full_seeds)
    if summarise_only:
        members = [m for m in members if m.finished]
        if not members:
            raise ConfigError(f"{out_dir}: no finished member runs to summarise yet")
    else:
        train_members(members, isolate, "curve")
    rows = summarise(members, ks, methods)
    write_outputs(out_dir, rows, members)
    return CurveResult(out_dir, rows)


# ---------------------------------------------------------------------------------------------
# Summary


def _train_examples(metrics: dict) -> int:
    data = metrics.get("data", {})
    if "k_shot" in data:
        return data["k_shot"]["examples"]
    if data.get("train_labels_only"):
        return 0
    counts = data.get("texts") or data.get("sentences") or data.get("examples") or {}
    return counts.get("train", 0)


def summarise(members: Sequence[Member], ks: Sequence[int | None], methods: Sequence[str] = ()) -> list[dict]:
    """One row per (approach, k), approaches in the order given; a zero-shot approach has one row, k ``-``."""
    rows = []
    present = dict.fromkeys(m.method for m in members)
    for name in [n for n in methods if n in present] or present:
        runs_of = [m for m in members if m.method == name]
        flat = len(runs_of) == 1 and not get_task(runs_of[0].config.task.type).uses_training_data
        for k in (["-"] if flat else ks):
            runs = runs_of if flat else [m for m in runs_of if m.k == k]
            if not runs:
                continue
            metrics = [json.loads((m.run_dir / "metrics.json").read_text(encoding="utf-8")) for m in runs]
            row = {"approach": name, "k": k if flat else (k if k is not None else "full"), "seeds": len(runs),
                   "train_examples_mean": sum(_train_examples(m) for m in metrics) / len(metrics)}
            series = {
                "dev_f1": [m.get("dev", {}).get("f1") for m in metrics],
                "test_f1": [m.get("test", {}).get("f1") for m in metrics],
                "test_macro_f1": [m.get("test", {}).get("macro_f1") for m in metrics],
                "train_seconds": [m["training"]["seconds"] for m in metrics],
            }
            for key, values in series.items():
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)
            rows.append(row)
    return rows


def format_markdown(rows: Sequence[dict], members: Sequence[Member]) -> str:
    base = members[0].config
    task = get_task(base.task.type)
    ks = list(dict.fromkeys(r["k"] for r in rows if r["k"] != "-"))
    headline = f"{task.score_name} (`{task.metric_for_best}`: macro-F1 for single-label classifiers, entity micro-F1 for NER)"
    lines = [
        "# Learning curves",
        "",
        f"Model `{base.model.name_or_path}`, training data {data_description(base)}"
        + f"; test {headline}, mean ± std over seeds (k: examples per class, per entity type for NER; "
          "the k-shot draw uses the member's seed).",
        "",
        "| approach | " + " | ".join(f"k = {k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for name in dict.fromkeys(r["approach"] for r in rows):
        mine = {r["k"]: r for r in rows if r["approach"] == name}
        if "-" in mine:
            cells = [f"{pm(mine['-']['test_f1_mean'], mine['-']['test_f1_std'], 3)} (no training)"] * len(ks)
        else:
            cells = [f"{pm(mine[k]['test_f1_mean'], mine[k]['test_f1_std'], 3)} ({mine[k]['seeds']})" if k in mine
                     else "—" for k in ks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "(n): seeds. Every row of the table below is one (approach, k):",
        "",
        "| approach | k | seeds | training examples | dev F1 | test F1 | test macro-F1 | train time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['approach']} | {r['k']} | {r['seeds']} | {r['train_examples_mean']:.0f} | "
            f"{pm(r['dev_f1_mean'], r['dev_f1_std'], 4)} | {pm(r['test_f1_mean'], r['test_f1_std'], 4)} | "
            f"{pm(r['test_macro_f1_mean'], r['test_macro_f1_std'], 4)} | "
            f"{pm(r['train_seconds_mean'], r['train_seconds_std'], 1)} |")
    lines += ["", f"Task `{task.name}`.", "",
              "![test F1 against training-set size](curve.png)", ""]
    return "\n".join(lines)


def render_png(rows: Sequence[dict], title: str = "") -> bytes:
    """Test F1 (mean, ±1 std band) against k on a log axis; the whole set at the right; zero-shot flat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["k"] for r in rows if isinstance(r["k"], int)]
    numeric = sorted(set(ks)) or [1]
    full_x = numeric[-1] * 2
    def x_of(k):
        return full_x if k == "full" else k

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for name in dict.fromkeys(r["approach"] for r in rows):
        mine = [r for r in rows if r["approach"] == name and r["test_f1_mean"] is not None]
        if not mine:
            continue
        if mine[0]["k"] == "-":
            r = mine[0]
            line = ax.axhline(r["test_f1_mean"], ls="--", lw=1.5, label=f"{name} (no training)")
            ax.axhspan(r["test_f1_mean"] - (r["test_f1_std"] or 0), r["test_f1_mean"] + (r["test_f1_std"] or 0),
                       color=line.get_color(), alpha=0.1)
            continue
        xs = [x_of(r["k"]) for r in mine]
        mean = [r["test_f1_mean"] for r in mine]
        std = [r["test_f1_std"] or 0 for r in mine]
        (line,) = ax.plot(xs, mean, marker="o", label=name)
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.18)
    ax.set_xscale("log", base=2)
    ticks = numeric + ([full_x] if any(r["k"] == "full" for r in rows) else [])
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in numeric] + (["full"] if len(ticks) > len(numeric) else []))
    ax.set_xlabel("training examples per class / entity type (k)")
    ax.set_ylabel("test F1")
    ax.set_title(title or "Learning curves (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return png_bytes(fig, close=True)


def write_outputs(out_dir: Path, rows: Sequence[dict], members: Sequence[Member]) -> None:
    atomic_write_text(out_dir / "curve.csv", rows_to_csv(rows, CSV_COLUMNS))
    atomic_write_bytes(out_dir / "curve.png", render_png(rows))
    atomic_write_text(out_dir / "curve.md", format_markdown(rows, members))
