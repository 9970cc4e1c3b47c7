"""One process against several on this machine: wall time and F1 of the demo config, per seed.

    python benchmarks/processes.py                      # 1 and 2 processes, seeds 42-44, 3 epochs
    python benchmarks/processes.py --procs 1 2 --seeds 42 --set data.max_train_examples=600

Each run is ``tuneforge train examples/wnut16-minilm.yaml --num-processes N`` in its own process
(N processes share the cores: 1 process uses all of them, N processes cores/N threads each), timed
from start to exit, so process start-up, data preparation and final scoring are included. Prints
a markdown table and writes it, with the raw numbers, to ``--out`` (default runs/processes/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(procs: int, seed: int, epochs: int, overrides: list[str], out: Path) -> dict:
    run_dir = out / f"p{procs}-s{seed}"
    command = [sys.executable, "-m", "tuneforge", "train", str(ROOT / "examples" / "wnut16-minilm.yaml"),
               "--overwrite", "--num-processes", str(procs), "--set", f"training.epochs={epochs}",
               "--set", f"training.seed={seed}", "--set", "training.progress=false",
               "--set", f"output_dir={run_dir}"]
    for item in overrides:
        command += ["--set", item]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    (out / f"p{procs}-s{seed}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"procs": procs, "seed": seed, "wall_seconds": round(wall, 1),
            "train_seconds": metrics["training"]["seconds"],
            "samples_per_second": metrics["training"]["samples_per_second"],
            "dev_f1": metrics["dev"]["f1"], "test_f1": metrics["test"]["f1"],
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "processes")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:  # alternate the process counts, so machine load drifts hit both alike
        for procs in args.procs:
            rows.append(run(procs, seed, args.epochs, args.set, args.out))
            print(json.dumps(rows[-1]), flush=True)
    lines = ["| processes | wall time (s) | training (s) | samples/s | dev F1 | test F1 |", "|---|---|---|---|---|---|"]
    for procs in args.procs:
        mine = [r for r in rows if r["procs"] == procs]
        lines.append(f"| {procs} | {mean_std([r['wall_seconds'] for r in mine])} | "
                     f"{mean_std([r['train_seconds'] for r in mine])} | {mean_std([r['samples_per_second'] for r in mine])} | "
                     f"{mean_std([r['dev_f1'] for r in mine])} | {mean_std([r['test_f1'] for r in mine])} |")
    table = "\n".join(lines)
    print(table)
    (args.out / "processes.md").write_text(table + "\n", encoding="utf-8")
    (args.out / "processes.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
