"""Training side by side: tuneforge against the Trainer recipe, same model, split and hyperparameters.

    python benchmarks/bench_train.py --seeds 1 --epochs 5 --out bench-out/train.jsonl

Runs alternate A B A B (each in its own process, so peak RSS is per system), and every run
appends one JSON line. ``summarise`` prints medians and tuneforge/anchor ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "examples" / "wnut16-minilm.yaml"


def one_run(system: str, seed: int, epochs: int, batch_size: int, lr: float, max_train: int | None,
            workdir: Path) -> dict:
    sys.path.insert(0, str(HERE))
    import tuneforge
    from tuneforge.tasks import make_task
    from tuneforge.config import load_config
    from tuneforge.evaluation.metrics import entity_scores
    from tuneforge.artifacts.paths import resolve_path

    overrides = [f"training.seed={seed}", f"training.epochs={epochs}", f"training.batch_size={batch_size}",
                 f"training.learning_rate={lr}", "training.progress=false",
                 f"output_dir={workdir / f'{system}-seed{seed}'}"]
    if max_train:
        overrides.append(f"data.max_train_examples={max_train}")
    if system == "tuneforge-fp32":  # the same run pinned to fp32, to weigh the default's speed against F1
        overrides.append("training.precision=fp32")
    cfg = load_config(CONFIG, overrides)
    data = make_task(cfg).prepare_data()
    splits, labels = data.splits, data.labels
    gold = [e.tags for e in splits["test"]]
    record = {"system": system, "seed": seed, "epochs": epochs, "batch_size": batch_size, "learning_rate": lr,
              "train_sentences": len(splits["train"]), "test_sentences": len(splits["test"])}
    if system.startswith("tuneforge"):
        result = tuneforge.train(cfg, overwrite=True)
        training = result.metrics["training"]
        record.update(train_seconds=training["seconds"], train_samples=training["samples"],
                      train_tokens=training["tokens"], test_f1=result.metrics["test"]["f1"],
                      precision=training["precision"])
        pred = [line.split("\t")[2] for line in (result.run_dir / "test_predictions.tsv").read_text().splitlines() if line]
        it = iter(pred)
        pred_tags = [[next(it) for _ in seq] for seq in gold]
    else:
        from trainer_anchor import run_anchor

        out = run_anchor(
            resolve_path(cfg.model.name_or_path), splits, labels, learning_rate=lr,
            batch_size=batch_size, epochs=epochs, seed=seed, warmup_ratio=cfg.training.warmup_ratio,
            weight_decay=cfg.training.weight_decay, max_length=cfg.encoding.max_length,
            output_dir=str(workdir / f"anchor-seed{seed}"),
        )
        pred_tags = out.pop("test_pred_tags")
        record.update(out)
        record["test_f1"] = entity_scores(gold, pred_tags)["micro"]["f1"]
    from seqeval.metrics import f1_score

    record["test_f1_seqeval_default_mode"] = f1_score(gold, pred_tags)
    record["samples_per_second"] = record["train_samples"] / record["train_seconds"]
    record["tokens_per_second"] = record["train_tokens"] / record["train_seconds"]
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return record


# The order runs alternate in. "tuneforge" runs at its defaults (no flag); "tuneforge-fp32" pins fp32
# (a --with-fp32 run of the harness) to show what the default precision buys.
SYSTEMS = ("tuneforge", "anchor", "tuneforge-fp32")


def summarise(rows: list[dict]) -> str:
    """Medians per system and ratios to the anchor; test F1 also as mean ± std over the runs."""
    by = {s: [r for r in rows if r["system"] == s] for s in SYSTEMS if any(r["system"] == s for r in rows)}
    ours = [s for s in by if s != "anchor"]
    keys = ["samples_per_second", "tokens_per_second", "train_seconds", "peak_rss_mb", "test_f1",
            "test_f1_seqeval_default_mode"]
    names = {"tuneforge": "tuneforge (defaults)", "tuneforge-fp32": "tuneforge (fp32)", "anchor": "Trainer recipe"}
    lines = ["| metric (median) | " + " | ".join(f"{names[s]} | ratio" for s in ours) + " | Trainer recipe |",
             "|---|" + "---|---|" * len(ours) + "---|"]
    for key in keys:
        b = statistics.median(r[key] for r in by["anchor"])
        cells = []
        for s in ours:
            a = statistics.median(r[key] for r in by[s])
            cells += [f"{a:.4g}", f"{a / b:.3f}x" if b else "n/a"]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {b:.4g} |")
    lines.append("")
    for s, runs in by.items():
        f1 = [r["test_f1"] for r in runs]
        spread = f" ± {statistics.stdev(f1):.4f}" if len(f1) > 1 else ""
        lines.append(f"- {names[s]}: test F1 mean {statistics.mean(f1):.4f}{spread} over "
                     f"{len(f1)} runs ({', '.join(f'{x:.4f}' for x in f1)})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1, help="runs per system (seeds 1..N), alternating A B A B")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-train", type=int, default=None, help="train on a slice (quick runs)")
    parser.add_argument("--out", default="bench-out/train.jsonl")
    parser.add_argument("--one", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.one:
        record = one_run(args.one, args.seed, args.epochs, args.batch_size, args.lr, args.max_train, out.parent)
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        return
    if out.exists():
        out.unlink()
    for seed in range(1, args.seeds + 1):
        for system in SYSTEMS:
            started = time.time()
            cmd = [sys.executable, __file__, "--one", system, "--seed", str(seed), "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--out", str(out)]
            if args.max_train:
                cmd += ["--max-train", str(args.max_train)]
            subprocess.run(cmd, check=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"),
                           stdout=subprocess.DEVNULL)
            print(f"{system} seed {seed}: {time.time() - started:.0f}s", flush=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    print(summarise(rows))


if __name__ == "__main__":
    main()
