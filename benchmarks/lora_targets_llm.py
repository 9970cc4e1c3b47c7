"""LoRA target modules on a decoder: all linear layers of the body (the default for Llama, Qwen2,
Mistral) against attention only (q/k/v/o) and the original LoRA paper's q/v, at the same rank,
on SmolLM2-135M-Instruct (examples/chat-smollm2-lora.yaml) over seeds: dev loss, trainable
parameters, training tokens/s.

    python benchmarks/lora_targets_llm.py --seeds 1 2 3 --n 256 --out bench-out/lora-targets.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import tuneforge

CHOICES = {"all-linear": None,  # the default: attention and feed-forward projections
           "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
           "q,v": ["q_proj", "v_proj"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--n", type=int, default=256, help="training conversations")
    parser.add_argument("--choices", nargs="+", default=list(CHOICES), choices=list(CHOICES))
    parser.add_argument("--out", default="bench-out/lora-targets.jsonl")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for name in args.choices:
            overrides = [f"data.max_train_examples={args.n}", f"training.seed={seed}", "task.eval_generations=0",
                         "training.progress=false", f"output_dir={out.parent}/lora-targets/{name}-{seed}"]
            if CHOICES[name]:
                overrides.append(f"method.target_modules={json.dumps(CHOICES[name])}")
            run = tuneforge.train("examples/chat-smollm2-lora.yaml", overrides=overrides, overwrite=True)
            m = run.metrics
            row = {"targets": name, "seed": seed, "dev_loss": m["dev"]["loss"],
                   "trainable": m["parameters"]["trainable"], "tokens_per_second": m["training"]["tokens_per_second"]}
            rows.append(row)
            with open(out, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print("| targets | dev loss (mean ± sd over seeds) | trainable parameters | training tokens/s (median) |")
    print("|---|---|---|---|")
    for name in args.choices:
        mine = [r for r in rows if r["targets"] == name]
        losses = [r["dev_loss"] for r in mine]
        sd = statistics.stdev(losses) if len(losses) > 1 else 0.0
        print(f"| {name} | {statistics.mean(losses):.4f} ± {sd:.4f} | {mine[0]['trainable']:,} | "
              f"{statistics.median(r['tokens_per_second'] for r in mine):.0f} |")


if __name__ == "__main__":
    main()
