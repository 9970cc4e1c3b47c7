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

import json
import time
from pathlib import Path

from .. import api
from ..artifacts.model_folder import read_meta
from ..artifacts.paths import atomic_write_text
from ..driver import build_prepared_model
from ..errors import ConfigError
from ..loading import load_model, load_predictor
from ..tasks import make_task
from ..training import continual as cl
from ..training.checkpoint import CHECKPOINT_DIR
from .continual_plan import SCORES_FILE, Plan, load_plan  # noqa: F401 - load_plan: the command's entry, with run_continual
from .continual_report import write_report

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
        task = make_task(plan.stage_config(k, seed, plan.out_dir / "unused", previous))
        return [cl.LwF(task, load_teacher=lambda device: load_model(previous, device=device)[0], weight=o.lwf.weight,
                       temperature=o.lwf.temperature)]
    raise ConfigError(f"unknown strategy {strategy!r}")


def _ewc_state(plan: Plan, seed: int, k: int) -> Path:
    """EWC's running Fisher and anchor after stage ``k`` of the ewc sequence (computed once, then read)."""
    import torch


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
