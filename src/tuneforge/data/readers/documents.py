"""Raw documents for masked-LM pre-training and vocabulary extension: ``.txt`` and ``.jsonl`` files, folders
of them, and Parquet / Arrow / ``hf:`` datasets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ...artifacts.paths import resolve_path
from ...errors import DataError
from ..hf_datasets import DATASET_FORMATS, dataset_format, read_text_rows
from ..records import TextExample, decode_lines, open_checked
from .texts import read_text_jsonl

DOCUMENT_SUFFIXES = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


@dataclass
class DocumentReport:
    """What :func:`read_documents` read: files, documents, blank lines skipped."""

    files: list[str] = field(default_factory=list)
    documents: int = 0
    blank_lines: int = 0

    def describe(self) -> str:
        text = f"{self.documents:,} documents from {len(self.files)} file(s)"
        return text + (f"; {self.blank_lines:,} blank line(s) skipped" if self.blank_lines else "")


def document_files(path: str | Path) -> list[Path]:
    """A file, or every ``.txt``/``.jsonl`` file under a folder (sorted, so the order is reproducible)."""
    resolved = Path(resolve_path(path))
    if resolved.is_dir():
        files = sorted(p for p in resolved.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES)
        if not files:
            raise DataError(resolved, None, "no .txt or .jsonl files in this folder; give a file or a folder of them")
        return files
    return [open_checked(resolved)]


def read_documents(paths: str | Path | Sequence[str | Path], format: str = "auto", text_key: str = "text",
                   report: DocumentReport | None = None) -> list[TextExample]:
    """Raw text for language modelling: ``.txt`` (one document a line; blank lines are skipped and
    counted), ``.jsonl`` (one ``{"text": ...}`` record a line), a folder of such files, or a Parquet /
    Arrow / ``hf:`` dataset (its ``text_key`` column)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    report = report if report is not None else DocumentReport()
    documents: list[TextExample] = []
    for path in paths:
        fmt = dataset_format(path) if format == "auto" else format
        if fmt in DATASET_FORMATS:
            report.files.append(str(path))
            documents += read_text_rows(path, fmt, text_key, label_column=None)
            continue
        for file in document_files(path):
            fmt = DOCUMENT_SUFFIXES.get(file.suffix.lower(), "text") if format == "auto" else format
            report.files.append(str(file))
            if fmt == "jsonl":
                documents += read_text_jsonl(file, text_key, label_key=None)
            elif fmt == "text":
                for number, text in decode_lines(file):
                    if text.strip():
                        documents.append(TextExample(text=text, source=str(file), line=number))
                    else:
                        report.blank_lines += 1
            else:
                raise DataError(file, None, f"unknown format {fmt!r}; raw text is read from text or jsonl files")
    if not documents:
        raise DataError(paths[0], None, "no text found; give files with one document a line (.txt) or JSONL records")
    report.documents = len(documents)
    return documents
