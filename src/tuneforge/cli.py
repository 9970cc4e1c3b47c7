"""`tuneforge train|eval|predict|compare|curve|export|data …` — parses arguments and calls the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import TuneforgeError


def _cmd_train(args) -> int:
    from . import api
    from .tasks import get_task

    result = api.train(args.config, overrides=args.set, resume=args.resume, overwrite=args.overwrite)
    print((result.run_dir / "report.txt").read_text(encoding="utf-8"))
    summary = get_task(result.metrics["task"]).summary(result.metrics)
    print(f"run folder: {result.run_dir} · {summary} · best epoch {result.metrics['best_epoch']}")
    return 0


def _add_precision(p) -> None:
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                   help="auto: bf16 on GPUs that support it, else fp32; bf16: autocast; "
                        "int8: dynamic int8 linear layers (CPU; see benchmarks/RESULTS.md for speed and agreement)")


def _cmd_eval(args) -> int:
    from . import api

    predictor = api.load(args.run, precision=args.precision)
    metrics, report = api.evaluate(
        predictor, args.data, format=args.format, batch_size=args.batch_size,
        tag_column=args.tag_column, text_column=args.text_column, text_pair_column=args.text_pair_column,
        label_column=args.label_column,
    )
    print(report)
    print(predictor.headline(metrics))
    if args.out:
        from .paths import atomic_write_text

        atomic_write_text(args.out, json.dumps(metrics, indent=1))
    return 0


def _cmd_predict(args) -> int:
    from . import api
    from .tasks.base import check_read_options

    predictor = api.load(args.run, precision=args.precision)
    if args.output_format not in predictor.output_formats:
        raise TuneforgeError(f"--output-format {args.output_format}: a {predictor.task_name.replace('_', ' ')} "
                             f"model writes {', '.join(predictor.output_formats)}")
    options = check_read_options(predictor, {"text_column": args.text_column, "text_pair_column": args.text_pair_column})
    examples = predictor.read_inputs(args.input, args.format, **options)
    results = predictor.predict(examples, batch_size=args.batch_size)
    _write_output(predictor.format_output(results, args.output_format), args.out, predictor.describe_output(results))
    return 0



def _write_output(text: str, out: str | None, what: str) -> None:
    """To ``out`` atomically (and say so on stderr), or to standard output."""
    from .paths import atomic_write_text

    if out:
        atomic_write_text(out, text)
        print(f"wrote {what} to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _cmd_data_split(args) -> int:
    from .data.readers import read_token_file, split_examples, write_conll

    ratios = [float(r) for r in args.ratios.split(",")]
    if len(ratios) != 3:
        raise TuneforgeError(f"--ratios {args.ratios!r}: give three ratios train,dev,test such as 0.8,0.1,0.1")
    examples = read_token_file(args.input, args.format, tag_column=args.tag_column)
    parts = split_examples(examples, ratios, args.seed)
    out = Path(args.out)
    for name, part in zip(("train", "dev", "test"), parts):
        write_conll(part, out / f"{name}.conll")
    print(f"{len(examples)} sentences -> " + ", ".join(
        f"{name} {len(p)}" for name, p in zip(("train", "dev", "test"), parts)) + f" in {out}/")
    return 0


def _cmd_data_check(args) -> int:
    from .data.readers import normalise_to_iob2, read_token_file
    from .tasks.token_classification import label_list

    examples = read_token_file(args.input, args.format, tag_column=args.tag_column)
    report = normalise_to_iob2(examples, args.scheme)
    lengths = sorted(len(e.words) for e in examples)
    print(f"{args.input}: {len(examples)} sentences, {sum(lengths)} words "
          f"(median {lengths[len(lengths) // 2]}, max {lengths[-1]} words per sentence)")
    print(report.describe())
    for line in report.examples:
        print(f"  {line}")
    print("labels: " + ", ".join(label_list(examples)))
    return 0


def _add_text_columns(p: argparse.ArgumentParser, labels: bool) -> None:
    """Text classifiers: column names (CSV/TSV) or keys (JSONL); default: those it was trained with."""
    p.add_argument("--text-column", help="text classifiers: the text column (default: as in training)")
    p.add_argument("--text-pair-column", help="text classifiers: the second text of a pair (default: as in training)")
    if labels:
        p.add_argument("--label-column", help="text classifiers: the label column (default: as in training)")


def _cmd_compare(args) -> int:
    from . import compare

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        result = compare.compare(args.config, methods, seeds=args.seeds, overrides=args.set,
                                 same_budget=args.same_budget, isolate=not args.in_process, out=args.out)
    except KeyboardInterrupt:
        print("interrupted; run the same `tuneforge compare` command again to continue where it stopped",
              file=sys.stderr)
        return 130
    print(result.files["compare.md"].read_text(encoding="utf-8"))
    print(f"table: {result.files['compare.md']} · {result.files['compare.csv']} · picture: {result.files['compare.png']}")
    return 0


def _cmd_curve(args) -> int:
    from . import curve

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        result = curve.curve(args.config, curve.parse_ks(args.k), methods, seeds=args.seeds, overrides=args.set,
                             isolate=not args.in_process, out=args.out, full_seeds=args.full_seeds,
                             summarise_only=args.summarise_only)
    except KeyboardInterrupt:
        print("interrupted; run the same `tuneforge curve` command again to continue where it stopped",
              file=sys.stderr)
        return 130
    print(result.files["curve.md"].read_text(encoding="utf-8"))
    print(f"table: {result.files['curve.md']} · {result.files['curve.csv']} · picture: {result.files['curve.png']}")
    return 0


def _cmd_data_sample(args) -> int:
    """k examples per class (per entity type for NER) from a labelled file, written in the same format."""
    from .data.readers import (
        detect_format,
        normalise_to_iob2,
        read_text_file,
        read_token_file,
        write_conll,
        write_text_examples,
    )
    from .data.sampling import describe_sample, greedy_sample, sample_per_class
    from .evaluation.metrics import extract_entities

    fmt = args.format
    kind = "text" if fmt in ("csv", "tsv") else "token" if fmt == "conll" else None
    if kind is None:
        suffix = Path(args.input).suffix.lower()
        kind = "text" if suffix in (".csv", ".tsv", ".tab") else "token" if detect_format(args.input) == "conll" else None
        if kind is None:  # JSONL: tokens/tags records are NER, text/label records classification
            with open(args.input, encoding="utf-8") as handle:
                first = next((line for line in handle if line.strip()), "{}")
            kind = "token" if '"tokens"' in first else "text"
    if kind == "token":
        examples = read_token_file(args.input, fmt if fmt != "auto" else "auto", tag_column=args.tag_column)
        normalise_to_iob2(examples, args.scheme)
        sample, report = greedy_sample(examples, lambda ex: [t for t, _, _ in extract_entities(ex.tags)],
                                       args.k, args.seed)
        write_conll(sample, args.out)
    else:
        examples = read_text_file(args.input, fmt, args.text_column, args.label_column,
                                  multi_label=args.multi_label, label_separator="|")
        if args.multi_label:
            sample, report = greedy_sample(examples, lambda ex: ex.labels or [], args.k, args.seed)
        else:
            sample, report = sample_per_class(examples, lambda ex: ex.labels[0], args.k, args.seed)
        write_text_examples(sample, args.out, args.text_column, args.label_column)
    print(describe_sample(report))
    print("per label: " + ", ".join(f"{label} {n}" for label, n in report["per_label"].items()))
    print(f"wrote {report['examples']} examples to {args.out}")
    return 0


def _cmd_export(args) -> int:
    from .artifacts import export_merged

    if not args.merge:
        raise TuneforgeError("export: pass --merge (fold the method into the base weights); it is the only export so far")
    out = export_merged(args.run, args.out)
    print(f"wrote a plain Hugging Face model to {out} (loads with transformers alone)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneforge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune a model as a YAML config says")
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. training.epochs=3")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="score a trained run on a labelled file")
    p.add_argument("run")
    p.add_argument("data")
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl", "csv", "tsv"])
    p.add_argument("--tag-column", type=int, help="token classifiers: the tag column of a CoNLL file (default: last)")
    _add_text_columns(p, labels=True)
    p.add_argument("--batch-size", type=int, default=64)
    _add_precision(p)
    p.add_argument("--out", help="also write the metrics as JSON here")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="tag or classify CoNLL, CSV/TSV, JSONL or raw text (one text a line)")
    p.add_argument("run")
    p.add_argument("input")
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl", "text", "csv", "tsv"],
                   help="input format; auto: .txt is raw text, .jsonl JSONL, .csv/.tsv tables (text classifiers), "
                        "else CoNLL (first column = word)")
    _add_text_columns(p, labels=False)
    p.add_argument("--output-format", default="jsonl", choices=["jsonl", "conll"])
    p.add_argument("--out", help="write here instead of standard output")
    p.add_argument("--batch-size", type=int, default=64)
    _add_precision(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("compare", help="train several adaptation methods on the same data and split, side by side")
    p.add_argument("config")
    p.add_argument("--methods", default="full,lora,adapter,bitfit,prompt",
                   help="comma-separated: full, freeze, lora, ia3, prompt, adapter, bitfit")
    p.add_argument("--seeds", type=int, default=1, help="runs per method, seeds training.seed, +1, +2 ...")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key for every member")
    p.add_argument("--same-budget", action="store_true",
                   help="give every method the config's learning rate and epochs instead of its own defaults")
    p.add_argument("--out", help="folder for the member runs and compare.md/csv/png (default: the config's output_dir)")
    p.add_argument("--in-process", action="store_true",
                   help="train members in this process (faster start; peak memory is then not reported)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("curve", help="learning curves: train each approach at several training-set sizes and seeds")
    p.add_argument("config")
    p.add_argument("--k", default="8,16,32,64,full",
                   help="sizes: examples per class (per entity type for NER), 'full' for the whole training set")
    p.add_argument("--methods", default="full",
                   help="comma-separated: adaptation methods (full, lora, bitfit...) and the task's approaches "
                        "(text classification: setfit, zero_shot; NER: prototypes, prototypes_ft)")
    p.add_argument("--seeds", type=int, default=5, help="runs per (approach, k): seeds training.seed, +1, +2 ...")
    p.add_argument("--full-seeds", type=int, help="seeds for k = full (default: --seeds); full runs cost the most")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key for every member")
    p.add_argument("--out", help="folder for the member runs and curve.md/csv/png (default: the config's output_dir)")
    p.add_argument("--in-process", action="store_true", help="train members in this process")
    p.add_argument("--summarise-only", action="store_true",
                   help="train nothing: write the files from the members that finished (a curve still running)")
    p.set_defaults(func=_cmd_curve)

    p = sub.add_parser("export", help="write a trained run as a plain Hugging Face model folder")
    p.add_argument("run")
    p.add_argument("out")
    p.add_argument("--merge", action="store_true", help="fold LoRA / IA3 / BitFit / freeze weights into the base model")
    p.set_defaults(func=_cmd_export)

    data = sub.add_parser("data", help="inspect and split data files").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("split", help="make train/dev/test files from one file, deterministic by seed")
    p.add_argument("input")
    p.add_argument("--out", required=True, help="folder for train.conll, dev.conll, test.conll")
    p.add_argument("--ratios", default="0.8,0.1,0.1")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl"])
    p.add_argument("--tag-column", type=int, default=-1)
    p.set_defaults(func=_cmd_data_split)
    p = data.add_parser("check", help="read a file, report its size, tag scheme and repairs")
    p.add_argument("input")
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl"])
    p.add_argument("--tag-column", type=int, default=-1)
    p.add_argument("--scheme", default="auto", choices=["auto", "IOB1", "IOB2", "BIOES", "IO"])
    p.set_defaults(func=_cmd_data_check)
    p = data.add_parser("sample", help="k examples per class (per entity type for NER), deterministic by seed")
    p.add_argument("input")
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True, help="the sample, in the input's format (CoNLL for NER)")
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl", "csv", "tsv"])
    p.add_argument("--tag-column", type=int, default=-1)
    p.add_argument("--scheme", default="auto", choices=["auto", "IOB1", "IOB2", "BIOES", "IO"])
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--multi-label", action="store_true", help="text files: several labels per text (| separated)")
    p.set_defaults(func=_cmd_data_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TuneforgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; `tuneforge train CONFIG --resume` continues from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
