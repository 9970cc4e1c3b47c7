"""Figures written next to the numbers they show (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence


def save_confusion_matrix_png(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str = "") -> None:
    """Rows are gold labels, columns predictions; each cell shows its count. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix)
    size = max(3.0, 0.6 * len(labels) + 1.5)
    # Chinese/Japanese label names need a CJK font; matplotlib falls back along this list glyph by glyph
    fonts = {"font.sans-serif": CJK_FONTS + list(matplotlib.rcParams["font.sans-serif"])}
    with matplotlib.rc_context(fonts):
        _draw(plt, np, counts, labels, path, title, size)


# tried in order for label names; whichever is installed first wins, DejaVu Sans (Latin) stays last
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Zen Hei", "SimHei",
             "Microsoft YaHei", "PingFang SC"]


def _draw(plt, np, counts, labels, path, title, size) -> None:
    fig, ax = plt.subplots(figsize=(size + 1, size))
    try:
        image = ax.imshow(counts, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(len(labels)), labels=list(labels), rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels=list(labels))
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        if title:
            ax.set_title(title)
        threshold = counts.max() / 2 if counts.size else 0
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                        color="white" if counts[i, j] > threshold else "black", fontsize=8)
        fig.tight_layout()
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=120)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    finally:
        plt.close(fig)
