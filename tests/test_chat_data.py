"""Reading conversations (OpenAI messages, sharegpt, alpaca) from JSONL, JSON and datasets, and the
one-line file:line errors for malformed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.data.readers import read_conversations, read_prompts
from tuneforge.data.records import ChatExample, collect_bad_records
from tuneforge.errors import DataError

TWO_TURNS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
             {"role": "assistant", "content": "Goodbye."}]


def jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_the_three_shapes_read_as_the_same_messages(tmp_path):
    openai = {"messages": TWO_TURNS}
    sharegpt = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                                  {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Bye"},
                                  {"from": "gpt", "value": "Goodbye."}]}
    alpaca = {"system": "Be brief.", "history": [["Hi", "Hello."]], "instruction": "Bye", "input": "", "output": "Goodbye."}
    path = jsonl(tmp_path / "mixed.jsonl", [openai, sharegpt, alpaca])
    examples = read_conversations(path)
    assert [ex.messages for ex in examples] == [TWO_TURNS] * 3
    assert [ex.line for ex in examples] == [1, 2, 3]
    first = examples[0]
    assert first.reference == "Goodbye."
    assert first.prompt_messages == TWO_TURNS[:-1]
    assert first.text == "Be brief.\nHi\nHello.\nBye\nGoodbye."


def test_alpaca_input_joins_the_instruction_after_a_blank_line(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [{"instruction": "Translate to French.", "input": "cat", "output": "chat"}])
    (example,) = read_conversations(path)
    assert example.messages == [{"role": "user", "content": "Translate to French.\n\ncat"},
                                {"role": "assistant", "content": "chat"}]


def test_openai_text_parts_are_joined(tmp_path):
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    path = jsonl(tmp_path / "p.jsonl", [{"messages": [{"role": "user", "content": parts},
                                                      {"role": "assistant", "content": "Hi"}]}])
    assert read_conversations(path)[0].messages[0]["content"] == "Hello there"


def test_a_json_array_names_each_records_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},\n'
                    '  {"messages": [{"role": "user", "content": "c"},\n {"role": "user", "content": "d"}]}\n]\n')
    with pytest.raises(DataError) as info:
        read_conversations(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert "two user turns in a row (turns 1 and 2)" in str(info.value)


@pytest.mark.parametrize("record, message", [
    ({"messages": [{"role": "narrator", "content": "x"}]}, "turn 1: unknown role 'narrator'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, "two user turns in a row (turns 1 and 2)"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, "two assistant turns in a row (turns 2 and 3)"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "b"}]}, "turn 1: empty content"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "b"}]}, "turn 1: content is int"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "b"}]}, "turn 2 is a system turn"),
    ({"messages": [{"role": "system", "content": "s"}]}, "no user turn"),
    ({"messages": [{"role": "assistant", "content": "b"}]}, "assistant turn before any user turn"),
    ({"messages": [{"role": "user", "content": "a"}]}, "ends with a user turn (turn 1)"),
    ({"messages": []}, "'messages' must be a non-empty list"),
    ({"instruction": "a"}, "alpaca record without 'output'"),
    ({"question": "a"}, "no messages, conversations or instruction in the record (keys: question)"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, "type 'image_url'"),
])
def test_malformed_conversations_are_one_line_errors_at_their_line(tmp_path, record, message):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path = jsonl(tmp_path / "bad.jsonl", [good, record])
    with pytest.raises(DataError) as info:
        read_conversations(path)
    text = str(info.value)
    assert text.startswith(f"{path}:2: ") and "\n" not in text
    assert message in text


def test_data_check_collects_every_bad_conversation(tmp_path):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path = jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "x", "content": "a"}]}, good, {"instruction": "a"}])
    with collect_bad_records() as bad:
        examples = read_conversations(path)
    assert len(examples) == 1 and examples[0].line == 2
    assert [e.line for e in bad] == [1, 3]


def test_unlabelled_conversations_may_end_with_the_user(tmp_path):
    path = jsonl(tmp_path / "p.jsonl", [{"messages": [{"role": "user", "content": "a"}]},
                                        {"instruction": "Do it", "input": "now"}])
    examples = read_conversations(path, labelled=False)
    assert [ex.reference for ex in examples] == [None, None]
    assert examples[1].prompt_messages == [{"role": "user", "content": "Do it\n\nnow"}]


def test_prompts_from_text_lines_and_records(tmp_path):
    text = tmp_path / "prompts.txt"
    text.write_text("What is 2+2?\n\nName a colour.\n", encoding="utf-8")
    assert [(ex.messages, ex.line) for ex in read_prompts(text)] == [
        ([{"role": "user", "content": "What is 2+2?"}], 1), ([{"role": "user", "content": "Name a colour."}], 3)]
    records = jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Hi"}, {"messages": TWO_TURNS}])
    first, second = read_prompts(records)
    assert first.prompt_messages == [{"role": "user", "content": "Hi"}]
    assert second.prompt_messages == TWO_TURNS[:-1] and second.reference == "Goodbye."


def test_parquet_and_a_save_to_disk_folder_read_as_jsonl_does(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"messages": TWO_TURNS}, {"messages": TWO_TURNS[1:3]}]
    dataset = datasets.Dataset.from_list(rows)
    dataset.to_parquet(str(tmp_path / "chats.parquet"))
    dataset.save_to_disk(str(tmp_path / "saved"))
    expected = [ex.messages for ex in read_conversations(jsonl(tmp_path / "chats.jsonl", rows))]
    assert [ex.messages for ex in read_conversations(tmp_path / "chats.parquet")] == expected
    saved = read_conversations(f"hf:{tmp_path / 'saved'}")
    assert [ex.messages for ex in saved] == expected and [ex.line for ex in saved] == [1, 2]
    bad = datasets.Dataset.from_list([{"conversations": [{"from": "human", "value": "a"}, {"from": "tool", "value": "b"}]}])
    bad.to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(DataError, match=r"bad\.parquet:1: turn 2: unknown role 'tool'"):
        read_conversations(tmp_path / "bad.parquet")


def test_an_empty_file_and_a_file_without_conversations(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="file is empty"):
        read_conversations(empty)
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    with pytest.raises(DataError, match="no conversations found"):
        read_conversations(blank)


def test_chat_example_without_a_final_answer():
    example = ChatExample(messages=[{"role": "user", "content": "a"}])
    assert example.reference is None and example.prompt_messages == example.messages
