"""Generative versions of the encoder tasks: a labelled NER or classification file cast into chat
instructions (for ``task.type: sft``), and a decoder's generated answers parsed back into labels or
IOB2 tags and scored with the encoder tasks' metrics (macro-F1; entity F1 over words, as seqeval).

NER answers are the sentence with each entity wrapped in an inline tag, ``<person>John Smith</person>``:
unlike a JSON list of entity strings, the tags say *which* occurrence of a repeated phrase is the
entity, so a gold answer parses back to exactly the gold tags. A generated answer is never raised
on: what could not be read is counted (``problems``) and scored as no entity (NER) or as a wrong
label (classification):

- ``unknown_type``: a tag whose type is not in the label set (its words are scored O);
- ``malformed``: a tag closed that was not open, a tag opened inside another or never closed;
- ``changed_text``: the answer's words are not the sentence's; the answer is aligned to the sentence
  (:class:`difflib.SequenceMatcher`) and its tags kept on the words that match;
- ``hallucinated_span``: an entity whose words are not all in the sentence (after alignment);
- ``unparseable`` (classification): an answer that names no label.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from typing import Sequence

import numpy as np

from ..data.records import TextExample, TokenExample
from ..evaluation.metrics import entity_scores, single_label_scores

NER_TEMPLATE = ("List the {types} entities in this text by copying it with each entity wrapped in "
                "<type>...</type> tags.\nText: {text}")
CLASSIFY_TEMPLATE = "Classify the text as one of: {labels}. Answer with the label only.\nText: {text}"
TAG = re.compile(r"<(/?)([A-Za-z][\w.-]*)>")


def entity_types(tags: Sequence[str]) -> list[str]:
    return sorted({t[2:] for t in tags if t != "O"})


def inline_answer(words: Sequence[str], tags: Sequence[str]) -> str:
    """The sentence with each IOB2 entity wrapped in ``<type>...</type>``."""
    out, open_type = [], None
    for word, tag in zip(words, tags):
        starts = tag.startswith("B-") or (tag.startswith("I-") and tag[2:] != open_type)
        if open_type is not None and (tag == "O" or starts):
            out[-1] += f"</{open_type}>"
            open_type = None
        if tag != "O" and open_type is None:
            open_type = tag[2:]
            word = f"<{open_type}>{word}"
        out.append(word)
    if open_type is not None:
        out[-1] += f"</{open_type}>"
    return " ".join(out)


def ner_prompt(words: Sequence[str], types: Sequence[str], template: str = NER_TEMPLATE) -> str:
    """The user turn that asks for a sentence's entities."""
    return template.format(types=", ".join(types), text=" ".join(words))


def cast_ner(examples: Sequence[TokenExample], types: Sequence[str], template: str = NER_TEMPLATE) -> list[dict]:
    """One ``{"messages": [user, assistant]}`` conversation per labelled sentence."""
    return [{"messages": [
        {"role": "user", "content": ner_prompt(ex.words, types, template)},
        {"role": "assistant", "content": inline_answer(ex.words, ex.tags)}]} for ex in examples]


def _read_tagged(answer: str, types: set[str], problems: Counter) -> tuple[list[str], list[str]]:
    """The answer's words and the IOB2 tag its markup gives each."""
    words, tags, open_type, first = [], [], None, False
    pos = 0
    pieces = []
    for m in TAG.finditer(answer):
        pieces += [("text", answer[pos:m.start()]), ("close" if m.group(1) else "open", m.group(2))]
        pos = m.end()
    pieces.append(("text", answer[pos:]))
    glue = False  # the previous piece ended inside a word (no space before the tag)
    for kind, value in pieces:
        if kind == "open":
            if open_type is not None:
                problems["malformed"] += 1
            elif value not in types:
                problems["unknown_type"] += 1
                open_type, first = "", True  # read as O
            else:
                open_type, first = value, True
            continue
        if kind == "close":
            if open_type is None or (open_type and value != open_type):
                problems["malformed"] += 1
            open_type = None
            continue
        split = value.split()
        if glue and split and not value[:1].isspace() and words:
            words[-1] += split.pop(0)
        for w in split:
            words.append(w)
            tags.append(("B-" if first else "I-") + open_type if open_type else "O")
            first = False
        glue = bool(value) and not value[-1:].isspace()
    if open_type is not None:
        problems["malformed"] += 1
    return words, tags


def parse_ner_answer(answer: str, words: Sequence[str], types: Sequence[str]) -> tuple[list[str], Counter]:
    """IOB2 tags for ``words`` from a generated inline-tag answer, and the problems found (counted)."""
    problems: Counter = Counter()
    said, said_tags = _read_tagged(answer, set(types), problems)
    if said == list(words):
        return said_tags, problems
    problems["changed_text"] += 1
    tags = ["O"] * len(words)
    matcher = difflib.SequenceMatcher(a=said, b=list(words), autojunk=False)
    kept = set()
    for a, b, n in matcher.get_matching_blocks():
        for i in range(n):
            tags[b + i] = said_tags[a + i]
            kept.add(a + i)
    # an entity with a word that is not in the sentence is a hallucinated span; drop what was kept of it
    starts = [i for i, t in enumerate(said_tags) if t.startswith("B-")]
    for s in starts:
        e = s + 1
        while e < len(said_tags) and said_tags[e].startswith("I-"):
            e += 1
        if not all(i in kept for i in range(s, e)):
            problems["hallucinated_span"] += 1
            for a_, b_, n in matcher.get_matching_blocks():
                for i in range(n):
                    if s <= a_ + i < e:
                        tags[b_ + i] = "O"
    return repair_iob2(tags), problems


def repair_iob2(tags: Sequence[str]) -> list[str]:
    """An I- that follows O or another type begins an entity (as seqeval reads it)."""
    out, prev = [], "O"
    for tag in tags:
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return out


def parse_ner_answers(examples: Sequence[TokenExample], answers: Sequence[str],
                      types: Sequence[str]) -> tuple[list[list[str]], list[Counter]]:
    """Each answer's IOB2 tags for its sentence's words, and each answer's problems."""
    parsed = [parse_ner_answer(answer, ex.words, types) for ex, answer in zip(examples, answers)]
    return [tags for tags, _ in parsed], [found for _, found in parsed]


def score_ner_answers(examples: Sequence[TokenExample], answers: Sequence[str], types: Sequence[str]) -> dict:
    """Entity scores of generated answers against the gold tags, with the problems counted."""
    predicted, found = parse_ner_answers(examples, answers, types)
    return score_parsed_ner(examples, predicted, found)


def score_parsed_ner(examples: Sequence[TokenExample], predicted: Sequence[Sequence[str]],
                     found: Sequence[Counter]) -> dict:
    """:func:`score_ner_answers` from answers already parsed (:func:`parse_ner_answers`)."""
    problems: Counter = sum(found, Counter())
    scores = entity_scores([ex.tags for ex in examples], predicted)
    return {"f1": scores["micro"]["f1"], "macro_f1": scores["macro"]["f1"], "entity": scores,
            "problems": dict(problems), "answers_with_problems": sum(1 for f in found if f)}


def classification_prompt(text: str, verbalisers: dict[str, str], template: str = CLASSIFY_TEMPLATE) -> str:
    """The user turn that asks for a text's label."""
    return template.format(labels=", ".join(verbalisers.values()), text=text)


def cast_classification(examples: Sequence[TextExample], verbalisers: dict[str, str],
                        template: str = CLASSIFY_TEMPLATE) -> list[dict]:
    return [{"messages": [{"role": "user", "content": classification_prompt(ex.text, verbalisers, template)},
                          {"role": "assistant", "content": verbalisers[ex.labels[0]]}]} for ex in examples]


def parse_label_answer(answer: str, verbalisers: dict[str, str]) -> str | None:
    """The label an answer names: its verbaliser exactly (case and surrounding punctuation aside), else
    the only verbaliser it contains; None when it names none or several."""
    said = answer.strip().strip(".!\"'").strip().lower()
    by_word = {v.lower(): label for label, v in verbalisers.items()}
    if said in by_word:
        return by_word[said]
    found = [label for v, label in by_word.items() if re.search(rf"\b{re.escape(v)}\b", said)]
    return found[0] if len(found) == 1 else None


def score_label_answers(examples: Sequence[TextExample], answers: Sequence[str], labels: Sequence[str],
                        verbalisers: dict[str, str]) -> dict:
    """Macro-F1 and accuracy of generated labels; an unparseable answer counts as wrong."""
    index = {label: i for i, label in enumerate(labels)}
    parsed = [parse_label_answer(a, verbalisers) for a in answers]
    pred = np.array([index[p] if p is not None else -1 for p in parsed])
    gold = np.array([index[ex.labels[0]] for ex in examples])
    scores = single_label_scores(gold, pred, labels)
    return {"f1": scores["macro"]["f1"], "macro_f1": scores["macro"]["f1"], "accuracy": scores["accuracy"],
            "classification": scores, "problems": {"unparseable": int((pred == -1).sum())}}
