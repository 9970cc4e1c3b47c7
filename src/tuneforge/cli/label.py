"""`tuneforge label suggest|simulate`: active learning — what to label next, and whether it pays."""

from __future__ import annotations

import json
from pathlib import Path

from .. import api
from ..artifacts.paths import check_output_path
from ..tasks.predictor import check_read_options
from ..workflows import active
from ..workflows.active import STRATEGIES
from .common import comma_list, positive_int, write_output


def _strategies() -> tuple[str, ...]:
    return STRATEGIES


def _cmd_label_suggest(args) -> int:
    if args.out:
        check_output_path(args.out, "--out")  # before the model is loaded and the pool scored
    predictor = api.load(args.run, precision="fp32")
    options = check_read_options(predictor, {"text_column": args.text_column})
    tasks, _picked, scores = active.suggest(
        predictor, args.pool, n=args.n, strategy=args.strategy, diversity=args.diversity, aggregate=args.aggregate,
        seed=args.seed, batch_size=args.batch_size, read_options=options, model_version=Path(args.run).resolve().name)
    text = json.dumps(tasks, ensure_ascii=False, indent=1) + "\n"
    write_output(text, args.out, f"{len(tasks)} pre-annotated Label Studio tasks (of {len(scores)} in the pool, "
                                  f"strategy {args.strategy}{', diversity' if args.diversity else ''})")
    return 0


def _cmd_label_simulate(args) -> int:
    strategies = comma_list(args.strategies)
    result = active.simulate(args.config, strategies, rounds=args.rounds, batch=args.batch, seeds=args.seeds,
                             initial=args.initial, overrides=args.set, out=args.out, diversity=args.diversity,
                             aggregate=args.aggregate, isolate=args.isolate)
    print(result.files["al.md"].read_text(encoding="utf-8"))
    print(f"table: {result.files['al.md']} · {result.files['al.csv']} · picture: {result.files['al.png']}")
    return 0


def add_parsers(sub) -> None:
    """``label suggest`` and ``label simulate``."""

    label = sub.add_parser("label", help="active learning: what to label next, and whether it pays").add_subparsers(
        dest="label_command", required=True)
    p = label.add_parser("suggest", help="pick the pool examples most worth labelling; write them as pre-annotated "
                                         "Label Studio tasks")
    p.add_argument("run")
    p.add_argument("pool", help="unlabelled examples: raw text (.txt, one a line), CoNLL, JSONL, CSV/TSV, Label "
                                "Studio tasks (.json, annotated or not), Parquet/Arrow, hf:NAME[@SPLIT]")
    p.add_argument("--n", type=positive_int, default=100, help="how many to pick")
    p.add_argument("--strategy", default="entropy", choices=list(_strategies()))
    p.add_argument("--diversity", action="store_true",
                   help="one pick per cluster of the 5n best candidates (k-means on character n-grams)")
    p.add_argument("--aggregate", default="sum", choices=["sum", "mean", "max"],
                   help="how a sentence's word scores combine (token classifiers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-column", help="text classifiers: the text column of a CSV/TSV/JSONL pool")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--out", help="write the tasks here (JSON) instead of standard output")
    p.set_defaults(func=_cmd_label_suggest)
    p = label.add_parser("simulate", help="replay active learning on a labelled set with its labels hidden; "
                                          "score against labels bought per strategy (al.png, al.csv)")
    p.add_argument("config")
    p.add_argument("--rounds", type=positive_int, default=5, help="training rounds, the random start included")
    p.add_argument("--batch", type=positive_int, default=100, help="examples labelled per round")
    p.add_argument("--initial", type=positive_int, help="random examples labelled before round 0 (default: --batch)")
    p.add_argument("--strategies", default="entropy,margin,random",
                   help="comma-separated: " + ", ".join(_strategies()))
    p.add_argument("--seeds", type=positive_int, default=1, help="repeats with seeds training.seed, +1, ...")
    p.add_argument("--diversity", action="store_true")
    p.add_argument("--aggregate", default="sum", choices=["sum", "mean", "max"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key for every round")
    p.add_argument("--out", help="folder for the rounds' runs and al.csv/png/md (default: the config's output_dir)")
    p.add_argument("--isolate", action="store_true", help="train each round in its own process")
    p.set_defaults(func=_cmd_label_simulate, rerun_resumes="tuneforge label simulate")
