"""Data where users keep it: Parquet and Arrow files, and anything Hugging Face ``datasets`` loads.

Sources (``data.train`` / ``dev`` / ``test``, and the files of ``eval``, ``predict``, ``data check``...):

- ``FILE.parquet``, ``FILE.arrow``: one file (Arrow: the IPC stream ``datasets`` writes, or the IPC file
  format), read with ``datasets.load_dataset("parquet" | "arrow", data_files=FILE)``.
- ``hf:PATH_OR_NAME[:CONFIG][@SPLIT]``: a folder written by ``save_to_disk`` (``load_from_disk``); another
  local folder or file (``load_dataset(PATH)``: a folder of Parquet, Arrow, CSV or JSON(L) files, its
  splits named by the files, ``train.parquet``, ``test.parquet``...); else a Hub name, loaded by the real
  ``load_dataset(NAME, CONFIG)`` (offline or unknown: one line saying so).
  ``@SPLIT`` picks the split; without it the source must hold one split.

Columns are mapped by name as the task's other readers map keys: ``data.text_column`` /
``label_column`` / ``text_pair_column`` for texts, ``data.tokens_column`` / ``tags_column`` for token
data (default: ``tokens`` or ``words``, ``tags`` or ``ner_tags``). Integer labels and tags that the
dataset's features name (``ClassLabel``) are read as their names; integer tags without names stop the
read. Rows are counted from 1 in messages (``FILE:3`` is ``dataset[2]``); a bad row is reported as the
other readers report a bad line (and counted by ``data check``), never dropped unseen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError, TuneforgeError
from ..artifacts.paths import resolve_path
from ..runtime.extras import require_extra
from .records import TextExample, TokenExample, bad_record, open_checked

HF_SCHEME = "hf:"
FILE_FORMATS = {".parquet": "parquet", ".arrow": "arrow"}
DATASET_FORMATS = ("parquet", "arrow", "hf")
# load_dataset's builder for a single local file given as hf:FILE
_FILE_BUILDERS = {".parquet": ("parquet", {}), ".arrow": ("arrow", {}), ".csv": ("csv", {}),
                  ".tsv": ("csv", {"sep": "\t"}), ".json": ("json", {}), ".jsonl": ("json", {}),
                  ".ndjson": ("json", {})}
TOKENS_COLUMNS = ("tokens", "words")
TAGS_COLUMNS = ("tags", "ner_tags")


def dataset_format(path: str | os.PathLike) -> str | None:
    """``hf`` for an ``hf:`` source, ``parquet`` / ``arrow`` by extension, else None."""
    text = os.fspath(path)
    if text.startswith(HF_SCHEME):
        return "hf"
    return FILE_FORMATS.get(Path(text).suffix.lower())


@dataclass
class DatasetSource:
    """Where a dataset is: ``spec`` as written (for messages), a local path or a Hub name, its config and split."""

    spec: str
    location: str
    config: str | None = None
    split: str | None = None
    local: bool = True


def _exists(location: str) -> bool:
    try:
        return bool(location) and Path(resolve_path(location)).exists()
    except TuneforgeError:
        return False


def parse_source(path: str | os.PathLike, format: str = "hf") -> DatasetSource:
    """``hf:NAME:CONFIG@SPLIT`` (or a ``.parquet``/``.arrow`` file) as a :class:`DatasetSource`.

    A local path is taken whole when it exists, so a folder named ``data@2024`` is not cut at ``@``.
    """
    text = os.fspath(path)
    if format in ("parquet", "arrow") and not text.startswith(HF_SCHEME):
        return DatasetSource(spec=text, location=text)
    rest = text[len(HF_SCHEME):] if text.startswith(HF_SCHEME) else text
    location, config, split = rest, None, None
    if not _exists(rest):
        if "@" in rest:
            location, split = rest.rsplit("@", 1)
            if not split:
                raise ConfigError(f"{text}: nothing after '@'; name the split, e.g. {HF_SCHEME}{location}@train")
        if ":" in location and not _exists(location):
            location, config = location.rsplit(":", 1)
            if not config:
                raise ConfigError(f"{text}: nothing after ':'; name the dataset's config or drop the ':'")
    if not location:
        raise ConfigError(f"{text}: no dataset named after '{HF_SCHEME}'; give a local folder or file, or a Hub name "
                          f"(e.g. {HF_SCHEME}OWNER/NAME@train)")
    local = _exists(location)
    return DatasetSource(spec=text, location=resolve_path(location) if local else location, config=config,
                         split=split, local=local)


def _import_datasets(spec: str):
    require_extra(f"{spec}: Parquet, Arrow and hf: data are read with the datasets package", "datasets", "hf")
    import datasets

    return datasets


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_split(path: str | os.PathLike, format: str = "auto"):
    """(the name to give in messages, the one ``datasets.Dataset`` the source names)."""
    fmt = dataset_format(path) if format == "auto" else format
    source = parse_source(path, fmt or "hf")
    datasets = _import_datasets(source.spec)
    if fmt in ("parquet", "arrow") and not source.spec.startswith(HF_SCHEME):
        name = str(open_checked(source.location))  # not found, a folder, empty: the readers' own messages
        loaded = _load(datasets, source, name, lambda: datasets.load_dataset(fmt, data_files=name))
        return name, _pick_split(loaded, source, name)
    name = source.spec
    if not source.local:
        loaded = _load(datasets, source, name, lambda: datasets.load_dataset(source.location, source.config))
        return name, _pick_split(loaded, source, name)
    folder = Path(source.location)
    if folder.is_dir() and ((folder / "dataset_dict.json").exists() or (folder / "state.json").exists()):
        if source.config:
            raise DataError(name, None, f"a save_to_disk folder has no configs ({source.config!r} given); "
                                        "drop ':" + source.config + "'")
        loaded = _load(datasets, source, name, lambda: datasets.load_from_disk(str(folder)))
    elif folder.is_file():
        builder, options = _FILE_BUILDERS.get(folder.suffix.lower(), (None, {}))
        if builder is None:
            raise DataError(name, None, f"datasets cannot tell how to read a {folder.suffix or 'suffix-less'} file; "
                                        f"give a {', '.join(sorted(_FILE_BUILDERS))} file or a folder of them")
        open_checked(folder)
        loaded = _load(datasets, source, name,
                       lambda: datasets.load_dataset(builder, source.config, data_files=str(folder), **options))
    else:
        loaded = _load(datasets, source, name, lambda: datasets.load_dataset(str(folder), source.config))
    return name, _pick_split(loaded, source, name)


def _load(datasets, source: DatasetSource, name: str, load):
    try:
        return load()
    except TuneforgeError:
        raise
    except Exception as exc:  # whatever datasets raises for data it cannot load: one line, the cause kept
        if not source.local:
            raise ConfigError(
                f"{name}: no local folder or file has this name, and datasets.load_dataset({source.location!r}"
                + (f", {source.config!r}" if source.config else "") + f") could not load it from the Hugging Face "
                f"Hub ({_one_line(exc)}); check the path, or the name and the network (offline: save_to_disk it "
                "where the Hub is reachable and give the folder)") from None
        raise DataError(name, None, f"datasets could not read it ({_one_line(exc)}); give Parquet, Arrow, CSV or "
                                    "JSON data, or a folder written by save_to_disk") from None


def _pick_split(loaded, source: DatasetSource, name: str):
    """The split ``@SPLIT`` names, or the only one; a plain ``Dataset`` (one split saved alone) as it is."""
    if not hasattr(loaded, "keys"):  # a Dataset
        saved = str(loaded.split) if getattr(loaded, "split", None) is not None else None
        if source.split and saved and source.split != saved:
            raise DataError(name, None, f"no split {source.split!r}: the folder holds one split, {saved!r}; "
                                        f"write @{saved} or leave the split out")
        return loaded
    splits = list(loaded.keys())
    base = name.rsplit("@", 1)[0] if source.split else name
    if source.split is None:
        if len(splits) == 1:
            return loaded[splits[0]]
        raise DataError(name, None, f"holds {len(splits)} splits ({', '.join(splits)}); name one, e.g. "
                                    f"{base if base.startswith(HF_SCHEME) else HF_SCHEME + base}@{splits[0]}")
    if source.split not in loaded:
        raise DataError(name, None, f"no split {source.split!r} (splits: {', '.join(splits)}); write {base}@NAME "
                                    "with one of them")
    return loaded[source.split]


# ---------------------------------------------------------------------------------------------
# Columns


def _column(dataset, name: str, wanted: str | None, defaults: Sequence[str], key: str, what: str,
            required: bool = True) -> str | None:
    """The column ``wanted`` (a config key's value), else the first of ``defaults`` the dataset has."""
    columns = list(dataset.column_names)
    if wanted is not None:
        if wanted in columns:
            return wanted
    else:
        found = next((c for c in defaults if c in columns), None)
        if found is not None or not required:
            return found
    looked = repr(wanted) if wanted is not None else " or ".join(repr(c) for c in defaults)
    raise DataError(name, None, f"no column {looked} ({what}; columns: {', '.join(columns) or 'none'}); "
                                f"set {key} to the column's name")


def class_names(feature) -> list[str] | None:
    """The names a ``ClassLabel`` feature (or a list of them) gives its integers, else None."""
    from datasets import ClassLabel

    inner = getattr(feature, "feature", None)
    for candidate in (feature, inner):
        if isinstance(candidate, ClassLabel):
            return list(candidate.names)
    return None


def _holds_integers(feature) -> bool:
    inner = getattr(feature, "feature", feature)
    return str(getattr(inner, "dtype", "")).startswith(("int", "uint"))


def _named(value, names: list[str] | None, where: tuple[str, int], what: str):
    """An integer label as its ClassLabel name (``-1``, the missing label, and out-of-range values are errors)."""
    if names is None or isinstance(value, bool) or not isinstance(value, int):
        return value
    if not 0 <= value < len(names):
        raise DataError(*where, f"{what} {value} has no name ({'missing label' if value == -1 else 'out of range'}; "
                                f"the ClassLabel names {len(names)}); label it or drop the row")
    return names[value]


def _columns(dataset, names: Sequence[str]) -> dict[str, list]:
    return dataset.select_columns(list(dict.fromkeys(names))).to_dict()


# ---------------------------------------------------------------------------------------------
# What the readers call


def read_token_rows(path: str | os.PathLike, format: str = "auto", tokens_column: str | None = None,
                    tags_column: str | None = None, labelled: bool = True) -> list:
    """Sentences from a dataset: a list of words per row, and (``labelled``) a list of tags, strings or
    ClassLabel integers. Unlabelled reading (``predict``, a pool) leaves any tags column unread."""
    name, dataset = load_split(path, format)
    words_col = _column(dataset, name, tokens_column, TOKENS_COLUMNS, "data.tokens_column",
                        "the words of each row: a list of strings")
    tags_col = _column(dataset, name, tags_column, TAGS_COLUMNS, "data.tags_column",
                       "the tags of each row: a list of strings, or of integers a ClassLabel names") if labelled else None
    names = class_names(dataset.features[tags_col]) if tags_col else None
    if tags_col and names is None and _holds_integers(dataset.features[tags_col]):
        raise DataError(name, None, f"column {tags_col!r} holds integer tags, and the dataset's features give no "
                                    "names for them (no ClassLabel); store tag strings, or cast the column to "
                                    "Sequence(ClassLabel(names=[...])) before saving")
    rows = _columns(dataset, [words_col] + ([tags_col] if tags_col else []))
    examples = []
    for index, words in enumerate(rows[words_col]):
        row = index + 1
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            bad_record(DataError(name, row, f"column {words_col!r} is not a list of strings here; give each row its words"))
            continue
        if not words or not all(w.strip() for w in words):
            what = "no words" if not words else f"an empty word (word {[w.strip() for w in words].index('') + 1})"
            bad_record(DataError(name, row, f"{what} in column {words_col!r}; drop the row or fill in the words"))
            continue
        tags = None
        if tags_col:
            try:
                tags = _row_tags(rows[tags_col][index], names, words, (name, row), tags_col)
            except DataError as error:
                bad_record(error)
                continue
        examples.append(TokenExample(words=list(words), tags=tags, source=name, line=row,
                                     tag_lines=[row] * len(words) if tags is not None else None))
    _check_some(examples, dataset, name, "sentence")
    return examples


def _row_tags(tags, names, words, where, column):
    if not isinstance(tags, list):
        raise DataError(*where, f"column {column!r} is {'empty' if tags is None else 'not a list'} here; "
                                "give one tag per word (O for none)")
    if any(isinstance(t, int) and not isinstance(t, bool) for t in tags) and names is None:
        raise DataError(*where, f"column {column!r} holds integer tags and the dataset names none of them (no "
                                "ClassLabel); store tag strings or a ClassLabel feature")
    tags = [_named(t, names, where, "tag") for t in tags]
    if not all(isinstance(t, str) and t for t in tags):
        raise DataError(*where, f"column {column!r}: every tag must be a non-empty string (or a ClassLabel integer)")
    if len(tags) != len(words):
        raise DataError(*where, f"{len(words)} words but {len(tags)} tags; give exactly one tag per word")
    return tags


def read_text_rows(path: str | os.PathLike, format: str = "auto", text_column: str = "text",
                   label_column: str | None = "label", text_pair_column: str | None = None,
                   multi_label: bool = False) -> list:
    """Texts (and pairs) with their labels: a string, a number or a ClassLabel integer (its name), or for
    multi-label a list of them (the ``labels`` column first, as JSONL's ``labels`` key)."""
    name, dataset = load_split(path, format)
    text_col = _column(dataset, name, text_column, (), "data.text_column", "the text")
    pair_col = _column(dataset, name, text_pair_column, (), "data.text_pair_column", "the second text") \
        if text_pair_column else None
    label_col = None
    if label_column is not None:
        plural = label_column + "s"
        wanted = plural if multi_label and plural in dataset.column_names else label_column
        label_col = _column(dataset, name, wanted, (), "data.label_column", "the label")
    names = class_names(dataset.features[label_col]) if label_col else None
    rows = _columns(dataset, [c for c in (text_col, pair_col, label_col) if c])
    examples = []
    for index, text in enumerate(rows[text_col]):
        row = index + 1
        try:
            if not isinstance(text, str) or not text.strip():
                raise DataError(name, row, f"{'empty' if isinstance(text, str) or text is None else 'not a'} text in "
                                           f"column {text_col!r}; fill it in or drop the row")
            pair = rows[pair_col][index] if pair_col else None
            if pair_col and (not isinstance(pair, str) or not pair.strip()):
                raise DataError(name, row, f"empty text in column {pair_col!r}; fill it in or drop the row")
            labels = _row_labels(rows[label_col][index], names, (name, row), label_col, multi_label) \
                if label_col else None
        except DataError as error:
            bad_record(error)
            continue
        examples.append(TextExample(text=text, labels=labels, text_pair=pair, source=name, line=row))
    _check_some(examples, dataset, name, "text")
    return examples


def _check_some(examples: list, dataset, name: str, what: str) -> None:
    if not examples:  # with rows, only reached in data check's lenient reading, where each bad row is counted
        raise DataError(name, None, f"no rows; give a dataset with at least one {what}" if not dataset.num_rows
                        else f"none of its {dataset.num_rows} row(s) could be read")


def _row_labels(value, names, where, column, multi_label) -> list[str]:
    if multi_label:
        value = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
        if not isinstance(value, list):
            raise DataError(*where, f"column {column!r} is empty here; give a list of labels ([] for none)")
        labels = [_named(v, names, where, "label") for v in value]
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) and v != "" for v in labels):
            raise DataError(*where, f"column {column!r}: labels must be strings (or ClassLabel integers)")
        return list(dict.fromkeys(str(v) for v in labels))
    if isinstance(value, list):
        raise DataError(*where, f"column {column!r} holds a list; one label per text, or set task.multi_label: true")
    label = _named(value, names, where, "label")
    if label is None or label == "":
        raise DataError(*where, f"empty label in column {column!r}; every row needs a label")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise DataError(*where, f"label {label!r} in column {column!r} is not a string or an integer; store label "
                                "names (or a ClassLabel)")
    return [str(label)]


def sample_rows(path: str | os.PathLike, limit: int) -> list[dict]:
    """The first ``limit`` rows as dicts (what a task's ``sniff`` looks at), ClassLabel integers as names."""
    _, dataset = load_split(path)
    rows = dataset.select(range(min(limit, dataset.num_rows))).to_list()
    for column, feature in dataset.features.items():
        names = class_names(feature)
        if names is None:
            continue
        for row in rows:
            value = row.get(column)
            if isinstance(value, list):
                row[column] = [names[v] if isinstance(v, int) and 0 <= v < len(names) else v for v in value]
            elif isinstance(value, int) and 0 <= value < len(names):
                row[column] = names[value]
    return rows
