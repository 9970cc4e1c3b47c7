"""`tuneforge continual split`: stages cut from one data set, by entity type / label or by file."""


from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml

from ..artifacts.paths import atomic_write_text
from ..config import (
    load_config,
    merge_trees,
    parse_overrides,
    read_config_tree,
)
from ..data.readers import split_examples
from ..errors import ConfigError
from ..tasks import make_task
from ..tasks.capabilities import ContinualStages, require
from .continual_plan import STRATEGIES

# ---------------------------------------------------------------------------------------------
# Building stages from one data set


def split_stages(config: str | Path, by: str, out: str | Path, groups: list[list[str]] | None = None,
                 n_stages: int | None = None, files: Sequence[str] | None = None, seed: int = 42,
                 overrides: list[str] | None = None) -> Path:
    """Write stage folders (``OUT/<name>/train|dev|test``), ``OUT/stages.yaml`` and ``OUT/continual.yaml``
    (the config plus a ``continual:`` block naming the stages); returns the latter.

    - ``by="type"`` / ``"label"``: the config's data (with its dev/test or ``data.split``) is cut into stages
      by label group (``groups``, else ``n_stages`` groups dealt round-robin by frequency). NER: the
      training sentences are dealt at random into disjoint stage portions, each annotating only its
      stage's types (others become O); dev and test keep every sentence, annotated likewise. Classifiers:
      each stage keeps the examples of its labels.
    - ``by="file"``: each of ``files`` is one stage (same labels, new data), cut by ``data.split``
      (default 0.8/0.1/0.1) with ``data.split_seed``.
    """
    import random


    out = Path(out)
    cfg = load_config(config, overrides)
    task = make_task(cfg)
    stages: list[dict] = []
    if by == "file":
        if not files or len(files) < 2:
            raise ConfigError("--files: give at least two data files, one a stage")
        ratios = cfg.data.split or (0.8, 0.1, 0.1)
        for number, name in enumerate(files, 1):
            examples = task.read(name)
            parts = dict(zip(("train", "dev", "test"), split_examples(examples, ratios, cfg.data.split_seed)))
            task.normalise(parts, {})
            stages.append(_write_stage(task, out, f"s{number}-{Path(name).stem}", parts))
    elif by in ("type", "label"):
        data = task.prepare_data()
        splits = data.splits
        if cfg.data.max_train_examples:
            raise ConfigError("data.max_train_examples: remove it for `continual split` (it would cut the data "
                              "before the stages are made); set it on the continual run instead")
        require(task, ContinualStages, "tuneforge continual split --by " + by)
        kinds = task.label_kinds(data.labels)
        groups = groups or _deal_groups(task, splits["train"], kinds, n_stages or 2)
        unknown = [k for g in groups for k in g if k not in kinds]
        if unknown:
            raise ConfigError(f"--groups: {unknown[0]!r} is not a label of the training data ({', '.join(kinds)})")
        order = list(range(len(splits["train"])))
        random.Random(seed).shuffle(order)
        portions = [order[i::len(groups)] for i in range(len(groups))] if task.stages_relabel else None
        for number, group in enumerate(groups, 1):
            labels = task.labels_of_kinds(data.labels, group)
            train = splits["train"] if portions is None else [splits["train"][i] for i in sorted(portions[number - 1])]
            parts = {name: task.restrict_examples(part, labels) for name, part in
                     (("train", train), ("dev", splits["dev"]), ("test", splits["test"]))}
            stages.append(_write_stage(task, out, f"s{number}-" + "-".join(g.replace(' ', '_') for g in group[:2])
                                       + ("-etc" if len(group) > 2 else ""), parts, group))
    else:
        raise ConfigError(f"--by {by}: choose type, label or file")
    atomic_write_text(out / "stages.yaml", yaml.safe_dump(
        [{k: v for k, v in s.items() if k in ("name", "train", "dev", "test")} for s in stages], sort_keys=False))
    tree = merge_trees(read_config_tree(config), parse_overrides(overrides))
    data_block = {k: v for k, v in (tree.get("data") or {}).items() if k not in ("split", "dev", "test", "split_seed")}
    data_block["train"] = str(out / stages[0]["train"])
    tree["data"] = data_block
    tree["continual"] = {"stages": "stages.yaml", "strategies": list(STRATEGIES), "seeds": 1}
    tree["output_dir"] = str(out / "runs")
    path = out / "continual.yaml"
    atomic_write_text(path, "# written by `tuneforge continual split`; stages: stages.yaml\n"
                      + yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))
    for s in stages:
        print(f"stage {s['name']}: {s.get('annotates', 'all labels')} · {s['sizes']}")
    return path


def _deal_groups(task, train: Sequence, kinds: list[str], n: int) -> list[list[str]]:
    """``n`` groups dealt round-robin by frequency (most frequent first), so stages are of similar size."""
    if n < 2 or n > len(kinds):
        raise ConfigError(f"--stages {n}: give between 2 and {len(kinds)} (the labels to share out)")
    counts = task.kind_counts(train)
    ranked = sorted(kinds, key=lambda k: (-counts.get(k, 0), k))
    return [ranked[i::n] for i in range(n)]


def _write_stage(task, out: Path, name: str, parts: dict, group: Sequence[str] | None = None) -> dict:
    folder = out / name
    stage = {"name": name}
    for split in ("train", "dev", "test"):
        if parts.get(split):
            stage[split] = str(task.write_examples(parts[split], folder, split).relative_to(out))
    stage["sizes"] = {split: len(parts.get(split) or []) for split in ("train", "dev", "test")}
    if group:
        stage["annotates"] = ", ".join(group)
    return stage
