"""Decoder inputs: conversations through the chat template with their loss mask, raw text in blocks,
packing, and the collator.

**The loss mask.** A conversation is rendered by the chat template once; the assistant turns are found
by rendering it turn by turn: the text up to turn *i* with the generation prompt, and the text through
turn *i*, differ by exactly that answer (content and end-of-turn token, trailing whitespace excluded).
A token is trained on when it starts inside such a span. This needs nothing of the template (TRL's
``assistant_only_loss`` needs ``{% generation %}`` markers that few templates have) and fails loudly
when a template does not render conversations incrementally.

**Packing** (``encoding.packing``) puts several conversations into one row (first fit, longest first).
Each keeps to itself: the attention mask is block-diagonal causal and positions restart at 0, so a
packed row computes what the conversations would compute apart (``tests/test_sft.py`` asserts it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ...data.encode import Block, PackStats, pack_documents
from ...errors import ConfigError, DataError

IGNORE = -100

# ChatML (Qwen, SmolLM2, OpenHermes...): what ``task.chat_template: chatml`` names.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@dataclass
class Encoded:
    """One training row: token ids, labels (-100 where no loss) and, packed, each conversation's length."""

    input_ids: list[int]
    labels: list[int]
    segments: list[int] = field(default_factory=list)  # lengths of the conversations in the row, in order

    def __post_init__(self):
        if not self.segments:
            self.segments = [len(self.input_ids)]


@dataclass
class ChatStats:
    conversations: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0  # conversations cut at max_length
    truncated_tokens: int = 0
    dropped: list[str] = field(default_factory=list)  # file:line of conversations left with no trained token
    rows: int = 0
    max_length: int = 0
    packed: bool = False

    def describe(self) -> str:
        text = (f"{self.conversations:,} conversations, {self.tokens:,} tokens ({self.trained_tokens:,} trained on)"
                f" -> {self.rows:,} rows" + (f" packed to {self.max_length} tokens" if self.packed else ""))
        if self.truncated:
            text += (f"; {self.truncated} conversations longer than encoding.max_length {self.max_length} were cut "
                     f"({self.truncated_tokens:,} tokens lost)")
        if self.dropped:
            text += (f"; {len(self.dropped)} left with no answer token after the cut were not trained on "
                     f"(first: {self.dropped[0]})")
        return text

    def report(self) -> dict:
        return {"conversations": self.conversations, "tokens": self.tokens, "trained_tokens": self.trained_tokens,
                "truncated": self.truncated, "truncated_tokens": self.truncated_tokens,
                "dropped": len(self.dropped), "rows": self.rows}


def resolve_chat_template(tokenizer, template: str | None) -> None:
    """Set ``task.chat_template`` on the tokenizer (saved with the model), or check it has one."""
    if template is not None:
        if template == "chatml":
            template = CHATML
        elif template.endswith(".jinja"):
            try:
                with open(template, encoding="utf-8") as handle:
                    template = handle.read()
            except OSError as exc:
                raise ConfigError(f"task.chat_template: cannot read {template} ({exc.strerror})") from None
        tokenizer.chat_template = template
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("task.chat_template: the tokenizer has no chat template; set task.chat_template "
                          "(chatml, a Jinja string or a .jinja file)")


def _render(tokenizer, messages, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def render_prompt(tokenizer, messages) -> str:
    """The text a model continues to answer ``messages``: the template with its generation prompt."""
    return _render(tokenizer, messages, generation_prompt=True)


def assistant_spans(tokenizer, messages, where: str) -> tuple[str, list[tuple[int, int]]]:
    """(the rendered conversation, character spans of its assistant answers)."""
    text = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1]).rstrip()
        if not (through.startswith(before) and text.startswith(through)):
            raise ConfigError(f"{where}: the chat template does not render this conversation turn by turn, so its "
                              "answers cannot be told apart; set another task.chat_template (sft: or task.assistant_only_loss "
                              "false)")
        spans.append((len(before), len(through)))
    return text, spans


def encode_conversation(tokenizer, messages, where: str, assistant_only: bool, last_answer_only: bool = False) -> Encoded:
    """Token ids of one conversation and its labels: the assistant tokens (or every token; or, with
    ``last_answer_only``, the final answer's tokens alone: a preference pair's response)."""
    text, spans = assistant_spans(tokenizer, messages, where)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    if not assistant_only:
        return Encoded(ids, list(ids))
    if last_answer_only:
        spans = spans[-1:]
    labels = [IGNORE] * len(ids)
    for j, (start, _end) in enumerate(enc["offset_mapping"]):
        if any(a <= start < b for a, b in spans):
            labels[j] = ids[j]
    return Encoded(ids, labels)


def encode_conversations(tokenizer, examples: Sequence, max_length: int, assistant_only: bool = True,
                         packing: bool = False) -> tuple[list[Encoded], ChatStats]:
    stats = ChatStats(max_length=max_length, packed=packing)
    rows = []
    for ex in examples:
        item = encode_conversation(tokenizer, ex.messages, f"{ex.source}:{ex.line}", assistant_only)
        stats.conversations += 1
        stats.tokens += len(item.input_ids)
        if len(item.input_ids) > max_length:
            stats.truncated += 1
            stats.truncated_tokens += len(item.input_ids) - max_length
            item = Encoded(item.input_ids[:max_length], item.labels[:max_length])
        trained = sum(label != IGNORE for label in item.labels[1:])  # the first token is never predicted
        if not trained:
            stats.dropped.append(f"{ex.source}:{ex.line}")
            continue
        stats.trained_tokens += trained
        rows.append(item)
    if not rows:
        raise DataError(f"{examples[0].source if examples else 'the data'}: no conversation has an answer token to "
                        f"train on within encoding.max_length {max_length}")
    if packing:
        rows = pack(rows, max_length)
    stats.rows = len(rows)
    return rows, stats


def pack(items: Sequence[Encoded], max_length: int) -> list[Encoded]:
    """First-fit decreasing: each item goes into the first row with room, longest items first."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i].input_ids))
    rows: list[Encoded] = []
    for i in order:
        item = items[i]
        for row in rows:
            if len(row.input_ids) + len(item.input_ids) <= max_length:
                row.input_ids += item.input_ids
                row.labels += item.labels
                row.segments.append(len(item.input_ids))
                break
        else:
            rows.append(Encoded(list(item.input_ids), list(item.labels), [len(item.input_ids)]))
    return rows


def encode_text_blocks(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[Encoded], PackStats]:
    """Raw text for causal-LM training: documents joined by the end-of-text token and cut into blocks of
    ``max_length`` (GPT-2's recipe: no padding, no token lost), each starting with the model's
    beginning-of-text token when its tokenizer adds one."""
    if tokenizer.eos_token_id is None:
        raise ConfigError("task.type causal_lm: the tokenizer has no end-of-text (eos) token to join documents")
    prefix = [tokenizer.bos_token_id] if tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id] else []
    tokenized = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        tokenized.append((ids, [0] * len(ids)))
    stats = PackStats()
    blocks: list[Block] = pack_documents(tokenized, prefix, [], tokenizer.eos_token_id, max_length, stats)
    return [Encoded(list(b.input_ids), list(b.input_ids)) for b in blocks], stats


class DecoderCollator:
    """Rows into a batch, padded on the right. Unpacked rows get the usual 2-D attention mask; a batch
    with packed rows a 4-D block-diagonal causal mask and positions that restart per conversation
    (a padding position attends to itself only, so no row of the mask is empty)."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, items: Sequence[Encoded]) -> dict:
        width = max(len(item.input_ids) for item in items)
        n = len(items)
        input_ids = torch.full((n, width), self.pad, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        lengths = [len(item.input_ids) for item in items]
        for row, item in enumerate(items):
            input_ids[row, : lengths[row]] = torch.tensor(item.input_ids)
            labels[row, : lengths[row]] = torch.tensor(item.labels)
        batch = {"input_ids": input_ids, "labels": labels, "n_tokens": sum(lengths),
                 "n_rows": sum(len(item.segments) for item in items)}
        if all(len(item.segments) == 1 for item in items):
            batch["attention_mask"] = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
            return batch
        mask = torch.zeros((n, 1, width, width), dtype=torch.bool)
        positions = torch.zeros((n, width), dtype=torch.long)
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        for row, item in enumerate(items):
            start = 0
            for length in item.segments:
                end = start + length
                mask[row, 0, start:end, start:end] = causal[:length, :length]
                positions[row, start:end] = torch.arange(length)
                start = end
            mask[row, 0, range(start, width), range(start, width)] = True
        batch["attention_mask"] = mask
        batch["position_ids"] = positions
        return batch
