"""``tuneforge continual``: train stage after stage with each strategy, and measure what is forgotten.

A continual config is an ordinary run config plus a ``continual:`` block::

    continual:
      stages:                 # in order; or the path of a YAML list of them (what `continual split` writes)
        - {name: s1, train: stages/s1/train.conll, dev: stages/s1/dev.conll, test: stages/s1/test.conll}
        - {name: s2, train: ..., dev: ..., test: ...}
      strategies: [naive, replay, ewc, lwf, joint]
      seeds: 3
      replay: {memory_size: 200, per_batch: 4}
      ewc: {lambda: 1000.0, gamma: 1.0, fisher_examples: 256}
      lwf: {weight: 1.0, temperature: 2.0}

Every stage is an ordinary run (:func:`tuneforge.api.train`) of the config with that stage's data; from
the second stage on it continues the previous stage's model (``model.init_from``: its weights, its labels
first and the new ones appended), with the strategy's callbacks (:mod:`tuneforge.training.continual`).
The first stage has nothing earlier to protect, so every strategy would train it identically: it is
trained once per seed and shared. Layout of OUT (``--out``, else the config's ``output_dir``)::

    seed42/stage1-s1/                 the shared first stage (a run folder)
    seed42/<strategy>/stage2-s2/ ...  each later stage of each strategy (run folders)
    seed42/ewc/ewc-after-stage1.safetensors   EWC's running Fisher and anchor after a stage
    seed42/initial_scores.json        the untrained model's scores (baseline of forward transfer)
    RUN/continual_scores.json         that run's score on every stage's test set, and its time
    continual.md · continual.csv · continual-heatmap-<strategy>.png · continual-old-stages.png

Run the same command again after an interruption: finished stages are read back, an interrupted one
resumes from its checkpoint, and missing scores or Fisher files are computed.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .multirun import experiment_dir, mean_std as _mean_std, pm as _pm
from .config import Config, _merge, config_from_dict, parse_overrides, read_config_tree
from .errors import ConfigError, TuneforgeError
from .paths import atomic_write_bytes, atomic_write_text
from .training.checkpoint import CHECKPOINT_DIR

STRATEGIES = ("naive", "replay", "ewc", "lwf", "joint")
SCORES_FILE = "continual_scores.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StageSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    train: str
    dev: Optional[str] = None
    test: Optional[str] = None


class ReplayOptions(_Strict):
    memory_size: int = Field(default=200, ge=1, description="examples kept from all earlier stages (reservoir)")
    per_batch: int = Field(default=4, ge=1, description="memory examples added to every batch")


class EWCOptions(_Strict):
    lam: float = Field(default=3e4, ge=0, alias="lambda", description="weight of the quadratic penalty (not tuned)")
    gamma: float = Field(default=1.0, ge=0, le=1, description="online EWC: decay of earlier stages' Fisher")
    fisher_examples: int = Field(default=256, ge=1, description="training inputs the Fisher is estimated on")


class LwFOptions(_Strict):
    weight: float = Field(default=1.0, ge=0)
    temperature: float = Field(default=2.0, gt=0)


class ContinualOptions(_Strict):
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
            from .tasks import make_task

            cfg = self.stage_config(k, self.seeds[0], self.out_dir / "unused", None)
            task = make_task(cfg)
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
    tree = _merge(tree, parse_overrides(overrides))
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


# ---------------------------------------------------------------------------------------------
# Running


def _finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").exists() and not (run_dir / CHECKPOINT_DIR).exists()


def run_continual(plan: Plan) -> dict:
    """Train every (seed, strategy) sequence, skipping what is done; write the report; return its rows."""
    threads = plan.stage_data(0)[0].cfg.training.threads
    if threads:
        import torch

        torch.set_num_threads(threads)  # the scoring between stages too, not only the loop
    for seed in plan.seeds:
        _initial_scores(plan, seed)
        for strategy in plan.options.strategies:
            for k in range(len(plan.stages)):
                _run_stage(plan, strategy, seed, k)
    return write_report(plan)


def _run_stage(plan: Plan, strategy: str, seed: int, k: int) -> None:
    from . import api

    run_dir = plan.run_dir(strategy, seed, k)
    label = f"continual seed {seed} {strategy if k else 'all strategies'} stage {k + 1}/{len(plan.stages)} " \
            f"({plan.stages[k].name})"
    if not _finished(run_dir):
        resume = run_dir.exists() and any(run_dir.iterdir())
        print(f"{label}: {'resuming' if resume else 'training'} ({run_dir})", flush=True)
        previous = plan.run_dir(strategy, seed, k - 1) if k else None
        cfg = plan.stage_config(k, seed, run_dir, previous)
        callbacks = _strategy_callbacks(plan, strategy, seed, k, previous) if k else []
        started = time.perf_counter()
        api.train(cfg, resume=resume, callbacks=callbacks)
        atomic_write_text(run_dir / "continual_seconds.json", json.dumps(
            {"seconds": time.perf_counter() - started, "resumed": resume}))
    else:
        print(f"{label}: done ({run_dir})", flush=True)
    if not (run_dir / SCORES_FILE).exists():
        _score_run(plan, run_dir)
    if strategy == "ewc" and k < len(plan.stages) - 1:
        _ewc_state(plan, seed, k)


def _strategy_callbacks(plan: Plan, strategy: str, seed: int, k: int, previous: Path) -> list:
    from .training import continual as cl

    o = plan.options
    if strategy == "naive":
        return []
    if strategy == "replay":
        memory = cl.ReservoirMemory(o.replay.memory_size, seed)
        for j in range(k):
            memory.extend(plan.stage_data(j)[1].splits["train"])
        return [cl.Replay(memory.items, o.replay.per_batch, seed)]
    if strategy == "joint":
        return [cl.Joint([ex for j in range(k) for ex in plan.stage_data(j)[1].splits["train"]])]
    if strategy == "ewc":
        return [cl.EWC.from_file(_ewc_state(plan, seed, k - 1), o.ewc.lam)]
    if strategy == "lwf":
        from .tasks import make_task

        task = make_task(plan.stage_config(k, seed, plan.out_dir / "unused", previous))
        return [cl.LwF(task, teacher_run=previous, weight=o.lwf.weight, temperature=o.lwf.temperature)]
    raise ConfigError(f"unknown strategy {strategy!r}")


def _ewc_state(plan: Plan, seed: int, k: int) -> Path:
    """EWC's running Fisher and anchor after stage ``k`` of the ewc sequence (computed once, then read)."""
    import torch

    from .artifacts import read_meta
    from .driver import build_prepared_model
    from .tasks import make_task
    from .training import continual as cl

    path = plan.out_dir / f"seed{seed}" / "ewc" / f"ewc-after-stage{k + 1}.safetensors"
    if path.exists():
        return path
    started = time.perf_counter()
    run_dir = plan.run_dir("ewc", seed, k)
    labels = read_meta(run_dir)["labels"]
    cfg = plan.stage_config(k, seed, plan.out_dir / "unused", run_dir)  # "continue" the stage: its weights
    task = make_task(cfg)
    data = task.prepare_data(known_labels=labels)
    model = build_prepared_model(cfg, task, labels, labels)
    tokenizer = task.load_tokenizer()
    items, _, _ = task.encode(tokenizer, data.splits["train"], labels)
    items = items[: plan.options.ewc.fisher_examples]
    collate, size = task.collator(tokenizer), cfg.training.batch_size
    batches = []
    for i in range(0, len(items), size):
        batch = collate(items[i: i + size])
        batch.pop("n_tokens")
        batches.append(batch)
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)
    fisher = cl.diagonal_fisher(model, batches, task.loss)
    previous = None
    if k > 0:
        saved = cl.EWC.from_file(_ewc_state(plan, seed, k - 1), 0.0)
        previous = saved.fisher
    fisher = cl.online_fisher(previous, fisher, plan.options.ewc.gamma)
    anchor = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    cl.save_ewc_state(path, fisher, anchor)
    seconds_file = run_dir / "continual_seconds.json"
    timing = json.loads(seconds_file.read_text()) if seconds_file.exists() else {}
    timing["ewc_fisher_seconds"] = time.perf_counter() - started
    atomic_write_text(seconds_file, json.dumps(timing))
    return path


def _score_run(plan: Plan, run_dir: Path) -> None:
    """The run's model on every stage's test set (each scored on the labels that stage annotates)."""
    from .artifacts import load_predictor

    predictor = load_predictor(run_dir)
    scores = {}
    for k, stage in enumerate(plan.stages):
        task, data = plan.stage_data(k)
        if data.splits["test"]:
            scores[stage.name] = predictor.evaluate_on(data.splits["test"], data.labels,
                                                       task.cfg.training.eval_batch_size)
    atomic_write_text(run_dir / SCORES_FILE, json.dumps({"test": _lean(scores)}, indent=1))


def _lean(scores: dict) -> dict:
    return {name: {k: v for k, v in m.items() if isinstance(v, (int, float))} for name, m in scores.items()}


def _initial_scores(plan: Plan, seed: int) -> dict:
    """Scores of the untrained model (pre-trained body, a fresh head for every stage's labels): the
    baseline ``b_j`` of forward transfer."""
    import torch

    path = plan.out_dir / f"seed{seed}" / "initial_scores.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    first_task, _ = plan.stage_data(0)
    labels: list[str] = []
    for k in range(len(plan.stages)):
        labels = first_task.extend_labels(labels, plan.stage_data(k)[1].labels)
    torch.manual_seed(seed)
    model = first_task.build_model(labels)
    tokenizer = first_task.load_tokenizer()
    meta = {"task": first_task.name, **first_task.model_meta(labels)}
    predictor = first_task.predictor(model, tokenizer, meta, "fp32")
    scores = {}
    for k, stage in enumerate(plan.stages):
        task, data = plan.stage_data(k)
        if data.splits["test"]:
            scores[stage.name] = predictor.evaluate_on(data.splits["test"], data.labels, task.cfg.training.eval_batch_size)
    result = {"test": _lean(scores)}
    atomic_write_text(path, json.dumps(result, indent=1))
    return result


# ---------------------------------------------------------------------------------------------
# Report


def _sequence(plan: Plan, strategy: str, seed: int) -> dict | None:
    """One finished sequence's matrix, summary and time; None while any stage is unfinished."""
    from .training.continual import sequence_summary

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
    from .tasks import get_task

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
    from .evaluation.plots import render_old_stage_lines_png, render_stage_matrix_png

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


# ---------------------------------------------------------------------------------------------
# Building stages from one data set


def split_stages(config: str | Path, by: str, out: str | Path, groups: list[list[str]] | None = None,
                 n_stages: int | None = None, files: Sequence[str] | None = None, seed: int = 42,
                 overrides: list[str] | None = None) -> Path:
    """Write stage folders (``OUT/<name>/train|dev|test``), ``OUT/stages.yaml`` and ``OUT/continual.yaml``
    (the config plus a ``continual:`` block naming the stages); returns the latter.

    - ``by="type"`` / ``"label"``: the config's data (with its dev/test or ``data.split``) is cut into stages
      by label group (``groups``, else ``n_stages`` groups dealt round-robin by frequency). NER: the
      training sentences are dealt at random into disjoint stage portions, each annotating only its
      stage's types (others become O); dev and test keep every sentence, annotated likewise. Classifiers:
      each stage keeps the examples of its labels.
    - ``by="file"``: each of ``files`` is one stage (same labels, new data), cut by ``data.split``
      (default 0.8/0.1/0.1) with ``data.split_seed``.
    """
    import random

    from .config import load_config
    from .data.readers import split_examples
    from .tasks import make_task

    out = Path(out)
    cfg = load_config(config, overrides)
    task = make_task(cfg)
    stages: list[dict] = []
    if by == "file":
        if not files or len(files) < 2:
            raise ConfigError("--files: give at least two data files, one a stage")
        ratios = cfg.data.split or (0.8, 0.1, 0.1)
        for number, name in enumerate(files, 1):
            examples = task.read(name)
            parts = dict(zip(("train", "dev", "test"), split_examples(examples, ratios, cfg.data.split_seed)))
            task.normalise(parts, {})
            stages.append(_write_stage(task, out, f"s{number}-{Path(name).stem}", parts))
    elif by in ("type", "label"):
        data = task.prepare_data()
        splits = data.splits
        if cfg.data.max_train_examples:
            raise ConfigError("data.max_train_examples: remove it for `continual split` (it would cut the data "
                              "before the stages are made); set it on the continual run instead")
        kinds = task.label_kinds(data.labels)
        groups = groups or _deal_groups(task, splits["train"], kinds, n_stages or 2)
        unknown = [k for g in groups for k in g if k not in kinds]
        if unknown:
            raise ConfigError(f"--groups: {unknown[0]!r} is not a label of the training data ({', '.join(kinds)})")
        order = list(range(len(splits["train"])))
        random.Random(seed).shuffle(order)
        portions = [order[i::len(groups)] for i in range(len(groups))] if task.stages_relabel else None
        for number, group in enumerate(groups, 1):
            labels = task.labels_of_kinds(data.labels, group)
            train = splits["train"] if portions is None else [splits["train"][i] for i in sorted(portions[number - 1])]
            parts = {name: task.restrict_examples(part, labels) for name, part in
                     (("train", train), ("dev", splits["dev"]), ("test", splits["test"]))}
            stages.append(_write_stage(task, out, f"s{number}-" + "-".join(g.replace(' ', '_') for g in group[:2])
                                       + ("-etc" if len(group) > 2 else ""), parts, group))
    else:
        raise ConfigError(f"--by {by}: choose type, label or file")
    atomic_write_text(out / "stages.yaml", yaml.safe_dump(
        [{k: v for k, v in s.items() if k in ("name", "train", "dev", "test")} for s in stages], sort_keys=False))
    tree = _merge(read_config_tree(config), parse_overrides(overrides))
    data_block = {k: v for k, v in (tree.get("data") or {}).items() if k not in ("split", "dev", "test", "split_seed")}
    data_block["train"] = str(out / stages[0]["train"])
    tree["data"] = data_block
    tree["continual"] = {"stages": "stages.yaml", "strategies": list(STRATEGIES), "seeds": 1}
    tree["output_dir"] = str(out / "runs")
    path = out / "continual.yaml"
    atomic_write_text(path, "# written by `tuneforge continual split`; stages: stages.yaml\n"
                      + yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))
    for s in stages:
        print(f"stage {s['name']}: {s.get('annotates', 'all labels')} · {s['sizes']}")
    return path


def _deal_groups(task, train: Sequence, kinds: list[str], n: int) -> list[list[str]]:
    """``n`` groups dealt round-robin by frequency (most frequent first), so stages are of similar size."""
    if n < 2 or n > len(kinds):
        raise ConfigError(f"--stages {n}: give between 2 and {len(kinds)} (the labels to share out)")
    counts = task.kind_counts(train)
    ranked = sorted(kinds, key=lambda k: (-counts.get(k, 0), k))
    return [ranked[i::n] for i in range(n)]


def _write_stage(task, out: Path, name: str, parts: dict, group: Sequence[str] | None = None) -> dict:
    folder = out / name
    stage = {"name": name}
    for split in ("train", "dev", "test"):
        if parts.get(split):
            stage[split] = str(task.write_examples(parts[split], folder, split).relative_to(out))
    stage["sizes"] = {split: len(parts.get(split) or []) for split in ("train", "dev", "test")}
    if group:
        stage["annotates"] = ", ".join(group)
    return stage
