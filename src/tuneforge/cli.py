"""`tuneforge train|eval|predict|compare|export|vocab|data …` — parses arguments and calls the Python API."""

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


def _cmd_export(args) -> int:
    from .artifacts import export_merged

    if not args.merge:
        raise TuneforgeError("export: pass --merge (fold the method into the base weights); it is the only export so far")
    out = export_merged(args.run, args.out)
    print(f"wrote a plain Hugging Face model to {out} (loads with transformers alone)")
    return 0


def _vocab_text_sets(args) -> dict:
    """``--corpus`` (raw text) and ``--labelled`` (CoNLL / token JSONL, words read as the NER task reads them)."""
    from .data.readers import read_documents, read_token_file

    sets = {}
    if args.corpus:
        sets["corpus"] = [d.text for d in read_documents(args.corpus, text_key=args.text_column)]
    for path in args.labelled or []:
        sets[Path(path).name] = [ex.words for ex in read_token_file(path, tag_column=None)]
    return sets


def _cmd_vocab_extend(args) -> int:
    from .vocab import extend_vocabulary

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise TuneforgeError(f"{out}: output folder is not empty; choose a new folder")
    sets = _vocab_text_sets(args)
    corpus = sets.pop("corpus")
    result = extend_vocabulary(
        args.model, corpus, args.add, out, reports=sets, kinds=args.kinds, min_count=args.min_count,
        min_pieces=args.min_pieces, init=args.init, noise_std=args.noise_std, seed=args.seed,
    )
    print(result.describe())
    return 0


def _cmd_vocab_stats(args) -> int:
    from .models import load_tokenizer
    from .vocab import format_stats_table, token_stats

    if not args.corpus and not args.labelled:
        raise TuneforgeError("vocab stats: give --corpus and/or --labelled files to measure")
    tokenizer = load_tokenizer(args.model)
    print(format_stats_table({name: {"before": token_stats(tokenizer, texts).as_dict()}
                              for name, texts in _vocab_text_sets(args).items()}))
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

    vocab = sub.add_parser("vocab", help="measure a tokenizer on text, extend its vocabulary").add_subparsers(
        dest="vocab_command", required=True)
    p = vocab.add_parser("extend", help="add the characters/words a corpus needs most; resize and initialise embeddings")
    p.add_argument("--model", required=True, help="base model: hub name, folder or pkg:PACKAGE/path")
    p.add_argument("--corpus", required=True, nargs="+", help="raw text: .txt (one document a line), .jsonl, folders")
    p.add_argument("--add", required=True, type=int, help="how many entries to add at most")
    p.add_argument("--out", required=True, help="folder for the extended model, tokenizer and vocab_extension.json")
    p.add_argument("--labelled", nargs="*", help="CoNLL / token JSONL files to report [UNK] rate and pieces per char on")
    p.add_argument("--kinds", default="both", choices=["characters", "words", "both"])
    p.add_argument("--min-count", type=int, default=2, help="ignore candidates seen fewer times")
    p.add_argument("--min-pieces", type=int, default=3, help="a word is a candidate from this many pieces on")
    p.add_argument("--init", default="pieces", choices=["pieces", "mean"],
                   help="new rows: mean of the old pieces (else the mean row), or the mean row")
    p.add_argument("--noise-std", type=float, default=0.01, help="Gaussian noise added to each new row")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--text-column", default="text", help="the text key of .jsonl corpus files")
    p.set_defaults(func=_cmd_vocab_extend)
    p = vocab.add_parser("stats", help="[UNK] rate and pieces per character of a tokenizer on some text")
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", nargs="*", help="raw text: .txt (one document a line), .jsonl, folders")
    p.add_argument("--labelled", nargs="*", help="CoNLL / token JSONL files")
    p.add_argument("--text-column", default="text")
    p.set_defaults(func=_cmd_vocab_stats)

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
