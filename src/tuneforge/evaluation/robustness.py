"""Clean against perturbed scores of a trained model, per perturbation (``tuneforge eval --perturb``).

Every perturbation of :mod:`tuneforge.data.perturb` makes its own noisy copy of the labelled
examples (same rate, same seed), the model scores it, and the drop is ``clean F1 - perturbed F1``
(positive: the noise hurt). F1 is the task's headline ``f1``: entity micro-F1 for NER, macro-F1
for single-label and micro-F1 for multi-label classifiers. Works for any task whose class defines
the ``example_words`` / ``with_words`` hooks.
"""

from __future__ import annotations

from typing import Sequence

from ..data.perturb import check_rate, parse_perturbations, perturb_examples


def robustness(predictor, task, examples: Sequence, perturbations: Sequence[str] | str, rate: float = 0.1,
               seed: int = 0, batch_size: int = 64, clean: dict | None = None) -> dict:
    """``{"clean_f1", "perturbations": {name: {"f1", "drop", "words", "changed", ...}}, "mean_perturbed_f1",
    "mean_drop", "rate", "seed"}``; ``task`` is the predictor's task class (its ``example_words`` /
    ``with_words`` hooks perturb the examples); ``clean`` is the clean metrics when already computed."""
    names = parse_perturbations(perturbations)
    check_rate(rate)
    if clean is None:
        clean = predictor.evaluate_examples(examples, batch_size)[0]
    rows = {}
    for name in names:
        noisy, stats = perturb_examples(examples, name, rate, seed, task)
        metrics, _, _ = predictor.evaluate_examples(noisy, batch_size)
        rows[name] = {"f1": metrics["f1"], "drop": clean["f1"] - metrics["f1"], **stats.as_dict()}
    mean_f1 = sum(r["f1"] for r in rows.values()) / len(rows)
    return {"rate": rate, "seed": seed, "clean_f1": clean["f1"], "perturbations": rows,
            "mean_perturbed_f1": mean_f1, "mean_drop": clean["f1"] - mean_f1}


def format_robustness(report: dict) -> str:
    """A table: one row per perturbation, then their mean."""
    clean = report["clean_f1"]
    lines = [
        f"Robustness: character noise on {report['rate']:.0%} of words (seed {report['seed']}); "
        f"clean F1 {clean:.4f}",
        f"{'perturbation':<12} {'words changed':>16} {'F1':>8} {'drop':>8} {'relative':>9}",
    ]
    for name, row in report["perturbations"].items():
        changed = f"{row['changed']:,}/{row['words']:,}"
        lines.append(f"{name:<12} {changed:>16} {row['f1']:>8.4f} {row['drop']:>8.4f} "
                     f"{_relative(row['drop'], clean):>9}")
    lines.append(f"{'mean':<12} {'':>16} {report['mean_perturbed_f1']:>8.4f} {report['mean_drop']:>8.4f} "
                 f"{_relative(report['mean_drop'], clean):>9}")
    return "\n".join(lines)


def _relative(drop: float, clean: float) -> str:
    return f"{100 * drop / clean:.1f}%" if clean else "—"
