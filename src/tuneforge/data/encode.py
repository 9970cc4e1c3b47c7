"""From words and texts to model inputs: one import point for every encoding.

The seed's three bugs are fixed here:
- labels are aligned to sub-words (first sub-word labelled, the rest ignored; or all, as an option);
- batches are padded to their own longest member, and members are grouped by length;
- an input longer than ``max_length`` is split into overlapping windows, so no word is dropped;
  each word is *owned* by the window where it has the most context on both sides, and only the
  owner trains on it and predicts it. That makes merging back trivial and exact.

The code lives in the modules next to this one, and every name is re-exported here:

- :mod:`tuneforge.data.tokenizing`: the ignored-label id, a tokenizer's special tokens, the long-input warning;
- :mod:`tuneforge.data.windows`: words -> sub-word windows (alignment, overlapping windows, owners);
- :mod:`tuneforge.data.batching`: length-grouped and length-sorted batches, the padding collator;
- :mod:`tuneforge.data.text_inputs`: whole texts (text classification), long-text strategies, their collator;
- :mod:`tuneforge.data.masking`: masked-LM whole-word units, packing into blocks, dynamic masking.
"""

from __future__ import annotations

from .batching import (
    INFERENCE_PAD_MULTIPLE,
    Collator,
    length_grouped_batches,
    padded_length,
    sorted_batches,
)
from .masking import (
    NO_GROUP,
    Block,
    MaskingCollator,
    PackStats,
    is_cjk,
    pack_documents,
    word_groups,
)
from .text_inputs import (
    LONG_TEXT_STRATEGIES,
    SequenceCollator,
    SequenceTemplate,
    TextEncodeStats,
    TextInput,
    encode_texts,
    long_text_spans,
    sequence_template,
)
from .tokenizing import IGNORE_INDEX, long_inputs_expected, special_token_template
from .windows import (
    UNSPACED_WORDS,
    EncodeStats,
    Window,
    assign_owners,
    continuation_table,
    encode_examples,
    tokenize_words,
    window_spans,
)

__all__ = [
    "IGNORE_INDEX",
    "INFERENCE_PAD_MULTIPLE",
    "LONG_TEXT_STRATEGIES",
    "NO_GROUP",
    "UNSPACED_WORDS",
    "Block",
    "Collator",
    "EncodeStats",
    "MaskingCollator",
    "PackStats",
    "SequenceCollator",
    "SequenceTemplate",
    "TextEncodeStats",
    "TextInput",
    "Window",
    "assign_owners",
    "continuation_table",
    "encode_examples",
    "encode_texts",
    "is_cjk",
    "length_grouped_batches",
    "long_inputs_expected",
    "long_text_spans",
    "pack_documents",
    "padded_length",
    "sequence_template",
    "sorted_batches",
    "special_token_template",
    "tokenize_words",
    "window_spans",
    "word_groups",
]
