"""Reading labelled data: CoNLL-style column files, JSONL, CSV/TSV, and (through :mod:`.hf_datasets`)
Parquet, Arrow and Hugging Face datasets; Label Studio and doccano through :mod:`.interchange`.

Every error names the file and line and says what to do (see :class:`tuneforge.errors.DataError`).
Tags are normalised to IOB2 on the way in (:func:`normalise_to_iob2`), and the number of tags
that had to change is reported, never hidden.
"""

from __future__ import annotations

import json
import random
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import DataError
from ..paths import resolve_path

DOCSTART = "-DOCSTART-"


@dataclass
class TokenExample:
    """One sentence: its words and (when labelled) one tag per word.

    ``line`` is where it starts in its file; ``tag_lines`` gives the line of each tag so that a
    problem with one tag can be reported exactly. ``text``/``offsets`` are set when the words came
    from raw text, so predictions can carry character offsets.
    """

    words: list[str]
    tags: list[str] | None = None
    source: str = ""
    line: int = 0
    tag_lines: list[int] | None = None
    text: str | None = None
    offsets: list[tuple[int, int]] | None = None
    # the entity types this sentence's tags annotate; None: every type of the label space. Set
    # when data annotates only some types (a continual-learning stage): its O words may hide the others.
    annotated: tuple[str, ...] | None = None

    def as_text(self) -> str:
        """The sentence as one string: the raw text it came from, else its words joined (:func:`join_words`)."""
        return self.text if self.text is not None else join_words(self.words)[0]

    def word_list(self) -> list[str]:
        """The words as read (a character a word in a CJK file), not the whitespace runs of :meth:`as_text`."""
        return self.words


@dataclass
class SchemeReport:
    """What :func:`normalise_to_iob2` did."""

    detected: str = "IOB2"
    repaired: int = 0
    examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.repaired:
            return f"tags read as {self.detected}; none needed repair"
        return f"tags read as {self.detected}; {self.repaired} tag(s) rewritten to IOB2"


_collected: ContextVar[list | None] = ContextVar("tuneforge_bad_records", default=None)


@contextmanager
def collect_bad_records():
    """Inside this block, a malformed record (a line, a JSON record, a CSV row, a tag no scheme reads)
    is noted in the yielded list and skipped instead of stopping the read: ``tuneforge data check``
    reports every one. Problems with a whole file (missing, empty, not UTF-8) still stop it."""
    token = _collected.set([])
    try:
        yield _collected.get()
    finally:
        _collected.reset(token)


def _bad(error: DataError) -> None:
    """Raise ``error``, or inside :func:`collect_bad_records` note it (the caller then skips the record)."""
    found = _collected.get()
    if found is None:
        raise error
    found.append(error)


def _decode_lines(path: Path) -> Iterable[tuple[int, str]]:
    """Yield (line number, text) with a file:line error on invalid UTF-8.

    Line ends are universal: ``\\n``, ``\\r\\n`` and a lone ``\\r`` (old Mac files, some exports) each
    end a line, as Python's text mode reads them; a CR-only file is not one long line.
    """
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise DataError(path, None, f"cannot open ({exc.strerror}); check the path and the file's permissions") from None
    number = 0
    with handle:
        for raw in handle:
            if raw.endswith(b"\r\n"):
                raw = raw[:-2]
            elif raw.endswith((b"\n", b"\r")):  # a final CR ends the last line, as a final LF does
                raw = raw[:-1]
            for piece in raw.split(b"\r") if b"\r" in raw else (raw,):
                number += 1
                try:
                    text = piece.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        path, number, f"invalid UTF-8 (byte {exc.start}); re-save the file as UTF-8"
                    ) from None
                if number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield number, text


def _open_checked(path: str | Path) -> Path:
    resolved = Path(resolve_path(path))
    if not resolved.exists():
        raise DataError(resolved, None, "file not found; check the path")
    if resolved.is_dir():
        raise DataError(resolved, None, "is a folder; give a data file")
    if resolved.stat().st_size == 0:
        raise DataError(resolved, 1, "file is empty; give a file with at least one sentence")
    return resolved


def read_conll(path: str | Path, token_column: int = 0, tag_column: int | None = -1) -> list[TokenExample]:
    """Read a column file: one token per line, blank line between sentences.

    Columns are split on tabs if the line has one, else on runs of spaces. ``-DOCSTART-`` lines are
    skipped. ``tag_column=None`` reads an unlabelled file (words only).
    """
    resolved = _open_checked(path)
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

    for number, text in _decode_lines(resolved):
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
            _bad(DataError(
                resolved, number,
                f"found {len(columns)} column(s) where line {n_columns_line} has {n_columns}; "
                "every token line needs the same columns (tab or space separated)",
            ))
            continue
        word = columns[token_column]
        if not word:
            _bad(DataError(resolved, number, "empty token; remove the line or fill in the token"))
            continue
        tag = columns[tag_column] if tag_column is not None else None
        if tag_column is not None and not tag:
            _bad(DataError(resolved, number, "empty tag; every token needs a tag (use O for none)"))
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
    resolved = _open_checked(path)
    words_name, tags_name = tokens_key or "tokens", tags_key or "tags"
    examples: list[TokenExample] = []
    for number, text in _decode_lines(resolved):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            _bad(DataError(resolved, number, f"not valid JSON ({exc.msg}); one JSON object per line"))
            continue
        if not isinstance(record, dict):
            _bad(DataError(resolved, number, "expected a JSON object like {\"tokens\": [...], \"tags\": [...]}"))
            continue
        words = record.get(tokens_key) if tokens_key else record.get("tokens", record.get("words"))
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            _bad(DataError(resolved, number, f"missing \"{words_name}\": a list of strings"))
            continue
        if not words:
            _bad(DataError(resolved, number, f"\"{words_name}\" is empty; drop the record or add tokens"))
            continue
        tags = record.get(tags_key) if tags_key else record.get("tags", record.get("ner_tags"))
        if labelled or tags is not None:
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                if labelled:
                    _bad(DataError(resolved, number, f"missing \"{tags_name}\": a list of tag strings, one per token"))
                    continue
                tags = None
            elif len(tags) != len(words):
                _bad(DataError(
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


def detect_format(path: str | Path) -> str:
    from .hf_datasets import dataset_format
    from .interchange import detect_interchange

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
    from .hf_datasets import DATASET_FORMATS

    if fmt in DATASET_FORMATS:
        from .hf_datasets import read_token_rows

        return read_token_rows(path, fmt, tokens_column, tags_column, labelled=tag_column is not None)
    if fmt in ("labelstudio", "doccano"):
        from .interchange import read_token_annotations

        return read_token_annotations(path, fmt, labelled=tag_column is not None)
    if fmt == "jsonl":
        return read_jsonl(path, labelled=tag_column is not None, tokens_key=tokens_column, tags_key=tags_column)
    if fmt == "conll":
        return read_conll(path, token_column=token_column, tag_column=tag_column)
    raise DataError(path, None, f"unknown format {fmt!r}; use conll, jsonl, labelstudio, doccano, parquet, arrow or hf")


# ---------------------------------------------------------------------------------------------
# Tag schemes


def split_tag(tag: str) -> tuple[str, str]:
    """An IOB2 tag (as :func:`normalise_to_iob2` leaves them) -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIESLU":
        return tag[0], tag[2:]
    return "I", tag


# What a tag's prefix says about the entity it belongs to.
BEGIN, INSIDE, END, SINGLE = "begin", "inside", "end", "single"

# Every tag scheme tuneforge reads: its prefixes and the role each plays. ``O`` is outside in all
# of them; the prefix "" is a bare tag (``PER``), which only IO uses. Detection prefers the first
# scheme in this order that defines every prefix a file uses; everything is rewritten to IOB2.
# IOB1 and IOB2 share prefixes and differ in whether ``I-`` may start an entity (IOB1 only).
SCHEMES: dict[str, dict[str, str]] = {
    "IOB2": {"B": BEGIN, "I": INSIDE},
    "IOB1": {"B": BEGIN, "I": INSIDE},
    "IO": {"I": INSIDE, "": INSIDE},
    "BIOES": {"B": BEGIN, "I": INSIDE, "E": END, "S": SINGLE},
    "BILOU": {"B": BEGIN, "I": INSIDE, "L": END, "U": SINGLE},
    "BMES": {"B": BEGIN, "M": INSIDE, "E": END, "S": SINGLE},
    "BMEWO": {"B": BEGIN, "M": INSIDE, "E": END, "W": SINGLE},
}
_ALL_PREFIXES = sorted({p for roles in SCHEMES.values() for p in roles if p})


def parse_tag(tag: str) -> tuple[str, str]:
    """A tag as written -> (prefix, entity type): ``"M-PER"`` -> ``("M", "PER")``, ``"PER"`` -> ``("", "PER")``.

    A prefix is one character followed by ``-`` or ``_``; ``"O"`` -> ``("O", "")``.
    """
    if tag == "O":
        return "O", ""
    if len(tag) >= 2 and tag[1] in "-_":
        return tag[0], tag[2:]
    return "", tag


def _describe_prefixes(scheme: str) -> str:
    return ", ".join(f"{p}-" if p else "bare tags" for p in SCHEMES[scheme]) + " and O"


def _tag_error(ex: TokenExample, position: int, tag: str, scheme: str, declared: bool) -> DataError:
    """The one message for a tag the scheme cannot read: file, line, tag, and what to do."""
    line = ex.tag_lines[position] if ex.tag_lines else ex.line
    prefix, kind = parse_tag(tag)
    if prefix and not kind:
        what = f"tag {tag!r} has no entity type after its prefix; write e.g. {prefix}-PER, or O for none"
    elif prefix and prefix not in _ALL_PREFIXES:
        hint = f" (tags are case-sensitive: {prefix.upper()}-)" if prefix.upper() in _ALL_PREFIXES else ""
        what = (f"tag {tag!r} has prefix '{prefix}-', which no tag scheme defines{hint}; "
                f"use {', '.join(p + '-' for p in _ALL_PREFIXES)} or O")
    else:
        how = f"data.scheme is {scheme}" if declared else f"the tags read as {scheme}"
        shown = f"prefix '{prefix}-'" if prefix else "a bare tag (no prefix)"
        what = (f"tag {tag!r}: {how}, which has no {shown} (it uses {_describe_prefixes(scheme)}); "
                "fix the tag" + ("" if declared else " or set data.scheme"))
    return DataError(ex.source, line, what)


def detect_scheme(sequences: Sequence[Sequence[str]]) -> str:
    """The scheme whose prefixes cover the tags (first in :data:`SCHEMES` order).

    When none covers them all, the scheme covering the most tags: reading with it then stops at
    the first tag it does not define.
    """
    from collections import Counter

    used: Counter = Counter()
    starts_with_inside = False
    for tags in sequences:
        open_type = None
        for tag in tags:
            prefix, kind = parse_tag(tag)
            if prefix == "O":
                open_type = None
                continue
            used[prefix] += 1
            if prefix in ("I", "") and open_type != kind:
                starts_with_inside = True
            open_type = kind
    fitting = [name for name, roles in SCHEMES.items() if all(p in roles for p in used)]
    if fitting:
        best = fitting[0]
    else:
        best = max(SCHEMES, key=lambda name: sum(n for p, n in used.items() if p in SCHEMES[name]))
    if best in ("IOB1", "IOB2"):
        return "IOB1" if starts_with_inside else "IOB2"
    return best


def normalise_to_iob2(examples: list[TokenExample], scheme: str = "auto") -> SchemeReport:
    """Rewrite every example's tags to IOB2 in place and say how many changed.

    Each prefix plays its role in the scheme (:data:`SCHEMES`): begin and single -> ``B-``;
    inside and end -> ``I-`` when they continue an open entity of their type, else ``B-`` (IOB1,
    IO, and an IOB2 slip that starts an entity with ``I-``, are repaired this way and counted);
    end and single close the entity. A prefix the scheme does not define, or a prefix without an
    entity type, stops with the file, line and tag.
    """
    if scheme != "auto" and scheme not in SCHEMES:
        raise DataError("data.scheme", None, f"unknown scheme {scheme!r}; choose auto, {', '.join(SCHEMES)}")
    sequences = [ex.tags for ex in examples if ex.tags is not None]
    detected = detect_scheme(sequences) if scheme == "auto" else scheme
    roles = SCHEMES[detected]
    report = SchemeReport(detected=detected)
    for ex in examples:
        if ex.tags is None:
            continue
        new_tags: list[str] = []
        open_type = None  # the entity type a following inside/end tag continues
        for position, tag in enumerate(ex.tags):
            prefix, kind = parse_tag(tag)
            if prefix == "O":
                fixed, open_type = "O", None
            else:
                role = roles.get(prefix)
                if role is None or not kind:
                    _bad(_tag_error(ex, position, tag, detected, declared=scheme != "auto"))
                    new_tags.append("O")  # only inside collect_bad_records: the tag is counted there
                    open_type = None
                    continue
                continues = role in (INSIDE, END) and open_type == kind
                fixed = f"{'I' if continues else 'B'}-{kind}"
                open_type = kind if role in (BEGIN, INSIDE) else None
            if fixed != tag:
                report.repaired += 1
                if len(report.examples) < 5:
                    line = ex.tag_lines[position] if ex.tag_lines else ex.line
                    report.examples.append(f"{ex.source}:{line}: {tag} -> {fixed}")
            new_tags.append(fixed)
        ex.tags = new_tags
    # Counting format conversions (BIOES/BMES -> IOB2) as repairs is intended: the user sees
    # exactly how much was rewritten.
    return report


def check_trainable_labels(examples: Sequence, multi_label: bool = False) -> None:
    """Refuse a training set that cannot teach a model anything, naming its file.

    Token examples (after :func:`normalise_to_iob2`) must hold at least one entity tag: a file
    whose tags are all ``O`` usually means the wrong tag column or unread line ends. Labelled texts
    need two labels for a single-label classifier (one for multi-label).
    """
    if not examples:
        raise DataError("data.train", None, "no training examples; give a training file with labelled examples")
    source = getattr(examples[0], "source", "") or "data.train"
    if hasattr(examples[0], "tags"):
        if all(tag == "O" for ex in examples for tag in (ex.tags or [])):
            raise DataError(
                source, None,
                f"every tag in the {len(examples)} training sentence(s) is O, so there is nothing to learn; "
                "check data.tag_column (the last column by default) and the file's line ends",
            )
        return
    labels = sorted({label for ex in examples for label in (ex.labels or [])})
    needed = 1 if multi_label else 2
    if len(labels) < needed:
        raise DataError(
            source, None,
            f"the training data has {len(labels)} label(s) ({', '.join(labels) or 'none'}); "
            f"a {'multi-label ' if multi_label else ''}classifier needs at least {needed}",
        )


def check_known_tags(examples: list[TokenExample], known: Iterable[str]) -> None:
    """Fail on the first tag that training never saw, naming its file and line."""
    known_set = set(known)
    for ex in examples:
        if ex.tags is None:
            continue
        for position, tag in enumerate(ex.tags):
            if tag not in known_set:
                line = ex.tag_lines[position] if ex.tag_lines else ex.line
                raise DataError(
                    ex.source, line,
                    f"tag {tag!r} was never seen in training (known: {', '.join(sorted(known_set))}); "
                    "fix the tag or retrain with it",
                )


# ---------------------------------------------------------------------------------------------
# Splitting


def split_examples(examples: Sequence, ratios: Sequence[float], seed: int) -> list[list]:
    """Shuffle with ``seed`` and cut into len(ratios) parts (e.g. 0.8/0.1/0.1). Deterministic."""
    if any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"split ratios must be non-negative and sum to 1, got {list(ratios)}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    parts: list[list] = []
    begin = 0
    cumulative = 0.0
    for i, ratio in enumerate(ratios):
        cumulative += ratio
        end = len(order) if i == len(ratios) - 1 else int(cumulative * len(order) + 0.5)
        parts.append([examples[j] for j in order[begin:end]])
        begin = end
    return parts


def write_conll(examples: Sequence[TokenExample], path: str | Path, tags: Sequence[Sequence[str]] | None = None) -> None:
    """Write ``word<TAB>tag`` lines with a blank line between sentences (atomically)."""
    from ..paths import atomic_write_text

    lines: list[str] = []
    for i, ex in enumerate(examples):
        seq = tags[i] if tags is not None else ex.tags
        for j, word in enumerate(ex.words):
            lines.append(f"{word}\t{seq[j]}" if seq is not None else word)
        lines.append("")
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_token_jsonl(examples: Sequence[TokenExample], path: str | Path) -> None:
    """Write ``{"tokens": [...], "tags": [...]}`` records, one a line, as :func:`read_jsonl` reads them (atomically)."""
    from ..paths import atomic_write_text

    lines = [json.dumps({"tokens": ex.words, **({"tags": ex.tags} if ex.tags is not None else {})}, ensure_ascii=False)
             for ex in examples]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


# ---------------------------------------------------------------------------------------------
# Raw text

# The documented pre-tokenizer for raw text. In order of precedence:
#   URLs, @mentions and #hashtags stay whole (tweets);
#   each CJK character is its own word (Chinese is labelled per character);
#   a run of letters/digits, with inner apostrophes or hyphens kept ("don't", "state-of-the-art");
#   any other non-space character on its own (punctuation, emoji).
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}"
_WORD_CHAR = rf"[^\W_{_CJK}]"  # a letter or digit that is not CJK
PRETOKENIZER_PATTERN = (
    r"https?://\S+|www\.\S+"
    r"|[@#][\w_]+"
    rf"|[{_CJK}]"
    rf"|{_WORD_CHAR}+(?:['’\-]{_WORD_CHAR}+)*"
    r"|\S"
)


def pretokenize(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Split raw text into words with (start, end) character offsets. See PRETOKENIZER_PATTERN."""
    import regex

    words, offsets = [], []
    for match in regex.finditer(PRETOKENIZER_PATTERN, text):
        words.append(match.group())
        offsets.append(match.span())
    return words, offsets


def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Words back into one string, with each word's (start, end) character offsets.

    One space between words, none where the character on either side of the gap is CJK, so a
    character-per-word Chinese sentence reads as written (``北京``, ``iPhone手机``). The exact words
    need not be recoverable from the string: interchange files carry the offsets.
    """
    import regex

    cjk = regex.compile(rf"[{_CJK}]")
    parts: list[str] = []
    offsets: list[tuple[int, int]] = []
    position = 0
    for i, word in enumerate(words):
        if i and not (cjk.match(words[i - 1][-1:]) or cjk.match(word[:1])):
            parts.append(" ")
            position += 1
        offsets.append((position, position + len(word)))
        parts.append(word)
        position += len(word)
    return "".join(parts), offsets


def examples_from_texts(texts: Sequence[str], source: str = "<texts>", first_line: int = 1) -> list[TokenExample]:
    examples = []
    for i, text in enumerate(texts):
        words, offsets = pretokenize(text)
        examples.append(
            TokenExample(words=words, source=source, line=first_line + i, text=text, offsets=offsets)
        )
    return examples


def read_text_lines(path: str | Path) -> list[TokenExample]:
    """One text per line; blank lines are kept as empty examples so output lines up with input."""
    resolved = _open_checked(path)
    texts = [text for _, text in _decode_lines(resolved)]
    return examples_from_texts(texts, source=str(resolved))


# ---------------------------------------------------------------------------------------------
# Labelled texts (text classification)


@dataclass
class TextExample:
    """One text (or text pair) and, when labelled, its label(s): one for single-label tasks.

    ``line`` is where the record starts in its file, so a problem with it can be reported exactly.
    """

    text: str
    labels: list[str] | None = None
    text_pair: str | None = None
    source: str = ""
    line: int = 0

    def as_text(self) -> str:
        """The text, and its pair after a tab when there is one (what duplicates are compared on)."""
        return self.text if self.text_pair is None else f"{self.text}\t{self.text_pair}"

    def word_list(self) -> list[str]:
        """Whitespace-separated words of the text and its pair."""
        return self.as_text().split()


TEXT_FORMATS = ("csv", "tsv", "jsonl", "text")


def detect_text_format(path: str | Path) -> str:
    from .hf_datasets import dataset_format
    from .interchange import detect_interchange

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
) -> list[TextExample]:
    """Read a CSV (quoted fields may span lines) or TSV (no quoting, as GLUE files) with a header row.

    Columns are found by name. ``label_column=None`` reads texts only (for ``predict``); a labelled
    file may give several labels per cell for multi-label tasks, split on ``label_separator``.
    """
    import csv
    import sys

    resolved = _open_checked(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents are the point of some data sets
    lines = (text + "\n" for _, text in _decode_lines(resolved))
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
            _bad(DataError(
                resolved, start,
                f"found {len(row)} field(s) where the header has {len(header)}; "
                + ("quote fields that contain the delimiter" if delimiter != "\t" else "remove stray tabs from the text"),
            ))
            continue
        text = row[index["data.text_column"]]
        if not text.strip():
            _bad(DataError(resolved, start, f"empty text in column {text_column!r}; fill it in or drop the row"))
            continue
        pair = row[index["data.text_pair_column"]] if text_pair_column else None
        if pair is not None and not pair.strip():
            _bad(DataError(resolved, start, f"empty text in column {text_pair_column!r}; fill it in or drop the row"))
            continue
        labels = None
        if label_column is not None:
            labels = _split_label_cell(row[index["data.label_column"]], multi_label, label_separator)
            if not multi_label and not labels[0]:  # multi-label: an empty cell is a text with no label
                _bad(DataError(resolved, start, f"empty label in column {label_column!r}; every row needs a label"))
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
    """Read ``{"text": ..., "label": ...}`` records, or ``"labels": [...]`` for multi-label, one per line."""
    resolved = _open_checked(path)
    examples: list[TextExample] = []
    for number, line in _decode_lines(resolved):
        if not line.strip():
            continue
        try:
            examples.append(_text_record(resolved, number, line, text_key, label_key, text_pair_key, multi_label))
        except DataError as error:
            _bad(error)
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


def read_text_file(
    path: str | Path,
    format: str = "auto",
    text_column: str = "text",
    label_column: str | None = "label",
    text_pair_column: str | None = None,
    multi_label: bool = False,
    label_separator: str = "|",
) -> list[TextExample]:
    """Read labelled (or, with ``label_column=None``, unlabelled) texts from CSV, TSV, JSONL, plain lines, Label
    Studio, doccano, or Parquet / Arrow / ``hf:`` datasets (columns by the same names)."""
    from .hf_datasets import DATASET_FORMATS

    fmt = detect_text_format(path) if format == "auto" else format
    if fmt in DATASET_FORMATS:
        from .hf_datasets import read_text_rows

        return read_text_rows(path, fmt, text_column, label_column, text_pair_column, multi_label)
    if fmt in ("csv", "tsv"):
        return read_text_table(
            path, "\t" if fmt == "tsv" else ",", text_column, label_column, text_pair_column, multi_label, label_separator
        )
    if fmt == "jsonl":
        return read_text_jsonl(path, text_column, label_column, text_pair_column, multi_label)
    if fmt in ("labelstudio", "doccano"):
        from .interchange import read_text_annotations

        return read_text_annotations(path, fmt, text_column, text_pair_column, multi_label,
                                     labelled=label_column is not None)
    if fmt == "text":
        if label_column is not None:
            raise DataError(path, None, "plain text lines carry no labels; give a CSV, TSV or JSONL file")
        resolved = _open_checked(path)
        return [TextExample(text=text, source=str(resolved), line=number) for number, text in _decode_lines(resolved)]
    raise DataError(path, None, f"unknown format {fmt!r}; use csv, tsv, jsonl, text, labelstudio, doccano, parquet, "
                                "arrow or hf")


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

    from ..paths import atomic_write_text

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


# ---------------------------------------------------------------------------------------------
# Raw documents (masked-LM pre-training, vocabulary extension)

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
    return [_open_checked(resolved)]


def read_documents(paths: str | Path | Sequence[str | Path], format: str = "auto", text_key: str = "text",
                   report: DocumentReport | None = None) -> list[TextExample]:
    """Raw text for language modelling: ``.txt`` (one document a line; blank lines are skipped and
    counted), ``.jsonl`` (one ``{"text": ...}`` record a line), a folder of such files, or a Parquet /
    Arrow / ``hf:`` dataset (its ``text_key`` column)."""
    from .hf_datasets import DATASET_FORMATS, dataset_format, read_text_rows

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
                for number, text in _decode_lines(file):
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
