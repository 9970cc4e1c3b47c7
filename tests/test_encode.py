from hypothesis import given, settings
from hypothesis import strategies as st

from tuneforge.data.encode import (
    IGNORE_INDEX,
    Collator,
    assign_owners,
    encode_examples,
    length_grouped_batches,
    special_token_template,
    window_spans,
)
from tuneforge.data.readers import TokenExample

from conftest import WORDS

LABELS = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}


def test_first_subword_alignment_is_exact(tiny_tokenizer):
    ex = TokenExample(words=["john", "visited", "xyz"], tags=["B-PER", "O", "B-LOC"])
    (window,), stats = encode_examples([ex], tiny_tokenizer, LABELS, max_length=32, stride=4)
    tokens = tiny_tokenizer.convert_ids_to_tokens(window.input_ids)
    assert tokens == ["[CLS]", "john", "visited", "x", "##y", "##z", "[SEP]"]
    assert window.labels == [IGNORE_INDEX, 1, 0, 3, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert window.word_ids == [None, 0, 1, 2, 2, 2, None]
    assert window.owned_positions == {0: 1, 1: 2, 2: 3}


def test_all_subwords_option_labels_continuations_as_inside(tiny_tokenizer):
    ex = TokenExample(words=["xyz", "paris"], tags=["B-PER", "B-LOC"])
    (window,), _ = encode_examples([ex], tiny_tokenizer, LABELS, 32, 4, label_all_subwords=True)
    assert window.labels == [IGNORE_INDEX, 1, 2, 2, 3, IGNORE_INDEX]


def test_words_that_tokenize_to_nothing_still_get_a_position(tiny_tokenizer):
    ex = TokenExample(words=["john", "\u200b", "paris"], tags=["B-PER", "O", "B-LOC"])
    (window,), stats = encode_examples([ex], tiny_tokenizer, LABELS, 32, 4)
    assert stats.empty_words == 1
    assert sorted(window.owned_positions) == [0, 1, 2]
    assert tiny_tokenizer.convert_ids_to_tokens(window.input_ids)[2] == "[UNK]"


def test_special_token_template(tiny_tokenizer):
    prefix, suffix = special_token_template(tiny_tokenizer)
    assert tiny_tokenizer.convert_ids_to_tokens(prefix + suffix) == ["[CLS]", "[SEP]"]


def test_window_spans_cover_everything_with_overlap():
    assert window_spans(10, 10, 3) == [(0, 10)]
    assert window_spans(12, 6, 2) == [(0, 6), (4, 10), (8, 12)]


word_lists = st.lists(st.sampled_from(WORDS + ["xyzzy", "qq", "北京", "\u200b", "!"]), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(words=word_lists, max_length=st.integers(8, 40), stride=st.integers(0, 3))
def test_every_word_is_owned_by_exactly_one_window_that_contains_it(tiny_tokenizer, words, max_length, stride):
    tags = ["B-PER" if i % 3 == 0 else "O" for i in range(len(words))]
    windows, stats = encode_examples([TokenExample(words, tags)], tiny_tokenizer, LABELS, max_length, stride)
    owned = [w for win in windows for w in win.owned_positions]
    assert sorted(owned) == list(range(len(words)))  # exactly one prediction per word
    labelled = []
    for win in windows:
        assert len(win.input_ids) <= max_length
        for word, pos in win.owned_positions.items():
            assert win.word_ids[pos] == word
            assert pos == 0 or win.word_ids[pos - 1] != word  # it is the word's first sub-word
        labelled += [(win.word_ids[i], lab) for i, lab in enumerate(win.labels) if lab != IGNORE_INDEX]
    # training sees each word's label exactly once, whatever the windowing
    assert sorted(labelled) == [(i, LABELS[t]) for i, t in enumerate(tags)]


def test_owner_is_window_with_most_context():
    spans = [(0, 6), (4, 10)]
    assert assign_owners([4, 5, 6], spans) == [0, 1, 1]


def test_length_grouped_batches_are_deterministic_and_cover_all():
    lengths = [(i * 37) % 50 + 1 for i in range(500)]
    a = length_grouped_batches(lengths, 16, seed=1, epoch=0)
    assert a == length_grouped_batches(lengths, 16, seed=1, epoch=0)
    assert a != length_grouped_batches(lengths, 16, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(500))
    padded = sum(max(lengths[i] for i in b) * len(b) for b in a)
    random_batches = length_grouped_batches(lengths, 16, seed=1, epoch=0, group_by_length=False)
    padded_random = sum(max(lengths[i] for i in b) * len(b) for b in random_batches)
    assert padded < 0.7 * padded_random


def test_collator_pads_to_batch_longest(tiny_tokenizer):
    exs = [TokenExample(["john"], ["B-PER"]), TokenExample(["mary", "visited", "paris"], ["B-PER", "O", "B-LOC"])]
    windows, _ = encode_examples(exs, tiny_tokenizer, LABELS, 32, 4)
    batch = Collator(tiny_tokenizer.pad_token_id)(windows)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["n_tokens"] == 8
    assert batch["labels"][0].tolist() == [IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]


def test_last_subword_position_for_causal_models(tiny_tokenizer):
    ex = TokenExample(words=["xyz", "paris"], tags=["B-PER", "B-LOC"])
    (window,), _ = encode_examples([ex], tiny_tokenizer, LABELS, 32, 4, label_position="last")
    assert window.labels == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 1, 3, IGNORE_INDEX]
    assert window.owned_positions == {0: 3, 1: 4}
