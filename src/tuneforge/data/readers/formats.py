"""Reading a file in whatever format it is: the entry points that pick the reader (CoNLL columns, JSONL,
CSV / TSV, text lines, Label Studio and doccano through :mod:`..interchange`, Parquet / Arrow / ``hf:``
through :mod:`..hf_datasets`), and writing texts back as they are read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ...artifacts.paths import atomic_write_text
from ...errors import DataError
from ..hf_datasets import DATASET_FORMATS, dataset_format, read_text_rows, read_token_rows
from ..interchange import detect_interchange, read_text_annotations, read_token_annotations
from ..records import TextExample, TokenExample, decode_lines, open_checked
from .texts import read_text_jsonl, read_text_table
from .tokens import read_conll, read_jsonl


def detect_format(path: str | Path) -> str:
    suffix = Path(str(path)).suffix.lower()
    return (dataset_format(path) or detect_interchange(path)
            or ("jsonl" if suffix in {".jsonl", ".json", ".ndjson"} else "conll"))


def read_token_file(
    path: str | Path,
    format: str = "auto",
    token_column: int = 0,
    tag_column: int | None = -1,
    tokens_column: str | None = None,
    tags_column: str | None = None,
) -> list[TokenExample]:
    """Read a labelled (or, with ``tag_column=None``, unlabelled) token file in any format: CoNLL columns
    (``token_column`` / ``tag_column``), JSONL, Label Studio, doccano, Parquet / Arrow / ``hf:`` datasets
    (JSONL keys and dataset columns: ``tokens_column`` / ``tags_column``)."""
    fmt = detect_format(path) if format == "auto" else format
    if fmt in DATASET_FORMATS:
        return read_token_rows(path, fmt, tokens_column, tags_column, labelled=tag_column is not None)
    if fmt in ("labelstudio", "doccano"):
        return read_token_annotations(path, fmt, labelled=tag_column is not None)
    if fmt == "jsonl":
        return read_jsonl(path, labelled=tag_column is not None, tokens_key=tokens_column, tags_key=tags_column)
    if fmt == "conll":
        return read_conll(path, token_column=token_column, tag_column=tag_column)
    raise DataError(path, None, f"unknown format {fmt!r}; use conll, jsonl, labelstudio, doccano, parquet, arrow or hf")


def detect_text_format(path: str | Path) -> str:
    suffix = Path(str(path)).suffix.lower()
    if dataset_format(path):
        return dataset_format(path)
    if detect_interchange(path):
        return "labelstudio"
    if suffix in {".jsonl", ".json", ".ndjson"}:
        return "jsonl"
    if suffix in {".tsv", ".tab"}:
        return "tsv"
    if suffix in {".txt", ".text"}:
        return "text"
    return "csv"


def read_text_file(
    path: str | Path,
    format: str = "auto",
    text_column: str = "text",
    label_column: str | None = "label",
    text_pair_column: str | None = None,
    multi_label: bool = False,
    label_separator: str = "|",
    allow_empty_labels: bool = True,
) -> list[TextExample]:
    """Read labelled (or, with ``label_column=None``, unlabelled) texts from CSV, TSV, JSONL, plain lines, Label
    Studio, doccano, or Parquet / Arrow / ``hf:`` datasets (columns by the same names)."""
    fmt = detect_text_format(path) if format == "auto" else format
    if fmt in DATASET_FORMATS:
        return read_text_rows(path, fmt, text_column, label_column, text_pair_column, multi_label)
    if fmt in ("csv", "tsv"):
        return read_text_table(
            path, "\t" if fmt == "tsv" else ",", text_column, label_column, text_pair_column, multi_label, label_separator,
            allow_empty_labels,
        )
    if fmt == "jsonl":
        return read_text_jsonl(path, text_column, label_column, text_pair_column, multi_label)
    if fmt in ("labelstudio", "doccano"):
        return read_text_annotations(path, fmt, text_column, text_pair_column, multi_label,
                                     labelled=label_column is not None)
    if fmt == "text":
        if label_column is not None:
            raise DataError(path, None, "plain text lines carry no labels; give a CSV, TSV or JSONL file")
        resolved = open_checked(path)
        return [TextExample(text=text, source=str(resolved), line=number) for number, text in decode_lines(resolved)]
    raise DataError(path, None, f"unknown format {fmt!r}; use csv, tsv, jsonl, text, labelstudio, doccano, parquet, "
                                "arrow or hf")


def write_text_file(
    examples: Sequence[TextExample],
    path: str | Path,
    format: str = "auto",
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    multi_label: bool = False,
    label_separator: str = "|",
) -> None:
    """Write labelled texts as :func:`read_text_file` reads them (atomically): a CSV/TSV with a header of
    the text, pair and label columns, or JSONL records (``"labels": [...]`` when ``multi_label``)."""
    import csv
    import io

    fmt = detect_text_format(path) if format == "auto" else format
    if fmt == "jsonl":
        records = []
        for ex in examples:
            record = {text_column: ex.text}
            if text_pair_column:
                record[text_pair_column] = ex.text_pair
            if ex.labels is not None:
                if multi_label:
                    record[label_column + "s"] = ex.labels
                else:
                    record[label_column] = ex.labels[0]
            records.append(json.dumps(record, ensure_ascii=False))
        atomic_write_text(path, "".join(r + "\n" for r in records))
        return
    if fmt not in ("csv", "tsv"):
        raise DataError(path, None, f"cannot write format {fmt!r}; use csv, tsv or jsonl")
    header = [text_column] + ([text_pair_column] if text_pair_column else []) + [label_column]
    rows = [[ex.text] + ([ex.text_pair or ""] if text_pair_column else []) + [label_separator.join(ex.labels or [])]
            for ex in examples]
    if fmt == "tsv":  # read without quoting (GLUE style), so written without it
        atomic_write_text(path, "".join("\t".join(row) + "\n" for row in [header, *rows]))
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
