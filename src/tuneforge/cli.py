"""`tuneforge train|eval|predict|compare|curve|continual|export|serve|vocab|data …` — parses arguments and calls the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import TuneforgeError


def _cmd_train(args) -> int:
    from . import api, distributed
    from .tasks import get_task

    result = api.train(args.config, overrides=args.set, resume=args.resume, overwrite=args.overwrite)
    if not distributed.is_main():
        return 0
    print((result.run_dir / "report.txt").read_text(encoding="utf-8"))
    summary = get_task(result.metrics["task"]).summary(result.metrics)
    print(f"run folder: {result.run_dir} · {summary} · best epoch {result.metrics['best_epoch']}")
    return 0


def _add_precision(p) -> None:
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                   help="auto: the measured best for this hardware (bf16 on GPUs with bf16 and CPUs with "
                        "AVX512-BF16/AMX, else fp32); bf16: autocast; int8: dynamic int8 linear layers "
                        "(CPU; see benchmarks/RESULTS.md for speed and agreement)")
    p.add_argument("--engine", default="torch", choices=["torch", "onnx"],
                   help="onnx: ONNX Runtime (CPU, fp32 or --precision int8), exported into RUN/onnx/ on first use")


def _load_on_this_process(args):
    """The run's predictor, on this process's device when several processes share the work."""
    from . import api, distributed
    from .paths import check_output_path

    if args.out:
        check_output_path(args.out, "--out")  # before the model is loaded and the data read
    device = str(distributed.init_processes().device) if distributed.launched_distributed() else None
    return api.load(args.run, device=device, precision=args.precision, engine=args.engine)


def _cmd_eval(args) -> int:
    from . import api, distributed

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
        from .evaluation.robustness import format_robustness

        print("\n" + format_robustness(metrics["robustness"]))
    if args.out:
        from .paths import atomic_write_text

        atomic_write_text(args.out, json.dumps(metrics, indent=1))
    return 0


def _cmd_predict(args) -> int:
    from contextlib import nullcontext

    from . import distributed
    from .paths import atomic_open
    from .tasks.base import check_read_options, describe_counts, predict_across_processes

    predictor = _load_on_this_process(args)
    if args.output_format not in predictor.output_formats:
        raise TuneforgeError(f"--output-format {args.output_format}: a {predictor.task_name.replace('_', ' ')} "
                             f"model writes {', '.join(predictor.output_formats)}")
    options = check_read_options(predictor, {"text_column": args.text_column, "text_pair_column": args.text_pair_column})
    examples = predictor.read_inputs(args.input, args.format, **options)
    runtime = ", ".join(f"{k} {v}" for k, v in predictor.runtime.items())
    if args.output_format == "labelstudio":  # pre-annotations: every task's predictions, with scores (one JSON array)
        from .data.interchange import labelstudio_tasks

        if not distributed.is_main():
            return 0  # one JSON array: process 0 writes it whole

        results = predictor.predict(examples, batch_size=args.batch_size)
        tasks = labelstudio_tasks([predictor.annotation(ex, r) for ex, r in zip(examples, results)],
                                  as_predictions=True, model_version=f"tuneforge:{Path(args.run).resolve().name}")
        _write_output(json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", args.out,
                      f"{predictor.describe_output(results)}; {runtime}")
        return 0
    # to --out atomically (it appears complete or not at all), or to standard output as pieces arrive
    target = atomic_open(args.out, "w") if args.out and distributed.is_main() else nullcontext(sys.stdout)
    with target as handle:
        counts = predict_across_processes(predictor, examples, handle.write, args.output_format, args.batch_size)
    if distributed.is_main():
        print(f"wrote {describe_counts(counts)}{' to ' + args.out if args.out else ''}; {runtime}", file=sys.stderr)
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
    models = load_models(args.runs, device=args.device, precision=args.precision, share=not args.no_share,
                         engine=args.engine)
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
        print(f"wrote {what}", file=sys.stderr)


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
    print("labels: " + ", ".join(report["labels"]["space"]))
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


def _guess_task(path: str, format: str) -> str:
    """The task a labelled file is for (``data perturb`` without --task, ``data sample``): CoNLL is token
    data, CSV/TSV text data, JSONL by its first record."""
    from .data.readers import detect_text_format

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
    import inspect

    from .data.perturb import check_rate, parse_perturbations, perturb_examples
    from .tasks import get_task

    names = parse_perturbations(args.perturb)
    check_rate(args.rate)
    if not Path(args.input).is_file():
        raise TuneforgeError(f"{args.input}: file not found")
    task = get_task(args.task or _guess_task(args.input, args.format))
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


def _add_num_processes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-processes", type=int, default=1, metavar="N",
                   help="start N processes on this machine that share the work (DDP; one per GPU, or CPU "
                        "processes with cores/N threads each); torchrun / accelerate launch work too")


def _add_text_columns(p: argparse.ArgumentParser, labels: bool, defaults: str = "as in training") -> None:
    """Text classifiers: column names (CSV/TSV) or keys (JSONL); default: those it was trained with."""
    p.add_argument("--text-column", help=f"text classifiers: the text column (default: {defaults})")
    p.add_argument("--text-pair-column", help=f"text classifiers: the second text of a pair (default: {defaults})")
    if labels:
        p.add_argument("--label-column", help=f"text classifiers: the label column (default: {defaults})")


def _cmd_compare(args) -> int:
    from . import compare
    from .paths import check_output_path

    if args.out:
        check_output_path(args.out, "--out", folder=True)
    methods = _names(args.methods)
    adversarial = _names(args.adversarial) if args.adversarial else None
    result = compare.compare(args.config, methods, seeds=args.seeds, overrides=args.set,
                             same_budget=args.same_budget, isolate=not args.in_process, out=args.out,
                             adversarial=adversarial, perturb=args.perturb, rate=args.rate,
                             perturb_seed=args.seed)
    print(result.files["compare.md"].read_text(encoding="utf-8"))
    print(f"table: {result.files['compare.md']} · {result.files['compare.csv']} · picture: {result.files['compare.png']}")
    return 0


def _cmd_continual(args) -> int:
    from . import continual

    strategies = _names(args.strategies) if args.strategies else None
    plan = continual.load_plan(args.config, overrides=args.set, strategies=strategies, seeds=args.seeds, out=args.out)
    result = continual.run_continual(plan)
    files = result["files"]
    print(files["continual.md"].read_text(encoding="utf-8"))
    print(f"table: {files['continual.md']} · {files['continual.csv']} · pictures: {plan.out_dir}/continual-*.png")
    return 0


def _cmd_continual_split(args) -> int:
    from . import continual

    groups = [_names(g) for g in args.groups.split(";")] if args.groups else None
    files = _names(args.files) if args.files else None
    path = continual.split_stages(args.config, args.by, args.out, groups=groups, n_stages=args.stages, files=files,
                                  seed=args.seed, overrides=args.set)
    print(f"wrote {path}: run it with `tuneforge continual {path}`")
    return 0


def _cmd_curve(args) -> int:
    from . import curve

    methods = _names(args.methods)
    result = curve.curve(args.config, curve.parse_ks(args.k), methods, seeds=args.seeds, overrides=args.set,
                         isolate=not args.in_process, out=args.out, full_seeds=args.full_seeds,
                         summarise_only=args.summarise_only)
    print(result.files["curve.md"].read_text(encoding="utf-8"))
    print(f"table: {result.files['curve.md']} · {result.files['curve.csv']} · picture: {result.files['curve.png']}")
    return 0


def _cmd_data_sample(args) -> int:
    """k examples per class (per entity type for NER) from a labelled file, written in the same format."""
    from .data.readers import (
        normalise_to_iob2,
        read_text_file,
        read_token_file,
        write_conll,
        write_text_file,
    )
    from .data.sampling import describe_sample, greedy_sample, sample_per_class
    from .evaluation.metrics import extract_entities

    fmt = args.format
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


def _cmd_export(args) -> int:
    if args.merge == args.onnx:
        raise TuneforgeError("export: pass --merge (a plain Hugging Face model) or --onnx (an ONNX Runtime model)")
    if args.quantize and not args.onnx:
        raise TuneforgeError("--quantize: only with --onnx")
    from .paths import check_output_path

    if args.onnx:
        from .onnx_engine import export_onnx

        if args.out:
            check_output_path(args.out, "OUT", folder=True)
        out = export_onnx(args.run, args.out, args.quantize)
        print(f"wrote an ONNX model to {out} (tuneforge predict/eval/serve {out}; onnxruntime alone reads model.onnx)")
        return 0
    from .artifacts import export_merged

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

    strategies = _names(args.strategies)
    result = active.simulate(args.config, strategies, rounds=args.rounds, batch=args.batch, seeds=args.seeds,
                             initial=args.initial, overrides=args.set, out=args.out, diversity=args.diversity,
                             aggregate=args.aggregate, isolate=args.isolate)
    print(result.files["al.md"].read_text(encoding="utf-8"))
    print(f"table: {result.files['al.md']} · {result.files['al.csv']} · picture: {result.files['al.png']}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line and exit 2, like every other error a user can fix."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; see {self.prog} --help\n")


def _names(text: str) -> list[str]:
    """``a, b,c`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _fraction(text: str) -> float:
    """A number in (0, 1], such as a similarity or probability threshold."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} must be above 0 and at most 1")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _add_perturb(p: argparse.ArgumentParser, required: bool) -> None:
    from .data.perturb import PERTURBATIONS

    p.add_argument("--perturb", required=required, metavar="NAMES",
                   help=("also score noisy copies: " if not required else "")
                   + f"comma-separated, from {', '.join(PERTURBATIONS)}, or all (see tuneforge.data.perturb)")
    p.add_argument("--rate", type=float, default=0.1, help="share of words changed (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="noise seed: same seed, same noisy copy (default 0)")


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
    from .paths import check_output_path
    from .vocab import extend_vocabulary

    out = check_output_path(args.out, "--out", folder=True)
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
    from .data.readers import SCHEMES

    parser = _Parser(prog="tuneforge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune a model as a YAML config says")
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. training.epochs=3")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    _add_num_processes(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="score a trained run on a labelled file")
    p.add_argument("run")
    p.add_argument("data")
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl", "csv", "tsv", "parquet", "arrow", "hf"])
    p.add_argument("--tag-column", type=int, help="token classifiers: the tag column of a CoNLL file (default: last)")
    _add_text_columns(p, labels=True)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    _add_precision(p)
    p.add_argument("--out", help="also write the metrics as JSON here")
    _add_perturb(p, required=False)
    _add_num_processes(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="tag or classify CoNLL, CSV/TSV, JSONL or raw text (one text a line)")
    p.add_argument("run")
    p.add_argument("input")
    p.add_argument("--format", default="auto",
                   choices=["auto", "conll", "jsonl", "text", "csv", "tsv", "parquet", "arrow", "hf"],
                   help="input format; auto: .txt is raw text, .jsonl JSONL, .csv/.tsv tables (text classifiers), "
                        ".parquet/.arrow and hf:NAME[@SPLIT] datasets, else CoNLL (first column = word)")
    _add_text_columns(p, labels=False)
    p.add_argument("--output-format", default="jsonl", choices=["jsonl", "conll", "labelstudio"],
                   help="labelstudio: tasks pre-annotated with the predictions and their scores")
    p.add_argument("--out", help="write here instead of standard output")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    _add_precision(p)
    _add_num_processes(p)
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
    p.add_argument("--adversarial", metavar="NAMES",
                   help="also cross every method with these: none (plain), fgm, pgd, rdrop, e.g. none,fgm,pgd")
    _add_perturb(p, required=False)
    p.set_defaults(func=_cmd_compare, rerun_resumes="tuneforge compare")

    p = sub.add_parser("continual", help="train stage after stage with continual-learning strategies; "
                       "measure forgetting (`tuneforge continual split` builds stages)")
    p.add_argument("config", help="a run config with a continual: block")
    p.add_argument("--strategies", help=f"comma-separated, default the config's: {', '.join(CONTINUAL_STRATEGIES)}")
    p.add_argument("--seeds", type=int, help="sequences per strategy, seeds training.seed, +1, ... (default: the config's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key for every stage, e.g. training.epochs=2 or continual.ewc.lambda=100")
    p.add_argument("--out", help="folder for the runs and continual.md/csv/png (default: the config's output_dir)")
    p.set_defaults(func=_cmd_continual, rerun_resumes="tuneforge continual")

    p = sub.add_parser("continual-split", help="(`tuneforge continual split`) build continual stages from one data set")
    p.prog = "tuneforge continual split"
    p.add_argument("config", help="a run config: its task, data (train + dev/test or data.split) and columns")
    p.add_argument("--by", required=True, choices=["type", "label", "file"],
                   help="type: entity types (NER); label: classes; file: one stage a file (--files)")
    p.add_argument("--stages", type=int, help="number of stages: labels dealt round-robin by frequency (default 2)")
    p.add_argument("--groups", help='labels a stage, stages split by ";", e.g. "person,geo-loc;company,product"')
    p.add_argument("--files", help="comma-separated data files, one a stage (--by file)")
    p.add_argument("--out", required=True, help="folder for the stage files, stages.yaml and continual.yaml")
    p.add_argument("--seed", type=int, default=42, help="how NER training sentences are dealt into stages")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key of the config")
    p.set_defaults(func=_cmd_continual_split)

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
    p.set_defaults(func=_cmd_curve, rerun_resumes="tuneforge curve")

    p = sub.add_parser("export", help="write a trained run as a plain Hugging Face model folder")
    p.add_argument("run")
    p.add_argument("out")
    p.add_argument("--merge", action="store_true", help="fold LoRA / IA3 / BitFit / freeze weights into the base model")
    p.add_argument("--onnx", action="store_true", help="an ONNX model folder for ONNX Runtime (methods folded first)")
    p.add_argument("--quantize", choices=["int8"], help="with --onnx: also write ONNX Runtime's dynamic int8 model")
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
    p.add_argument("--noise-threshold", type=_fraction, default=0.9,
                   help="probability above which a held-out prediction that disagrees with the label is reported")
    p.add_argument("--near-threshold", type=_fraction, default=0.8, help="shingle Jaccard for near duplicates")
    p.add_argument("--out", default="data-check", help="folder for report.json and report.html")
    p.add_argument("--strict", action="store_true", help="exit 1 on leakage between splits or malformed records")
    p.set_defaults(func=_cmd_data_check)
    p = data.add_parser("perturb", help="write noisy copies of a labelled file (character noise; labels kept)")
    p.add_argument("input")
    p.add_argument("--out", required=True, help="folder for INPUT_STEM.<perturbation>.<ext>, one file per perturbation")
    _add_perturb(p, required=True)
    p.add_argument("--task", choices=["token_classification", "text_classification"],
                   help="what the file holds (default: CoNLL and JSONL with tokens -> token, CSV/TSV/other JSONL -> text)")
    p.add_argument("--format", default="auto", choices=["auto", "conll", "jsonl", "csv", "tsv"])
    p.add_argument("--tag-column", type=int, help="token data: the tag column of a CoNLL file (default: last)")
    _add_text_columns(p, labels=True, defaults="text, label; no pair")
    p.add_argument("--multi-label", action="store_true", help="text data: several labels per text")
    p.set_defaults(func=_cmd_data_perturb)
    p = data.add_parser("sample", help="k examples per class (per entity type for NER), deterministic by seed")
    p.add_argument("input")
    p.add_argument("--k", type=_positive_int, required=True)
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

    label = sub.add_parser("label", help="active learning: what to label next, and whether it pays").add_subparsers(
        dest="label_command", required=True)
    p = label.add_parser("suggest", help="pick the pool examples most worth labelling; write them as pre-annotated "
                                         "Label Studio tasks")
    p.add_argument("run")
    p.add_argument("pool", help="unlabelled examples: raw text (.txt, one a line), CoNLL, JSONL, CSV/TSV, Label "
                                "Studio tasks (.json, annotated or not), Parquet/Arrow, hf:NAME[@SPLIT]")
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
    p.set_defaults(func=_cmd_label_simulate, rerun_resumes="tuneforge label simulate")
    return parser


def _without_num_processes(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--num-processes":
            skip = True
        elif not arg.startswith("--num-processes="):
            out.append(arg)
    return out


CONTINUAL_STRATEGIES = ("naive", "replay", "ewc", "lwf", "joint")


def _strategies() -> tuple[str, ...]:
    from .active import STRATEGIES

    return STRATEGIES


def main(argv: list[str] | None = None) -> int:
    from . import distributed

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["continual", "split"]:  # `continual split` reads better than a second command name
        argv = ["continual-split", *argv[2:]]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    n = getattr(args, "num_processes", 1)
    if n < 1:
        print("error: --num-processes: give 1 or more", file=sys.stderr)
        return 2
    if n > 1:
        if distributed.launched_distributed():
            print("error: --num-processes starts its own processes; leave it out under torchrun or accelerate launch",
                  file=sys.stderr)
            return 2
        try:
            return distributed.launch_local(n, _without_num_processes(argv))
        except KeyboardInterrupt:
            print(f"interrupted; `tuneforge {args.command} ... --resume` continues a training run from its last checkpoint",
                  file=sys.stderr)
            return 130
    try:
        if distributed.launched_distributed():
            distributed.init_processes()
        with distributed.quiet_unless_main():
            return args.func(args)
    except TuneforgeError as exc:
        if distributed.is_main():
            # one line whatever the message quotes (a file name or value with a line break in it)
            print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if distributed.is_main():
            rerun = getattr(args, "rerun_resumes", None)  # multi-run commands skip what already finished
            print(f"interrupted; run the same `{rerun}` command again to continue where it stopped" if rerun
                  else "interrupted; `tuneforge train CONFIG --resume` continues from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
