"""Figures written next to the numbers they show (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

from ..data.cjk import needs_cjk_font


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
    needs_cjk = any(needs_cjk_font(ch) for text in [*labels, title] for ch in str(text))
    with matplotlib.rc_context(fonts), warnings.catch_warnings():
        if needs_cjk and not cjk_fonts():
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # said once, below
            print(f"note: no CJK font installed, so the CJK label names in {path} show as boxes "
                  "(install one, e.g. apt-get install fonts-noto-cjk)", file=sys.stderr)
        _draw(plt, np, counts, labels, path, title, size)


# tried in order for label names; whichever is installed first wins, DejaVu Sans (Latin) stays last
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Zen Hei", "SimHei",
             "Microsoft YaHei", "PingFang SC"]
# file names of those fonts, for finding them when matplotlib's font cache predates their install
_CJK_FILE_HINTS = ("notosanscjk", "notoserifcjk", "sourcehansans", "wqy", "simhei", "msyh", "pingfang")


def cjk_fonts() -> list[str]:
    """The fonts of :data:`CJK_FONTS` matplotlib can use, registering installed ones it has not seen.

    matplotlib lists the system's fonts once, in a cache (``~/.cache/matplotlib``); a font
    installed after that (``apt-get install fonts-noto-cjk`` on a machine that already plotted)
    is missing from the list until it is added here.
    """
    from matplotlib import font_manager

    def known() -> list[str]:
        names = {font.name for font in font_manager.fontManager.ttflist}
        return [name for name in CJK_FONTS if name in names]

    if not known():
        for path in font_manager.findSystemFonts():
            if any(hint in Path(path).name.lower().replace("-", "") for hint in _CJK_FILE_HINTS):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue  # an unreadable font file: try the next
    return known()


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


def render_training_curves_png(result, epochs: int) -> bytes:
    """A run's ``curves.png``: train loss per logged step (left), dev metric per epoch with the best
    epoch marked (right). ``result`` is the loop's :class:`~tuneforge.training.loop.LoopResult`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    history = result.history
    metric = result.metric_for_best
    steps = [e["step"] for e in result.step_log]
    terms = sorted({k for e in result.step_log for k in e} - {"step", "epoch", "loss", "learning_rate"})
    # values far off the loss's scale (a preference run's log-probabilities) get a panel of their own
    scale = 10 * max([abs(e["loss"]) for e in result.step_log] + [1.0])
    apart = [k for k in terms if any(abs(e.get(k) or 0) > scale for e in result.step_log)]
    fig, axes = plt.subplots(1, 3 if apart else 2, figsize=(15 if apart else 10, 3.8), dpi=110)
    left, right = axes[0], axes[-1]
    try:
        if result.step_log:
            left.plot(steps, [e["loss"] for e in result.step_log], lw=1.2, label="train loss")
            for key in terms:
                (axes[1] if key in apart else left).plot(steps, [e.get(key) for e in result.step_log], lw=1, label=key)
            left.set_xlabel("optimizer step")
            if apart:
                axes[1].set_xlabel("optimizer step")
                axes[1].set_title("logged per step")
                axes[1].legend(fontsize=8)
                axes[1].grid(alpha=0.3)
        else:  # fewer updates than one log interval: the epoch means are all there is
            left.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], marker="o", label="train loss")
            left.set_xlabel("epoch")
        left.set_ylabel("loss")
        left.set_title("training loss")
        left.legend(fontsize=8)
        left.grid(alpha=0.3)
        key = f"dev_{metric}"
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            right.plot(*zip(*points), marker="o", label=f"dev {metric}")
            if result.best_epoch is not None:
                best = dict(points).get(result.best_epoch)
                if best is not None:
                    right.scatter([result.best_epoch], [best], s=140, facecolors="none", edgecolors="red", lw=2,
                                  label=f"best (epoch {result.best_epoch})", zorder=3)
            right.set_xlim(0.5, max(epochs, len(history)) + 0.5)
            right.xaxis.set_major_locator(MaxNLocator(integer=True))
            right.legend(fontsize=8)
        else:
            right.text(0.5, 0.5, "no dev set", ha="center", va="center", transform=right.transAxes)
        right.set_xlabel("epoch")
        right.set_ylabel(metric)
        right.set_title(f"dev {metric} per epoch")
        right.grid(alpha=0.3)
        fig.tight_layout()
        return png_bytes(fig)
    finally:
        plt.close(fig)


def png_bytes(fig, dpi: int | None = None, close: bool = False) -> bytes:
    """A matplotlib figure as PNG bytes (``close``: also free the figure); every PNG tuneforge writes."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **({"dpi": dpi} if dpi else {}))
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return buffer.getvalue()


def render_stage_matrix_png(matrix, stds, stages: Sequence[str], title: str) -> bytes:
    """A continual sequence's accuracy matrix as a heat map: row i = after training stage i, column j =
    score on stage j's test set; each cell shows mean (± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.asarray(matrix, dtype=float)
    size = max(3.5, 1.1 * len(stages) + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    try:
        image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=max(1e-9, float(np.nanmax(values))))
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(len(stages)), labels=[f"test {s}" for s in stages], rotation=30, ha="right")
        ax.set_yticks(range(len(stages)), labels=[f"after {s}" for s in stages])
        ax.set_title(title)
        top = np.nanmax(values) if values.size else 0
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                text = f"{values[i, j]:.3f}" + (f"\n± {stds[i][j]:.3f}" if stds is not None and stds[i][j] else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if values[i, j] > top * 0.6 else "white")
        fig.tight_layout()
        return png_bytes(fig, dpi=120)
    finally:
        plt.close(fig)


def render_old_stage_lines_png(series: dict[str, dict[str, list]], stages: Sequence[str], ylabel: str) -> bytes:
    """Scores on earlier stages' test sets as training moves on: ``series[strategy][stage]`` is a list of
    (after-stage index, mean, std); one colour per strategy, one line style per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    try:
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for k, (strategy, by_stage) in enumerate(series.items()):
            for m, (stage, points) in enumerate(by_stage.items()):
                xs = [p[0] + 1 for p in points]
                means = [p[1] for p in points]
                stds = [p[2] or 0.0 for p in points]
                colour = colours[k % len(colours)]
                ax.plot(xs, means, styles[m % len(styles)], color=colour, marker="o",
                        label=f"{strategy}: {stage}")
                ax.fill_between(xs, [a - b for a, b in zip(means, stds)], [a + b for a, b in zip(means, stds)],
                                color=colour, alpha=0.08)
        ax.set_xticks(range(1, len(stages) + 1), labels=[f"after {s}" for s in stages])
        ax.set_ylabel(ylabel)
        ax.set_title("Earlier stages' test scores as later stages train (mean ± std over seeds)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        return png_bytes(fig, dpi=120)
    finally:
        plt.close(fig)
