"""Token files: CoNLL-style columns and JSONL records (words and, when labelled, one tag per word),
written back the same ways; raw text lines pre-tokenized into words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ...artifacts.paths import atomic_write_text
from ...errors import DataError
from ..records import TokenExample, bad_record, decode_lines, open_checked, pretokenize

DOCSTART = "-DOCSTART-"


def read_conll(path: str | Path, token_column: int = 0, tag_column: int | None = -1) -> list[TokenExample]:
    """Read a column file: one token per line, blank line between sentences.

    Columns are split on tabs if the line has one, else on runs of spaces. ``-DOCSTART-`` lines are
    skipped. ``tag_column=None`` reads an unlabelled file (words only).
    """
    resolved = open_checked(path)
    examples: list[TokenExample] = []
    words: list[str] = []
    tags: list[str] = []
    tag_lines: list[int] = []
    start = 0
    n_columns: int | None = None
    n_columns_line = 0

    def flush() -> None:
        nonlocal words, tags, tag_lines
        if words:
            examples.append(
                TokenExample(
                    words=words,
                    tags=tags if tag_column is not None else None,
                    source=str(resolved),
                    line=start,
                    tag_lines=tag_lines if tag_column is not None else None,
                )
            )
        words, tags, tag_lines = [], [], []

    for number, text in decode_lines(resolved):
        if not text.strip():
            flush()
            continue
        columns = text.split("\t") if "\t" in text else text.split()
        columns = [c.strip() for c in columns]
        if columns[0] == DOCSTART:
            flush()
            continue
        if n_columns is None:
            n_columns, n_columns_line = len(columns), number
            wanted = [token_column] + ([tag_column] if tag_column is not None else [])
            if any(not -n_columns <= c < n_columns for c in wanted) or (tag_column is not None and n_columns < 2):
                raise DataError(
                    resolved, number,
                    f"found {n_columns} column(s), too few for token column {token_column}"
                    + (f" and tag column {tag_column}" if tag_column is not None else "")
                    + "; check data.tag_column and that columns are tab or space separated",
                )
        elif len(columns) != n_columns:
            bad_record(DataError(
                resolved, number,
                f"found {len(columns)} column(s) where line {n_columns_line} has {n_columns}; "
                "every token line needs the same columns (tab or space separated)",
            ))
            continue
        word = columns[token_column]
        if not word:
            bad_record(DataError(resolved, number, "empty token; remove the line or fill in the token"))
            continue
        tag = columns[tag_column] if tag_column is not None else None
        if tag_column is not None and not tag:
            bad_record(DataError(resolved, number, "empty tag; every token needs a tag (use O for none)"))
            continue
        if not words:
            start = number
        words.append(word)
        if tag_column is not None:
            tags.append(tag)
            tag_lines.append(number)
    flush()
    if not examples:
        raise DataError(resolved, 1, "no sentences found; the file holds only blank or -DOCSTART- lines")
    return examples


def read_jsonl(path: str | Path, labelled: bool = True, tokens_key: str | None = None,
               tags_key: str | None = None) -> list[TokenExample]:
    """Read ``{"tokens": [...], "tags": [...]}`` records, one per line (``words`` and ``ner_tags`` accepted
    too); ``tokens_key`` / ``tags_key`` (``data.tokens_column`` / ``tags_column``) name other keys."""
    resolved = open_checked(path)
    words_name, tags_name = tokens_key or "tokens", tags_key or "tags"
    examples: list[TokenExample] = []
    for number, text in decode_lines(resolved):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            bad_record(DataError(resolved, number, f"not valid JSON ({exc.msg}); one JSON object per line"))
            continue
        if not isinstance(record, dict):
            bad_record(DataError(resolved, number, "expected a JSON object like {\"tokens\": [...], \"tags\": [...]}"))
            continue
        words = record.get(tokens_key) if tokens_key else record.get("tokens", record.get("words"))
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            bad_record(DataError(resolved, number, f"missing \"{words_name}\": a list of strings"))
            continue
        if not words:
            bad_record(DataError(resolved, number, f"\"{words_name}\" is empty; drop the record or add tokens"))
            continue
        tags = record.get(tags_key) if tags_key else record.get("tags", record.get("ner_tags"))
        if labelled or tags is not None:
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                if labelled:
                    bad_record(DataError(resolved, number, f"missing \"{tags_name}\": a list of tag strings, one per token"))
                    continue
                tags = None
            elif len(tags) != len(words):
                bad_record(DataError(
                    resolved, number,
                    f"{len(words)} tokens but {len(tags)} tags; give exactly one tag per token",
                ))
                continue
        examples.append(
            TokenExample(
                words=list(words), tags=list(tags) if tags is not None else None, source=str(resolved),
                line=number, tag_lines=[number] * len(words) if tags is not None else None,
            )
        )
    if not examples:
        raise DataError(resolved, 1, "no records found; the file holds only blank lines")
    return examples


def write_conll(examples: Sequence[TokenExample], path: str | Path, tags: Sequence[Sequence[str]] | None = None) -> None:
    """Write ``word<TAB>tag`` lines with a blank line between sentences (atomically)."""
    lines: list[str] = []
    for i, ex in enumerate(examples):
        seq = tags[i] if tags is not None else ex.tags
        for j, word in enumerate(ex.words):
            lines.append(f"{word}\t{seq[j]}" if seq is not None else word)
        lines.append("")
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_token_jsonl(examples: Sequence[TokenExample], path: str | Path) -> None:
    """Write ``{"tokens": [...], "tags": [...]}`` records, one a line, as :func:`read_jsonl` reads them (atomically)."""
    lines = [json.dumps({"tokens": ex.words, **({"tags": ex.tags} if ex.tags is not None else {})}, ensure_ascii=False)
             for ex in examples]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def examples_from_texts(texts: Sequence[str], source: str = "<texts>", first_line: int = 1,
                        chinese: str = "characters") -> list[TokenExample]:
    """Raw texts as words with character offsets (:func:`pretokenize`; ``chinese``: characters or jieba words)."""
    examples = []
    for i, text in enumerate(texts):
        words, offsets = pretokenize(text, chinese)
        examples.append(
            TokenExample(words=words, source=source, line=first_line + i, text=text, offsets=offsets)
        )
    return examples


def read_text_lines(path: str | Path, chinese: str = "characters") -> list[TokenExample]:
    """One text per line; blank lines are kept as empty examples so output lines up with input."""
    resolved = open_checked(path)
    texts = [text for _, text in decode_lines(resolved)]
    return examples_from_texts(texts, source=str(resolved), chinese=chinese)
