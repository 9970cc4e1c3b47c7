"""What several command groups share: argument groups, argument types, and writing a command's output."""

from __future__ import annotations

import argparse
import sys

from ..artifacts.paths import atomic_write_text
from ..data.perturb import PERTURBATIONS


def add_precision(p) -> None:
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                   help="auto: the measured best for this hardware (bf16 on GPUs with bf16 and CPUs with "
                        "AVX512-BF16/AMX, else fp32); bf16: autocast; int8: dynamic int8 linear layers "
                        "(CPU; see benchmarks/RESULTS.md for speed and agreement)")
    p.add_argument("--engine", default="torch", choices=["torch", "onnx"],
                   help="onnx: ONNX Runtime (CPU, fp32 or --precision int8), exported into RUN/onnx/ on first use")


def add_num_processes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-processes", type=int, default=1, metavar="N",
                   help="start N processes on this machine that share the work (DDP; one per GPU, or CPU "
                        "processes with cores/N threads each); torchrun / accelerate launch work too")


def add_text_columns(p: argparse.ArgumentParser, labels: bool, defaults: str = "as in training") -> None:
    """Text classifiers: column names (CSV/TSV) or keys (JSONL); default: those it was trained with."""
    p.add_argument("--text-column", help=f"text classifiers: the text column (default: {defaults})")
    p.add_argument("--text-pair-column", help=f"text classifiers: the second text of a pair (default: {defaults})")
    if labels:
        p.add_argument("--label-column", help=f"text classifiers: the label column (default: {defaults})")


def add_perturb(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--perturb", required=required, metavar="NAMES",
                   help=("also score noisy copies: " if not required else "")
                   + f"comma-separated, from {', '.join(PERTURBATIONS)}, or all (see tuneforge.data.perturb)")
    p.add_argument("--rate", type=float, default=0.1, help="share of words changed (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="noise seed: same seed, same noisy copy (default 0)")


def comma_list(text: str) -> list[str]:
    """``a, b,c`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def fraction(text: str) -> float:
    """A number in (0, 1], such as a similarity or probability threshold."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} must be above 0 and at most 1")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def write_output(text: str, out: str | None, what: str) -> None:
    """To ``out`` atomically (and say so on stderr), or to standard output."""

    if out:
        atomic_write_text(out, text)
        print(f"wrote {what} to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        print(f"wrote {what}", file=sys.stderr)
