"""How close training runs to the machine's matrix-multiply limit.

The peak is measured here, by this harness (square GEMMs, fp32 and bf16), not taken from a data
sheet. Training FLOPs are counted from the architecture and the real (non-pad) tokens:
per token, a forward pass costs 2 FLOPs per weight of every matrix multiply (embeddings are
look-ups and cost nothing) plus attention's two sequence-length products; backward costs twice
the forward.
"""

from __future__ import annotations

import time

import torch


def measured_matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of the best of ``repeats`` n x n x n matmuls."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best


def training_flops(config, lengths: list[int], num_labels: int) -> float:
    """FLOPs for one forward+backward over sequences of the given real lengths (BERT-style encoder)."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_token_weights = layers * (4 * h * h + 2 * h * inter) + h * num_labels
    forward = 0.0
    for n in lengths:
        forward += 2 * per_token_weights * n + layers * 2 * 2 * n * n * h  # QK^T and AV
    return 3 * forward
