"""Preference pairs for ``task.type: preference``: a prompt and two answers, the preferred one first.

Record shapes (the ones TRL and LLaMA-Factory read):

- **plain**: ``{"prompt": "...", "chosen": "...", "rejected": "..."}``; the prompt becomes one user turn;
- **chat prompt**: ``{"prompt": [messages], "chosen": ..., "rejected": ...}`` where each answer is a
  string, one assistant message, or a one-message list ``[{"role": "assistant", "content": ...}]``;
- **whole conversations** (implicit prompt, Anthropic HH style): ``{"chosen": [messages], "rejected":
  [messages]}`` that share every turn but the last, an assistant answer in both.

``system`` (a string) may come with any of them and becomes the first turn. Files: JSONL, JSON, Parquet /
Arrow / ``hf:`` datasets, read as the chat reader reads them. A malformed pair (a missing side, an empty
prompt or answer, chosen and rejected the same text, conversations that differ before their last turn)
stops the read with its file and line, or is counted by ``tuneforge data check``: nothing is dropped unseen.
"""

from __future__ import annotations

from ...errors import DataError
from ..records import PreferenceExample, bad_record
from .chat import check_conversation, content, records, turns

SIDES = ("chosen", "rejected")


def _answer(value, where: tuple[str, int], side: str) -> str:
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        messages = turns(value, where, side)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise DataError(*where, f"{side!r} must be one assistant answer (a string or one assistant message); "
                                    "for whole conversations give the prompt inside both and no 'prompt'")
        return messages[0]["content"]
    return content(value, where, 0)


def _whole_conversations(record: dict, where: tuple[str, int]) -> tuple[list[dict], str, str]:
    chosen, rejected = (turns(record[side], where, side) for side in SIDES)
    for side, messages in zip(SIDES, (chosen, rejected)):
        if messages[-1]["role"] != "assistant":
            raise DataError(*where, f"{side!r} does not end with an assistant answer")
    if chosen[:-1] != rejected[:-1]:
        raise DataError(*where, "'chosen' and 'rejected' differ before their last turn; the two conversations must "
                                "share the prompt and differ only in the final assistant answer")
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def preference_pair(record, where: tuple[str, int]) -> PreferenceExample:
    """The checked pair of one record, whichever shape it has."""
    if not isinstance(record, dict):
        raise DataError(*where, f"a record is {type(record).__name__}; give a JSON object")
    missing = [side for side in SIDES if record.get(side) is None]
    if missing:
        raise DataError(*where, f"no {missing[0]!r} answer (keys: {', '.join(map(str, record)) or 'none'}); "
                                "a preference pair needs prompt, chosen and rejected")
    prompt = record.get("prompt")
    if prompt is None and all(isinstance(record[side], list) and len(record[side]) > 1 for side in SIDES):
        messages, chosen, rejected = _whole_conversations(record, where)
    else:
        if prompt is None:
            raise DataError(*where, "no 'prompt'; give the prompt (a string or chat messages), or whole "
                                    "conversations in 'chosen' and 'rejected'")
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": content(prompt, where, 1)}]
        else:
            messages = turns(prompt, where, "prompt")
        chosen, rejected = (_answer(record[side], where, side) for side in SIDES)
    system = record.get("system")
    if system not in (None, ""):
        system = content(system, where, 0)
        if messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        elif messages[0]["content"] != system:
            raise DataError(*where, "'system' differs from the prompt's own system turn; give one of them")
    if messages and messages[-1]["role"] == "assistant":
        raise DataError(*where, "the prompt ends with an assistant turn; it must end with the user's turn the "
                                "answers reply to")
    check_conversation(messages, where, labelled=False)
    if chosen.strip() == rejected.strip():
        raise DataError(*where, "'chosen' and 'rejected' are the same text: the pair teaches nothing; remove it")
    return PreferenceExample(prompt_messages=messages, chosen=chosen, rejected=rejected, source=where[0],
                             line=where[1])


def read_preferences(path, format: str = "auto") -> list[PreferenceExample]:
    """The preference pairs of a file or dataset."""
    name, rows = records(path, format)
    examples = []
    for line, record in rows:
        try:
            examples.append(preference_pair(record, (name, line)))
        except DataError as error:
            bad_record(error)
    if not examples:
        raise DataError(path, None, "no preference pairs found; give records with prompt, chosen and rejected")
    return examples
