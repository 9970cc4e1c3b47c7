"""`tuneforge train|eval|predict`: fine-tune a model, score a run, run it on new inputs."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path

from .. import api
from ..artifacts.paths import atomic_open, atomic_write_text, check_output_path, spooled_input
from ..data.interchange import labelstudio_tasks, refuse_blank_texts
from ..errors import DataError, TuneforgeError
from ..evaluation.robustness import format_robustness
from ..runtime import distributed
from ..tasks import get_task
from ..tasks.predictor import (
    check_read_options,
    describe_counts,
    predict_across_processes,
)
from .common import (
    add_num_processes,
    add_perturb,
    add_precision,
    add_text_columns,
    positive_int,
    write_output,
)


def _cmd_train(args) -> int:
    result = api.train(args.config, overrides=args.set, resume=args.resume, overwrite=args.overwrite)
    if not distributed.is_main():
        return 0
    print((result.run_dir / "report.txt").read_text(encoding="utf-8"))
    summary = get_task(result.metrics["task"]).summary(result.metrics)
    print(f"run folder: {result.run_dir} · {summary} · best epoch {result.metrics['best_epoch']}")
    return 0


def _load_on_this_process(args):
    """The run's predictor, on this process's device when several processes share the work."""

    if args.out:
        check_output_path(args.out, "--out")  # before the model is loaded and the data read
    device = str(distributed.init_processes().device) if distributed.launched_distributed() else None
    return api.load(args.run, device=device, precision=args.precision, engine=args.engine)


def _cmd_eval(args) -> int:
    predictor = _load_on_this_process(args)
    metrics, report = api.evaluate(
        predictor, args.data, format=args.format, batch_size=args.batch_size,
        perturb=args.perturb, rate=args.rate, seed=args.seed,
        tag_column=args.tag_column, text_column=args.text_column, text_pair_column=args.text_pair_column,
        label_column=args.label_column,
    )
    if not distributed.is_main():
        return 0
    print(report)
    print(predictor.headline(metrics))
    if "robustness" in metrics:
        print("\n" + format_robustness(metrics["robustness"]))
    if args.out:
        atomic_write_text(args.out, json.dumps(metrics, indent=1))
    return 0


def _cmd_predict(args) -> int:
    predictor = _load_on_this_process(args)
    if args.output_format not in predictor.output_formats:
        raise TuneforgeError(f"--output-format {args.output_format}: a {predictor.task_name.replace('_', ' ')} "
                             f"model writes {', '.join(predictor.output_formats)}")
    options = check_read_options(predictor, {"text_column": args.text_column, "text_pair_column": args.text_pair_column})
    configure_generation(predictor, args)
    examples = _read_inputs(predictor, args.input, args.format, options)
    runtime = ", ".join(f"{k} {v}" for k, v in predictor.runtime.items())
    if args.output_format == "labelstudio":  # pre-annotations: every task's predictions, with scores (one JSON array)
        if not distributed.is_main():
            return 0  # one JSON array: process 0 writes it whole
        refuse_blank_texts(examples, args.input)
        results = predictor.predict(examples, batch_size=args.batch_size)
        tasks = labelstudio_tasks([predictor.annotation(ex, r) for ex, r in zip(examples, results)],
                                  as_predictions=True, model_version=f"tuneforge:{Path(args.run).resolve().name}")
        write_output(json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", args.out,
                      f"{predictor.describe_output(results)}; {runtime}")
        return 0
    # to --out atomically (it appears complete or not at all), or to standard output as pieces arrive
    target = atomic_open(args.out, "w") if args.out and distributed.is_main() else nullcontext(sys.stdout)
    with target as handle:
        counts = predict_across_processes(predictor, examples, handle.write, args.output_format, args.batch_size)
    if distributed.is_main():
        print(f"wrote {describe_counts(counts)}{' to ' + args.out if args.out else ''}; {runtime}", file=sys.stderr)
    return 0


def _read_inputs(predictor, given: str, format: str, options: dict) -> list:
    """The inputs, read once: ``-`` and pipes (``/dev/stdin``) are spooled first, and an error in
    them names what the user gave, not the spool file."""
    with spooled_input(given) as (path, spooled):
        try:
            examples = predictor.read_inputs(path, format, **options)
        except DataError as exc:
            if not spooled:
                raise
            raise DataError(given, exc.line, exc.message) from None
    if spooled:
        for ex in examples:
            if getattr(ex, "source", None) == path:
                ex.source = given
    return examples


GENERATION_FLAGS = ("max_new_tokens", "temperature", "top_p", "stop", "seed")


def configure_generation(predictor, args) -> None:
    """``--max-new-tokens``, ``--temperature``... for a generative run; an error for any other."""
    given = {k: getattr(args, k) for k in GENERATION_FLAGS if getattr(args, k, None) is not None}
    if not given:
        return
    if not hasattr(predictor, "configure"):
        flag = "--" + next(iter(given)).replace("_", "-")
        raise TuneforgeError(f"{flag} applies to generative runs (task.type sft, preference or causal_lm), not to a "
                             f"{predictor.task_name.replace('_', ' ')} model")
    predictor.configure(**given)


def add_generation(p) -> None:
    g = p.add_argument_group("generation (sft, preference and causal_lm runs)")
    g.add_argument("--max-new-tokens", type=positive_int, help="the longest answer (default: the run's task.max_new_tokens)")
    g.add_argument("--temperature", type=float, help="0: greedy (the default); above 0: sampling")
    g.add_argument("--top-p", type=float, help="nucleus sampling: the smallest set of tokens with this probability")
    g.add_argument("--stop", action="append", help="end an answer at this string (not included); repeatable")
    g.add_argument("--seed", type=int, help="sampling seed")


def add_parsers(sub) -> None:
    """``train``, ``eval`` and ``predict``."""

    p = sub.add_parser("train", help="fine-tune a model as a YAML config says")
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. training.epochs=3")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    add_num_processes(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="score a trained run on a labelled file")
    p.add_argument("run")
    p.add_argument("data")
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl", "csv", "tsv", "parquet", "arrow", "hf"])
    p.add_argument("--tag-column", type=int, help="token classifiers: the tag column of a CoNLL file (default: last)")
    add_text_columns(p, labels=True)
    p.add_argument("--batch-size", type=positive_int, default=64)
    add_precision(p)
    p.add_argument("--out", help="also write the metrics as JSON here")
    add_perturb(p, required=False)
    add_num_processes(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="tag, classify or answer: CoNLL, CSV/TSV, JSONL (prompts, chats) or raw text (one text a line)")
    p.add_argument("run")
    p.add_argument("input")
    p.add_argument("--format", default="auto",
                   choices=["auto", "conll", "jsonl", "text", "csv", "tsv", "parquet", "arrow", "hf"],
                   help="input format; auto: .txt is raw text, .jsonl JSONL, .csv/.tsv tables (text classifiers), "
                        ".parquet/.arrow and hf:NAME[@SPLIT] datasets, else CoNLL (first column = word)")
    add_text_columns(p, labels=False)
    p.add_argument("--output-format", default="jsonl", choices=["jsonl", "conll", "labelstudio"],
                   help="labelstudio: tasks pre-annotated with the predictions and their scores")
    p.add_argument("--out", help="write here instead of standard output")
    p.add_argument("--batch-size", type=positive_int, default=64)
    add_precision(p)
    add_generation(p)
    add_num_processes(p)
    p.set_defaults(func=_cmd_predict)
