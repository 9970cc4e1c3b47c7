"""The one driver: any task, any method, from a validated config to a finished run folder.

    task.prepare_data -> task.build_model -> method.prepare -> task.encode -> training.loop (+ callbacks)
    -> the saved best model, loaded back as the task's predictor -> dev/test scores -> run folder

Nothing here knows which task it runs: every task-specific step is a method of the task object
(:mod:`tuneforge.tasks.base`), every method-specific one a method of the adaptation method.

A run folder (``output_dir``) holds:
    config.yaml        the validated config that produced it
    model/             the saved model (see :mod:`tuneforge.artifacts`)
    metrics.json       dev/test metrics, data report, training statistics
    report.txt         the task's reports for dev and test
    curves.png         train loss per logged step, dev metric per epoch, best epoch marked
    logs/              experiment-tracker files (``training.report_to``)
    ...                the task's own files (test predictions, confusion matrices)
    checkpoint/        resumable state while training runs; removed when the run completes
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .artifacts import MODEL_DIR, load_predictor, save_model
from .config import Config, TrainingConfig, load_config
from .errors import ConfigError, TuneforgeError
from .methods import count_parameters, get_method
from .paths import atomic_write_bytes, atomic_write_text
from .tasks import Task, make_task
from .training.callbacks import Callback
from .training.checkpoint import CHECKPOINT_DIR
from .training.loop import LoopResult, resolve_precision, train_loop
from .training.regimes import regime_callbacks


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict


def metric_for_best(training: TrainingConfig, task: Task) -> tuple[str, bool]:
    """The dev metric that picks the best checkpoint and its direction: the config's, else the task's.

    A metric the config names without a direction is better when larger, unless its name ends in
    ``loss`` (as the Hugging Face Trainer decides).
    """
    name = training.metric_for_best or task.metric_for_best
    if training.greater_is_better is not None:
        return name, training.greater_is_better
    if name == task.metric_for_best:
        return name, task.greater_is_better
    return name, not name.endswith("loss")


def train_run(cfg: Config, resume: bool = False, overwrite: bool = False,
              callbacks: Sequence[Callback] = ()) -> RunResult:
    """Train as ``cfg`` says into ``cfg.output_dir``; returns the run folder and its metrics."""
    run_dir = Path(cfg.output_dir)
    if resume and (run_dir / "config.yaml").exists():
        saved = load_config(run_dir / "config.yaml")
        if saved.model_dump(exclude={"output_dir"}) != cfg.model_dump(exclude={"output_dir"}):
            raise ConfigError(
                f"{run_dir / 'config.yaml'}: the config differs from the one this run started with; "
                "resume with the same config or start a new output_dir"
            )
    _prepare_run_dir(run_dir, resume, overwrite)
    atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())

    task = make_task(cfg)
    data = task.prepare_data()
    torch.manual_seed(cfg.training.seed)  # the new head's initialisation is part of the seed's promise
    tokenizer = task.load_tokenizer()
    model = task.build_model(data.labels)
    method = get_method(cfg.method.name)
    model = method.prepare(model, cfg.method)
    trainable, total = count_parameters(model)

    items, lengths, stats = task.encode(tokenizer, data.splits["train"], data.labels)
    data.report["encoding"] = stats.describe()
    print(f"data: {task.data_summary(data)}; {stats.describe()}")
    passes = passes_for_min_steps(cfg.training, len(items))
    if passes > 1:
        items, lengths = list(items) * passes, list(lengths) * passes
        data.report["passes_per_epoch"] = passes
        print(f"training.min_steps {cfg.training.min_steps}: each epoch passes over the {len(items) // passes} "
              f"training inputs {passes} times")
    print(f"model: {cfg.model.name_or_path} · method {method.name} · {trainable:,} of {total:,} parameters train")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.training.precision, device)
    meta = {"task": task.name, **task.model_meta(data.labels), **method_meta(cfg)}
    dev = data.splits["dev"]

    def evaluate_dev(current_model) -> dict:
        return task.evaluate_dev(current_model, tokenizer, dev, meta, precision)

    def save_best(current_model) -> None:
        task.before_save(current_model, tokenizer, meta, precision)
        save_model(run_dir / MODEL_DIR, current_model, tokenizer, method, meta)

    metric, greater = metric_for_best(cfg.training, task)
    if cfg.training.epochs == 0:
        # Nothing to train (a zero-shot model, a nearest-prototype head): the model as built is the model.
        print("training.epochs 0: no training; the model as built is saved and scored")
        save_best(model)
        result = LoopResult(best_score=None, best_epoch=None, epochs_run=0, stopped_early=False,
                            precision=precision, metric_for_best=metric)
    else:
        result = train_loop(
            model, items, lengths, task.collator(tokenizer), cfg.training, run_dir,
            evaluate_dev if dev else None, save_best, resume=resume,
            callbacks=[*task.callbacks(), *regime_callbacks(cfg, task), *callbacks], compute_loss=task.loss,
            metric_for_best=metric, greater_is_better=greater, tracker_config=_flat_config(cfg),
        )

    # Final numbers come from the saved best model, read back from disk: what users will load.
    predictor = load_predictor(run_dir)
    metrics = _run_metrics(cfg, method.name, trainable, total, result, data.report)
    metrics.update(task.final_metrics(predictor))
    report_parts = []
    for name in ("dev", "test"):
        examples = data.splits[name]
        if not examples:
            continue
        metrics[name], report, predictions = predictor.evaluate_examples(examples, cfg.training.eval_batch_size)
        report_parts.append(f"== {name} ==\n" + report)
        task.write_outputs(run_dir, name, examples, predictions, metrics[name], predictor)
    from .evaluation.plots import render_training_curves_png

    if result.epochs_run:
        atomic_write_bytes(run_dir / "curves.png", render_training_curves_png(result, cfg.training.epochs))
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False))
    atomic_write_text(run_dir / "report.txt", "\n".join(report_parts))
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    return RunResult(run_dir=run_dir, metrics=metrics)


def passes_for_min_steps(training: TrainingConfig, n_items: int) -> int:
    """How many times an epoch goes over the training inputs so that ``training.min_steps`` updates
    happen in all (1 without ``min_steps``). A few-shot set of 24 texts is two batches an epoch;
    repeating it inside the epoch, rather than running dozens of epochs, keeps dev evaluation and
    checkpoints once per epoch as configured."""
    if not training.min_steps or not n_items or not training.epochs:
        return 1
    passes = 1
    while True:
        batches = math.ceil(n_items * passes / training.batch_size)
        if math.ceil(batches / training.gradient_accumulation_steps) * training.epochs >= training.min_steps:
            return passes
        passes += 1


def method_meta(cfg: Config) -> dict:
    """What a saved model needs to be rebuilt when its method stores only what changed."""
    return {"base_model": cfg.model.model_dump(mode="json"), "method_config": cfg.method.model_dump(mode="json")}


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        if overwrite:
            shutil.rmtree(run_dir)
        elif resume:
            if (run_dir / "metrics.json").exists() and not (run_dir / CHECKPOINT_DIR).exists():
                raise TuneforgeError(f"{run_dir}: this run already finished; nothing to resume")
            return
        else:
            raise TuneforgeError(
                f"{run_dir}: output folder is not empty; pass --resume to continue it, "
                "--overwrite to replace it, or set output_dir to a new folder"
            )
    run_dir.mkdir(parents=True, exist_ok=True)


def _run_metrics(cfg: Config, method: str, trainable: int, total: int, result: LoopResult, data_report: dict) -> dict:
    """The part of metrics.json every task writes: what ran, how it went, how fast."""
    return {
        "task": cfg.task.type,
        "model": cfg.model.name_or_path,
        "method": method,
        "parameters": {"trainable": trainable, "total": total},
        "metric_for_best": result.metric_for_best,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "history": result.history,
        "data": data_report,
        "training": {
            "seconds": round(result.train_seconds, 3),
            "samples": result.train_samples,
            "tokens": result.train_tokens,
            "samples_per_second": result.train_samples / result.train_seconds if result.train_seconds else None,
            "tokens_per_second": result.train_tokens / result.train_seconds if result.train_seconds else None,
            "peak_rss_mb": round(result.peak_rss_mb, 1),
            "precision": result.precision,
        },
    }


def _flat_config(cfg: Config) -> dict:
    """The config as ``{"training.learning_rate": 1e-4, ...}`` scalars, for trackers' hyperparameter tables."""
    flat: dict = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk("", cfg.model_dump(mode="json"))
    return flat
