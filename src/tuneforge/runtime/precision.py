"""Precision: what ``auto`` means on this hardware, resolved in one place (:func:`resolve_precision`).

The driver resolves ``training.precision`` once per run and hands the result to the loop and the
scorers; a loaded model resolves ``--precision`` once for inference.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext

import torch


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AVX512-BF16 or AMX), where oneDNN runs bf16 GEMMs natively."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


# What ``precision: auto`` means, per hardware and phase, with the measurement behind each cell
# (README "Precision", benchmarks/RESULTS.md). int8 is never automatic: 99.2% tag agreement with fp32
# on WNUT-16, under the 99.5% we ask of a default.
AUTO_PRECISION = {
    # (hardware, phase): precision
    ("cuda-bf16", "training"): "bf16",    # the standard mixed-precision recipe on Ampere and newer
    ("cuda-bf16", "inference"): "bf16",
    ("cpu-bf16", "training"): "bf16",     # AVX512-BF16/AMX: 2.22x the Trainer vs 1.56x fp32, 3-seed F1 0.519 vs 0.509
    ("cpu-bf16", "inference"): "bf16",    # 1.90x the pipeline vs 1.47x fp32; tags 100% identical to fp32
    ("cpu", "training"): "fp32",          # bf16 is emulated there, and slower
    ("cpu", "inference"): "fp32",
    ("cuda", "training"): "fp32",         # GPUs without bf16
    ("cuda", "inference"): "fp32",
}


def hardware_kind(device: torch.device) -> str:
    """``cuda-bf16`` / ``cuda`` / ``cpu-bf16`` (native bf16 matrix instructions) / ``cpu``."""
    if device.type == "cuda":
        return "cuda-bf16" if torch.cuda.is_bf16_supported() else "cuda"
    return "cpu-bf16" if cpu_has_native_bf16() else "cpu"


def resolve_precision(precision: str, device: torch.device, phase: str = "training") -> str:
    """``auto`` -> the measured best for this hardware and phase (:data:`AUTO_PRECISION`); else as given."""
    if precision != "auto":
        return precision
    return AUTO_PRECISION[(hardware_kind(device), phase)]


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on ``device`` for ``precision == "bf16"``, else nothing (training and inference)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def cast_linear_weights(model: torch.nn.Module, precision: str) -> None:
    """For a model that only ever runs under :func:`autocast_context` (a loaded predictor): store every
    ``nn.Linear`` weight and bias in bf16 once, instead of autocast casting each of them at every call
    (a fifth of a decoder's generation time on CPU: every weight, at every new token).

    The outputs are the same: autocast rounds these same fp32 weights to bf16 in the same way; every
    other parameter (norms, embeddings) stays as it is. A linear weight tied to an embedding (a
    decoder's output layer) gets its own bf16 copy, so the embedding lookup stays fp32. Any other
    ``precision``: nothing changes.
    """
    if precision != "bf16":
        return
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            for name in ("weight", "bias"):
                param = getattr(module, name)
                if param is not None and param.dtype == torch.float32:
                    setattr(module, name, torch.nn.Parameter(param.detach().to(torch.bfloat16), requires_grad=False))
