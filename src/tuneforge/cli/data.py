"""`tuneforge data split|check|perturb|sample|convert`: inspect, split, perturb, sample and convert data files."""

from __future__ import annotations

import inspect
import json
import math
import sys
from pathlib import Path

from ..artifacts.paths import check_output_path
from ..data.checks import strict_failures
from ..data.perturb import check_rate, parse_perturbations, perturb_examples
from ..data.readers import (
    SCHEMES,
    detect_text_format,
    normalise_to_iob2,
    read_text_file,
    read_token_file,
    split_examples,
    write_conll,
    write_text_file,
)
from ..data.sampling import describe_sample, greedy_sample, sample_per_class
from ..errors import TuneforgeError
from ..evaluation.metrics import extract_entities
from ..tasks import get_task
from ..tasks.capabilities import Perturbable, require
from ..workflows.checks import run_check
from ..workflows.convert import convert
from .common import add_perturb, add_text_columns, fraction, positive_int


def _cmd_data_split(args) -> int:
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
    check_output_path(args.out, "--out", folder=True)
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
    print("labels: " + ", ".join(report["labels"]["space"]))
    if args.strict:
        failures = strict_failures(report)
        if failures:
            print(f"strict: {'; '.join(failures)}", file=sys.stderr)
            return 1
    malformed = sum(size["malformed"] for size in report["sizes"].values())
    if malformed:  # a gate, as linters are: errors fail it, warnings (the other findings) do not
        print(f"errors: {malformed} malformed record(s) skipped (listed in the report); exit status 1",
              file=sys.stderr)
        return 1
    return 0


def _cmd_data_convert(args) -> int:
    check_output_path(args.out, "OUT")
    overrides = list(args.set or [])
    if args.format != "auto":
        overrides.append(f"data.format={args.format}")
    if args.tag_column is not None:
        overrides.append(f"data.tag_column={args.tag_column}")
    n, what = convert(args.input, args.out, args.to, args.task, overrides)
    print(f"wrote {n} examples to {what}", file=sys.stderr)
    return 0


def _guess_task(path: str, format: str) -> str:
    """The task a labelled file is for (``data perturb`` without --task, ``data sample``): CoNLL is token
    data, CSV/TSV text data, JSONL by its first record."""

    fmt = format
    if fmt == "auto":
        fmt = detect_text_format(path)
        fmt = fmt if fmt in ("jsonl", "tsv") or Path(path).suffix.lower() == ".csv" else "conll"
    if fmt == "jsonl":
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = next((line for line in handle if line.strip()), "{}")
        try:
            record = json.loads(first)
        except json.JSONDecodeError:
            record = {}
        return "token_classification" if isinstance(record, dict) and ("tokens" in record or "words" in record) \
            else "text_classification"
    return "text_classification" if fmt in ("csv", "tsv") else "token_classification"


def _cmd_data_perturb(args) -> int:
    names = parse_perturbations(args.perturb)
    check_rate(args.rate)
    check_output_path(args.out, "--out", folder=True)
    if not Path(args.input).is_file():
        raise TuneforgeError(f"{args.input}: file not found")
    task = get_task(args.task or _guess_task(args.input, args.format))
    require(task, Perturbable, "tuneforge data perturb")
    given = {"tag_column": args.tag_column, "text_column": args.text_column, "label_column": args.label_column,
             "text_pair_column": args.text_pair_column, "multi_label": args.multi_label or None}
    given = {k: v for k, v in given.items() if v is not None}
    takes = set(inspect.signature(task.read_file).parameters)
    unknown = sorted(set(given) - takes)
    if unknown:
        raise TuneforgeError(f"--{unknown[0].replace('_', '-')} does not apply to {task.name} data")
    examples = task.read_file(args.input, args.format, **given)
    written_options = {k: v for k, v in given.items() if k in inspect.signature(task.write_file).parameters}
    source = Path(args.input)
    out = Path(args.out)
    for name in names:
        noisy, stats = perturb_examples(examples, name, args.rate, args.seed, task)
        target = out / f"{source.stem}.{name}{source.suffix}"
        task.write_file(noisy, target, args.format, **written_options)
        print(f"{stats.describe()} -> {target}")
    return 0


def _cmd_data_sample(args) -> int:
    """k examples per class (per entity type for NER) from a labelled file, written in the same format."""

    fmt = args.format
    check_output_path(args.out, "--out")
    if _guess_task(args.input, fmt) == "token_classification":
        examples = read_token_file(args.input, fmt, tag_column=args.tag_column)
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
        write_text_file(sample, args.out, "auto", args.text_column, args.label_column, multi_label=args.multi_label)
    print(describe_sample(report))
    print("per label: " + ", ".join(f"{label} {n}" for label, n in report["per_label"].items()))
    print(f"wrote {report['examples']} examples to {args.out}")
    return 0


def add_parsers(sub) -> None:
    """``data split``, ``data check``, ``data perturb``, ``data sample`` and ``data convert``."""

    data = sub.add_parser("data", help="inspect, split and perturb data files").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("split", help="make train/dev/test files from one file, deterministic by seed")
    p.add_argument("input")
    p.add_argument("--out", required=True, help="folder for train.conll, dev.conll, test.conll")
    p.add_argument("--ratios", default="0.8,0.1,0.1")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl"])
    p.add_argument("--tag-column", type=int, default=-1)
    p.set_defaults(func=_cmd_data_split)
    p = data.add_parser("check", help="report sizes, labels, scheme repairs, duplicates and leakage, lengths, "
                                      "characters, tokenizer coverage, label noise (report.json + report.html)",
                        epilog="exit status: 0 the report is written and holds warnings at most; 1 it found errors "
                               "(malformed records, which were skipped; with --strict also leakage); 2 a usage "
                               "mistake or an input that cannot be read at all")
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
    p.add_argument("--max-length", type=positive_int, help="inputs longer than this many sub-words are reported "
                                                             "(default: the config's encoding.max_length, 128)")
    p.add_argument("--model", metavar="RUN", help="find label-noise candidates by k-fold cross-validation with this "
                                                  "run's config (trains --folds runs)")
    p.add_argument("--folds", type=positive_int, default=5)
    p.add_argument("--noise-threshold", type=fraction, default=0.9,
                   help="probability above which a held-out prediction that disagrees with the label is reported")
    p.add_argument("--near-threshold", type=fraction, default=0.8, help="shingle Jaccard for near duplicates")
    p.add_argument("--out", default="data-check", help="folder for report.json and report.html")
    p.add_argument("--strict", action="store_true", help="exit 1 on leakage between splits or malformed records")
    p.set_defaults(func=_cmd_data_check)
    p = data.add_parser("perturb", help="write noisy copies of a labelled file (character noise; labels kept)")
    p.add_argument("input")
    p.add_argument("--out", required=True, help="folder for INPUT_STEM.<perturbation>.<ext>, one file per perturbation")
    add_perturb(p, required=True)
    p.add_argument("--task", choices=["token_classification", "text_classification"],
                   help="what the file holds (default: CoNLL and JSONL with tokens -> token, CSV/TSV/other JSONL -> text)")
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl", "csv", "tsv"])
    p.add_argument("--tag-column", type=int, help="token data: the tag column of a CoNLL file (default: last)")
    add_text_columns(p, labels=True, defaults="text, label; no pair")
    p.add_argument("--multi-label", action="store_true", help="text data: several labels per text")
    p.set_defaults(func=_cmd_data_perturb)
    p = data.add_parser("sample", help="k examples per class (per entity type for NER), deterministic by seed")
    p.add_argument("input")
    p.add_argument("--k", type=positive_int, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True, help="the sample, in the input's format (CoNLL for NER)")
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl", "csv", "tsv"])
    p.add_argument("--tag-column", type=int, default=-1)
    p.add_argument("--scheme", default="auto", choices=["auto", *SCHEMES])
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--multi-label", action="store_true", help="text files: several labels per text (| separated)")
    p.set_defaults(func=_cmd_data_sample)
    p = data.add_parser("convert", help="to and from labelling tools: Label Studio JSON, doccano JSONL, our JSONL")
    p.add_argument("input", help="any file the task reads: CoNLL, JSONL, CSV/TSV, Label Studio .json, doccano .jsonl "
                                 "(--format doccano), Parquet/Arrow, hf:NAME[:CONFIG][@SPLIT]")
    p.add_argument("out")
    p.add_argument("--to", required=True, choices=["labelstudio", "doccano", "jsonl"])
    p.add_argument("--task", default="auto", help="the data's task (default: guessed from the file)")
    p.add_argument("--format", default="auto", help="the input's data.format (default: by extension)")
    p.add_argument("--tag-column", type=int, help="token classification: the tag column of a CoNLL file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a data option, e.g. data.text_column=review")
    p.set_defaults(func=_cmd_data_convert)
