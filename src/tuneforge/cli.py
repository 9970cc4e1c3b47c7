"""`tuneforge train|eval|predict|compare|export|data …` — parses arguments and calls the Python API."""

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
    from .paths import check_output_path

    if args.out:
        check_output_path(args.out, "--out")  # before the model is loaded and the data scored
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
    from .paths import check_output_path
    from .tasks.base import check_read_options

    if args.out:
        check_output_path(args.out, "--out")  # before the model is loaded and the inputs tagged
    predictor = api.load(args.run, precision=args.precision)
    if args.output_format not in predictor.output_formats:
        raise TuneforgeError(f"--output-format {args.output_format}: a {predictor.task_name.replace('_', ' ')} "
                             f"model writes {', '.join(predictor.output_formats)}")
    options = check_read_options(predictor, {"text_column": args.text_column, "text_pair_column": args.text_pair_column})
    examples = predictor.read_inputs(args.input, args.format, **options)
    results = predictor.predict(examples, batch_size=args.batch_size)
    if args.output_format == "labelstudio":  # pre-annotations: every task's predictions, with scores
        from .data.interchange import labelstudio_tasks

        tasks = labelstudio_tasks([predictor.annotation(ex, r) for ex, r in zip(examples, results)],
                                  as_predictions=True, model_version=f"tuneforge:{Path(args.run).resolve().name}")
        text = json.dumps(tasks, ensure_ascii=False, indent=1) + "\n"
    else:
        text = predictor.format_output(results, args.output_format)
    _write_output(text, args.out, predictor.describe_output(results))
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
    from .paths import check_output_path

    ratios = _parse_ratios(args.ratios)
    check_output_path(args.out, "--out", folder=True)
    examples = read_token_file(args.input, args.format, tag_column=args.tag_column)
    parts = split_examples(examples, ratios, args.seed)
    out = Path(args.out)
    for name, part in zip(("train", "dev", "test"), parts):
        write_conll(part, out / f"{name}.conll")
    print(f"{len(examples)} sentences -> " + ", ".join(
        f"{name} {len(p)}" for name, p in zip(("train", "dev", "test"), parts)) + f" in {out}/")
    return 0


def _parse_ratios(text: str) -> list[float]:
    import math

    try:
        ratios = [float(r) for r in text.split(",")]
    except ValueError:
        ratios = []
    if len(ratios) != 3 or not all(math.isfinite(r) and r >= 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise TuneforgeError(
            f"--ratios {text}: give three non-negative numbers train,dev,test that sum to 1, such as 0.8,0.1,0.1"
        )
    return ratios


def _cmd_data_check(args) -> int:
    from .data.checks import run_check, strict_failures

    overrides = list(args.set or [])
    if args.format != "auto":
        overrides.append(f"data.format={args.format}")
    if args.tag_column is not None:
        overrides.append(f"data.tag_column={args.tag_column}")
    if args.scheme is not None:
        overrides.append(f"data.scheme={args.scheme}")
    report, files = run_check(args.inputs, args.task, overrides, args.tokenizer, args.max_length, args.model,
                              args.folds, args.noise_threshold, args.near_threshold, args.out)
    sizes = ", ".join(f"{name} {size['examples']}" for name, size in report["sizes"].items())
    print(f"{report['task'].replace('_', ' ')} data: {sizes} examples")
    for line in report["findings"] or ["nothing to report"]:
        print(f"- {line}")
    print(f"report: {files['json']} · {files['html']}")
    failures = strict_failures(report) if args.strict else []
    if failures:
        print(f"strict: {'; '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _cmd_data_convert(args) -> int:
    from .data.interchange import convert

    overrides = list(args.set or [])
    if args.format != "auto":
        overrides.append(f"data.format={args.format}")
    if args.tag_column is not None:
        overrides.append(f"data.tag_column={args.tag_column}")
    n, what = convert(args.input, args.out, args.to, args.task, overrides)
    print(f"wrote {n} examples to {what}", file=sys.stderr)
    return 0


def _add_text_columns(p: argparse.ArgumentParser, labels: bool) -> None:
    """Text classifiers: column names (CSV/TSV) or keys (JSONL); default: those it was trained with."""
    p.add_argument("--text-column", help="text classifiers: the text column (default: as in training)")
    p.add_argument("--text-pair-column", help="text classifiers: the second text of a pair (default: as in training)")
    if labels:
        p.add_argument("--label-column", help="text classifiers: the label column (default: as in training)")


def _cmd_compare(args) -> int:
    from . import compare
    from .paths import check_output_path

    if args.out:
        check_output_path(args.out, "--out", folder=True)
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
    from .paths import check_output_path

    if not args.merge:
        raise TuneforgeError("export: pass --merge (fold the method into the base weights); it is the only export so far")
    check_output_path(args.out, "OUT", folder=True)
    out = export_merged(args.run, args.out)
    print(f"wrote a plain Hugging Face model to {out} (loads with transformers alone)")
    return 0


def _cmd_label_suggest(args) -> int:
    from . import active, api
    from .tasks.base import check_read_options

    predictor = api.load(args.run, precision="fp32")
    options = check_read_options(predictor, {"text_column": args.text_column})
    tasks, picked, scores = active.suggest(
        predictor, args.pool, n=args.n, strategy=args.strategy, diversity=args.diversity, aggregate=args.aggregate,
        seed=args.seed, batch_size=args.batch_size, read_options=options, model_version=Path(args.run).resolve().name)
    text = json.dumps(tasks, ensure_ascii=False, indent=1) + "\n"
    _write_output(text, args.out, f"{len(tasks)} pre-annotated Label Studio tasks (of {len(scores)} in the pool, "
                                  f"strategy {args.strategy}{', diversity' if args.diversity else ''})")
    return 0


def _cmd_label_simulate(args) -> int:
    from . import active

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    try:
        result = active.simulate(args.config, strategies, rounds=args.rounds, batch=args.batch, seeds=args.seeds,
                                 initial=args.initial, overrides=args.set, out=args.out, diversity=args.diversity,
                                 aggregate=args.aggregate, isolate=args.isolate)
    except KeyboardInterrupt:
        print("interrupted; run the same `tuneforge label simulate` command again to continue where it stopped",
              file=sys.stderr)
        return 130
    print(result.files["al.md"].read_text(encoding="utf-8"))
    print(f"table: {result.files['al.md']} · {result.files['al.csv']} · picture: {result.files['al.png']}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line and exit 2, like every other error a user can fix."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; see {self.prog} --help\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .data.readers import SCHEMES

    parser = _Parser(prog="tuneforge", description=__doc__)
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
    p.add_argument("--batch-size", type=_positive_int, default=64)
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
    p.add_argument("--output-format", default="jsonl", choices=["jsonl", "conll", "labelstudio"],
                   help="labelstudio: tasks pre-annotated with the predictions and their scores")
    p.add_argument("--out", help="write here instead of standard output")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    _add_precision(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("compare", help="train several adaptation methods on the same data and split, side by side")
    p.add_argument("config")
    p.add_argument("--methods", default="full,lora,adapter,bitfit,prompt",
                   help="comma-separated: full, freeze, lora, ia3, prompt, adapter, bitfit")
    p.add_argument("--seeds", type=_positive_int, default=1, help="runs per method, seeds training.seed, +1, +2 ...")
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

    data = sub.add_parser("data", help="inspect and split data files").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("split", help="make train/dev/test files from one file, deterministic by seed")
    p.add_argument("input")
    p.add_argument("--out", required=True, help="folder for train.conll, dev.conll, test.conll")
    p.add_argument("--ratios", default="0.8,0.1,0.1")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl"])
    p.add_argument("--tag-column", type=int, default=-1)
    p.set_defaults(func=_cmd_data_split)
    p = data.add_parser("check", help="report sizes, labels, scheme repairs, duplicates and leakage, lengths, "
                                      "characters, tokenizer coverage, label noise (report.json + report.html)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a config (.yaml: its data, split and model), or data files: train=PATH dev=PATH test=PATH "
                        "(bare paths fill train, dev, test in order)")
    p.add_argument("--task", default="auto", help="the data's task (default: guessed from the first file)")
    p.add_argument("--format", default="auto", help="data.format of the files (default: by extension)")
    p.add_argument("--tag-column", type=int, help="token classification: the tag column of a CoNLL file")
    p.add_argument("--scheme", choices=["auto", *SCHEMES], help="token classification: the tag scheme")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a data option, e.g. data.text_column=review")
    p.add_argument("--tokenizer", metavar="NAME_OR_PATH",
                   help="measure sub-word lengths and [UNK] rate with this tokenizer (default: the config's or "
                        "--model's model)")
    p.add_argument("--max-length", type=_positive_int, help="inputs longer than this many sub-words are reported "
                                                             "(default: the config's encoding.max_length, 128)")
    p.add_argument("--model", metavar="RUN", help="find label-noise candidates by k-fold cross-validation with this "
                                                  "run's config (trains --folds runs)")
    p.add_argument("--folds", type=_positive_int, default=5)
    p.add_argument("--noise-threshold", type=float, default=0.9,
                   help="probability above which a held-out prediction that disagrees with the label is reported")
    p.add_argument("--near-threshold", type=float, default=0.8, help="shingle Jaccard for near duplicates")
    p.add_argument("--out", default="data-check", help="folder for report.json and report.html")
    p.add_argument("--strict", action="store_true", help="exit 1 on leakage between splits or malformed records")
    p.set_defaults(func=_cmd_data_check)
    p = data.add_parser("convert", help="to and from labelling tools: Label Studio JSON, doccano JSONL, our JSONL")
    p.add_argument("input", help="any file the task reads: CoNLL, JSONL, CSV/TSV, Label Studio .json, doccano .jsonl "
                                 "(--format doccano)")
    p.add_argument("out")
    p.add_argument("--to", required=True, choices=["labelstudio", "doccano", "jsonl"])
    p.add_argument("--task", default="auto", help="the data's task (default: guessed from the file)")
    p.add_argument("--format", default="auto", help="the input's data.format (default: by extension)")
    p.add_argument("--tag-column", type=int, help="token classification: the tag column of a CoNLL file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a data option, e.g. data.text_column=review")
    p.set_defaults(func=_cmd_data_convert)

    label = sub.add_parser("label", help="active learning: what to label next, and whether it pays").add_subparsers(
        dest="label_command", required=True)
    p = label.add_parser("suggest", help="pick the pool examples most worth labelling; write them as pre-annotated "
                                         "Label Studio tasks")
    p.add_argument("run")
    p.add_argument("pool", help="unlabelled examples: raw text (.txt, one a line), CoNLL, JSONL, CSV/TSV")
    p.add_argument("--n", type=_positive_int, default=100, help="how many to pick")
    p.add_argument("--strategy", default="entropy", choices=list(_strategies()))
    p.add_argument("--diversity", action="store_true",
                   help="one pick per cluster of the 5n best candidates (k-means on character n-grams)")
    p.add_argument("--aggregate", default="sum", choices=["sum", "mean", "max"],
                   help="how a sentence's word scores combine (token classifiers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-column", help="text classifiers: the text column of a CSV/TSV/JSONL pool")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--out", help="write the tasks here (JSON) instead of standard output")
    p.set_defaults(func=_cmd_label_suggest)
    p = label.add_parser("simulate", help="replay active learning on a labelled set with its labels hidden; "
                                          "score against labels bought per strategy (al.png, al.csv)")
    p.add_argument("config")
    p.add_argument("--rounds", type=_positive_int, default=5, help="training rounds, the random start included")
    p.add_argument("--batch", type=_positive_int, default=100, help="examples labelled per round")
    p.add_argument("--initial", type=_positive_int, help="random examples labelled before round 0 (default: --batch)")
    p.add_argument("--strategies", default="entropy,margin,random",
                   help="comma-separated: " + ", ".join(_strategies()))
    p.add_argument("--seeds", type=_positive_int, default=1, help="repeats with seeds training.seed, +1, ...")
    p.add_argument("--diversity", action="store_true")
    p.add_argument("--aggregate", default="sum", choices=["sum", "mean", "max"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key for every round")
    p.add_argument("--out", help="folder for the rounds' runs and al.csv/png/md (default: the config's output_dir)")
    p.add_argument("--isolate", action="store_true", help="train each round in its own process")
    p.set_defaults(func=_cmd_label_simulate)
    return parser


def _strategies() -> tuple[str, ...]:
    from .active import STRATEGIES

    return STRATEGIES


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except TuneforgeError as exc:
        # one line whatever the message quotes (a file name or value with a line break in it)
        print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; `tuneforge train CONFIG --resume` continues from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
