"""Labelled texts (text classification): CSV / TSV with a header row, and JSONL records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from ...errors import DataError
from ..records import TextExample, bad_record, decode_lines, open_checked

TEXT_FORMATS = ("csv", "tsv", "jsonl", "text")


def _split_label_cell(cell: str, multi_label: bool, separator: str) -> list[str]:
    if not multi_label:
        return [cell.strip()]
    return [part.strip() for part in cell.split(separator) if part.strip()]


def read_text_table(
    path: str | Path,
    delimiter: str = ",",
    text_column: str = "text",
    label_column: str | None = "label",
    text_pair_column: str | None = None,
    multi_label: bool = False,
    label_separator: str = "|",
    allow_empty_labels: bool = True,
) -> list[TextExample]:
    """Read a CSV (quoted fields may span lines) or TSV (no quoting, as GLUE files) with a header row.

    Columns are found by name. ``label_column=None`` reads texts only (for ``predict``); a labelled
    file may give several labels per cell for multi-label tasks, split on ``label_separator``. A
    multi-label cell with no label in it (empty, or separators only) is a text with no label when
    ``allow_empty_labels``, else a malformed record (:func:`empty_label_set`).
    """
    import csv
    import sys

    resolved = open_checked(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents are the point of some data sets
    # each line with its own end: a quoted field spanning lines keeps its \\r\\n or \\r, as given
    lines = (text if text.endswith(("\n", "\r")) else text + "\n" for _, text in decode_lines(resolved, keep_ends=True))
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise DataError(resolved, 1, "no header row; the first line must name the columns") from None
    except csv.Error as exc:
        raise DataError(resolved, reader.line_num, f"not valid {kind} ({exc})") from None
    wanted = {"data.text_column": text_column}
    if text_pair_column:
        wanted["data.text_pair_column"] = text_pair_column
    if label_column is not None:
        wanted["data.label_column"] = label_column
    index = {}
    for key, name in wanted.items():
        if name not in header:
            raise DataError(
                resolved, 1,
                f"no column {name!r} in the header (columns: {', '.join(header)}); set {key} to the column's name"
                + ("" if delimiter == "\t" or "\t" not in ",".join(header) else "; the file looks tab-separated: use .tsv or data.format: tsv"),
            )
        index[key] = header.index(name)
    examples: list[TextExample] = []
    last_line = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(resolved, last_line + 1, f"not valid {kind} ({exc})") from None
        start, last_line = last_line + 1, reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            bad_record(DataError(
                resolved, start,
                f"found {len(row)} field(s) where the header has {len(header)}; "
                + ("quote fields that contain the delimiter" if delimiter != "\t" else "remove stray tabs from the text"),
            ))
            continue
        text = row[index["data.text_column"]]
        if not text.strip():
            bad_record(DataError(resolved, start, f"empty text in column {text_column!r}; fill it in or drop the row"))
            continue
        pair = row[index["data.text_pair_column"]] if text_pair_column else None
        if pair is not None and not pair.strip():
            bad_record(DataError(resolved, start, f"empty text in column {text_pair_column!r}; fill it in or drop the row"))
            continue
        labels = None
        if label_column is not None:
            labels = _split_label_cell(row[index["data.label_column"]], multi_label, label_separator)
            if not multi_label and not labels[0]:
                bad_record(DataError(resolved, start, f"empty label in column {label_column!r}; every row needs a label"))
                continue
            if multi_label and not labels and not allow_empty_labels:
                bad_record(empty_label_set(resolved, start, f"column {label_column!r}"))
                continue
        examples.append(TextExample(text=text, labels=labels, text_pair=pair, source=str(resolved), line=start))
    if not examples:
        raise DataError(resolved, 1, "no rows found below the header")
    return examples


def read_text_jsonl(
    path: str | Path,
    text_key: str = "text",
    label_key: str | None = "label",
    text_pair_key: str | None = None,
    multi_label: bool = False,
) -> list[TextExample]:
    """Read ``{"text": ..., "label": ...}`` records, or ``"labels": [...]`` for multi-label, one per line
    (``[]`` says "no label" in so many words, unlike an empty CSV cell)."""
    resolved = open_checked(path)
    examples: list[TextExample] = []
    for number, line in decode_lines(resolved):
        if not line.strip():
            continue
        try:
            examples.append(_text_record(resolved, number, line, text_key, label_key, text_pair_key, multi_label))
        except DataError as error:
            bad_record(error)
    if not examples:
        raise DataError(resolved, 1, "no records found; the file holds only blank lines")
    return examples


def _text_record(resolved: Path, number: int, line: str, text_key: str, label_key: str | None,
                 text_pair_key: str | None, multi_label: bool) -> TextExample:
    """One record of :func:`read_text_jsonl`; every problem raises a DataError naming its line."""
    plural = label_key + "s" if label_key else None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(resolved, number, f"not valid JSON ({exc.msg}); one JSON object per line") from None
    if not isinstance(record, dict):
        raise DataError(resolved, number, f"expected a JSON object like {{\"{text_key}\": ..., \"{label_key or 'label'}\": ...}}")
    text = record.get(text_key)
    if not isinstance(text, str):
        raise DataError(resolved, number, f"missing \"{text_key}\": a string (set data.text_column to the key)")
    if not text.strip():
        raise DataError(resolved, number, f"empty \"{text_key}\"; fill it in or drop the record")
    pair = None
    if text_pair_key:
        pair = record.get(text_pair_key)
        if not isinstance(pair, str) or not pair.strip():
            raise DataError(resolved, number, f"missing or empty \"{text_pair_key}\": the second text of the pair")
    labels = None
    if label_key is not None:
        value = record.get(plural, record.get(label_key)) if multi_label else record.get(label_key)
        if multi_label and isinstance(value, str):
            value = [value]
        if multi_label:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise DataError(
                    resolved, number, f"missing \"{plural}\": a list of label strings, [] for none (multi-label)"
                )
            labels = list(dict.fromkeys(value))
        else:
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                hint = "; for several labels per text set task.multi_label: true" if plural in record else ""
                raise DataError(resolved, number, f"missing \"{label_key}\": one label (a string){hint}")
            labels = [str(value)]
    return TextExample(text=text, labels=labels, text_pair=pair, source=str(resolved), line=number)


def empty_label_set(path, line: int, where: str) -> DataError:
    """A multi-label CSV/TSV cell without a label: usually a label forgotten, so an error unless the data
    says such texts are meant (``data.allow_empty_labels``)."""
    return DataError(path, line, f"empty label set in {where}; give at least one label, or set "
                                 "data.allow_empty_labels: true if texts with no label are meant")


def check_known_labels(examples: Sequence[TextExample], known: Iterable[str]) -> None:
    """Fail on the first label that training never saw, naming its file and line."""
    known_set = set(known)
    for ex in examples:
        for label in ex.labels or []:
            if label not in known_set:
                raise DataError(
                    ex.source, ex.line,
                    f"label {label!r} was never seen in training (known: {', '.join(sorted(known_set))}); "
                    "fix the label or retrain with it",
                )
