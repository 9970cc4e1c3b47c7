"""Training-step throughput of every adaptation method relative to full fine-tuning, same batches.

    python benchmarks/bench_methods.py --methods full,lora,adapter,bitfit,ia3,prompt --steps 30 --repeats 3

Each method trains the bundled MiniLM on the same length-grouped WNUT-16 batches (batch 16) with the
loop's own pieces (the method's ``prepare``, ``build_optimizer``, forward, backward, clipping,
optimizer step). Methods alternate A B C A B C so drift in machine load hits all of them alike;
the figure is the median tokens/s over repeats, and the ratio is to full fine-tuning's median.
Precision is the training default (``training.precision: auto``) unless ``--precision`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "examples" / "wnut16-minilm.yaml"


def measure(method: str, steps: int, warmup: int, precision: str, overrides: list[str]) -> float:
    import torch

    from tuneforge.config import load_config
    from tuneforge.data.encode import length_grouped_batches
    from tuneforge.methods import get_method
    from tuneforge.tasks import make_task
    from tuneforge.runtime.precision import resolve_precision
    from tuneforge.training.loop import build_optimizer
    from tuneforge.training.tracking import make_trackers  # noqa: F401  (import cost outside the timing)

    cfg = load_config(CONFIG, [f"method.name={method}", f"training.precision={precision}", *overrides])
    task = make_task(cfg)
    data = task.prepare_data()
    torch.manual_seed(0)
    tokenizer = task.load_tokenizer()
    model = get_method(method).prepare(task.build_model(data.labels), cfg.method)
    items, lengths, _ = task.encode(tokenizer, data.splits["train"], data.labels)
    collate = task.collator(tokenizer)
    batches = length_grouped_batches(lengths, cfg.training.batch_size, 0, 0)[: warmup + steps]
    optimizer = build_optimizer(model, cfg.training)
    resolved = resolve_precision(cfg.training.precision, torch.device("cpu"))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if resolved == "bf16" else torch.autocast("cpu", enabled=False)
    model.train()
    tokens = 0
    started = None
    for i, batch_idx in enumerate(batches):
        if i == warmup:
            started, tokens = time.perf_counter(), 0
        batch = collate([items[j] for j in batch_idx])
        tokens += int(batch.pop("n_tokens"))
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="full,lora,adapter,bitfit")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps({"method": args.one, "tokens_per_second": measure(args.one, args.steps, args.warmup,
                                                                          args.precision, args.set)}))
        return
    import subprocess

    methods = args.methods.split(",")
    runs: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.repeats):
        for m in methods:  # each in a fresh process: no allocator or thread-pool state carried over
            cmd = [sys.executable, __file__, "--one", m, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--precision", args.precision] + [f"--set={s}" for s in args.set]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            runs[m].append(json.loads(out)["tokens_per_second"])
    full = statistics.median(runs["full"]) if "full" in runs else None
    print("| method | tokens/s (median) | each run | vs full |")
    print("|---|---|---|---|")
    for m, values in runs.items():
        med = statistics.median(values)
        ratio = f"{med / full:.2f}x" if full else "—"
        print(f"| {m} | {med:,.0f} | {', '.join(f'{v:,.0f}' for v in values)} | {ratio} |")


if __name__ == "__main__":
    main()
