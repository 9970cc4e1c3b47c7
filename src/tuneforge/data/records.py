"""What every reader shares: the example records (:class:`TokenExample`, :class:`TextExample`), a file's
lines (UTF-8, universal line ends, errors at file:line), malformed records collected instead of stopping
the read (:func:`collect_bad_records`, for ``tuneforge data check``), the documented pre-tokenizer for raw
text, and deterministic splitting.

Every reader builds on this module (:mod:`tuneforge.data.readers`, :mod:`.hf_datasets`,
:mod:`.interchange`, :mod:`.tags`); it imports none of them.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..artifacts.paths import resolve_path
from ..errors import DataError
from .cjk import CJK_SCRIPTS, load_jieba


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


def bad_record(error: DataError) -> None:
    """Raise ``error``, or inside :func:`collect_bad_records` note it (the caller then skips the record)."""
    found = _collected.get()
    if found is None:
        raise error
    found.append(error)


def decode_lines(path: Path, keep_ends: bool = False) -> Iterable[tuple[int, str]]:
    """Yield (line number, text) with a file:line error on invalid UTF-8.

    Line ends are universal: ``\\n``, ``\\r\\n`` and a lone ``\\r`` (old Mac files, some exports) each
    end a line, as Python's text mode reads them; a CR-only file is not one long line. ``keep_ends``:
    each line keeps the end it had in the file (what a CSV reader needs, so that a quoted field
    spanning lines comes back with its own line ends).
    """
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise DataError(path, None, f"cannot open ({exc.strerror}); check the path and the file's permissions") from None
    number = 0
    with handle:
        for raw in handle:
            if raw.endswith(b"\r\n"):
                raw, end = raw[:-2], b"\r\n"
            elif raw.endswith((b"\n", b"\r")):  # a final CR ends the last line, as a final LF does
                raw, end = raw[:-1], raw[-1:]
            else:
                end = b""
            pieces = raw.split(b"\r") if b"\r" in raw else [raw]
            for k, piece in enumerate(pieces):
                number += 1
                if keep_ends:
                    piece += end if k == len(pieces) - 1 else b"\r"
                try:
                    text = piece.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        path, number, f"invalid UTF-8 (byte {exc.start}); re-save the file as UTF-8"
                    ) from None
                if number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield number, text


def open_checked(path: str | Path) -> Path:
    resolved = Path(resolve_path(path))
    if not resolved.exists():
        raise DataError(resolved, None, "file not found; check the path")
    if resolved.is_dir():
        raise DataError(resolved, None, "is a folder; give a data file")
    if resolved.stat().st_size == 0:
        raise DataError(resolved, 1, "file is empty; give a file with at least one sentence")
    return resolved


# ---------------------------------------------------------------------------------------------
# Raw text

# The documented pre-tokenizer for raw text. In order of precedence:
#   URLs, @mentions and #hashtags stay whole (tweets);
#   each CJK character is its own word (Chinese is labelled per character);
#   a run of letters/digits, with inner apostrophes or hyphens kept ("don't", "state-of-the-art");
#   any other non-space character on its own (punctuation, emoji).
_WORD_CHAR = rf"[^\W_{CJK_SCRIPTS}]"  # a letter or digit that is not CJK
PRETOKENIZER_PATTERN = (
    r"https?://\S+|www\.\S+"
    r"|[@#][\w_]+"
    rf"|[{CJK_SCRIPTS}]"
    rf"|{_WORD_CHAR}+(?:['’\-]{_WORD_CHAR}+)*"
    r"|\S"
)


def pretokenize(text: str, chinese: str = "characters") -> tuple[list[str], list[tuple[int, int]]]:
    """Split raw text into words with (start, end) character offsets. See PRETOKENIZER_PATTERN.

    ``chinese="jieba"``: a run of adjacent CJK characters is split into jieba's words instead of one
    word a character (for a model trained on a file of segmented words)."""
    import regex

    words, offsets = [], []
    for match in regex.finditer(PRETOKENIZER_PATTERN, text):
        words.append(match.group())
        offsets.append(match.span())
    if chinese == "jieba" and words:
        return _jieba_words(text, words, offsets)
    return words, offsets


def _jieba_words(text: str, words: list[str], offsets: list[tuple[int, int]]):
    """Runs of adjacent one-character CJK words joined, then cut where jieba cuts them."""
    import regex

    cjk = regex.compile(rf"[{CJK_SCRIPTS}]")
    jieba = load_jieba("data.chinese_segmentation")
    out_words: list[str] = []
    out_offsets: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        j = i
        while j + 1 < len(words) and cjk.fullmatch(words[j]) and cjk.fullmatch(words[j + 1]) \
                and offsets[j][1] == offsets[j + 1][0]:
            j += 1
        if j == i:
            out_words.append(words[i])
            out_offsets.append(offsets[i])
        else:
            start, end = offsets[i][0], offsets[j][1]
            for piece, begin, stop in jieba.tokenize(text[start:end]):
                out_words.append(piece)
                out_offsets.append((start + begin, start + stop))
        i = j + 1
    return out_words, out_offsets


def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Words back into one string, with each word's (start, end) character offsets.

    One space between words, none where the character on either side of the gap is CJK, so a
    character-per-word Chinese sentence reads as written (``北京``, ``iPhone手机``). The exact words
    need not be recoverable from the string: interchange files carry the offsets.
    """
    import regex

    cjk = regex.compile(rf"[{CJK_SCRIPTS}]")
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


@dataclass
class ChatExample:
    """One conversation: ``messages`` as ``[{"role": "system" | "user" | "assistant", "content": str}]``,
    the system turn (if any) first, user and assistant turns alternating after it.

    A labelled conversation ends with the assistant's answer: :attr:`reference` is that answer and
    :attr:`prompt_messages` everything before it (what a model is asked to continue).
    """

    messages: list[dict]
    source: str = ""
    line: int = 0

    @property
    def reference(self) -> str | None:
        """The last assistant turn's content, when the conversation ends with one."""
        last = self.messages[-1] if self.messages else None
        return last["content"] if last is not None and last["role"] == "assistant" else None

    @property
    def prompt_messages(self) -> list[dict]:
        """The turns a model answers: all of them but a final assistant turn."""
        return self.messages[:-1] if self.reference is not None else list(self.messages)

    @property
    def text(self) -> str:
        """Every turn's content, one a line (what duplicates are compared on, what tokenizer checks read)."""
        return "\n".join(m["content"] for m in self.messages)

    def as_text(self) -> str:
        return self.text

    def word_list(self) -> list[str]:
        return self.text.split()


@dataclass
class PreferenceExample:
    """One preference pair: a prompt (chat messages ending with the user's turn) and two assistant
    answers to it, the preferred (``chosen``) and the dispreferred (``rejected``)."""

    prompt_messages: list[dict]
    chosen: str
    rejected: str
    source: str = ""
    line: int = 0

    def conversation(self, side: str) -> list[dict]:
        """The prompt followed by the ``chosen`` or ``rejected`` answer."""
        return [*self.prompt_messages, {"role": "assistant", "content": getattr(self, side)}]

    @property
    def text(self) -> str:
        """The prompt's turns and both answers, one a line (duplicate checks, tokenizer statistics)."""
        return "\n".join([*(m["content"] for m in self.prompt_messages), self.chosen, self.rejected])

    def as_text(self) -> str:
        return self.text
