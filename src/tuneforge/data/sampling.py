"""k-shot sampling: the few labelled examples a few-shot run trains on, deterministic by seed.

- **Single-label classification** (:func:`sample_per_class`): exactly ``k`` texts of every class,
  drawn uniformly with ``seed``; a class with fewer than ``k`` texts gives all it has (reported).
- **NER and multi-label classification** (:func:`greedy_sample`): a sentence carries several
  entity types (a text several labels), so exact ``k`` per type is not always possible. This is the
  greedy sampler of Yang & Katiyar (2020, "Simple and Effective Few-Shot NER with Structured Nearest
  Neighbor Learning"), the standard for few-shot NER: types are visited from the rarest to the most
  frequent; for each, sentences containing it are drawn in a seeded random order until the type has
  ``k`` mentions, and every drawn sentence counts for every type it carries. Every type reaches ``k``
  where the data allows; frequent types may end above ``k`` (they ride along with rarer ones).

The samplers return the chosen examples in their original order and a report (counts per label,
labels that fell short) that goes into ``metrics.json``; nothing is dropped without being counted.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable, Sequence


def sample_per_class(examples: Sequence, label_of: Callable[[object], str], k: int, seed: int) -> tuple[list, dict]:
    """Exactly ``k`` examples per class (all of a class that has fewer), in their original order."""
    by_class: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_class.setdefault(label_of(ex), []).append(i)
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in sorted(by_class):  # a fixed visiting order: the draw does not depend on file order of classes
        members = list(by_class[label])
        rng.shuffle(members)
        chosen += members[:k]
    chosen.sort()
    counts = {label: min(k, len(by_class[label])) for label in sorted(by_class)}
    report = {"k": k, "seed": seed, "sampler": "per_class", "from": len(examples), "examples": len(chosen),
              "per_label": counts, "short": {label: n for label, n in counts.items() if n < k}}
    return [examples[i] for i in chosen], report


def greedy_sample(examples: Sequence, labels_of: Callable[[object], Sequence[str]], k: int, seed: int
                  ) -> tuple[list, dict]:
    """Yang & Katiyar's greedy k-shot sampler (see the module docstring).

    ``labels_of(example)`` lists the example's mentions by type (one entry per entity, so a
    sentence with two persons counts two), or a text's labels.
    """
    mentions = [Counter(labels_of(ex)) for ex in examples]
    total: Counter = Counter()
    for m in mentions:
        total.update(m)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    counts: Counter = Counter()
    chosen: set[int] = set()
    for label in sorted(total, key=lambda t: (total[t], t)):  # rarest first
        for i in order:
            if counts[label] >= k:
                break
            if i in chosen or not mentions[i][label]:
                continue
            chosen.add(i)
            counts.update(mentions[i])
    picked = sorted(chosen)
    per_label = {label: counts[label] for label in sorted(total)}
    report = {"k": k, "seed": seed, "sampler": "greedy", "from": len(examples), "examples": len(picked),
              "per_label": per_label, "short": {label: n for label, n in per_label.items() if n < k},
              "over_k": sum(1 for n in per_label.values() if n > k)}
    return [examples[i] for i in picked], report


def describe_sample(report: dict) -> str:
    """``k-shot 8 (seed 42, greedy): 61 of 1915 examples; short of k: tvshow 5``."""
    text = (f"k-shot {report['k']} (seed {report['seed']}, {report['sampler']}): "
            f"{report['examples']} of {report['from']} examples")
    if report["short"]:
        text += "; short of k (the data has no more): " + ", ".join(f"{k} {v}" for k, v in report["short"].items())
    return text
