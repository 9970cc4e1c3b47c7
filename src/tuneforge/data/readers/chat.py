"""Conversations for instruction and chat fine-tuning, in the three record shapes people have:

- **OpenAI messages**: ``{"messages": [{"role": "system" | "user" | "assistant", "content": ...}]}``
  (``content`` a string, or a list of ``{"type": "text", "text": ...}`` parts);
- **sharegpt**: ``{"conversations": [{"from": "system" | "human" | "gpt", "value": ...}]}``;
- **alpaca**: ``{"instruction": ..., "input": ..., "output": ...}`` (``input`` optional, joined to the
  instruction after a blank line as LLaMA-Factory and the Stanford template do; optional ``system``
  and ``history`` of ``[question, answer]`` pairs before it).

The shape is told by each record's keys (``data.messages_column`` names another column holding
messages). Files: JSONL (one record a line), JSON (an array of records), and Parquet / Arrow /
``hf:`` datasets (rows as records, :mod:`..hf_datasets`). A malformed conversation (an unknown role,
two user or two assistant turns in a row, empty or non-text content, a system turn not first, no
user turn, a training conversation not ending with the assistant's answer) stops the read with the
file and line of its record, or is counted by ``tuneforge data check``; nothing is dropped unseen.

:func:`read_prompts` reads what ``tuneforge predict`` answers: a ``.txt`` file (one prompt a line),
or JSONL records with ``prompt`` (or ``text``) or any of the conversation shapes above.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from ...errors import DataError
from ..hf_datasets import DATASET_FORMATS, dataset_format, load_split
from ..records import ChatExample, bad_record, decode_lines, open_checked

CHAT_FORMATS = ("jsonl", "json", "parquet", "arrow", "hf")
# sharegpt and other exports name the roles in their own words; these are read as the three roles
ROLE_NAMES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
              "chatgpt": "assistant", "bot": "assistant", "model": "assistant"}
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}


def _records_of_file(path: Path, fmt: str) -> Iterator[tuple[int, object]]:
    """(line, record) of a JSONL file (one a line; blank lines skipped) or a JSON array (each record's line)."""
    if fmt == "jsonl":
        for number, text in decode_lines(path):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                bad_record(DataError(path, number, f"not valid JSON ({exc.msg}, column {exc.colno}); "
                                                   "write one JSON record a line"))
        return
    text = "\n".join(line for _, line in decode_lines(path))
    decoder, index = json.JSONDecoder(), 0
    stripped = text.lstrip()
    if not stripped.startswith("["):
        raise DataError(path, 1, "a .json file of conversations holds one JSON array of records; "
                                 "for one record a line name the file .jsonl")
    index = len(text) - len(stripped) + 1
    while True:  # each element decoded where it starts, so an error names its line
        while index < len(text) and text[index] in " \t\r\n,":
            index += 1
        if index >= len(text):
            raise DataError(path, text.count("\n") + 1, "the JSON array is not closed with ']'")
        if text[index] == "]":
            return
        line = text.count("\n", 0, index) + 1
        try:
            record, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise DataError(path, exc.lineno, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
        yield line, record


def records(path, format: str) -> tuple[str, Iterable[tuple[int, object]]]:
    """(the data's name, its (line, record) pairs) of a JSONL / JSON file or a Parquet / Arrow / hf: dataset."""
    fmt = dataset_format(path) if format == "auto" else format
    if fmt in DATASET_FORMATS:
        name, dataset = load_split(path, fmt)
        return name, ((i + 1, row) for i, row in enumerate(dataset))
    resolved = open_checked(path)
    if fmt in (None, "auto"):
        fmt = _SUFFIXES.get(resolved.suffix.lower(), "jsonl")
    if fmt not in ("jsonl", "json"):
        raise DataError(resolved, None, f"format {fmt!r} holds no conversations; give {', '.join(CHAT_FORMATS)} data")
    return str(resolved), _records_of_file(resolved, fmt)


def content(value, where: tuple[str, int], turn: int) -> str:
    """A turn's text: a non-empty string, or OpenAI text parts joined."""
    if isinstance(value, list):  # OpenAI content parts
        parts = []
        for part in value:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise DataError(*where, f"turn {turn}: a content part of type {kind!r}; only text parts "
                                        "({\"type\": \"text\", \"text\": ...}) are read")
            parts.append(part["text"])
        value = "".join(parts)
    if not isinstance(value, str):
        raise DataError(*where, f"turn {turn}: content is {type(value).__name__}, not text; give a string")
    if not value.strip():
        raise DataError(*where, f"turn {turn}: empty content; remove the turn or the conversation, or write the text")
    return value


def turns(value, where: tuple[str, int], key: str) -> list[dict]:
    """The checked ``{"role", "content"}`` turns of a list (OpenAI messages or sharegpt from/value)."""
    if not isinstance(value, list) or not value:
        raise DataError(*where, f"{key!r} must be a non-empty list of turns")
    messages = []
    for number, turn in enumerate(value, 1):
        if not isinstance(turn, dict):
            raise DataError(*where, f"turn {number} is {type(turn).__name__}, not an object with role and content")
        role_key, content_key = ("role", "content") if "role" in turn or "content" in turn else ("from", "value")
        if role_key not in turn or content_key not in turn:
            raise DataError(*where, f"turn {number} has no {role_key!r} and {content_key!r}; give "
                                    "{\"role\": ..., \"content\": ...} (or sharegpt's from/value)")
        name = turn[role_key]
        role = ROLE_NAMES.get(name.strip().lower()) if isinstance(name, str) else None
        if role is None:
            raise DataError(*where, f"turn {number}: unknown role {name!r}; use system, user or assistant "
                                    "(sharegpt: system, human, gpt)")
        messages.append({"role": role, "content": content(turn[content_key], where, number)})
    return messages


def _alpaca(record: dict, where: tuple[str, int], labelled: bool) -> list[dict]:
    messages = []
    system = record.get("system")
    if system not in (None, ""):
        messages.append({"role": "system", "content": content(system, where, 0)})
    history = record.get("history") or []
    if not isinstance(history, list) or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in history):
        raise DataError(*where, "'history' must be a list of [question, answer] pairs")
    for question, answer in history:
        messages += [{"role": "user", "content": content(question, where, len(messages) + 1)},
                     {"role": "assistant", "content": content(answer, where, len(messages) + 2)}]
    instruction = content(record["instruction"], where, len(messages) + 1)
    extra = record.get("input")
    if extra not in (None, ""):
        instruction = f"{instruction}\n\n{content(extra, where, len(messages) + 1)}"
    messages.append({"role": "user", "content": instruction})
    output = record.get("output")
    if output not in (None, "") or labelled:
        if output is None:
            raise DataError(*where, "an alpaca record without 'output'; give the answer to train on")
        messages.append({"role": "assistant", "content": content(output, where, len(messages) + 1)})
    return messages


def check_conversation(messages: list[dict], where: tuple[str, int], labelled: bool) -> None:
    """System first (if at all), then user and assistant alternating from a user turn; a labelled
    conversation ends with the assistant."""
    body = messages
    if messages[0]["role"] == "system":
        body = messages[1:]
    offset = len(messages) - len(body)
    for number, message in enumerate(body, offset + 1):
        if message["role"] == "system":
            raise DataError(*where, f"turn {number} is a system turn; the system turn, if any, comes first")
    if not body:
        raise DataError(*where, "no user turn; a conversation needs a user turn after the system turn")
    if body[0]["role"] != "user":
        raise DataError(*where, f"turn {offset + 1} is an assistant turn before any user turn; start with the user")
    for number in range(1, len(body)):
        if body[number]["role"] == body[number - 1]["role"]:
            role = body[number]["role"]
            raise DataError(*where, f"two {role} turns in a row (turns {offset + number} and {offset + number + 1}); "
                                    f"merge them, or put the {'assistant' if role == 'user' else 'user'}'s turn between")
    if labelled and body[-1]["role"] != "assistant":
        raise DataError(*where, f"ends with a user turn (turn {len(messages)}); a training conversation ends with "
                                "the assistant's answer")


def conversation(record, where: tuple[str, int], labelled: bool, messages_column: str | None = None,
                 prompt_keys: tuple[str, ...] = ()) -> list[dict]:
    """The checked messages of one record, whichever shape it has."""
    if not isinstance(record, dict):
        raise DataError(*where, f"a record is {type(record).__name__}; give a JSON object")
    for key in prompt_keys:
        if key in record and isinstance(record[key], str):
            messages = [{"role": "user", "content": content(record[key], where, 1)}]
            break
    else:
        if messages_column is not None:
            if messages_column not in record:
                raise DataError(*where, f"no {messages_column!r} (data.messages_column) in the record "
                                        f"(keys: {', '.join(map(str, record)) or 'none'})")
            messages = turns(record[messages_column], where, messages_column)
        elif "messages" in record:
            messages = turns(record["messages"], where, "messages")
        elif "conversations" in record:
            messages = turns(record["conversations"], where, "conversations")
        elif "instruction" in record:
            messages = _alpaca(record, where, labelled)
        else:
            keys = prompt_keys + ("messages", "conversations", "instruction")
            wanted = ", ".join(keys[:-1]) + " or " + keys[-1]
            raise DataError(*where, f"no {wanted} in the record (keys: {', '.join(map(str, record)) or 'none'}); "
                                    "give OpenAI messages, sharegpt conversations or alpaca records, "
                                    "or set data.messages_column")
    check_conversation(messages, where, labelled)
    return messages


def _read(path, format: str, labelled: bool, messages_column: str | None, prompt_keys=()) -> list[ChatExample]:
    name, rows = records(path, format)
    examples = []
    for line, record in rows:
        try:
            messages = conversation(record, (name, line), labelled, messages_column, prompt_keys)
        except DataError as error:
            bad_record(error)
            continue
        examples.append(ChatExample(messages=messages, source=name, line=line))
    return examples


def read_conversations(path, format: str = "auto", messages_column: str | None = None,
                       labelled: bool = True) -> list[ChatExample]:
    """The conversations of a file or dataset; ``labelled`` ones each end with the assistant's answer."""
    examples = _read(path, format, labelled, messages_column)
    if not examples:
        raise DataError(path, None, "no conversations found; give OpenAI messages, sharegpt or alpaca records")
    return examples


def read_prompts(path, format: str = "auto", messages_column: str | None = None) -> list[ChatExample]:
    """Prompts to answer: a ``.txt`` file (each non-blank line a user turn), or records with ``prompt``
    / ``text`` or a conversation (a final assistant turn, if any, is the reference, not the prompt)."""
    fmt = format
    if fmt == "auto" and dataset_format(path) is None:
        suffix = Path(str(path)).suffix.lower()
        fmt = "text" if suffix in (".txt", ".text", "") else "auto"
    if fmt == "text":
        resolved = open_checked(path)
        examples = [ChatExample(messages=[{"role": "user", "content": text}], source=str(resolved), line=number)
                    for number, text in decode_lines(resolved) if text.strip()]
    else:
        examples = _read(path, fmt, False, messages_column, ("prompt", "text"))
    if not examples:
        raise DataError(path, None, "no prompts found; give one prompt a line (.txt), or JSONL records with "
                                    "'prompt' or 'messages'")
    return examples
