"""Scores of generated answers against references: exact match, ROUGE-L, chrF and BLEU.

The reference libraries compute them, so the figures are the ones papers and other tools report:
ROUGE-L F1 by ``rouge-score`` (mean over answers, 0-1), chrF and corpus BLEU by ``sacrebleu``
(0-100, its default settings). Two places need a choice for Chinese (and Japanese, Korean) text:
``rouge-score``'s tokenizer keeps only ``[a-z0-9]`` and so scores CJK answers 0, and BLEU's ``13a``
tokenizer leaves a CJK sentence one word. When any answer or reference holds a CJK ideograph,
ROUGE-L counts each ideograph as a token (and ``[a-z0-9]`` runs as rouge-score does) and BLEU uses
sacrebleu's ``zh`` tokenizer; ``tokenization`` in the scores says which was used.
"""

from __future__ import annotations

import re
from typing import Sequence

from ..data.cjk import IDEOGRAPH_CLASS, is_cjk_ideograph

GENERATION_METRICS = ("exact_match", "rouge_l", "chrf", "bleu")
_CJK_TOKEN = re.compile(IDEOGRAPH_CLASS + r"|[a-z0-9]+")


class CJKCharTokenizer:
    """rouge-score's tokenizer (lower case, ``[a-z0-9]`` runs) with each CJK ideograph a token of its own."""

    def tokenize(self, text: str) -> list[str]:
        return _CJK_TOKEN.findall(text.lower())


def _has_cjk(texts: Sequence[str]) -> bool:
    return any(is_cjk_ideograph(ch) for text in texts for ch in text)


def score_generations(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """``{"exact_match", "rouge_l", "chrf", "bleu", "generated", "tokenization"}`` of answers against references."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} answers but {len(references)} references")
    if not predictions:
        return {"generated": 0}
    cjk = _has_cjk(predictions) or _has_cjk(references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=CJKCharTokenizer() if cjk else None)
    rouge = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return {
        "exact_match": sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / len(predictions),
        "rouge_l": sum(rouge) / len(rouge),
        "chrf": sacrebleu.corpus_chrf(list(predictions), [list(references)]).score,
        "bleu": sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize="zh" if cjk else "13a").score,
        "generated": len(predictions),
        "tokenization": "cjk-characters" if cjk else "default",
    }


def describe_generation_scores(scores: dict) -> str:
    """One line: exact match and ROUGE-L as percentages, chrF and BLEU on sacrebleu's 0-100 scale."""
    if not scores.get("generated"):
        return "no answers generated"
    return (f"exact match {100 * scores['exact_match']:.1f}% · ROUGE-L {100 * scores['rouge_l']:.1f} · "
            f"chrF {scores['chrf']:.1f} · BLEU {scores['bleu']:.1f} over {scores['generated']} answers")
