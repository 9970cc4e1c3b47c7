"""Exact match, ROUGE-L, chrF and BLEU of generated answers: parity with rouge-score and sacrebleu
called directly, and the CJK tokenization those libraries need told."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from tuneforge.evaluation.generation import CJKCharTokenizer, describe_generation_scores, score_generations

PREDICTIONS = ["The cat sat on the mat.", "Paris is the capital of France", "I do not know", "Blue."]
REFERENCES = ["The cat is on the mat.", "Paris is the capital of France", "Nobody knows that.", "Blue."]


def test_parity_with_rouge_score_and_sacrebleu():
    scores = score_generations(PREDICTIONS, REFERENCES)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(PREDICTIONS, REFERENCES)]
    assert scores["rouge_l"] == pytest.approx(sum(rouge) / len(rouge), abs=1e-12)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES]).score, abs=1e-12)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score, abs=1e-12)
    assert scores["exact_match"] == 0.5 and scores["generated"] == 4 and scores["tokenization"] == "default"
    # and the figures are not degenerate: some overlap, not all
    assert 0.3 < scores["rouge_l"] < 1 and 0 < scores["bleu"] < 100


def test_perfect_answers_score_full_marks_and_exact_match_ignores_outer_space():
    answers = ["The sky is blue on a clear day.", "Grass is green in the spring."]
    scores = score_generations([f" {answers[0]} ", answers[1]], answers)
    assert scores["exact_match"] == 1.0 and scores["rouge_l"] == 1.0
    assert scores["chrf"] == pytest.approx(100.0) and scores["bleu"] == pytest.approx(100.0)


def test_chinese_answers_are_scored_by_character():
    predictions, references = ["北京是中国的首都", "我喜欢猫"], ["中国的首都是北京", "我喜欢狗"]
    # rouge-score's own tokenizer keeps only [a-z0-9]: Chinese would score 0
    plain = rouge_scorer.RougeScorer(["rougeL"]).score(references[1], predictions[1])["rougeL"].fmeasure
    assert plain == 0.0
    scores = score_generations(predictions, references)
    assert scores["tokenization"] == "cjk-characters"
    by_char = rouge_scorer.RougeScorer(["rougeL"], tokenizer=CJKCharTokenizer())
    expected = [by_char.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]
    assert scores["rouge_l"] == pytest.approx(sum(expected) / 2)
    assert scores["rouge_l"] == pytest.approx((5 / 8 + 3 / 4) / 2)  # LCS 中国的首都 (5 of 8), 我喜欢 (3 of 4)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references], tokenize="zh").score)
    assert CJKCharTokenizer().tokenize("GPT-3 和 BERT") == ["gpt", "3", "和", "bert"]


def test_description_and_mismatched_lengths():
    text = describe_generation_scores(score_generations(["a b"], ["a b"]))  # no 4-gram: corpus BLEU is 0
    assert text == "exact match 100.0% · ROUGE-L 100.0 · chrF 100.0 · BLEU 0.0 over 1 answers"
    assert describe_generation_scores(score_generations([], [])) == "no answers generated"
    with pytest.raises(ValueError, match="2 answers but 1 references"):
        score_generations(["a", "b"], ["a"])
