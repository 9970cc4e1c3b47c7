"""The one driver: any task, any method, from a validated config to a finished run folder.

    task.prepare_data -> task.build_model -> method.prepare -> task.encode -> training.loop (+ callbacks)
    -> the saved best model, loaded back as the task's predictor -> dev/test scores -> run folder

With ``model.init_from`` the run continues a finished one (:func:`build_prepared_model`): its labels
come first, the data's new labels are appended, and its trained tensors fill the new model (the head's
old rows bit for bit). Callbacks' data hook ``on_train_data`` runs before encoding (joint training, replay).

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
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .artifacts import run_folder
from .runtime import distributed
from .artifacts.model_folder import META_FILE, MODEL_DIR, portable_base_path, read_meta, save_model
from .loading import continue_from, load_predictor
from .config import Config, load_config
from .schema import TrainingConfig
from .errors import ConfigError, TuneforgeError
from .methods import count_parameters, get_method
from .runtime.models import check_max_length
from .artifacts.paths import atomic_write_bytes, atomic_write_text, is_disk_full
from .tasks import Task, get_task, make_task
from .tasks.predictor import evaluate_across_processes
from .training.callbacks import Callback, TrainData
from .training.checkpoint import CHECKPOINT_DIR
from .runtime.precision import resolve_precision
from .training.batch import LoopTask
from .training.loop import LoopResult, train_loop
from .training.regimes import regime_callbacks
from .data.hf_datasets import dataset_format
from .data.vocab import extend_for_run
from .runtime.extras import require_extra
from .runtime.memory import peak_rss_mb
from .training.tracking import check_trackers
from .evaluation.plots import render_training_curves_png


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


def check_optional_dependencies(cfg: Config) -> None:
    """Every optional dependency the config needs is installed, before the run folder, data or model is
    touched: what the task needs (``Task.REQUIRES``: setfit, the ``fewshot`` extra), ``training.report_to``
    trackers (``tracking``), Parquet / Arrow / ``hf:`` data (``hf``)."""
    for module, extra in get_task(cfg.task.type).REQUIRES:
        require_extra(f"task.type: {cfg.task.type}", module, extra)
    check_trackers(cfg.training.report_to)
    for split in ("train", "dev", "test"):
        path = getattr(cfg.data, split, None)
        if path and dataset_format(path):
            require_extra(f"data.{split}: {path}: Parquet, Arrow and hf: data are read with the datasets package",
                          "datasets", "hf")


def train_run(cfg: Config, resume: bool = False, overwrite: bool = False,
              callbacks: Sequence[Callback] = ()) -> RunResult:
    """Train as ``cfg`` says into ``cfg.output_dir``; returns the run folder and its metrics.

    In a run of several processes every process calls this: each reads the data and builds the model;
    process 0 alone prepares the run folder, writes files and prints (:mod:`tuneforge.runtime.distributed`);
    every process returns the same metrics.
    """
    check_optional_dependencies(cfg)
    if distributed.launched_distributed():
        distributed.init_processes()
    run_dir = Path(cfg.output_dir)
    # Process 0 alone locks, checks and plans the folder; every process trains into the same target.
    with run_folder.locked(run_dir) if distributed.is_main() else nullcontext():
        def plan() -> str:
            if resume:
                check_resumable_config(run_dir, cfg)
            # an --overwrite run trains beside the old one and replaces it only when it has finished
            return str(run_folder.plan(run_dir, resume, overwrite)[0])

        target = Path(distributed.main_first(plan))
        fresh = not target.exists()
        try:
            metrics = _train_into(cfg, target, resume, callbacks)
        except TuneforgeError as exc:
            # a full disk: what this run began is removed (it holds no checkpoint), so the rerun after
            # freeing space starts as on an empty folder and the space goes back
            if fresh and distributed.is_main() and is_disk_full(exc.__cause__ or exc) \
                    and run_folder.inspect(target) == run_folder.FAILED_START:
                shutil.rmtree(target, ignore_errors=True)
            raise
        if distributed.is_main():
            run_folder.commit(target, run_dir)
        distributed.barrier()  # the run folder is in place before any process returns
    return RunResult(run_dir=run_dir, metrics=metrics)


def _train_into(cfg: Config, run_dir: Path, resume: bool, callbacks: Sequence[Callback]) -> dict:
    """Everything is checked (data, labels, model, window size) before the first file is written."""
    task = make_task(cfg)
    known = initial_labels(cfg, task)
    data = task.prepare_data(known_labels=known)
    requested = cfg
    if cfg.vocab is not None:
        # the extended model (RUN/vocab) becomes the base everything below loads, saves and records
        task.cfg = cfg = distributed.main_first(lambda: extend_for_run(cfg, task, data, run_dir))
    tokenizer = task.load_tokenizer()
    method = get_method(cfg.method.name)
    model = build_prepared_model(cfg, task, data.labels, known, tokenizer)
    trainable, total = count_parameters(model)
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", requested.to_yaml())  # as given (resume compares it)

    # data hooks: a callback may add training examples (joint training) or encode its own (replay)
    train = TrainData(list(data.splits["train"]), data.labels,
                      lambda examples: task.encode(tokenizer, examples, data.labels)[0])
    for callback in callbacks:
        callback.on_train_data(train)
    if len(train.examples) != len(data.splits["train"]):
        data.report["train_examples_added_by_callbacks"] = len(train.examples) - len(data.splits["train"])
    items, lengths, stats = task.encode(tokenizer, train.examples, data.labels)
    data.report["encoding"] = stats.describe()
    say = distributed.print_main
    say(f"data: {task.data_summary(data)}; {stats.describe()}")
    passes = passes_for_min_steps(cfg.training, len(items))
    if passes > 1:
        items, lengths = list(items) * passes, list(lengths) * passes
        data.report["passes_per_epoch"] = passes
        say(f"training.min_steps {cfg.training.min_steps}: each epoch passes over the {len(items) // passes} "
            f"training inputs {passes} times")
    say(f"model: {cfg.model.name_or_path} · method {method.name} · {trainable:,} of {total:,} parameters train")
    if distributed.world_size() > 1:
        n = distributed.world_size()
        say(f"processes: {n} · each takes 1/{n} of every batch of {cfg.training.batch_size} "
            f"(about {math.ceil(cfg.training.batch_size / n)} a process)")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.training.precision, device)
    meta = {"task": task.name, **task.model_meta(data.labels), **method_meta(cfg)}
    dev = data.splits["dev"]

    def evaluate_dev(current_model) -> dict:
        return task.evaluate_dev(current_model, tokenizer, dev, meta, precision)

    def save_best(current_model, state_dict: dict | None = None) -> None:
        task.before_save(current_model, tokenizer, meta, precision)
        save_model(run_dir / MODEL_DIR, current_model, tokenizer, method, meta, state_dict)

    task.before_train(model, tokenizer, items, data, precision)
    metric, greater = metric_for_best(cfg.training, task)
    if cfg.training.epochs == 0:
        # Nothing to train (a zero-shot model, a nearest-prototype head): the model as built is the model.
        say("training.epochs 0: no training; the model as built is saved and scored")
        if distributed.is_main():
            save_best(model)
        result = LoopResult(best_score=None, best_epoch=None, epochs_run=0, stopped_early=False,
                            precision=precision, metric_for_best=metric)
    else:
        loop_task = LoopTask(collate=task.collator(tokenizer), save_best=save_best,
                             evaluate=evaluate_dev if dev else None, compute_loss=task.loss,
                             loss_units=task.loss_units, metric_for_best=metric, greater_is_better=greater)
        result = train_loop(
            model, items, lengths, cfg.training, run_dir, loop_task, precision=precision, resume=resume,
            callbacks=[*task.callbacks(), *regime_callbacks(cfg, task), *callbacks],
            tracker_config=_flat_config(cfg),
        )

    # Final numbers come from the saved best model, read back from disk: what users will load.
    # Process 0 saved it; the others score with it too when they can see the run folder (a shared
    # filesystem), else process 0 scores alone.
    distributed.barrier()
    scorers = distributed.gather_in_order([(run_dir / MODEL_DIR / META_FILE).exists()])
    metrics = _run_metrics(requested, method.name, trainable, total, result, data.report)
    if all(scorers) or distributed.is_main():
        device = str(distributed.init_processes().device) if distributed.world_size() > 1 else None
        # scored as users will predict: the default inference precision, unless the config pins one
        predictor = load_predictor(run_dir, device, precision=cfg.training.precision)
        metrics["inference"] = dict(predictor.runtime)  # what scored dev/test (and what `predict` runs by default)
        metrics.update(task.final_metrics(predictor))
    report_parts, outputs = [], []
    for name in ("dev", "test"):
        examples = data.splits[name]
        if not examples:
            continue
        started = time.perf_counter()
        if all(scorers):
            metrics[name], report, predictions = evaluate_across_processes(
                predictor, examples, cfg.training.eval_batch_size)
        elif distributed.is_main():
            metrics[name], report, predictions = predictor.evaluate_examples(examples, cfg.training.eval_batch_size)
        else:
            continue
        seconds = time.perf_counter() - started
        # what a prediction costs, whatever the model family (compare's inference-time column)
        metrics.setdefault("scoring", {})[name] = {"seconds": round(seconds, 3), "examples": len(examples),
                                                   "ms_per_example": round(1000 * seconds / len(examples), 3)}
        report_parts.append(f"== {name} ==\n" + report)
        outputs.append((name, examples, predictions))
    if distributed.is_main():
        for name, examples, predictions in outputs:
            task.write_outputs(run_dir, name, examples, predictions, metrics[name], predictor)

        metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)  # the whole run: loading, training and scoring
        if result.epochs_run:
            atomic_write_bytes(run_dir / "curves.png", render_training_curves_png(result, cfg.training.epochs))
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False))
        atomic_write_text(run_dir / "report.txt", "\n".join(report_parts))
        shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    return distributed.broadcast(metrics)


def check_resumable_config(run_dir: Path, cfg) -> None:
    """A resumed run must continue with the config it started with; name the keys that differ."""
    saved_file = Path(run_dir) / "config.yaml"
    if not saved_file.exists():
        return
    saved = load_config(saved_file).model_dump(mode="json", exclude={"output_dir"})
    diffs = run_folder.config_differences(saved, cfg.model_dump(mode="json", exclude={"output_dir"}))
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise ConfigError(
            f"{saved_file}: the config differs from the one this run started with: {'; '.join(diffs[:3])}{more}; "
            "resume with the same config or start a new output_dir"
        )


def initial_labels(cfg: Config, task: Task) -> list[str] | None:
    """The labels of the run ``model.init_from`` continues (None without one), after checking that it
    can be continued: the same task, base model and method settings."""
    run = cfg.model.init_from
    if not run:
        return None
    meta = read_meta(run)
    if meta.get("task", task.name) not in (task.name, *task.CONTINUES):
        raise ConfigError(f"model.init_from: {run} is a {meta['task']} model; a {task.name} run continues "
                          + " or ".join((task.name, *task.CONTINUES)) + " runs")
    base = (meta.get("base_model") or {}).get("name_or_path")
    if base is not None and base != portable_base_path(cfg.model.name_or_path):
        raise ConfigError(f"model.init_from: {run} was trained from {base}, not {cfg.model.name_or_path}; "
                          "set model.name_or_path to its base model")
    saved_method = meta.get("method_config") or {"name": meta.get("method", "full")}
    if saved_method != cfg.method.model_dump(mode="json"):
        raise ConfigError(f"model.init_from: {run} was trained with method {json.dumps(saved_method)}; "
                          "continue it with the same method block")
    return list(meta["labels"])


def build_prepared_model(cfg: Config, task: Task, labels: list[str], known: list[str] | None = None,
                         tokenizer=None):
    """The model as training starts: the task's model for ``labels`` with the method applied, and with
    ``model.init_from``, the continued run's trained tensors in it (its ``known`` labels' head rows kept).
    With ``tokenizer``, ``encoding.max_length`` is checked against the model's position table first."""
    torch.manual_seed(cfg.training.seed)  # the new head's initialisation is part of the seed's promise
    model = task.build_model(labels)
    if tokenizer is not None:
        check_max_length(model.config, tokenizer, cfg.encoding.max_length)  # before a long input crashes training
    model = get_method(cfg.method.name).prepare(model, cfg.method)
    if cfg.model.init_from:
        continue_from(model, cfg.model.init_from, len(known or []))
    return model


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
