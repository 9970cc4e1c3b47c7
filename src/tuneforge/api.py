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
from .data.encode import Collator, encode_examples
from .data.readers import (
    TokenExample,
    check_known_tags,
    examples_from_texts,
    normalise_to_iob2,
    read_token_file,
    split_examples,
)
from .errors import ConfigError, TuneforgeError
from .methods import count_parameters, get_method
from .models import load_token_classifier, load_tokenizer
from .artifacts import MODEL_DIR, load_model, save_model
from .paths import atomic_write_text
from .tasks import token_classification as tc
from .training.checkpoint import CHECKPOINT_DIR
from .training.loop import resolve_precision, train_loop



@dataclass
class RunResult:
    run_dir: Path
    metrics: dict


# ---------------------------------------------------------------------------------------------
# Data


def _read_split(cfg: Config, path: str, labelled: bool = True) -> list[TokenExample]:
    return read_token_file(
        path, cfg.data.format, cfg.data.token_column, cfg.data.tag_column if labelled else None
    )


def prepare_data(cfg: Config) -> tuple[dict[str, list[TokenExample]], list[str], dict]:
    """Read, split and normalise the data; returns the splits, the label list and a report.

    The labels come from the whole training portion, before any ``max_train_examples`` cut, so a
    quick run on a slice still knows every tag that dev and test use.
    """
    train = _read_split(cfg, cfg.data.train)
    report: dict = {"train_file": train[0].source if train else cfg.data.train}
    if cfg.data.split is not None:
        train, dev, test = split_examples(train, cfg.data.split, cfg.data.split_seed)
        report["split"] = {"ratios": list(cfg.data.split), "seed": cfg.data.split_seed}
    else:
        dev = _read_split(cfg, cfg.data.dev) if cfg.data.dev else []
        test = _read_split(cfg, cfg.data.test) if cfg.data.test else []
    splits = {"train": train, "dev": dev, "test": test}
    for name, examples in splits.items():
        if examples:
            scheme = normalise_to_iob2(examples, cfg.data.scheme)
            report[f"{name}_scheme"] = scheme.describe()
            if scheme.examples:
                report[f"{name}_scheme_examples"] = scheme.examples
    labels = tc.label_list(train)
    for name in ("dev", "test"):
        check_known_tags(splits[name], labels)
    if cfg.data.max_train_examples is not None and len(train) > cfg.data.max_train_examples:
        report["train_truncated_from"] = len(train)
        splits["train"] = train[: cfg.data.max_train_examples]
    report["sentences"] = {name: len(ex) for name, ex in splits.items()}
    report["words"] = {name: sum(len(e.words) for e in ex) for name, ex in splits.items()}
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

    splits, labels, data_report = prepare_data(cfg)
    label2id = {t: i for i, t in enumerate(labels)}
    torch.manual_seed(cfg.training.seed)  # the new head's initialisation is part of the seed's promise
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code)
    model = load_token_classifier(cfg.model.name_or_path, labels, cfg.model.revision, cfg.model.trust_remote_code)
    method = get_method(cfg.method.name)
    model = method.prepare(model, cfg.method)
    trainable, total = count_parameters(model)

    enc = cfg.encoding
    windows, stats = encode_examples(
        splits["train"], tokenizer, label2id, enc.max_length, enc.stride, enc.label_all_subwords
    )
    data_report["encoding"] = stats.describe()
    print(f"data: {data_report['sentences']} sentences; {stats.describe()}")
    print(f"model: {cfg.model.name_or_path} · method {method.name} · {trainable:,} of {total:,} parameters train")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.training.precision, device)

    def evaluate_dev(current_model) -> dict:
        preds = tc.predict_examples(
            current_model, tokenizer, splits["dev"], labels, enc.max_length, enc.stride,
            cfg.training.eval_batch_size, cfg.task.decode, precision,
        )
        return tc.evaluate_predictions(splits["dev"], preds)

    def save_best(current_model) -> None:
        meta = {"task": cfg.task.type, "labels": labels, "max_length": enc.max_length, "stride": enc.stride,
                "decode": cfg.task.decode, "base_model": cfg.model.model_dump(mode="json"),
                "method_config": cfg.method.model_dump(mode="json")}
        save_model(run_dir / MODEL_DIR, current_model, tokenizer, method, meta)

    result = train_loop(
        model, windows, [len(w.input_ids) for w in windows], Collator(tokenizer.pad_token_id), cfg.training,
        run_dir, evaluate_dev if splits["dev"] else None, save_best, resume=resume, on_step=on_step,
    )

    # Final numbers come from the saved best model, read back from disk: what users will load.
    predictor = load(run_dir)
    metrics: dict = {
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
            "precision": precision,
        },
    }
    report_parts = []
    for name in ("dev", "test"):
        if not splits[name]:
            continue
        preds = predictor.predict_examples(splits[name])
        metrics[name] = tc.evaluate_predictions(splits[name], preds)
        report_parts.append(f"== {name} ==\n" + tc.format_report(splits[name], preds, metrics[name]))
        if name == "test":
            _write_predictions_tsv(run_dir / "test_predictions.tsv", splits[name], preds)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False))
    atomic_write_text(run_dir / "report.txt", "\n".join(report_parts))
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    return RunResult(run_dir=run_dir, metrics=metrics)


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
        self.precision = resolve_precision(precision, next(model.parameters()).device)

    def predict_examples(self, examples: Sequence[TokenExample], batch_size: int = 64):
        return tc.predict_examples(
            self.model, self.tokenizer, examples, self.labels, self.max_length, self.stride,
            batch_size, self.decode, self.precision,
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


def load(run: str | Path, device: str | None = None, precision: str = "auto") -> TokenClassifier:
    model, tokenizer, meta = load_model(run, device)
    return TokenClassifier(model, tokenizer, meta, precision)


def evaluate(
    run: str | Path, data: str | Path, format: str = "auto", token_column: int = 0, tag_column: int = -1,
    scheme: str = "auto", batch_size: int = 64,
) -> tuple[dict, str]:
    """Score a trained run on a labelled file; returns (metrics, report text)."""
    predictor = load(run)
    examples = read_token_file(data, format, token_column, tag_column)
    normalise_to_iob2(examples, scheme)
    check_known_tags(examples, predictor.labels)
    started = time.perf_counter()
    preds = predictor.predict_examples(examples, batch_size)
    metrics = tc.evaluate_predictions(examples, preds)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    return metrics, tc.format_report(examples, preds, metrics)
