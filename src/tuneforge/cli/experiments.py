"""`tuneforge compare|continual|continual split|curve`: many runs from one config, summarised side by side."""

from __future__ import annotations

from ..artifacts.paths import check_output_path
from ..workflows import compare, continual, continual_split, curve
from .common import add_perturb, comma_list, positive_int

CONTINUAL_STRATEGIES = ("naive", "replay", "ewc", "lwf", "joint")
DEFAULT_METHODS = ("full", "lora", "adapter", "bitfit", "prompt")


def _cmd_compare(args) -> int:
    if args.out:
        check_output_path(args.out, "--out", folder=True)
    members = compare.load_members(args.members) if args.members else None
    methods = comma_list(args.methods) if args.methods else list(members or DEFAULT_METHODS)
    adversarial = comma_list(args.adversarial) if args.adversarial else None
    result = compare.compare(args.config, methods, seeds=args.seeds, overrides=args.set,
                             same_budget=args.same_budget, isolate=not args.in_process, out=args.out,
                             adversarial=adversarial, perturb=args.perturb, rate=args.rate,
                             perturb_seed=args.seed, members=members)
    print(result.files["compare.md"].read_text(encoding="utf-8"))
    print(f"table: {result.files['compare.md']} · {result.files['compare.csv']} · picture: {result.files['compare.png']}")
    return 0


def _cmd_continual(args) -> int:
    strategies = comma_list(args.strategies) if args.strategies else None
    plan = continual.load_plan(args.config, overrides=args.set, strategies=strategies, seeds=args.seeds, out=args.out)
    result = continual.run_continual(plan)
    files = result["files"]
    print(files["continual.md"].read_text(encoding="utf-8"))
    print(f"table: {files['continual.md']} · {files['continual.csv']} · pictures: {plan.out_dir}/continual-*.png")
    return 0


def _cmd_continual_split(args) -> int:
    groups = [comma_list(g) for g in args.groups.split(";")] if args.groups else None
    files = comma_list(args.files) if args.files else None
    path = continual_split.split_stages(args.config, args.by, args.out, groups=groups, n_stages=args.stages, files=files,
                                        seed=args.seed, overrides=args.set)
    print(f"wrote {path}: run it with `tuneforge continual {path}`")
    return 0


def _cmd_curve(args) -> int:
    methods = comma_list(args.methods)
    result = curve.curve(args.config, curve.parse_ks(args.k), methods, seeds=args.seeds, overrides=args.set,
                         isolate=not args.in_process, out=args.out, full_seeds=args.full_seeds,
                         summarise_only=args.summarise_only)
    print(result.files["curve.md"].read_text(encoding="utf-8"))
    print(f"table: {result.files['curve.md']} · {result.files['curve.csv']} · picture: {result.files['curve.png']}")
    return 0


def add_parsers(sub) -> None:
    """``compare``, ``continual``, ``continual-split`` (typed ``continual split``) and ``curve``."""

    p = sub.add_parser("compare", help="train several adaptation methods, approaches or model families on the same "
                       "data and split, side by side")
    p.add_argument("config")
    p.add_argument("--methods", help="comma-separated: methods (full, freeze, lora, ia3, prompt, adapter, bitfit), the "
                   "task's approaches (in_context, generative, setfit, zero_shot...) or --members names "
                   f"(default: the members, else {','.join(DEFAULT_METHODS)})")
    p.add_argument("--members", metavar="FILE",
                   help="YAML: member name -> {approach: NAME, dotted.key: value...}; members may differ in model "
                   "and task type (docs/bert-or-gpt.md)")
    p.add_argument("--seeds", type=positive_int, default=1, help="runs per method, seeds training.seed, +1, +2 ...")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key for every member")
    p.add_argument("--same-budget", action="store_true",
                   help="give every method the config's learning rate and epochs instead of its own defaults")
    p.add_argument("--out", help="folder for the member runs and compare.md/csv/png (default: the config's output_dir)")
    p.add_argument("--in-process", action="store_true",
                   help="train members in this process (faster start; peak memory is then not reported)")
    p.add_argument("--adversarial", metavar="NAMES",
                   help="also cross every method with these: none (plain), fgm, pgd, rdrop, e.g. none,fgm,pgd")
    add_perturb(p, required=False)
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
