"""Label Studio and doccano: exact round trips on our own data (both tasks), text from elsewhere, errors."""

import json

import pytest

from tuneforge.cli import main
from tuneforge.data.interchange import Annotation, read_labelstudio, tokens_from_annotation
from tuneforge.data.readers import read_text_file, read_token_file
from tuneforge.errors import DataError

from conftest import NER_SENTENCES, write_conll

TRICKY = NER_SENTENCES + [
    ("U.S. officials met @WHO in New-York !!", "B-LOC O O B-ORG O B-LOC O"),
    ("我 爱 北 京 天 安 门", "O O B-LOC I-LOC B-LOC I-LOC I-LOC"),
    ("iPhone 手 机 在 上 海", "B-PRODUCT O O O B-LOC I-LOC"),
    ("don't stop", "O O"),
]


def words_and_tags(examples):
    return [(ex.words, ex.tags) for ex in examples]


@pytest.mark.parametrize("to", ["labelstudio", "doccano"])
def test_token_round_trip_is_exact(tmp_path, to):
    source = write_conll(tmp_path / "data.conll", TRICKY)
    out = tmp_path / ("tasks.json" if to == "labelstudio" else "tasks.jsonl")
    assert main(["data", "convert", str(source), str(out), "--to", to]) == 0
    back = read_token_file(out, "auto" if to == "labelstudio" else "doccano")
    assert words_and_tags(back) == words_and_tags(read_token_file(source))
    if to == "labelstudio":
        tasks = json.loads(out.read_text())
        # Label Studio's documented shape: spans are character offsets into data.text, end exclusive
        value = tasks[0]["annotations"][0]["result"][0]["value"]
        assert tasks[0]["data"]["text"] == "john smith lives in new york"
        assert value == {"start": 0, "end": 10, "text": "john smith", "labels": ["PER"]}
        assert tasks[7]["data"]["text"] == "我爱北京天安门"  # CJK characters joined without spaces
        assert '<Label value="LOC"/>' in (tmp_path / "tasks.xml").read_text()
        # and back out again: the same tasks
        again = tmp_path / "again.json"
        assert main(["data", "convert", str(out), str(again), "--to", "labelstudio"]) == 0
        assert json.loads(again.read_text()) == tasks


@pytest.mark.parametrize("to", ["labelstudio", "doccano"])
@pytest.mark.parametrize("multi", [False, True])
def test_text_round_trip_is_exact(tmp_path, to, multi):
    rows = [("the flight was late, again", "negative|angry"), ("love the new app", "positive"),
            ("电池很好", "positive"), ('says "ok", fine', "neutral")]
    source = tmp_path / "data.csv"
    source.write_text("text,label\n" + "".join(
        '"' + t.replace('"', '""') + '",' + (label if multi else label.split("|")[0]) + "\n" for t, label in rows))
    out = tmp_path / ("tasks.json" if to == "labelstudio" else "tasks.jsonl")
    extra = ["--set", "task.multi_label=true"] if multi else []
    assert main(["data", "convert", str(source), str(out), "--to", to, *extra]) == 0
    back = read_text_file(out, "labelstudio" if to == "labelstudio" else "doccano", multi_label=multi)
    original = read_text_file(source, multi_label=multi)
    assert [(e.text, e.labels) for e in back] == [(e.text, e.labels) for e in original]
    if to == "labelstudio":
        result = json.loads(out.read_text())[0]["annotations"][0]["result"][0]
        assert result["type"] == "choices" and result["value"]["choices"] == (["negative", "angry"] if multi else ["negative"])
        assert ('choice="multiple"' if multi else 'choice="single"') in (tmp_path / "tasks.xml").read_text()


def test_labelstudio_export_from_the_tool(tmp_path, capsys):
    """A task list as Label Studio exports it: text typed by people, spans at character offsets."""
    tasks = [
        {"id": 1, "data": {"text": "Barack Obama visited Paris."},
         "annotations": [{"result": [
             {"id": "a1", "from_name": "label", "to_name": "text", "type": "labels",
              "value": {"start": 0, "end": 12, "text": "Barack Obama", "labels": ["PER"]}},
             {"id": "a2", "from_name": "label", "to_name": "text", "type": "labels",
              "value": {"start": 21, "end": 26, "text": "Paris", "labels": ["LOC"]}}]}]},
        {"id": 2, "data": {"text": "Obama's visit"},  # the span ends inside the pre-tokenizer's word "Obama's"
         "annotations": [{"was_cancelled": True, "result": []},
                         {"result": [{"type": "labels", "value": {"start": 0, "end": 5, "labels": ["PER"]}},
                                     {"type": "textarea", "value": {"text": ["a comment"]}}]}]},
        {"id": 3, "data": {"text": "not annotated yet"}, "annotations": []},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    examples = read_token_file(path)
    assert words_and_tags(examples) == [
        (["Barack", "Obama", "visited", "Paris", "."], ["B-PER", "I-PER", "O", "B-LOC", "O"]),
        (["Obama", "'s", "visit"], ["B-PER", "O", "O"]),
    ]
    assert examples[0].offsets[3] == (21, 26)
    note = capsys.readouterr().err
    assert "1 task(s) without an annotation skipped" in note and "1 result(s) of other kinds ignored" in note
    assert "1 word(s) split at a span edge" in note


@pytest.mark.parametrize("spans, message", [
    ([(0, 6, "PER"), (4, 12, "PER")], "overlap"),
    ([(6, 7, "PER")], "covers no word"),
])
def test_bad_spans_name_the_task(spans, message):
    a = Annotation(text="Barack Obama", spans=spans, word_offsets=[(0, 6), (7, 12)], source="x.json", where="task 4")
    with pytest.raises(DataError, match=f"x.json: task 4: .*{message}"):
        tokens_from_annotation(a)


def test_labelstudio_span_text_must_match(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"id": 9, "data": {"text": "Barack Obama"}, "annotations": [{"result": [
        {"type": "labels", "value": {"start": 0, "end": 6, "text": "Obama", "labels": ["PER"]}}]}]}]))
    with pytest.raises(DataError, match="task 9 .*the offsets belong to another text"):
        read_labelstudio(path)


def test_labelstudio_config_reads_the_keys_the_tasks_hold(tmp_path):
    """The labelling config's <Text> tags must name the data keys written (not always $text)."""
    import xml.etree.ElementTree as ET

    source = tmp_path / "pairs.csv"
    source.write_text("review,answer,verdict\ngreat app,yes it is,agree\nslow again,no,disagree\n")
    out = tmp_path / "tasks.json"
    assert main(["data", "convert", str(source), str(out), "--to", "labelstudio", "--set", "data.text_column=review",
                 "--set", "data.text_pair_column=answer", "--set", "data.label_column=verdict"]) == 0
    tasks = json.loads(out.read_text())
    assert tasks[0]["data"] == {"review": "great app", "answer": "yes it is"}
    view = ET.fromstring((tmp_path / "tasks.xml").read_text())
    texts = {t.get("name"): t.get("value") for t in view.iter("Text")}
    assert texts == {"text": "$review", "text_pair": "$answer"}
    assert all(value[1:] in tasks[0]["data"] for value in texts.values())
    assert [c.get("value") for c in view.iter("Choice")] == ["agree", "disagree"]
    # and the default keys stay as they were
    plain = tmp_path / "plain.csv"
    plain.write_text("text,label\ngreat app,pos\nslow again,neg\n")
    assert main(["data", "convert", str(plain), str(tmp_path / "plain.json"), "--to", "labelstudio"]) == 0
    assert '<Text name="text" value="$text"/>' in (tmp_path / "plain.xml").read_text()


def test_doccano_task_is_guessed_from_the_whole_file(tmp_path, capsys):
    """A doccano sequence-labelling export whose first records have no entity is still NER data."""
    path = tmp_path / "doccano.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"text": "nothing to see", "label": []},
        {"text": "still nothing", "entities": []},
        {"text": "Mary visited Paris", "label": [[0, 4, "PER"], [13, 18, "LOC"]]},
    ]) + "\n")
    out = tmp_path / "ours.jsonl"
    assert main(["data", "convert", str(path), str(out), "--to", "jsonl", "--format", "doccano"]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"tokens": ["nothing", "to", "see"], "tags": ["O", "O", "O"]},
        {"tokens": ["still", "nothing"], "tags": ["O", "O"]},
        {"tokens": ["Mary", "visited", "Paris"], "tags": ["B-PER", "O", "B-LOC"]},
    ]
    # an "entities" key alone (doccano's newer export) says sequence labelling too
    only_entities = tmp_path / "entities.jsonl"
    only_entities.write_text(json.dumps({"text": "no entity", "entities": []}) + "\n"
                             + json.dumps({"text": "Bob", "entities": [{"start_offset": 0, "end_offset": 3,
                                                                        "label": "PER"}]}) + "\n")
    from tuneforge.workflows.checks import guess_task

    assert guess_task(str(only_entities)) == "token_classification"
    # a classification export whose first text has no label yet is still classification
    cats = tmp_path / "cats.jsonl"
    cats.write_text(json.dumps({"text": "meh", "label": []}) + "\n" + json.dumps({"text": "great", "label": ["pos"]}) + "\n")
    assert guess_task(str(cats)) == "text_classification"
    # nothing in the file tells: one line asking for --task, exit 2
    empty = tmp_path / "unlabelled.jsonl"
    empty.write_text(json.dumps({"text": "a", "label": []}) + "\n" + json.dumps({"text": "b", "label": []}) + "\n")
    capsys.readouterr()
    assert main(["data", "convert", str(empty), str(tmp_path / "x.jsonl"), "--to", "jsonl", "--format", "doccano"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot tell which task" in err and "first 2 record(s)" in err and "--task" in err
