"""What a shared machine costs: one training job alone, then two at once, under several thread settings.

    python benchmarks/shared_cpu.py                      # -> bench-out/shared-cpu/results.json
    python benchmarks/shared_cpu.py --repeats 2 --set data.max_train_examples=300

Each job is ``tuneforge train examples/wnut16-minilm.yaml`` for one epoch on a slice of the tweets, in
its own process, timed from start to exit (start-up and scoring included). The variants:

- ``alone`` / ``two``: one job, or two at once, each with one thread per core (two jobs: 2 x cores
  threads on the cores);
- ``spin``: libgomp's own default (the torch CPU wheel's OpenMP), whose idle workers spin while they
  wait for work; an empty ``OMP_WAIT_POLICY`` gets it (libgomp says the value is invalid and keeps its
  default). tuneforge's default is ``PASSIVE`` (set when ``tuneforge`` is imported, unless the user
  set one): idle workers sleep;
- ``training.threads=cores/2``: each job takes its share of the cores.

Prints a markdown table: the median wall time of a job in each variant and its ratio to ``alone``
(a fair share of 2 cores predicts 2x for two jobs).
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


def job(out: Path, overrides: list[str], env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "tuneforge", "train", str(ROOT / "examples" / "wnut16-minilm.yaml"),
               "--overwrite", "--set", "training.epochs=1", "--set", "training.progress=false",
               "--set", f"output_dir={out}"]
    for item in overrides:
        command += ["--set", item]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def timed(n: int, out: Path, overrides: list[str], extra_env: dict) -> list[float]:
    env = dict(os.environ, **extra_env)
    start = time.perf_counter()
    procs = [job(out / f"job{i}", overrides, env) for i in range(n)]
    ends = []
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a job failed ({extra_env}, {overrides})")
        ends.append(time.perf_counter() - start)
    return ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=["data.max_train_examples=400"])
    parser.add_argument("--out", default="bench-out/shared-cpu")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    spin = {"OMP_WAIT_POLICY": ""}
    variants = [
        ("alone, spin", 1, [], spin),
        ("two, spin", 2, [], spin),
        ("two, PASSIVE (default)", 2, [], {}),
        (f"two, spin, training.threads={half}", 2, [f"training.threads={half}"], spin),
        ("alone, PASSIVE (default)", 1, [], {}),
    ]
    out = Path(args.out)
    results: dict[str, list[float]] = {name: [] for name, *_ in variants}
    for _ in range(args.repeats):  # A B C D E, A B C D E: drift hits every variant alike
        for name, n, overrides, env in variants:
            results[name] += timed(n, out / "runs", args.overrides + overrides, env)
            print(name, [round(t, 1) for t in results[name]], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    base = statistics.median(results["alone, spin"])
    print(f"\n{cores} cores; job: one epoch of examples/wnut16-minilm.yaml with {' '.join(args.overrides)}\n")
    print("| variant | seconds a job (median) | x alone, spin |\n|---|---:|---:|")
    for name, times in results.items():
        print(f"| {name} | {statistics.median(times):.1f} | {statistics.median(times) / base:.2f}x |")


if __name__ == "__main__":
    main()
