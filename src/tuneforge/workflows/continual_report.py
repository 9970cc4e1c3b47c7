"""`tuneforge continual`'s report: each strategy's accuracy matrix summed up (final accuracy, forgetting,
transfer) over seeds, as Markdown, CSV and plots."""


from __future__ import annotations

import csv
import io
import json
import math

from ..artifacts.paths import atomic_write_bytes, atomic_write_text
from ..errors import TuneforgeError
from ..evaluation.plots import render_old_stage_lines_png, render_stage_matrix_png
from ..tasks import get_task
from ..training.continual import sequence_summary
from .continual_plan import SCORES_FILE, Plan
from .multirun import mean_std as _mean_std
from .multirun import pm as _pm

# ---------------------------------------------------------------------------------------------
# Report


def _sequence(plan: Plan, strategy: str, seed: int) -> dict | None:
    """One finished sequence's matrix, summary and time; None while any stage is unfinished."""

    names = [s.name for s in plan.stages]
    matrix, seconds = [], 0.0
    for k in range(len(plan.stages)):
        run_dir = plan.run_dir(strategy, seed, k)
        if not (run_dir / SCORES_FILE).exists():
            return None
        scores = json.loads((run_dir / SCORES_FILE).read_text(encoding="utf-8"))["test"]
        matrix.append([scores.get(n, {}).get("f1", math.nan) for n in names])
        # the loop's own training time: a resumed run continues it, where wall-clock time would restart
        seconds += json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["training"]["seconds"]
        timing_file = run_dir / "continual_seconds.json"
        if strategy == "ewc" and timing_file.exists():
            seconds += json.loads(timing_file.read_text(encoding="utf-8")).get("ewc_fisher_seconds", 0.0)
    initial = json.loads((plan.out_dir / f"seed{seed}" / "initial_scores.json").read_text(encoding="utf-8"))["test"]
    summary = sequence_summary(matrix, [initial.get(n, {}).get("f1", 0.0) for n in names])
    return {"strategy": strategy, "seed": seed, "matrix": matrix, "seconds": seconds, **summary}


SUMMARY_KEYS = ("average_final", "average_forgetting", "backward_transfer", "forward_transfer", "seconds")


def summarise(plan: Plan) -> list[dict]:
    """Per strategy: its finished sequences, and mean/std over seeds of the summary and of each cell."""
    rows = []
    for strategy in plan.options.strategies:
        sequences = [s for s in (_sequence(plan, strategy, seed) for seed in plan.seeds) if s is not None]
        if not sequences:
            continue
        t = len(plan.stages)
        row = {"strategy": strategy, "seeds": len(sequences), "sequences": sequences}
        for key in SUMMARY_KEYS:
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([s[key] for s in sequences])
        row["matrix_mean"] = [[_mean_std([s["matrix"][i][j] for s in sequences])[0] for j in range(t)] for i in range(t)]
        row["matrix_std"] = [[_mean_std([s["matrix"][i][j] for s in sequences])[1] for j in range(t)] for i in range(t)]
        rows.append(row)
    return rows


def format_markdown(plan: Plan, rows: list[dict]) -> str:
    names = [s.name for s in plan.stages]
    first = plan.stage_config(0, plan.seeds[0], plan.out_dir / "unused", None)

    score = get_task(first.task.type).score_name
    lines = [
        "# Continual learning",
        "",
        f"Model `{first.model.name_or_path}`, method `{first.method.name}`, "
        f"{first.training.epochs} epoch(s) a stage, batch {first.training.batch_size}, "
        f"learning rate {first.training.learning_rate:g}"
        + (f", first {first.data.max_train_examples} training examples of each stage" if first.data.max_train_examples else "")
        + f"; seeds {', '.join(map(str, plan.seeds))}; mean ± std over seeds. Scores: {score} on each stage's "
        "test set, counting only the labels that stage annotates.",
        "",
        "| stage | labels annotated | train examples | test examples |",
        "|---|---|---|---|",
    ]
    for k, stage in enumerate(plan.stages):
        task, data = plan.stage_data(k)
        lines.append(f"| {stage.name} | {', '.join(task.label_kinds(data.labels))} | "
                     f"{len(data.splits['train'])} | {len(data.splits['test'])} |")
    lines += [
        "",
        "| strategy | seeds | average final | average forgetting | backward transfer | forward transfer | "
        "training time per sequence (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['seeds']} | {_pm(r['average_final_mean'], r['average_final_std'], 4)} | "
            f"{_pm(r['average_forgetting_mean'], r['average_forgetting_std'], 4)} | "
            f"{_pm(r['backward_transfer_mean'], r['backward_transfer_std'], 4)} | "
            f"{_pm(r['forward_transfer_mean'], r['forward_transfer_std'], 4)} | "
            f"{_pm(r['seconds_mean'], r['seconds_std'], 0)} |"
        )
    o = plan.options
    lines += [
        "",
        f"Settings: replay memory {o.replay.memory_size} examples, {o.replay.per_batch} a batch; "
        f"EWC lambda {o.ewc.lam:g}, gamma {o.ewc.gamma:g}, Fisher on {o.ewc.fisher_examples} inputs; "
        f"LwF weight {o.lwf.weight:g}, temperature {o.lwf.temperature:g}.",
        "",
        "Average final: mean score over all stages after the last one. Average forgetting: per earlier stage, "
        "its best score before the last stage minus its final score, averaged. Backward transfer: final minus "
        "just-learned score, averaged over earlier stages (negative = forgetting). Forward transfer: the score "
        "on a stage before training on it minus the untrained model's. Training time: the training loop's seconds "
        "of every stage's run (a resumed run continues its count; the shared first stage included), plus EWC's "
        "Fisher passes; scoring is not counted.",
        "",
    ]
    for r in rows:
        lines += [f"## {r['strategy']}: score on each stage's test set (rows: after training stage)", "",
                  "| after \\ test | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for i, name in enumerate(names):
            cells = [_pm(r["matrix_mean"][i][j], r["matrix_std"][i][j], 4) for j in range(len(names))]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", f"![{r['strategy']} heat map](continual-heatmap-{r['strategy']}.png)", ""]
    lines += ["![earlier stages across stages](continual-old-stages.png)", ""]
    return "\n".join(lines)


def format_csv(plan: Plan, rows: list[dict]) -> str:
    names = [s.name for s in plan.stages]
    cells = [f"after_{a}_on_{b}" for a in names for b in names]
    columns = ["strategy", "seed", *SUMMARY_KEYS, *cells]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        for s in r["sequences"]:
            flat = {f"after_{names[i]}_on_{names[j]}": s["matrix"][i][j] for i in range(len(names)) for j in range(len(names))}
            writer.writerow({"strategy": r["strategy"], "seed": s["seed"], **{k: s[k] for k in SUMMARY_KEYS}, **flat})
        for stat in ("mean", "std"):
            flat = {f"after_{names[i]}_on_{names[j]}": r[f"matrix_{stat}"][i][j]
                    for i in range(len(names)) for j in range(len(names))}
            writer.writerow({"strategy": r["strategy"], "seed": stat, **{k: r[f"{k}_{stat}"] for k in SUMMARY_KEYS}, **flat})
    return buffer.getvalue()


def write_report(plan: Plan) -> dict:
    rows = summarise(plan)
    if not rows:
        raise TuneforgeError(f"{plan.out_dir}: no finished sequence to report yet")
    names = [s.name for s in plan.stages]
    files = {}
    for r in rows:
        path = plan.out_dir / f"continual-heatmap-{r['strategy']}.png"
        atomic_write_bytes(path, render_stage_matrix_png(
            r["matrix_mean"], r["matrix_std"] if r["seeds"] > 1 else None, names,
            f"{r['strategy']}: score on each stage's test set"))
        files[path.name] = path
    series = {r["strategy"]: {names[j]: [(i, r["matrix_mean"][i][j], r["matrix_std"][i][j]) for i in range(j, len(names))]
                              for j in range(len(names) - 1)} for r in rows}
    path = plan.out_dir / "continual-old-stages.png"
    atomic_write_bytes(path, render_old_stage_lines_png(series, names, "score on the stage's test set"))
    files[path.name] = path
    for name, text in (("continual.csv", format_csv(plan, rows)), ("continual.md", format_markdown(plan, rows))):
        atomic_write_text(plan.out_dir / name, text)
        files[name] = plan.out_dir / name
    return {"rows": rows, "files": files}
