"""`tuneforge train|eval|predict|compare|export|serve|data …` — parses arguments and calls the Python API."""

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



def _cmd_serve(args) -> int:
    from .serving import ServeOptions, create_app, load_models, serve
    from .serving.app import API_KEY_ENV

    options = ServeOptions(
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_texts=args.max_texts,
        max_chars=args.max_chars, max_body_bytes=args.max_body_bytes,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None, cors_origins=args.cors_origin or [],
    )
    for flag in ("max_batch_size", "max_texts", "max_chars", "max_body_bytes"):
        if getattr(options, flag) < 1:
            raise TuneforgeError(f"--{flag.replace('_', '-')} must be at least 1")
    if options.max_wait_ms < 0:
        raise TuneforgeError("--max-wait-ms must not be negative")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models = load_models(args.runs, device=args.device, precision=args.precision, share=not args.no_share)
    print(_serving_summary(models, options, args.host, args.port), flush=True)
    serve(create_app(models, options), host=args.host, port=args.port, graceful_seconds=args.graceful_seconds,
          log_level=args.log_level)
    return 0


def _serving_summary(models, options, host: str, port: int) -> str:
    from .serving.pool import process_rss_mb

    lines = [f"serving {len(models)} model(s) at http://{host}:{port}/ (API docs /docs; "
             f"{'API key required' if options.api_key else 'no API key'}; "
             f"micro-batches of up to {options.max_batch_size}, {options.max_wait_ms:g} ms wait)"]
    for m in models:
        info = m.info()
        memory = m.sharing() if len(models) > 1 else f"{m.bytes_total / 2**20:.1f} MB of tensors"
        lines.append(f"  {m.name}: {info['task']}, method {info['method']}, {len(info['labels'])} labels, "
                     f"base {info['base_model'] or '(own weights)'} — {memory}")
    lines.append(f"process memory after loading: {process_rss_mb():.0f} MB resident")
    return "\n".join(lines)


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

    p = sub.add_parser("export", help="write a trained run as a plain Hugging Face model folder")
    p.add_argument("run")
    p.add_argument("out")
    p.add_argument("--merge", action="store_true", help="fold LoRA / IA3 / BitFit / freeze weights into the base model")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("serve", help="serve run folders over HTTP: JSON API, metrics, a web page")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder, or NAME=RUN to name the model")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    _add_precision(p)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--max-batch-size", type=int, default=32, help="inputs per micro-batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to join its micro-batch")
    p.add_argument("--max-texts", type=int, default=64, help="texts per request (422 above)")
    p.add_argument("--max-chars", type=int, default=10_000, help="characters per text (422 above)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="request body size (413 above)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/* (better: set TUNEFORGE_API_KEY, "
                                     "which other users cannot read from the process list)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="let pages from ORIGIN (e.g. https://app.example.com) call the API; repeatable; off by default")
    p.add_argument("--threads", type=int, help="torch threads for inference (default: one per core)")
    p.add_argument("--no-share", action="store_true", help="load every run as its own copy (no shared base weights)")
    p.add_argument("--graceful-seconds", type=float, default=30.0,
                   help="on SIGTERM/Ctrl-C, time to finish requests already received")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_cmd_serve)

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
