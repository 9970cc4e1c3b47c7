"""Active learning: pick the examples worth labelling next, and measure whether that pays.

``tuneforge label suggest RUN POOL`` scores an unlabelled pool with a trained run and writes the
``n`` most useful examples as Label Studio tasks pre-annotated with the model's predictions, so
annotators correct instead of starting from nothing. ``tuneforge label simulate CONFIG`` replays the
loop on a labelled set with its labels hidden and plots score against the number of labels bought.

Uncertainty is read from :meth:`tuneforge.tasks.base.Predictor.units`: every example is a table of
units (the words of a sentence, the one decision on a text, each label of a multi-label text) with a
probability per class. Per unit:

- ``entropy``: -sum p log p;
- ``least-confidence``: 1 - max p;
- ``margin``: 1 - (p1 - p2), the gap between the two most likely classes (small gap, high score);
- ``random``: a seeded uniform draw (the baseline).

An example's score aggregates its units (``sum`` by default: the labelling cost is counted in
examples, and a sentence with several uncertain words teaches more than one with a single one;
``mean`` and ``max`` are there for per-token budgets). ``diversity`` keeps the batch from being
``n`` near-copies of one confusing example: the ``5 n`` highest-scoring candidates are clustered
into ``n`` groups (k-means on TF-IDF character 2-4-grams of their text, scikit-learn; chosen over the
model's own embeddings because it works the same for every task and language and needs no second
pass through the model), and the best-scoring member of each group is taken.
"""

from __future__ import annotations

import copy
import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..api import load
from ..artifacts.paths import atomic_write_bytes, atomic_write_text
from ..config import config_from_dict, merge_trees, parse_overrides
from ..data.interchange import labelstudio_tasks, refuse_blank_texts
from ..errors import ConfigError
from ..evaluation.plots import png_bytes
from ..loading import load_predictor
from ..tasks import make_task
from ..tasks.capabilities import Interchange, require
from ..tasks.predictor import Units
from .multirun import base_tree as _base_tree
from .multirun import experiment_dir, mean_std, rows_to_csv, run_finished, train_config
from .multirun import pm as _pm

STRATEGIES = ("entropy", "margin", "least-confidence", "random")
AGGREGATES = ("sum", "mean", "max")
DIVERSITY_CANDIDATES = 5  # candidates per slot that diversity clusters


def unit_uncertainty(probabilities: np.ndarray, strategy: str) -> np.ndarray:
    """One uncertainty value per row of a (units x classes) probability table; higher = less sure."""
    p = np.asarray(probabilities, dtype=np.float64)
    if strategy == "entropy":
        logs = np.log(np.where(p > 0, p, 1.0))
        return -(p * logs).sum(axis=1)
    ordered = -np.sort(-p, axis=1)
    if strategy == "least-confidence":
        return 1.0 - ordered[:, 0]
    if strategy == "margin":
        second = ordered[:, 1] if p.shape[1] > 1 else np.zeros(len(p))
        return 1.0 - (ordered[:, 0] - second)
    raise ConfigError(f"--strategy {strategy}: choose one of {', '.join(STRATEGIES)}")


def uncertainty_scores(units: Sequence[Units], strategy: str, aggregate: str = "sum", seed: int = 0) -> np.ndarray:
    """One score per example (higher = label it sooner). An example without units scores 0."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy}: choose one of {', '.join(STRATEGIES)}")
    if aggregate not in AGGREGATES:
        raise ConfigError(f"--aggregate {aggregate}: choose one of {', '.join(AGGREGATES)}")
    if strategy == "random":
        return np.random.default_rng(seed).random(len(units))
    scores = np.zeros(len(units), dtype=np.float64)
    for i, u in enumerate(units):
        if len(u.probabilities):
            values = unit_uncertainty(u.probabilities, strategy)
            scores[i] = {"sum": np.sum, "mean": np.mean, "max": np.max}[aggregate](values)
    return scores


def select(scores: Sequence[float], n: int, texts: Sequence[str] | None = None, diversity: bool = False,
           seed: int = 0) -> list[int]:
    """Indices of the ``n`` examples to label next, best first (ties: earlier example first).

    With ``diversity``, one per k-means cluster of the ``5 n`` best candidates' texts (see the
    module docstring); clusters k-means leaves empty are filled with the next best candidates.
    """
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    n = max(0, min(n, len(order)))
    if not diversity or n == 0:
        return order[:n]
    if texts is None:
        raise ValueError("diversity needs the examples' texts")
    candidates = order[: DIVERSITY_CANDIDATES * n]
    if len(candidates) <= n:
        return candidates
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(
        [texts[i] or " " for i in candidates])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # duplicate texts: fewer distinct clusters than n
        clusters = KMeans(n_clusters=n, n_init=1, random_state=seed).fit_predict(vectors)
    picked, seen = [], set()
    for position, cluster in enumerate(clusters):  # candidates are best first: the first of a cluster is its best
        if cluster not in seen:
            seen.add(cluster)
            picked.append(candidates[position])
    chosen = set(picked)
    picked += [i for i in candidates if i not in chosen][: n - len(picked)]
    rank = {i: r for r, i in enumerate(order)}
    return sorted(picked, key=rank.__getitem__)


def hide_labels(examples: Sequence) -> list:
    """Copies without gold labels: what a strategy may look at."""
    hidden = []
    for ex in examples:
        clone = copy.copy(ex)
        for field in ("tags", "labels", "tag_lines"):
            if hasattr(clone, field):
                setattr(clone, field, None)
        hidden.append(clone)
    return hidden


def rank_pool(predictor, examples: Sequence, n: int, strategy: str, diversity: bool = False,
              aggregate: str = "sum", seed: int = 0, batch_size: int = 64) -> tuple[list[int], np.ndarray]:
    """(indices to label next, every example's score) for an unlabelled pool under a trained predictor."""
    pool = hide_labels(examples)
    units = predictor.units(pool, batch_size) if strategy != "random" else [None] * len(pool)
    scores = uncertainty_scores(units, strategy, aggregate, seed)
    texts = [ex.as_text() for ex in pool] if diversity else None
    return select(scores, n, texts, diversity, seed), scores


# ---------------------------------------------------------------------------------------------
# label suggest


def suggest(predictor, pool: str | Path, n: int = 100, strategy: str = "entropy", diversity: bool = False,
            aggregate: str = "sum", seed: int = 0, batch_size: int = 64, read_options: dict | None = None,
            model_version: str = "") -> tuple[list[dict], list[int], np.ndarray]:
    """Label Studio tasks (pre-annotated with the predictor's labels and scores) for the ``n`` examples
    of ``pool`` most worth labelling; also the chosen pool indices and every example's score.

    ``predictor``: a loaded run (``tuneforge.load``) or a run folder."""

    if not hasattr(predictor, "units"):
        model_version = model_version or Path(predictor).resolve().name
        predictor = load(predictor, precision="fp32")
    examples = predictor.read_inputs(pool, **(read_options or {}))
    refuse_blank_texts(examples, pool)
    picked, scores = rank_pool(predictor, examples, n, strategy, diversity, aggregate, seed, batch_size)
    chosen = [examples[i] for i in picked]
    results = predictor.predict(chosen, batch_size=batch_size)
    annotations = [predictor.annotation(ex, r) for ex, r in zip(chosen, results)]
    tasks = labelstudio_tasks(annotations, as_predictions=True, model_version=f"tuneforge:{model_version}")
    for task, index in zip(tasks, picked):
        task["meta"] = {"pool_index": index, "pool_line": getattr(examples[index], "line", None),
                        "strategy": strategy, "uncertainty": round(float(scores[index]), 6)}
    return tasks, picked, scores


# ---------------------------------------------------------------------------------------------
# label simulate


@dataclass
class SimulationResult:
    out_dir: Path
    rows: list[dict]  # one per strategy x round (mean and std over seeds)
    runs: list[dict]  # one per strategy x seed x round

    @property
    def files(self) -> dict[str, Path]:
        return {name: self.out_dir / name for name in ("al.csv", "al_runs.csv", "al.png", "al.md")}


def _round_dir(out_dir: Path, strategy: str, seed: int, round_: int) -> Path:
    # round 0 (the same random start for every strategy) is trained once per seed
    return out_dir / (f"start-seed{seed}" if round_ == 0 else f"{strategy}-seed{seed}") / f"round{round_:02d}"


def simulate(config, strategies: Sequence[str] = ("entropy", "margin", "random"), rounds: int = 5, batch: int = 100,
             seeds: int = 1, initial: int | None = None, overrides: list[str] | None = None,
             out: str | Path | None = None, diversity: bool = False, aggregate: str = "sum",
             isolate: bool = False) -> SimulationResult:
    """Replay active learning on the config's training set with its labels hidden.

    Per seed: round 0 trains on ``initial`` (default ``batch``) examples drawn at random (the same
    for every strategy); each later round adds the ``batch`` pool examples the strategy picks with
    the previous round's model and trains a fresh ordinary run (the config's model, method and
    budget; ``training.seed`` = the seed) on everything labelled so far. Dev and test stay the
    config's. Finished rounds are read back, so running the same command again continues.
    """

    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ConfigError(f"--strategies: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(STRATEGIES)}")
    if len(set(strategies)) != len(strategies):
        raise ConfigError(f"--strategies: {', '.join(strategies)} names a strategy twice")
    if rounds < 1 or batch < 1 or seeds < 1 or (initial is not None and initial < 1):
        raise ConfigError("--rounds, --batch, --seeds and --initial must be at least 1")
    tree = _base_tree(config)
    base = config_from_dict(tree, overrides=overrides)
    out_dir = experiment_dir(out, base.output_dir, "the simulation")
    task = make_task(base)
    require(task, Interchange, "tuneforge label simulate")
    data = task.prepare_data()
    pool = data.splits["train"]
    initial = initial or batch
    needed = initial + batch * (rounds - 1)
    if needed > len(pool):
        raise ConfigError(f"--initial {initial} + {rounds - 1} rounds x --batch {batch} = {needed} examples, "
                          f"but the training pool holds {len(pool)}; use fewer rounds or a smaller batch")
    fixed: dict[str, str | None] = {"dev": None, "test": None}
    read_back: dict = {}
    for split in ("dev", "test"):
        if data.splits[split]:
            path = out_dir / "data" / f"{split}.jsonl"
            read_back = task.write_labelled(data.splits[split], path)
            fixed[split] = str(path)
    settled = merge_trees(tree, parse_overrides(overrides))
    labels = data.labels  # the whole pool's label space: annotators know the schema before the labels

    def train_round(labelled: list[int], run_dir: Path, seed: int) -> dict:
        if not run_finished(run_dir):
            train_file = run_dir.parent / "data" / f"{run_dir.name}.jsonl"
            read_back.update(task.write_labelled([pool[i] for i in labelled], train_file))
            member = copy.deepcopy(settled)
            section = {k: v for k, v in (member.get("data") or {}).items() if k not in ("split", "max_train_examples")}
            member["data"] = {**section, **read_back, "train": str(train_file), **fixed, "labels": labels}
            cfg = config_from_dict(member, source="simulation round",
                                   overrides=[f"training.seed={seed}", f"output_dir={run_dir}"])
            train_config(cfg, isolate)
        return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


    runs: list[dict] = []
    base_seed = base.training.seed
    for k in range(seeds):
        seed = base_seed + k
        start = sorted(random.Random(seed).sample(range(len(pool)), initial))
        for strategy in strategies:
            labelled = list(start)
            for r in range(rounds):
                run_dir = _round_dir(out_dir, strategy, seed, r)
                print(f"simulate: {strategy} seed {seed} round {r}: {len(labelled)} labelled ({run_dir})", flush=True)
                metrics = train_round(labelled, run_dir, seed)
                runs.append(_run_row(strategy, seed, r, len(labelled), metrics))
                if r == rounds - 1:
                    break
                picks_file = out_dir / f"{strategy}-seed{seed}" / f"picked-after-round{r:02d}.json"
                if picks_file.exists():
                    picked = json.loads(picks_file.read_text(encoding="utf-8"))["picked"]
                else:
                    taken = set(labelled)
                    remaining = [i for i in range(len(pool)) if i not in taken]
                    predictor = load_predictor(run_dir, precision="fp32")
                    chosen, scores = rank_pool(predictor, [pool[i] for i in remaining], batch, strategy, diversity,
                                               aggregate, seed=seed * 1000 + r)
                    picked = [remaining[i] for i in chosen]
                    atomic_write_text(picks_file, json.dumps({
                        "strategy": strategy, "round": r, "picked": picked,
                        "scores": [round(float(scores[i]), 6) for i in chosen]}))
                labelled = labelled + picked
    rows = summarise(runs)
    result = SimulationResult(out_dir, rows, runs)
    write_outputs(result, base, dict(strategies=list(strategies), rounds=rounds, batch=batch, initial=initial,
                                     seeds=seeds, diversity=diversity, aggregate=aggregate, pool=len(pool)))
    return result


def _run_row(strategy: str, seed: int, round_: int, labelled: int, metrics: dict) -> dict:
    metric = metrics.get("metric_for_best", "f1")
    return {"strategy": strategy, "seed": seed, "round": round_, "labelled": labelled,
            "dev": metrics.get("dev", {}).get(metric), "test": metrics.get("test", {}).get(metric),
            "train_seconds": metrics["training"]["seconds"], "metric": metric}


def summarise(runs: Sequence[dict]) -> list[dict]:
    """One row per strategy and round: mean and sample std over seeds."""

    rows = []
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        for round_ in sorted({r["round"] for r in runs if r["strategy"] == strategy}):
            group = [r for r in runs if r["strategy"] == strategy and r["round"] == round_]
            row = {"strategy": strategy, "round": round_, "labelled": group[0]["labelled"], "seeds": len(group)}
            for key in ("test", "dev"):
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std([g[key] for g in group])
            rows.append(row)
    return rows


def labels_to_reach(rows: Sequence[dict], strategy: str, target: float, key: str = "test_mean") -> float | None:
    """Labelled examples at which ``strategy``'s mean curve first reaches ``target`` (linear between
    rounds); None if it never does."""
    curve = [(r["labelled"], r[key]) for r in rows if r["strategy"] == strategy and r[key] is not None]
    previous = None
    for n, value in curve:
        if value >= target:
            if previous is None or previous[1] >= target:
                return float(n)
            (n0, v0) = previous
            return n0 + (target - v0) * (n - n0) / (value - v0)
        previous = (n, value)
    return None


def savings(rows: Sequence[dict], baseline: str = "random", key: str = "test_mean") -> list[dict]:
    """For each strategy and each baseline round: the labels the strategy needs for the baseline's
    score there, and the share saved."""
    out = []
    base_rows = [r for r in rows if r["strategy"] == baseline and r[key] is not None]
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        if strategy == baseline:
            continue
        for b in base_rows:
            needed = labels_to_reach(rows, strategy, b[key], key)
            out.append({"strategy": strategy, "baseline_labelled": b["labelled"], "baseline_score": b[key],
                        "labelled_needed": needed,
                        "saved": None if needed is None else 1.0 - needed / b["labelled"]})
    return out


CSV_COLUMNS = ["strategy", "round", "labelled", "seeds", "test_mean", "test_std", "dev_mean", "dev_std"]
RUN_COLUMNS = ["strategy", "seed", "round", "labelled", "test", "dev", "train_seconds"]


def render_png(rows: Sequence[dict], metric: str = "f1") -> bytes:
    """Test score (mean, band = ± std over seeds) against labelled examples, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        curve = [r for r in rows if r["strategy"] == strategy and r["test_mean"] is not None]
        if not curve:
            continue
        x = np.array([r["labelled"] for r in curve])
        y = np.array([r["test_mean"] for r in curve])
        s = np.array([r["test_std"] or 0.0 for r in curve])
        ax.plot(x, y, marker="o", label=strategy, linestyle="--" if strategy == "random" else "-")
        ax.fill_between(x, y - s, y + s, alpha=0.15)
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel(f"test {metric} (mean ± std over seeds)")
    ax.set_title("Active learning: score against labels bought")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return png_bytes(fig, close=True)


def format_markdown(result: SimulationResult, base, settings: dict) -> str:
    metric = result.runs[0]["metric"] if result.runs else "f1"
    lines = [
        "# Active learning simulation", "",
        f"Model `{base.model.name_or_path}`, method `{base.method.name}`, training pool `{base.data.train}` "
        f"({settings['pool']} examples, labels hidden from the strategies); start {settings['initial']} random "
        f"examples, then {settings['rounds'] - 1} rounds of {settings['batch']}; {settings['seeds']} seed(s) from "
        f"{base.training.seed}; aggregate `{settings['aggregate']}`" + (", diversity on" if settings["diversity"] else "")
        + f"; each round a fresh run of {base.training.epochs} epochs. Test {metric}, mean ± std over seeds.", "",
        "| labelled | " + " | ".join(settings["strategies"]) + " |",
        "|---|" + "---|" * len(settings["strategies"]),
    ]
    for n in sorted({r["labelled"] for r in result.rows}):
        cells = []
        for strategy in settings["strategies"]:
            row = next((r for r in result.rows if r["strategy"] == strategy and r["labelled"] == n), None)
            cells.append(_pm(row["test_mean"], row["test_std"], 4) if row else "—")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    if "random" in settings["strategies"] and len(settings["strategies"]) > 1:
        lines += ["", "Labels needed to reach random sampling's mean test score (linear between rounds):", "",
                  "| strategy | random's labels | random's score | strategy needs | saved |", "|---|---|---|---|---|"]
        for s in savings(result.rows):
            needed = "not reached" if s["labelled_needed"] is None else f"{s['labelled_needed']:.0f}"
            saved = "—" if s["saved"] is None else f"{100 * s['saved']:.0f}%"
            lines.append(f"| {s['strategy']} | {s['baseline_labelled']} | {s['baseline_score']:.4f} | {needed} | {saved} |")
    lines += ["", "![score against labelled examples](al.png)", ""]
    return "\n".join(lines)


def write_outputs(result: SimulationResult, base, settings: dict) -> None:
    out = result.out_dir
    atomic_write_text(out / "al.csv", rows_to_csv(result.rows, CSV_COLUMNS))
    atomic_write_text(out / "al_runs.csv", rows_to_csv(result.runs, RUN_COLUMNS))
    atomic_write_bytes(out / "al.png", render_png(result.rows, result.runs[0]["metric"] if result.runs else "f1"))
    atomic_write_text(out / "al.md", format_markdown(result, base, settings))
