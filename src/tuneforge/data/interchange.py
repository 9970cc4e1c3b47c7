"""Interchange with labelling tools: Label Studio JSON and doccano JSONL, both ways.

Everything passes through one neutral record, :class:`Annotation`: a text (and its pair), and
either entity spans with character offsets (end exclusive) or chosen labels. Token examples become
spans over their words joined into a text (:func:`tuneforge.data.readers.join_words`); labelled
texts become choices. The word offsets travel with the text (``data.word_offsets`` in Label Studio,
``word_offsets`` in doccano; both tools keep extra keys), so our own data comes back word for word
and tag for tag. Text from elsewhere is split by the documented pre-tokenizer and, where a span
edge falls inside a word, at the span edge too (counted in :class:`ReadNotes`).

Label Studio (https://labelstud.io/guide/export#JSON): a JSON array of tasks
``{"id", "data": {"text": ...}, "annotations": [{"result": [...]}], "predictions": [...]}``; span
results are ``{"type": "labels", "value": {"start", "end", "text", "labels": [X]}}``, class results
``{"type": "choices", "value": {"choices": [...]}}``. A task's first annotation that was not
cancelled is read; tasks without one are unlabelled and skipped (counted). Pre-annotations are
``predictions`` with ``model_version`` and ``score`` (per region too).

doccano (https://doccano.github.io/doccano/tutorial/#import-dataset): one JSON object a line,
``{"text": ..., "label": [[start, end, "ORG"], ...]}`` for sequence labelling (spans may also be
``{"start_offset", "end_offset", "label"}`` objects, under ``label`` or ``entities``) and
``{"text": ..., "label": ["negative"]}`` for classification.

Written here rather than with ``label-studio-sdk``: its converter is one-way (Label Studio to
CoNLL and others) and it pins numpy and some forty packages we do not need.

``tuneforge data convert``, which reads a file with a task, is :mod:`tuneforge.workflows.convert`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import DataError
from ..artifacts.paths import atomic_write_text
from .records import TextExample, TokenExample, decode_lines, join_words, open_checked, pretokenize
from .tags import extract_entities

FORMATS = ("labelstudio", "doccano")
SPAN_FROM_NAME, CHOICE_FROM_NAME, TO_NAME = "label", "label", "text"


@dataclass
class Annotation:
    """A text with entity spans (``spans``: (start, end, label), end exclusive) or labels (``choices``)."""

    text: str
    spans: list[tuple[int, int, str]] | None = None
    choices: list[str] | None = None
    text_pair: str | None = None
    word_offsets: list[tuple[int, int]] | None = None
    scores: list[float] | None = None  # per span or per choice, for predictions
    score: float | None = None  # the whole prediction's score
    source: str = ""
    line: int | None = None
    where: str = ""  # "task 7" (Label Studio) for messages


@dataclass
class ReadNotes:
    """What a reader skipped or changed, so nothing goes unreported."""

    unlabelled: int = 0  # tasks without a usable annotation (skipped)
    extra_annotations: int = 0  # annotations after the first (not read)
    other_results: int = 0  # results of other kinds (relations, text areas...)
    split_words: int = 0  # words split where a span edge fell inside them
    lines: list[str] = field(default_factory=list)

    def describe(self, source: str) -> str | None:
        parts = []
        if self.unlabelled:
            parts.append(f"{self.unlabelled} task(s) without an annotation skipped")
        if self.extra_annotations:
            parts.append(f"{self.extra_annotations} extra annotation(s) ignored (the first per task is read)")
        if self.other_results:
            parts.append(f"{self.other_results} result(s) of other kinds ignored")
        if self.split_words:
            parts.append(f"{self.split_words} word(s) split at a span edge")
        return f"{source}: " + "; ".join(parts) if parts else None


def _announce(notes: ReadNotes, source: str) -> None:
    message = notes.describe(source)
    if message:
        print(f"note: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Examples <-> annotations


def annotation_from_tokens(ex: TokenExample) -> Annotation:
    """Spans of an IOB2-tagged sentence over its text (the raw text it came from, else its joined words)."""
    if ex.text is not None and ex.offsets is not None:
        text, offsets = ex.text, list(ex.offsets)
    else:
        text, offsets = join_words(ex.words)
    spans = [(offsets[s][0], offsets[e - 1][1], kind) for kind, s, e in extract_entities(ex.tags or [])]
    return Annotation(text=text, spans=spans, word_offsets=offsets, source=ex.source, line=ex.line)


def tokens_from_annotation(a: Annotation, notes: ReadNotes | None = None) -> TokenExample:
    """Words (the carried offsets, else pre-tokenized and cut at span edges) with IOB2 tags."""
    spans = sorted(a.spans or [])
    for (s1, e1, l1), (s2, e2, l2) in zip(spans, spans[1:]):
        if s2 < e1:
            raise _error(a, f"spans {a.text[s1:e1]!r} ({l1}, {s1}-{e1}) and {a.text[s2:e2]!r} ({l2}, {s2}-{e2}) "
                            "overlap; a tag sequence holds one entity per word: keep one of them")
    if a.word_offsets is not None:
        offsets = [tuple(o) for o in a.word_offsets]
        if any(not (0 <= s < e <= len(a.text)) for s, e in offsets) or any(
                e1 > s2 for (_, e1), (s2, _) in zip(offsets, offsets[1:])):
            raise _error(a, "word_offsets do not fit the text (each word start < end, in order, inside the text); "
                            "remove them to have the text pre-tokenized")
    else:
        _, offsets = pretokenize(a.text)
        cuts = {p for s, e, _ in spans for p in (s, e)}
        split: list[tuple[int, int]] = []
        for s, e in offsets:
            inner = sorted(p for p in cuts if s < p < e)
            if inner and notes is not None:
                notes.split_words += 1
            edges = [s, *inner, e]
            split += list(zip(edges, edges[1:]))
        offsets = split
    tags = ["O"] * len(offsets)
    for s, e, label in spans:
        inside = [i for i, (ws, we) in enumerate(offsets) if ws >= s and we <= e]
        partial = [i for i, (ws, we) in enumerate(offsets) if ws < e and we > s and i not in inside]
        if partial:
            w = offsets[partial[0]]
            raise _error(a, f"span {a.text[s:e]!r} ({label}, {s}-{e}) cuts the word {a.text[w[0]:w[1]]!r}; "
                            "move the span to word boundaries")
        if not inside:
            raise _error(a, f"span {a.text[s:e]!r} ({label}, {s}-{e}) covers no word; remove it")
        for k, i in enumerate(inside):
            tags[i] = f"{'B' if k == 0 else 'I'}-{label}"
    words = [a.text[s:e] for s, e in offsets]
    return TokenExample(words=words, tags=tags, source=a.source, line=a.line or 0,
                        tag_lines=[a.line or 0] * len(words), text=a.text, offsets=[tuple(o) for o in offsets])


def annotation_from_text(ex: TextExample) -> Annotation:
    return Annotation(text=ex.text, text_pair=ex.text_pair, choices=list(ex.labels or []), source=ex.source,
                      line=ex.line)


def text_from_annotation(a: Annotation, multi_label: bool = False) -> TextExample:
    choices = list(dict.fromkeys(a.choices or []))
    if not a.text.strip():
        raise _error(a, "empty text; fill it in or drop the task")
    if not multi_label and len(choices) != 1:
        raise _error(a, f"{len(choices)} labels chosen ({', '.join(choices) or 'none'}); a single-label task needs "
                        "exactly one (set task.multi_label: true for several)")
    return TextExample(text=a.text, labels=choices, text_pair=a.text_pair, source=a.source, line=a.line or 0)


def _error(a: Annotation, message: str) -> DataError:
    return DataError(a.source or "<annotations>", a.line, f"{a.where + ': ' if a.where else ''}{message}")


# ---------------------------------------------------------------------------------------------
# Label Studio


def refuse_blank_texts(examples: Sequence, given: str | Path) -> None:
    """A Label Studio task needs a text: the first blank one (a blank line of a raw-text pool, an empty
    text cell) is an error at its file:line, before any prediction (``predict --output-format
    labelstudio``, ``label suggest``). Plain ``predict`` keeps blank lines as empty rows instead."""
    for ex in examples:
        if not ex.as_text().strip():
            raise DataError(ex.source or given, ex.line or None,
                            "blank text: a Label Studio task needs one; remove the blank lines "
                            "(plain predict keeps them as empty rows)")


def labelstudio_tasks(annotations: Sequence[Annotation], as_predictions: bool = False, model_version: str = "",
                      text_key: str = "text", pair_key: str = "text_pair") -> list[dict]:
    """Label Studio tasks; ``as_predictions`` puts the labels in ``predictions`` (pre-annotations, with scores)."""
    tasks = []
    for number, a in enumerate(annotations, start=1):
        data: dict = {text_key: a.text}
        if a.text_pair is not None:
            data[pair_key] = a.text_pair
        if a.word_offsets is not None:
            data["word_offsets"] = [list(o) for o in a.word_offsets]
        result = []
        if a.spans is not None:
            for k, (s, e, label) in enumerate(a.spans):
                item = {"id": f"t{number}s{k}", "from_name": SPAN_FROM_NAME, "to_name": TO_NAME, "type": "labels",
                        "value": {"start": s, "end": e, "text": a.text[s:e], "labels": [label]}}
                if a.scores is not None:
                    item["score"] = a.scores[k]
                result.append(item)
        else:
            item = {"id": f"t{number}c", "from_name": CHOICE_FROM_NAME, "to_name": TO_NAME, "type": "choices",
                    "value": {"choices": list(a.choices or [])}}
            if a.score is not None:
                item["score"] = a.score
            result.append(item)
        task: dict = {"id": number, "data": data}
        if as_predictions:
            prediction = {"model_version": model_version, "result": result}
            if a.score is not None:
                prediction["score"] = a.score
            task["predictions"] = [prediction]
        else:
            task["annotations"] = [{"id": number, "result": result}]
        tasks.append(task)
    return tasks


def labelstudio_config(labels: Sequence[str], spans: bool, multi_label: bool = False, pair: bool = False,
                       text_key: str = "text", pair_key: str = "text_pair") -> str:
    """The labelling interface (Label Studio's XML config) that matches the tasks written here: its
    ``<Text>`` tags read ``$text_key`` (and ``$pair_key``), the keys the tasks' ``data`` holds."""
    from xml.sax.saxutils import quoteattr

    items = "\n".join(f'    <{"Label" if spans else "Choice"} value={quoteattr(x)}/>' for x in labels)
    text = f'  <Text name="{TO_NAME}" value={quoteattr("$" + text_key)}/>' + (
        f'\n  <Text name="text_pair" value={quoteattr("$" + pair_key)}/>' if pair else "")
    if spans:
        return (f'<View>\n  <Labels name="{SPAN_FROM_NAME}" toName="{TO_NAME}">\n{items}\n  </Labels>\n{text}\n</View>\n')
    choice = "multiple" if multi_label else "single"
    return (f'<View>\n{text}\n  <Choices name="{CHOICE_FROM_NAME}" toName="{TO_NAME}" choice="{choice}">\n'
            f'{items}\n  </Choices>\n</View>\n')


def read_labelstudio(path: str | Path, text_key: str = "text", pair_key: str | None = None,
                     notes: ReadNotes | None = None, labelled: bool = True) -> list[Annotation]:
    """Annotations from a Label Studio JSON export (a task list; one task object is accepted too).

    ``labelled=False`` reads every task's text (an active-learning pool: tasks imported and not yet
    annotated, just ``data``); annotations, if any, are not read and ``spans``/``choices`` stay None."""
    resolved = open_checked(path)
    source = str(resolved)
    raw = "\n".join(text for _, text in decode_lines(resolved))
    try:
        tasks = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(source, exc.lineno, f"not valid JSON ({exc.msg}); give Label Studio's JSON export") from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise DataError(source, 1, "expected a JSON list of Label Studio tasks")
    notes = notes if notes is not None else ReadNotes()
    out = []
    for number, task in enumerate(tasks, start=1):
        where = f"task {task.get('id', number) if isinstance(task, dict) else number} (#{number} in the file)"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise DataError(source, None, f"{where}: expected an object with \"data\"; give Label Studio's JSON export")
        data = task["data"]
        text = data.get(text_key)
        if not isinstance(text, str):
            keys = ", ".join(sorted(data)) or "none"
            raise DataError(source, None, f"{where}: no text under data.{text_key} (keys: {keys}); "
                                          "set data.text_column to the key that holds the text")
        if not labelled:
            a = Annotation(text=text, text_pair=data.get(pair_key) if pair_key else None, source=source, where=where)
            if data.get("word_offsets") is not None:
                a.word_offsets = [tuple(o) for o in data["word_offsets"]]
            out.append(a)
            continue
        annotations = [a for a in task.get("annotations", task.get("completions", [])) or []
                       if isinstance(a, dict) and not a.get("was_cancelled")]
        if not annotations:
            notes.unlabelled += 1
            continue
        notes.extra_annotations += len(annotations) - 1
        a = Annotation(text=text, text_pair=data.get(pair_key) if pair_key else None, source=source, where=where)
        offsets = data.get("word_offsets")
        if offsets is not None:
            a.word_offsets = [tuple(o) for o in offsets]
        _read_results(a, annotations[0].get("result") or [], notes)
        out.append(a)
    if not out:
        if not tasks:
            raise DataError(source, None, "no tasks; the JSON list is empty")
        raise DataError(source, None, f"no annotated tasks among {len(tasks)}; annotate some or export with annotations")
    return out


def _read_results(a: Annotation, results: list, notes: ReadNotes) -> None:
    spans, choices = [], []
    for item in results:
        value = item.get("value") if isinstance(item, dict) else None
        kind = item.get("type") if isinstance(item, dict) else None
        if not isinstance(value, dict):
            notes.other_results += 1
            continue
        if kind == "choices" or (kind is None and "choices" in value):
            choices += [str(c) for c in value.get("choices") or []]
        elif "start" in value and "end" in value and ("labels" in value or kind == "labels"):
            labels = value.get("labels") or value.get(kind or "labels") or []
            if len(labels) != 1:
                raise _error(a, f"a span at {value['start']}-{value['end']} has {len(labels)} labels; give each span one")
            s, e = value["start"], value["end"]
            if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(a.text)):
                raise _error(a, f"span {s}-{e} does not fit the text ({len(a.text)} characters); "
                                "offsets are characters, end exclusive")
            if "text" in value and value["text"] != a.text[s:e]:
                raise _error(a, f"span {s}-{e} says {value['text']!r} but the text there is {a.text[s:e]!r}; "
                                "the offsets belong to another text")
            spans.append((s, e, str(labels[0])))
        else:
            notes.other_results += 1
    a.spans, a.choices = spans, choices


def write_labelstudio(path: str | Path, annotations: Sequence[Annotation], **options) -> None:
    atomic_write_text(path, json.dumps(labelstudio_tasks(annotations, **options), ensure_ascii=False, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# doccano


def doccano_lines(annotations: Sequence[Annotation], text_key: str = "text", pair_key: str = "text_pair") -> str:
    rows = []
    for a in annotations:
        row: dict = {text_key: a.text}
        if a.text_pair is not None:
            row[pair_key] = a.text_pair
        if a.spans is not None:
            row["label"] = [[s, e, label] for s, e, label in a.spans]
            row["word_offsets"] = [list(o) for o in a.word_offsets or []]
        else:
            row["label"] = list(a.choices or [])
        rows.append(json.dumps(row, ensure_ascii=False) + "\n")
    return "".join(rows)


def write_doccano(path: str | Path, annotations: Sequence[Annotation], **options) -> None:
    atomic_write_text(path, doccano_lines(annotations, **options))


def read_doccano(path: str | Path, spans: bool, text_key: str = "text", pair_key: str | None = None,
                 labelled: bool = True) -> list[Annotation]:
    """Annotations from a doccano JSONL export: spans (sequence labelling) or labels (classification);
    ``labelled=False`` reads the texts only (``spans``/``choices`` None)."""
    resolved = open_checked(path)
    source = str(resolved)
    out = []
    for number, line in decode_lines(resolved):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(source, number, f"not valid JSON ({exc.msg}); one JSON object per line") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
            raise DataError(source, number, f"expected an object with a \"{text_key}\" string")
        a = Annotation(text=record[text_key], text_pair=record.get(pair_key) if pair_key else None, source=source,
                       line=number)
        if not labelled:
            if record.get("word_offsets") is not None:
                a.word_offsets = [tuple(o) for o in record["word_offsets"]]
            out.append(a)
            continue
        labels = record.get("label", record.get("labels", record.get("entities", record.get("cats", []))))
        if labels is None:
            labels = []
        if not isinstance(labels, list):
            labels = [labels]
        if spans:
            a.spans = [_doccano_span(a, item) for item in labels]
            if record.get("word_offsets") is not None:
                a.word_offsets = [tuple(o) for o in record["word_offsets"]]
        else:
            if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in labels):
                raise DataError(source, number, "\"label\" must be a list of label names for classification")
            a.choices = [str(x) for x in labels]
        out.append(a)
    if not out:
        raise DataError(source, 1, "no records found; the file holds only blank lines")
    return out


def _doccano_span(a: Annotation, item) -> tuple[int, int, str]:
    if isinstance(item, dict):
        s, e, label = item.get("start_offset"), item.get("end_offset"), item.get("label")
    elif isinstance(item, (list, tuple)) and len(item) == 3:
        s, e, label = item
    else:
        raise DataError(a.source, a.line, f"span {item!r}: expected [start, end, label] or "
                                          "{\"start_offset\", \"end_offset\", \"label\"}")
    if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(a.text)) or not isinstance(label, str):
        raise DataError(a.source, a.line, f"span {item!r} does not fit the text ({len(a.text)} characters); "
                                          "offsets are characters, end exclusive")
    return s, e, label


# ---------------------------------------------------------------------------------------------
# What the readers call


def read_annotations(path: str | Path, format: str, spans: bool, text_key: str = "text",
                     pair_key: str | None = None, labelled: bool = True) -> list[Annotation]:
    """Label Studio or doccano annotations; what was skipped is printed as one note on stderr.
    ``labelled=False``: every task's or record's text, no labels (a pool to predict or rank)."""
    if format == "labelstudio":
        notes = ReadNotes()
        annotations = read_labelstudio(path, text_key, pair_key, notes, labelled)
        _announce(notes, str(path))
        return annotations
    return read_doccano(path, spans, text_key, pair_key, labelled)


def read_token_annotations(path: str | Path, format: str, labelled: bool = True) -> list[TokenExample]:
    """Words and IOB2 tags; ``labelled=False``: words only (tags None), from every task, annotated or not."""
    notes = ReadNotes()
    examples = [tokens_from_annotation(a, notes) for a in read_annotations(path, format, True, labelled=labelled)]
    _announce(ReadNotes(split_words=notes.split_words), str(path))
    if not labelled:
        for ex in examples:
            ex.tags = ex.tag_lines = None
    return examples


def read_text_annotations(path: str | Path, format: str, text_key: str = "text", pair_key: str | None = None,
                          multi_label: bool = False, labelled: bool = True) -> list[TextExample]:
    """Texts and their labels; ``labelled=False``: texts only (labels None), annotated or not."""
    annotations = read_annotations(path, format, False, text_key, pair_key, labelled)
    if labelled:
        return [text_from_annotation(a, multi_label) for a in annotations]
    for a in annotations:
        if not a.text.strip():
            raise _error(a, "empty text; fill it in or drop the task")
    return [TextExample(text=a.text, text_pair=a.text_pair, source=a.source, line=a.line or 0) for a in annotations]


def detect_interchange(path: str | Path) -> str | None:
    """``labelstudio`` for a ``.json`` file that holds a JSON list (Label Studio's export), else None."""
    if Path(str(path)).suffix.lower() != ".json":
        return None
    try:
        with open(open_checked(path), "rb") as handle:
            head = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except (OSError, DataError):
        return None
    return "labelstudio" if head.startswith(b"[") else None
