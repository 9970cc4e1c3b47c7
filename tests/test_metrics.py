import random

from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from tuneforge.evaluation.metrics import entity_scores, extract_entities

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-geo-loc", "I-geo-loc"]


def seqeval_dict(gold, pred):
    return classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)


tag_seqs = st.lists(st.lists(st.sampled_from(TAGS), min_size=1, max_size=12), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(gold=tag_seqs, seed=st.integers(0, 10_000))
def test_parity_with_seqeval_strict_iob2(gold, seed):
    rng = random.Random(seed)
    # predictions: the gold tags with random corruption, so hits, misses and invalid I- runs all occur
    pred = [[t if rng.random() < 0.6 else rng.choice(TAGS) for t in seq] for seq in gold]
    ours = entity_scores(gold, pred)
    ref = seqeval_dict(gold, pred)
    for kind, v in ours["per_type"].items():
        if kind not in ref:  # seqeval omits types with no gold support from its per-type rows
            assert v["support"] == 0
            continue
        for key, ref_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"), ("support", "support")):
            assert abs(v[key] - ref[kind][ref_key]) < 1e-12, (kind, key)
    for avg in ("micro", "macro", "weighted"):
        if f"{avg} avg" not in ref:
            continue
        for key, ref_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            expected = ref[f"{avg} avg"][ref_key]
            if expected != expected:  # seqeval gives NaN averages when there is no entity at all; we give 0
                assert ours[avg][key] == 0.0 and not ours["per_type"]
                continue
            assert abs(ours[avg][key] - expected) < 1e-12, (avg, key)


def test_strict_extraction_drops_stray_inside_tags():
    assert extract_entities(["I-PER", "B-PER", "I-PER", "I-LOC", "B-LOC", "B-LOC"]) == [
        ("PER", 1, 3), ("LOC", 4, 5), ("LOC", 5, 6)
    ]
