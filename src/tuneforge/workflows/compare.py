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

Adversarial training as a second axis: ``adversarial=["none", "fgm", "pgd", "rdrop"]`` crosses every
method with each (``none``: plain training); a member ``full+fgm-seed42/`` takes the config's
``adversarial:`` block when its method matches, else that method's defaults. Robustness:
``perturb=["typo", ...]`` scores every member's saved model on noisy copies of its test split
(:mod:`tuneforge.evaluation.robustness`), kept in ``MEMBER/robustness.json``, and adds perturbed F1
and the drop from clean F1 to the tables.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from ..artifacts.model_folder import weights_size_bytes
from ..artifacts.paths import atomic_write_bytes, atomic_write_text
from ..config import ADVERSARIAL_METHODS, Config, config_from_dict
from ..data.perturb import check_rate, parse_perturbations
from ..errors import ConfigError
from ..evaluation.plots import png_bytes
from ..evaluation.robustness import robustness
from ..loading import load_predictor
from ..methods import REGISTRY
from ..tasks import get_task, make_task
from .multirun import (
    PLAIN,
    Member,
    apply_changes,
    approach_tree,
    base_tree,
    data_description,
    experiment_dir,
    mean_std,
    member_label,
    pm,
    rows_to_csv,
    set_method,
    train_members,
)

COMPARE_FILES = ("compare.md", "compare.csv", "compare.png")
CSV_COLUMNS = [
    "method", "adversarial", "seeds", "learning_rate", "epochs", "trainable_params", "total_params", "trainable_pct",
    "dev_f1_mean", "dev_f1_std", "test_f1_mean", "test_f1_std", "train_seconds_mean", "train_seconds_std",
    "tokens_per_second_mean", "tokens_per_second_std", "peak_rss_mb_mean", "peak_rss_mb_std", "weights_mb",
    "task", "model", "adaptation", "inference_ms_per_example_mean", "inference_ms_per_example_std",
    "test_problems_mean", "test_problems_std",
]
# with perturbations: these, then perturbed_<name>_f1_mean/std per perturbation
ROBUSTNESS_COLUMNS = ["perturbed_f1_mean", "perturbed_f1_std", "f1_drop_mean", "f1_drop_std"]
ROBUSTNESS_FILE = "robustness.json"
@dataclass
class CompareResult:
    out_dir: Path
    rows: list[dict]

    @property
    def files(self) -> dict[str, Path]:
        return {name: self.out_dir / name for name in COMPARE_FILES}


def load_members(path: str | Path) -> dict[str, dict]:
    """A members file: ``NAME: {approach: METHOD_OR_APPROACH, dotted.key: value, ...}`` per member (a
    member may change the model, the task type, the method: anything but the data's split)."""
    try:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--members {path}: cannot read it ({exc.__class__.__name__}); give a YAML file") from None
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(f"--members {path}: give a mapping of member names to their changes, e.g. "
                          "'minilm-lora: {approach: lora}'")
    for name, changes in tree.items():
        if not isinstance(changes, dict) and changes is not None:
            raise ConfigError(f"--members {path}: member {name!r}: give a mapping of dotted keys, e.g. "
                              "{approach: in_context, model.name_or_path: ...}")
        tree[name] = dict(changes or {})
    return tree


def member_tree(tree: dict, name: str, task_type: str, members: dict[str, dict], same_budget: bool) -> dict:
    """The config tree of a member: a named member's changes (after its ``approach``), else an adaptation
    method or one of the task's approaches by name."""
    if name not in members:
        return approach_tree(tree, name, task_type, same_budget)
    changes = dict(members[name])
    approach = changes.pop("approach", None)
    if approach is not None:
        tree = approach_tree(tree, approach, task_type, same_budget)
    return apply_changes(tree, changes)


def plan_members(
    config: Config | dict | str | Path, methods: Sequence[str], seeds: int = 1,
    overrides: list[str] | None = None, same_budget: bool = False, out: str | Path | None = None,
    adversarial: Sequence[str] | None = None, members: dict[str, dict] | None = None,
) -> tuple[Path, list[Member]]:
    """The compare folder and its members, every member config validated before anything trains.

    A member is an adaptation method (``lora``), one of the task's approaches (``in_context``,
    ``generative``, ``setfit``...) or a named entry of ``members`` (its own model, task, method)."""
    members = members or {}
    tree = base_tree(config)
    task_type = (tree.get("task") or {}).get("type") or "token_classification"
    approaches = get_task(task_type).APPROACHES
    unknown = [m for m in methods if m not in REGISTRY and m not in approaches and m not in members]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(REGISTRY)}"
                          + (f", this task's approaches ({', '.join(approaches)})" if approaches else "")
                          + (f" or the --members ({', '.join(members)})" if members else ""))
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods: {', '.join(methods)} names a method twice")
    if adversarial is not None:
        choices = (PLAIN, *ADVERSARIAL_METHODS)
        bad = [a for a in adversarial if a not in choices]
        if bad or not adversarial or len(set(adversarial)) != len(adversarial):
            raise ConfigError(f"--adversarial: give distinct names from {', '.join(choices)}"
                              + (f" (unknown: {', '.join(bad)})" if bad else ""))
    if seeds < 1:
        raise ConfigError("--seeds: give at least 1")
    # on the adversarial axis each member brings its own block; --set adversarial.* is meant for those
    base = config_from_dict(tree, overrides=list(overrides or []) + (["adversarial=null"] if adversarial else []))
    out_dir = experiment_dir(out, base.output_dir, "compare")
    planned = []
    for i in range(seeds):
        seed = base.training.seed + i
        for name in methods:
            for adv in adversarial if adversarial is not None else [None]:
                member = member_tree(copy.deepcopy(tree), name, task_type, members, same_budget)
                extra = [f"training.seed={seed}"]
                if adv is not None:
                    own = member.get("adversarial") or {}
                    member["adversarial"] = own if own.get("method") == adv else {"method": adv}
                    if adv == PLAIN:
                        extra.append("adversarial=null")  # after --set adversarial.* meant for the others
                label = member_label(name, adv)
                extra.append(f"output_dir={out_dir / f'{label}-seed{seed}'}")
                planned.append(Member(name, seed, config_from_dict(member, source=f"compare member {label}",
                                                                   overrides=list(overrides or []) + extra),
                                      adversarial=adv))
    return out_dir, planned


def compare(
    config: Config | dict | str | Path, methods: Sequence[str], seeds: int = 1, overrides: list[str] | None = None,
    same_budget: bool = False, isolate: bool = True, out: str | Path | None = None,
    adversarial: Sequence[str] | None = None, perturb: Sequence[str] | str | None = None, rate: float = 0.1,
    perturb_seed: int = 0, members: dict[str, dict] | None = None,
) -> CompareResult:
    """Train every method (x adversarial setting) x seed, skipping finished members, and write the
    comparison files; with ``perturb``, also score each member on noisy copies of its test split.

    ``out`` (default: the config's ``output_dir``) holds the member runs and the three files.
    """

    names = parse_perturbations(perturb) if perturb else None
    if names:
        check_rate(rate)
    out_dir, planned = plan_members(config, methods, seeds, overrides, same_budget, out, adversarial, members)
    train_members(planned, isolate, "compare")
    if names:
        score_robustness(planned, names, rate, perturb_seed)
    rows = summarise(planned, isolated=isolate, perturbations=names)
    write_outputs(out_dir, rows, planned)
    return CompareResult(out_dir=out_dir, rows=rows)


def same_robustness_settings(saved: dict, wanted: dict) -> bool:
    """Whether a saved ``robustness.json`` was scored with ``wanted``'s perturbations (in order), rate and
    seed. The file keeps the perturbations as a dict of results keyed by name, so compare the names."""
    return (list(saved.get("perturbations") or []) == list(wanted["perturbations"])
            and saved.get("rate") == wanted["rate"] and saved.get("seed") == wanted["seed"])


def score_robustness(members: Sequence[Member], names: Sequence[str], rate: float, seed: int) -> None:
    """Each member's saved model on noisy copies of its test split -> ``MEMBER/robustness.json``
    (kept when it already holds these perturbations, rate and seed)."""

    wanted = {"perturbations": list(names), "rate": rate, "seed": seed}
    test_sets: dict[str, list] = {}  # members on the same data share one read
    for member in members:
        path = member.run_dir / ROBUSTNESS_FILE
        if path.exists() and same_robustness_settings(json.loads(path.read_text(encoding="utf-8")), wanted):
            continue
        key = json.dumps([member.config.task.model_dump(mode="json"), member.config.data.model_dump(mode="json")])
        if key not in test_sets:
            test_sets[key] = make_task(member.config).prepare_data().splits["test"]
        if not test_sets[key]:
            raise ConfigError(f"--perturb: member {member.label} has no test split to perturb; give data.test or data.split")
        metrics = json.loads((member.run_dir / "metrics.json").read_text(encoding="utf-8"))
        predictor = load_predictor(member.run_dir)
        report = robustness(predictor, get_task(predictor.task_name), test_sets[key], names, rate, seed, member.config.training.eval_batch_size,
                            clean=metrics["test"])
        atomic_write_text(path, json.dumps({**wanted, **report}, indent=1))
        print(f"robustness {member.label} seed {member.seed}: clean {report['clean_f1']:.4f}, "
              f"perturbed {report['mean_perturbed_f1']:.4f} (mean of {len(names)})", flush=True)


# ---------------------------------------------------------------------------------------------
# Summary


def summarise(members: Sequence[Member], isolated: bool = True, perturbations: Sequence[str] | None = None) -> list[dict]:
    """One row per method (x adversarial setting), in the order given: mean and sample std over its seeds."""

    rows = []
    for name in dict.fromkeys(m.label for m in members):
        runs = [m for m in members if m.label == name]
        metrics = [json.loads((m.run_dir / "metrics.json").read_text(encoding="utf-8")) for m in runs]
        params = metrics[0]["parameters"]
        # a member that trains nothing (in-context, zero-shot) changes no parameter, whatever requires_grad says
        trainable = params["trainable"] if metrics[0].get("epochs_run", 1) else 0
        cfg = runs[0].config
        row = {
            "method": name, "adversarial": runs[0].adversarial or "", "seeds": len(runs),
            "learning_rate": cfg.training.learning_rate, "epochs": cfg.training.epochs,
            "trainable_params": trainable, "total_params": params["total"],
            "trainable_pct": 100.0 * trainable / params["total"],
            "weights_mb": weights_size_bytes(runs[0].run_dir) / 2**20,
            "task": cfg.task.type, "model": cfg.model.name_or_path, "adaptation": cfg.method.name,
        }
        series = {
            "dev_f1": [m.get("dev", {}).get("f1") for m in metrics],
            "test_f1": [m.get("test", {}).get("f1") for m in metrics],
            "train_seconds": [m["training"]["seconds"] for m in metrics],
            "tokens_per_second": [m["training"]["tokens_per_second"] for m in metrics],
            # a process's peak RSS includes every earlier member when they share the process; the whole
            # run's (loading, training, scoring) where recorded, else training's
            "peak_rss_mb": [m.get("peak_rss_mb", m["training"]["peak_rss_mb"]) if isolated else None for m in metrics],
            "inference_ms_per_example": [m.get("scoring", {}).get("test", {}).get("ms_per_example") for m in metrics],
            # generative members: answers that could not be read (counted as wrong in test F1)
            "test_problems": [sum(m["test"]["problems"].values()) if "problems" in m.get("test", {}) else None
                              for m in metrics],
        }
        if perturbations:
            reports = [json.loads((m.run_dir / ROBUSTNESS_FILE).read_text(encoding="utf-8")) for m in runs]
            series["perturbed_f1"] = [r["mean_perturbed_f1"] for r in reports]
            series["f1_drop"] = [r["mean_drop"] for r in reports]
            for p in perturbations:
                series[f"perturbed_{p}_f1"] = [r["perturbations"][p]["f1"] for r in reports]
        for key, values in series.items():
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)
        rows.append(row)
    return rows


def _perturbation_names(rows: Sequence[dict]) -> list[str]:
    return [k.removeprefix("perturbed_").removesuffix("_f1_mean") for k in rows[0]
            if k.startswith("perturbed_") and k.endswith("_f1_mean") and k != "perturbed_f1_mean"]


def mixed_families(rows: Sequence[dict]) -> bool:
    """Whether the rows differ in model or task type, not only in method."""
    return len({(r["task"], r["model"]) for r in rows}) > 1


def format_families_markdown(rows: Sequence[dict], members: Sequence[Member]) -> str:
    """One table for members that differ in model and task type: quality by each task's own metric, cost."""
    base = members[0].config
    lines = [
        "# Model families compared",
        "",
        f"Training data {data_description(base)}"
        + f"; seeds from {base.training.seed} (a row's count in its seeds column); mean ± std over seeds.",
        "",
        "| member | task | model | method | seeds | trainable params | dev F1 | test F1 | answer problems | "
        "train time (s) | inference (ms/example) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        problems = "—" if r["test_problems_mean"] is None else pm(r["test_problems_mean"], r["test_problems_std"], 1)
        lines.append(
            f"| {r['method']} | {r['task']} | `{r['model']}` | {r['adaptation']} | {r['seeds']} | {r['trainable_params']:,} | "
            f"{pm(r['dev_f1_mean'], r['dev_f1_std'], 4)} | {pm(r['test_f1_mean'], r['test_f1_std'], 4)} | {problems} | "
            f"{pm(r['train_seconds_mean'], r['train_seconds_std'], 1)} | "
            f"{pm(r['inference_ms_per_example_mean'], r['inference_ms_per_example_std'], 1)} | "
            f"{pm(r['peak_rss_mb_mean'], r['peak_rss_mb_std'], 0)} |")
    lines += [
        "",
        "Test F1 is each task's own metric: macro-F1 for single-label classification (in-context and generative "
        "members included), entity micro-F1 over words for NER. A generative member's answers are parsed back "
        "to labels or tags; answer problems (unparseable, hallucinated spans, unknown types, changed text, "
        "malformed tags) are counted per test set and scored as wrong. Trainable params: what training changes "
        "(0 for a member that trains nothing). Inference: the saved model scoring the test set, per example. "
        "Peak RSS: the member's process, loading, training and scoring (— when members shared one process).",
        "",
        "![test F1 against trainable parameters](compare.png)",
        "",
        "Member runs: " + ", ".join(f"`{m.run_dir.name}/`" for m in members),
        "",
    ]
    return "\n".join(lines)


def format_markdown(rows: Sequence[dict], members: Sequence[Member]) -> str:
    if mixed_families(rows):
        return format_families_markdown(rows, members)
    base = members[0].config
    full = next((r for r in rows if r["method"] == "full"), None)
    lines = [
        "# Adaptation methods compared",
        "",
        f"Model `{base.model.name_or_path}`, training data {data_description(base, 'sentences')}"
        + f"; {rows[0]['seeds']} seed(s) from {base.training.seed}; mean ± std over seeds.",
        "",
        "| method | lr | epochs | trainable params | % of model | dev F1 | test F1 | test F1 / full | "
        "train time (s) | tokens/s | peak RSS (MB) | saved weights (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    perturbations = _perturbation_names(rows)
    for r in rows:
        ratio = (
            f"{100 * r['test_f1_mean'] / full['test_f1_mean']:.0f}%"
            if full and full["test_f1_mean"] and r["test_f1_mean"] is not None else "—"
        )
        lines.append(
            f"| {r['method']} | {r['learning_rate']:g} | {r['epochs']} | {r['trainable_params']:,} | "
            f"{r['trainable_pct']:.3g}% | {pm(r['dev_f1_mean'], r['dev_f1_std'], 4)} | "
            f"{pm(r['test_f1_mean'], r['test_f1_std'], 4)} | {ratio} | "
            f"{pm(r['train_seconds_mean'], r['train_seconds_std'], 1)} | "
            f"{pm(r['tokens_per_second_mean'], r['tokens_per_second_std'], 0)} | "
            f"{pm(r['peak_rss_mb_mean'], r['peak_rss_mb_std'], 0)} | {r['weights_mb']:.2f} |"
        )
    if perturbations:
        lines += _robustness_markdown(rows, members, perturbations)
    settings = {m.method: m.config.method.model_dump(mode="json") for m in members}
    adversarial = {m.label: m.config.adversarial.model_dump(mode="json") for m in members if m.config.adversarial}
    lines += [
        "",
        "Method settings: " + "; ".join(f"`{json.dumps(s)}`" for s in settings.values())
        + ("" if not adversarial else "; adversarial: " + "; ".join(
            f"{label} `{json.dumps(a)}`" for label, a in adversarial.items())),
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


def _robustness_markdown(rows: Sequence[dict], members: Sequence[Member], perturbations: Sequence[str]) -> list[str]:
    report = json.loads((members[0].run_dir / ROBUSTNESS_FILE).read_text(encoding="utf-8"))
    plain = rows[0]
    lines = [
        "",
        f"## Robustness: test F1 on noisy copies ({report['rate']:.0%} of words changed, noise seed {report['seed']})",
        "",
        "Drop = clean test F1 − perturbed F1 (mean over the perturbations), per seed, then mean ± std; "
        f"drop vs {plain['method']}: this row's mean drop as a share of the first row's.",
        "",
        "| method | clean F1 | perturbed F1 (mean) | drop | drop vs first row | "
        + " | ".join(perturbations) + " |",
        "|---|---|---|---|---|" + "---|" * len(perturbations),
    ]
    for r in rows:
        share = (f"{100 * r['f1_drop_mean'] / plain['f1_drop_mean']:.0f}%"
                 if plain["f1_drop_mean"] else "—")
        lines.append(
            f"| {r['method']} | {pm(r['test_f1_mean'], r['test_f1_std'], 4)} | "
            f"{pm(r['perturbed_f1_mean'], r['perturbed_f1_std'], 4)} | {pm(r['f1_drop_mean'], r['f1_drop_std'], 4)} | "
            f"{share} | " + " | ".join(pm(r[f"perturbed_{p}_f1_mean"], r[f"perturbed_{p}_f1_std"], 4)
                                     for p in perturbations) + " |"
        )
    return lines


def format_csv(rows: Sequence[dict]) -> str:
    columns = list(CSV_COLUMNS)
    perturbations = _perturbation_names(rows)
    if perturbations:
        columns += ROBUSTNESS_COLUMNS + [f"perturbed_{p}_f1_{s}" for p in perturbations for s in ("mean", "std")]
    return rows_to_csv(rows, columns)


def share_axis_limits(shares: Sequence[float]) -> tuple[float, float]:
    """Log-x limits from the power of ten at or below the smallest share to the one at or above the
    largest, with a margin, so every point lies between labelled decade ticks (a 2.89% point left of
    the first tick, 10%, reads as nothing)."""
    lo = 10 ** math.floor(math.log10(min(shares)))
    hi = 10 ** math.ceil(math.log10(max(shares)))
    return lo / 1.25, hi * 1.25


def render_png(rows: Sequence[dict]) -> bytes:
    """Test F1 (± std) against trainable-parameter share, log x; marker area grows with training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    shown = [r for r in rows if r["test_f1_mean"] is not None]
    # one model: the trainable share; several: the trainable count (shares of different models are not comparable)
    key = "trainable_params" if mixed_families(rows) else "trainable_pct"
    trained = [r[key] for r in shown if r[key] > 0]
    floor = min(trained, default=1.0) / 10  # where a member that trains nothing is drawn
    longest = max((r["train_seconds_mean"] or 0 for r in shown), default=0) or 1
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in shown:
        x = r[key] or floor
        size = 40 + 460 * (r["train_seconds_mean"] or 0) / longest
        ax.errorbar(x, r["test_f1_mean"], yerr=r["test_f1_std"] or None, fmt="none", ecolor="0.4", capsize=3, zorder=1)
        ax.scatter(x, r["test_f1_mean"], s=size, alpha=0.7, zorder=2)
        note = f"{r['train_seconds_mean']:.0f}s" if r[key] else "no training"
        ax.annotate(f"{r['method']} ({note})", (x, r["test_f1_mean"]), textcoords="offset points", xytext=(8, 6),
                    fontsize=9)
    ax.set_xscale("log")
    if shown:
        ax.set_xlim(*share_axis_limits([r[key] or floor for r in shown]))
    if key == "trainable_pct":
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}%"))
        ax.set_xlabel("trainable parameters (% of model, log scale)")
        ax.set_title("Adaptation methods: test F1 vs trainable share (marker size: training time)")
    else:
        ax.set_xlabel("trainable parameters (log scale; members marked 'no training' are drawn at the left)")
        ax.set_title("Model families: test F1 vs trainable parameters (marker size: training time)")
    ax.set_ylabel("test F1 (the task's own metric)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig, close=True)


def write_outputs(out_dir: Path, rows: Sequence[dict], members: Sequence[Member]) -> None:
    atomic_write_text(out_dir / "compare.csv", format_csv(rows))
    atomic_write_bytes(out_dir / "compare.png", render_png(rows))
    atomic_write_text(out_dir / "compare.md", format_markdown(rows, members))
