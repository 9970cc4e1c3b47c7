"""``tuneforge data convert``: read a file as its task reads data (any format the task takes, tags
normalised to IOB2) and write it for a labelling tool (Label Studio, with the matching labelling config;
doccano) or as the task's own JSONL. The formats themselves are :mod:`tuneforge.data.interchange`."""

from __future__ import annotations

from pathlib import Path

from ..artifacts.paths import atomic_write_text
from ..data.interchange import labelstudio_config, write_doccano, write_labelstudio
from ..errors import DataError
from ..tasks import make_task
from ..tasks.capabilities import Interchange, require
from .checks import check_config


def convert(source: str, out: str | Path, to: str, task: str = "auto", overrides: list[str] | None = None) -> tuple[int, str]:
    """Read ``source`` as its task reads data (any format it takes, tags normalised to IOB2) and write it
    to ``out`` as ``labelstudio`` (plus the matching labelling config, ``OUT.xml``), ``doccano`` or
    ``jsonl`` (the task's own). Returns (examples written, what was written)."""
    cfg, _ = check_config([source], task, overrides)
    the_task = make_task(cfg)
    require(the_task, Interchange, "tuneforge data convert")
    examples = the_task.read(cfg.data.train)
    the_task.normalise({"train": examples}, {})
    out = Path(out)
    d = cfg.data
    text_key = getattr(d, "text_column", "text")
    pair_key = getattr(d, "text_pair_column", None) or "text_pair"
    if to == "jsonl":
        the_task.write_labelled(examples, out)
        return len(examples), f"{out}"
    annotations = [the_task.to_annotation(ex) for ex in examples]
    if to == "labelstudio":
        write_labelstudio(out, annotations, text_key=text_key, pair_key=pair_key)
        spans = annotations[0].spans is not None
        labels = the_task.label_counts(examples)
        config_file = out.with_suffix(".xml")
        atomic_write_text(config_file, labelstudio_config(sorted(labels), spans,
                                                          multi_label=bool(getattr(cfg.task, "multi_label", False)),
                                                          pair=annotations[0].text_pair is not None,
                                                          text_key=text_key, pair_key=pair_key))
        return len(examples), f"{out} (labelling config: {config_file})"
    if to == "doccano":
        write_doccano(out, annotations, text_key=text_key, pair_key=pair_key)
        return len(examples), f"{out}"
    raise DataError(str(out), None, f"--to {to}: choose labelstudio, doccano or jsonl")
