"""What every encoding shares: the ignored-label id, a tokenizer's special tokens around one text,
and silencing transformers' long-input warning where the caller handles long inputs itself.

The word (:mod:`tuneforge.data.windows`), whole-text (:mod:`tuneforge.data.text_inputs`) and masked-LM
(:mod:`tuneforge.data.masking`) encodings all build on these.
"""

from __future__ import annotations

from contextlib import contextmanager

IGNORE_INDEX = -100


def special_token_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after one sequence, e.g. ([CLS], [SEP]).

    Learned from the tokenizer's own post-processor rather than hard-coded, so BERT, RoBERTa
    (<s> … </s>), GPT-2 (nothing) and Llama (<s> …) all work the same way.
    """
    enc = tokenizer([["hello"]], is_split_into_words=True, add_special_tokens=True)
    ids = enc["input_ids"][0]
    word_ids = enc.word_ids(0)
    content = [i for i, w in enumerate(word_ids) if w is not None]
    if not content:
        return [], []
    return list(ids[: content[0]]), list(ids[content[-1] + 1:])


@contextmanager
def long_inputs_expected():
    """Silence transformers' "sequence longer than the maximum" warning where the caller windows,
    packs or only counts long texts (it would be noise, not a problem)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)

