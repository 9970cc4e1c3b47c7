"""In-context classification (tasks/in_context.py) on a tiny random Llama built here with SmolLM2's
tokenizer: verbaliser scoring against a hand computation, seeded demonstrations that never include
the scored text, counted prompt shortening, and a run through the driver."""

from __future__ import annotations

import json

import pytest
import torch

import tuneforge
from tuneforge.data.records import TextExample
from tuneforge.errors import TuneforgeError
from tuneforge.tasks.in_context import (
    InContextClassifier,
    continuation_logprobs,
    demonstrations_for,
    draw_demonstrations,
    verbalisers,
)

from test_sft import build_tiny_llama, smollm_tokenizer_dir  # noqa: F401  (fixture)

LABELS = ["negative", "neutral", "positive"]
TEXTS = {"negative": ["awful day", "I hate this", "worst service", "so sad", "terrible food"],
         "neutral": ["it is tuesday", "the bus left", "news at nine", "a table", "it rained"],
         "positive": ["love it", "great game", "so happy", "best day ever", "thank you all"]}
TRAIN = [TextExample(text=t, labels=[label]) for label in LABELS for t in TEXTS[label]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm_tokenizer_dir):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_llama(tmp_path_factory.mktemp("icl-llama"), smollm_tokenizer_dir)
    return folder, AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_verbaliser_score_is_the_sum_of_its_token_log_probs(tiny):
    _, model, tokenizer = tiny
    prompt = tokenizer("Text: love it\nLabel:", add_special_tokens=False)["input_ids"]
    words = [tokenizer(" " + v, add_special_tokens=False)["input_ids"] for v in ["very positive", "no"]]
    assert len(words[0]) >= 2  # more than one token is summed
    scores = continuation_logprobs(model, tokenizer, prompt, words)
    for got, cont in zip(scores, words):
        by_hand, ids = 0.0, list(prompt)
        for token in cont:  # one token at a time, no padding, no batch
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            by_hand += torch.log_softmax(logits.double(), -1)[token].item()
            ids.append(token)
        assert got == pytest.approx(by_hand, abs=1e-4)


def test_demonstrations_are_seeded_and_never_the_scored_text():
    a = draw_demonstrations(TRAIN, LABELS, 2, seed=7)
    assert a == draw_demonstrations(TRAIN, LABELS, 2, seed=7)
    assert a != draw_demonstrations(TRAIN, LABELS, 2, seed=8)
    assert len(a) == 9  # k + 1 per class kept, so a dropped one is replaced
    for ex in TRAIN:
        shown = demonstrations_for(a, LABELS, 2, ex.text)
        assert ex.text not in [d["text"] for d in shown]
        assert sorted(d["label"] for d in shown) == sorted(LABELS * 2)
    assert draw_demonstrations(TRAIN, LABELS, 0, seed=7) == []


def test_verbalisers_come_from_the_config_descriptions_or_the_name():
    assert verbalisers(LABELS, {"neutral": "meh"}, {"positive": "good", "negative": ["a", "b"]}) == \
        ["negative", "meh", "good"]


def _settings(k=2, **extra):
    return dict({"k": k, "prompt": "plain", "instruction": "Classify: {labels}.", "calibrate": False,
                 "labels": LABELS, "verbalisers": LABELS, "demonstrations": draw_demonstrations(TRAIN, LABELS, k, 1),
                 "max_prompt_tokens": None}, **extra)


def _classifier(tiny, **settings):
    _, model, tokenizer = tiny
    meta = {"labels": LABELS, "multi_label": False, "in_context": _settings(**settings)}
    return InContextClassifier(model, tokenizer, meta)


def test_a_long_prompt_loses_demonstrations_counted_and_an_impossible_one_is_an_error(tiny):
    full = _classifier(tiny)
    n_full = len(full.prompt_ids("love it"))
    short = _classifier(tiny, max_prompt_tokens=n_full - 5)
    assert len(short.prompt_ids("love it")) < n_full - 5
    assert short.counts["prompts_shortened"] == 1 and short.counts["demonstrations_dropped"] >= 1
    with pytest.raises(TuneforgeError, match="does not fit"):
        _classifier(tiny, max_prompt_tokens=8).prompt_ids("love it " * 20)


def test_probabilities_and_calibration(tiny):
    examples = TRAIN[:4]
    plain = _classifier(tiny).predict_proba(examples)
    assert plain.shape == (4, 3) and plain.sum(axis=1) == pytest.approx([1, 1, 1, 1])
    calibrated = _classifier(tiny, calibrate=True)
    got = calibrated.predict_proba(examples)
    prior = torch.softmax(torch.from_numpy(calibrated.label_logprobs("N/A", count=False)), -1).numpy()
    expected = plain / prior
    assert got == pytest.approx(expected / expected.sum(axis=1, keepdims=True), abs=1e-6)


def test_in_context_runs_through_the_driver_and_reports_its_counts(tiny, tmp_path):
    folder, _, _ = tiny
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": ex.text, "label": ex.labels[0]}) + "\n" for ex in TRAIN))
    cfg = {"task": {"type": "in_context_classification", "k": 1, "prompt": "chat", "calibrate": True},
           "model": {"name_or_path": str(folder)},
           "data": {"train": str(train), "dev": str(train), "test": str(train)},
           "training": {"seed": 3}, "output_dir": str(tmp_path / "run")}
    result = tuneforge.train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = metrics["test"]
    assert 0 <= test["f1"] <= 1 and test["in_context"]["texts"] == len(TRAIN)
    assert test["in_context"]["demonstrations_dropped"] == 0
    assert result is not None


def test_the_shared_prompt_beginning_is_computed_once_and_changes_no_score(tiny):
    texts = [ex.text for ex in TRAIN[:6]] + ["love it a lot", "love it a little"]  # two texts that begin alike
    cached = _classifier(tiny)
    got = [cached.label_logprobs(t) for t in texts]
    assert cached._prefix is not None and len(cached._prefix[0]) > 16
    plain = _classifier(tiny)
    for text, scores in zip(texts, got):
        expected = continuation_logprobs(plain.model, plain.tokenizer, plain.prompt_ids(text), plain._continuations())
        assert scores == pytest.approx(expected, abs=1e-4)
