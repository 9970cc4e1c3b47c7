"""Tag schemes: what each prefix means in IOB2, IOB1, IO, BIOES, BILOU, BMES and BMEWO, detecting a
file's scheme, rewriting every tag to IOB2 (:func:`normalise_to_iob2`, counted, never hidden), the checks
on tags and labels before training, and the entities an IOB2 sequence holds (:func:`extract_entities`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..errors import DataError
from .records import TokenExample, bad_record


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


def split_tag(tag: str) -> tuple[str, str]:
    """An IOB2 tag (as :func:`normalise_to_iob2` leaves them) -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIESLU":
        return tag[0], tag[2:]
    return "I", tag


Entity = tuple[str, int, int]  # (type, start word, end word exclusive)


def extract_entities(tags: Sequence[str]) -> list[Entity]:
    """Strict IOB2: an entity is ``B-X`` followed by any run of ``I-X``. A stray ``I-X`` is no entity."""
    entities: list[Entity] = []
    i, n = 0, len(tags)
    while i < n:
        prefix, kind = split_tag(tags[i])
        if prefix == "B":
            end = i + 1
            while end < n and tags[end] == f"I-{kind}":
                end += 1
            entities.append((kind, i, end))
            i = end
        else:
            i += 1
    return entities


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
                    bad_record(_tag_error(ex, position, tag, detected, declared=scheme != "auto"))
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
