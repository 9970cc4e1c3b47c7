"""The Python API: ``train``, ``load``, ``evaluate``. The CLI is a thin layer over these.

A run folder (``output_dir``) holds:
    config.yaml        the validated config that produced it
    model/             Hugging Face format (safetensors), tokenizer, tuneforge.json (labels, windows)
    metrics.json       dev/test metrics, data report, training statistics
    report.txt         entity-level and token-level reports
    test_predictions.tsv   word, gold tag, predicted tag (blank line between sentences)
    checkpoint/        resumable state while training runs; removed when the run completes
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .config import Config, config_from_dict, load_config
from .data.encode import Collator, SequenceCollator, encode_examples, encode_texts
from .data.readers import (
    TextExample,
    TokenExample,
    check_known_labels,
    check_known_tags,
    examples_from_texts,
    normalise_to_iob2,
    read_text_file,
    read_token_file,
    split_examples,
)
from .errors import ConfigError, TuneforgeError
from .methods import count_parameters, get_method
from .models import is_causal_model, load_sequence_classifier, load_token_classifier, load_tokenizer, quantize_for_inference
from .artifacts import MODEL_DIR, load_model, save_model
from .paths import atomic_write_text
from .tasks import text_classification as txc
from .tasks import token_classification as tc
from .tasks.text_classification import TextClassifier
from .training.checkpoint import CHECKPOINT_DIR
from .training.loop import resolve_precision, train_loop


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict


# ---------------------------------------------------------------------------------------------
# Data


def _read_token_split(cfg: Config, path: str, labelled: bool = True) -> list[TokenExample]:
    return read_token_file(
        path, cfg.data.format, cfg.data.token_column, cfg.data.tag_column if labelled else None
    )


def _read_splits(cfg: Config, read) -> tuple[dict[str, list], dict]:
    """train/dev/test by ``read(path)``: given files, or ``train`` cut by ``data.split`` with its seed."""
    train = read(cfg.data.train)
    report: dict = {"train_file": train[0].source if train else cfg.data.train}
    if cfg.data.split is not None:
        train, dev, test = split_examples(train, cfg.data.split, cfg.data.split_seed)
        report["split"] = {"ratios": list(cfg.data.split), "seed": cfg.data.split_seed}
    else:
        dev = read(cfg.data.dev) if cfg.data.dev else []
        test = read(cfg.data.test) if cfg.data.test else []
    return {"train": train, "dev": dev, "test": test}, report


def _cut_train(cfg: Config, splits: dict, report: dict) -> None:
    """``data.max_train_examples``: train on the first N, after the labels were taken from all of them."""
    train = splits["train"]
    if cfg.data.max_train_examples is not None and len(train) > cfg.data.max_train_examples:
        report["train_truncated_from"] = len(train)
        splits["train"] = train[: cfg.data.max_train_examples]


def _read_text_split(cfg: Config, path: str) -> list[TextExample]:
    d = cfg.data
    return read_text_file(
        path, d.format, d.text_column, d.label_column, d.text_pair_column, cfg.task.multi_label, d.label_separator
    )


def prepare_data(cfg: Config) -> tuple[dict[str, list], list[str], dict]:
    """Read, split and normalise the data; returns the splits, the label list and a report.

    The labels come from the whole training portion, before any ``max_train_examples`` cut, so a
    quick run on a slice still knows every label that dev and test use.
    """
    if cfg.task.type == "text_classification":
        return _prepare_text_data(cfg)
    splits, report = _read_splits(cfg, lambda path: _read_token_split(cfg, path))
    train = splits["train"]
    for name, examples in splits.items():
        if examples:
            scheme = normalise_to_iob2(examples, cfg.data.scheme)
            report[f"{name}_scheme"] = scheme.describe()
            if scheme.examples:
                report[f"{name}_scheme_examples"] = scheme.examples
    labels = tc.label_list(train)
    for name in ("dev", "test"):
        check_known_tags(splits[name], labels)
    _cut_train(cfg, splits, report)
    report["sentences"] = {name: len(ex) for name, ex in splits.items()}
    report["words"] = {name: sum(len(e.words) for e in ex) for name, ex in splits.items()}
    return splits, labels, report


def _prepare_text_data(cfg: Config) -> tuple[dict[str, list[TextExample]], list[str], dict]:
    splits, report = _read_splits(cfg, lambda path: _read_text_split(cfg, path))
    labels = txc.label_list(splits["train"])
    if len(labels) < 2 and not cfg.task.multi_label:
        raise TuneforgeError(
            f"{report['train_file']}: the training data has {len(labels)} label(s) ({', '.join(labels)}); "
            "a classifier needs at least two"
        )
    for name in ("dev", "test"):
        check_known_labels(splits[name], labels)
    _cut_train(cfg, splits, report)
    report["texts"] = {name: len(ex) for name, ex in splits.items()}
    report["label_counts"] = {
        name: {label: sum(label in (e.labels or []) for e in ex) for label in labels} for name, ex in splits.items()
    }
    return splits, labels, report


# ---------------------------------------------------------------------------------------------
# Training


def _as_config(config: Config | dict | str | Path, overrides: list[str] | None) -> Config:
    if isinstance(config, Config):
        return config_from_dict(config.model_dump(mode="json"), overrides=overrides) if overrides else config
    if isinstance(config, dict):
        return config_from_dict(config, overrides=overrides)
    return load_config(config, overrides)


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


def train(
    config: Config | dict | str | Path,
    overrides: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Sequence = (),
) -> RunResult:
    """Fine-tune as the config says; returns the run folder and its metrics."""
    cfg = _as_config(config, overrides)
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
    if cfg.task.type == "text_classification":
        return _train_text_classifier(cfg, run_dir, resume, on_step)
    return _train_token_classifier(cfg, run_dir, resume, on_step)


def _method_meta(cfg: Config) -> dict:
    """What a saved model needs to be rebuilt when its method stores only what changed."""
    return {"base_model": cfg.model.model_dump(mode="json"), "method_config": cfg.method.model_dump(mode="json")}


def _run_metrics(cfg: Config, method, trainable: int, total: int, result, data_report: dict) -> dict:
    """The part of metrics.json every task writes: what ran, how it went, how fast."""
    return {
        "task": cfg.task.type,
        "model": cfg.model.name_or_path,
        "method": method.name,
        "parameters": {"trainable": trainable, "total": total},
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


def _finish_run(run_dir: Path, metrics: dict, report_parts: list[str]) -> RunResult:
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False))
    atomic_write_text(run_dir / "report.txt", "\n".join(report_parts))
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    return RunResult(run_dir=run_dir, metrics=metrics)


def _train_token_classifier(cfg: Config, run_dir: Path, resume: bool, on_step: Sequence) -> RunResult:
    splits, labels, data_report = prepare_data(cfg)
    label2id = {t: i for i, t in enumerate(labels)}
    torch.manual_seed(cfg.training.seed)  # the new head's initialisation is part of the seed's promise
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code)
    model = load_token_classifier(cfg.model.name_or_path, labels, cfg.model.revision, cfg.model.trust_remote_code)
    method = get_method(cfg.method.name)
    model = method.prepare(model, cfg.method)
    trainable, total = count_parameters(model)

    enc = cfg.encoding
    label_position = enc.label_position
    if label_position == "auto":
        causal = is_causal_model(cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code)
        label_position = "last" if causal else "first"
    windows, stats = encode_examples(
        splits["train"], tokenizer, label2id, enc.max_length, enc.stride, enc.label_all_subwords, label_position
    )
    data_report["encoding"] = stats.describe()
    print(f"data: {data_report['sentences']} sentences; {stats.describe()}")
    print(f"model: {cfg.model.name_or_path} · method {method.name} · {trainable:,} of {total:,} parameters train")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.training.precision, device)

    def evaluate_dev(current_model) -> dict:
        preds = tc.predict_examples(
            current_model, tokenizer, splits["dev"], labels, enc.max_length, enc.stride,
            cfg.training.eval_batch_size, cfg.task.decode, precision, label_position,
        )
        return tc.evaluate_predictions(splits["dev"], preds)

    def save_best(current_model) -> None:
        meta = {"task": cfg.task.type, "labels": labels, "max_length": enc.max_length, "stride": enc.stride,
                "decode": cfg.task.decode, "label_position": label_position, **_method_meta(cfg)}
        save_model(run_dir / MODEL_DIR, current_model, tokenizer, method, meta)

    result = train_loop(
        model, windows, [len(w.input_ids) for w in windows], Collator(tokenizer.pad_token_id, cfg.training.pad_to_multiple_of), cfg.training,
        run_dir, evaluate_dev if splits["dev"] else None, save_best, resume=resume, on_step=on_step,
    )

    # Final numbers come from the saved best model, read back from disk: what users will load.
    predictor = load(run_dir)
    metrics = _run_metrics(cfg, method, trainable, total, result, data_report)
    report_parts = []
    for name in ("dev", "test"):
        if not splits[name]:
            continue
        preds = predictor.predict_examples(splits[name])
        metrics[name] = tc.evaluate_predictions(splits[name], preds)
        report_parts.append(f"== {name} ==\n" + tc.format_report(splits[name], preds, metrics[name]))
        if name == "test":
            _write_predictions_tsv(run_dir / "test_predictions.tsv", splits[name], preds)
    return _finish_run(run_dir, metrics, report_parts)


def _train_text_classifier(cfg: Config, run_dir: Path, resume: bool, on_step: Sequence) -> RunResult:
    """The text classification task on the same loop, checkpoints and run folder as NER."""
    from .evaluation.plots import save_confusion_matrix_png

    splits, labels, data_report = prepare_data(cfg)
    task, enc = cfg.task, cfg.encoding
    torch.manual_seed(cfg.training.seed)  # the new head's initialisation is part of the seed's promise
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code)
    model = load_sequence_classifier(
        cfg.model.name_or_path, labels, task.multi_label, cfg.model.revision, cfg.model.trust_remote_code
    )
    method = get_method(cfg.method.name)
    model = method.prepare(model, cfg.method)
    trainable, total = count_parameters(model)

    inputs, stats = encode_texts(
        splits["train"], tokenizer, {t: i for i, t in enumerate(labels)}, enc.max_length, task.long_text,
        enc.stride, task.head_fraction, task.multi_label,
    )
    data_report["encoding"] = stats.describe()
    weights = txc.class_weight_vector(task.class_weights, splits["train"], labels)
    if weights is not None:
        data_report["class_weights"] = dict(zip(labels, weights))
    print(f"data: {data_report['texts']} texts, {len(labels)} labels; {stats.describe()}")
    print(f"model: {cfg.model.name_or_path} · method {method.name} · {trainable:,} of {total:,} parameters train")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.training.precision, device)
    meta = dict(txc.model_meta(cfg, labels), **_method_meta(cfg))

    def evaluate_dev(current_model) -> dict:
        logits = txc.text_logits(current_model, tokenizer, splits["dev"], meta, cfg.training.eval_batch_size, precision)
        probabilities = txc.probabilities_from_logits(logits, task.multi_label)
        if task.multi_label and task.tune_thresholds:
            # save_best runs right after this for the same weights, so the saved thresholds fit them
            meta["thresholds"] = txc.tune_thresholds(probabilities, txc.multi_hot(splits["dev"], labels))
        return txc.score(splits["dev"], probabilities, meta)

    def save_best(current_model) -> None:
        save_model(run_dir / MODEL_DIR, current_model, tokenizer, method, meta)

    collate = SequenceCollator(tokenizer.pad_token_id, txc.model_inputs_take_token_types(tokenizer), task.multi_label)
    result = train_loop(
        model, inputs, [len(x.input_ids) for x in inputs], collate, cfg.training, run_dir,
        evaluate_dev if splits["dev"] else None, save_best, resume=resume, on_step=on_step,
        compute_loss=txc.weighted_cross_entropy(weights) if weights is not None else None,
    )

    predictor = load(run_dir)
    metrics = _run_metrics(cfg, method, trainable, total, result, data_report)
    metrics["thresholds"] = dict(zip(labels, predictor.meta["thresholds"])) if task.multi_label else None
    report_parts = []
    for name in ("dev", "test"):
        if not splits[name]:
            continue
        metrics[name], report, probabilities = predictor.evaluate_examples(splits[name], cfg.training.eval_batch_size)
        report_parts.append(f"== {name} ==\n" + report)
        if not task.multi_label:
            save_confusion_matrix_png(
                metrics[name]["scores"]["confusion_matrix"], labels, run_dir / f"confusion_{name}.png",
                title=f"{name}: rows gold, columns predicted",
            )
        if name == "test":
            rows = predictor.describe(splits[name], probabilities)
            txc.write_predictions_jsonl(run_dir / "test_predictions.jsonl", splits[name], rows)
    return _finish_run(run_dir, metrics, report_parts)


def _write_predictions_tsv(path: Path, examples: Sequence[TokenExample], preds) -> None:
    lines = []
    for ex, pred in zip(examples, preds):
        for word, gold, tag in zip(ex.words, ex.tags or [""] * len(ex.words), pred.tags):
            lines.append(f"{word}\t{gold}\t{tag}")
        lines.append("")
    atomic_write_text(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Loading and prediction


class TokenClassifier:
    """A trained token classifier loaded from a run folder (or its ``model/`` folder)."""

    def __init__(self, model, tokenizer, meta: dict, precision: str = "auto"):
        self.model = model
        self.tokenizer = tokenizer
        self.labels: list[str] = meta["labels"]
        self.max_length: int = meta["max_length"]
        self.stride: int = meta["stride"]
        self.decode: str = meta.get("decode", "viterbi")
        self.label_position: str = meta.get("label_position", "first")
        self.precision = resolve_precision(precision, next(model.parameters()).device)

    def predict_examples(self, examples: Sequence[TokenExample], batch_size: int = 64):
        return tc.predict_examples(
            self.model, self.tokenizer, examples, self.labels, self.max_length, self.stride,
            batch_size, self.decode, self.precision, self.label_position,
        )

    def predict(self, inputs, batch_size: int = 64) -> list[dict]:
        """Tag raw texts (``str`` or list of ``str``), pre-split word lists, or TokenExamples.

        Each result: ``{"words", "tags", "confidences", "entities"}``; entities carry character
        offsets when raw text was given.
        """
        if isinstance(inputs, str):
            inputs = [inputs]
        examples = [
            item if isinstance(item, TokenExample)
            else examples_from_texts([item])[0] if isinstance(item, str)
            else TokenExample(words=list(item))
            for item in inputs
        ]
        preds = self.predict_examples(examples, batch_size)
        return [
            {
                "words": ex.words,
                "tags": p.tags,
                "confidences": [round(c, 4) for c in p.confidences],
                "entities": tc.entity_spans(ex, p),
            }
            for ex, p in zip(examples, preds)
        ]


def load(run: str | Path, device: str | None = None, precision: str = "auto") -> TokenClassifier | TextClassifier:
    """The trained model of a run, as the predictor of its task (read from ``tuneforge.json``).

    ``precision``: ``auto`` (bf16 on bf16 GPUs, else fp32), ``fp32``, ``bf16`` (autocast) or ``int8``
    (dynamic int8 quantisation of the linear layers, CPU only).
    """
    model, tokenizer, meta = load_model(run, device)
    if precision == "int8":
        model, precision = quantize_for_inference(model), "fp32"
    if meta.get("task") == "text_classification":
        return TextClassifier(model, tokenizer, meta, precision)
    return TokenClassifier(model, tokenizer, meta, precision)


def evaluate(
    run: str | Path, data: str | Path, format: str = "auto", token_column: int = 0, tag_column: int = -1,
    scheme: str = "auto", batch_size: int = 64, text_column: str | None = None,
    text_pair_column: str | None = None, label_column: str | None = None, precision: str = "auto",
) -> tuple[dict, str]:
    """Score a trained run on a labelled file; returns (metrics, report text).

    A text classifier reads the file with the column names it was trained with unless given.
    """
    predictor = load(run, precision=precision)
    if isinstance(predictor, TextClassifier):
        examples = predictor.read(data, format, True, text_column, text_pair_column, label_column)
        started = time.perf_counter()
        metrics, report, _ = predictor.evaluate_examples(examples, batch_size)
        metrics["seconds"] = round(time.perf_counter() - started, 3)
        return metrics, report
    examples = read_token_file(data, format, token_column, tag_column)
    normalise_to_iob2(examples, scheme)
    check_known_tags(examples, predictor.labels)
    started = time.perf_counter()
    preds = predictor.predict_examples(examples, batch_size)
    metrics = tc.evaluate_predictions(examples, preds)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    return metrics, tc.format_report(examples, preds, metrics)
