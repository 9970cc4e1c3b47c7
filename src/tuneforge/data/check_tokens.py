"""``tuneforge data check``'s tokenizer section: sub-word lengths as the task encodes them, inputs over
``max_length``, the unknown-token rate and the words behind it, and sub-words a word (a SentencePiece
tokenizer on a character-level Chinese file doubles it unless the lone word-start markers are left out:
``encoding.unspaced_words``); with the findings they lead to. :func:`length_stats` is the summary every
length in the report uses.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

# A CJK file (this share of its characters CJK, words of about one character) whose words cost this many
# sub-words each is paying for lone word-start markers or a vocabulary without its characters.
CJK_SHARE = 0.5
CJK_TOKENS_PER_WORD = 1.8


def length_stats(values: Sequence[float]) -> dict:
    if not values:
        return {"min": 0, "median": 0, "mean": 0, "p95": 0, "p99": 0, "max": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"min": int(arr.min()), "median": float(np.median(arr)), "mean": round(float(arr.mean()), 2),
            "p95": float(np.percentile(arr, 95)), "p99": float(np.percentile(arr, 99)), "max": int(arr.max())}


def tokenizer_section(task, tokenizer, examples: Sequence, items: Sequence, max_length: int, show: int) -> dict:
    """Sub-word lengths (special tokens included) as the task encodes them, inputs over max_length,
    unknown-token rate and its words, sub-words a word (``items``: the check's Items of ``examples``)."""
    ids = task.check_token_ids(tokenizer, examples)
    lengths = [len(x) for x in ids]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    unk = tokenizer.unk_token_id
    special.discard(unk)
    tokens = unknown = with_unk = 0
    for x in ids:
        content = [t for t in x if t not in special]
        tokens += len(content)
        n_unk = sum(t == unk for t in content) if unk is not None else 0
        unknown += n_unk
        with_unk += n_unk > 0
    over = [i for i, n in enumerate(lengths) if n > max_length]
    words: Counter = Counter()
    if unknown:  # which words produce the unknown token: each distinct word of an affected text, tokenized alone
        seen = Counter(w for i, x in enumerate(ids) if unk in x for w in items[i].words)
        distinct = list(seen)
        pieces = tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else []
        words = Counter({w: seen[w] for w, piece in zip(distinct, pieces) if unk in piece})
    return {
        "subwords": length_stats(lengths),
        "histogram": np.histogram(lengths, bins=min(40, max(1, len(set(lengths)))))[0].tolist() if lengths else [],
        "_lengths": lengths,  # for the plot; not written to report.json
        "over_max_length": len(over),
        "over_max_length_examples": [dict(items[i].brief(), subwords=lengths[i]) for i in
                                     sorted(over, key=lambda i: -lengths[i])[:show]],
        "tokens": tokens, "unknown": unknown, "unknown_rate": round(unknown / tokens, 4) if tokens else 0.0,
        "texts_with_unknown": with_unk,
        "top_unknown_words": words.most_common(show),
        "tokens_per_word": round(tokens / n_words, 3) if (n_words := sum(len(it.words) for it in items)) else 0.0,
    }


def tokenizer_findings(report: dict) -> list[str]:
    """The findings of the tokenizer section (long inputs, coverage, sub-words a word on CJK files)."""
    lines: list[str] = []
    tok = report.get("tokenizer")
    if not tok:
        return lines
    for name, entry in tok["splits"].items():
        if entry["over_max_length"]:
            lines.append(f"long inputs in {name}: {entry['over_max_length']} over max_length {report['max_length']} "
                         f"sub-words (longest {entry['subwords']['max']}): {report['long_inputs']}")
        if entry["unknown_rate"] >= 0.005:
            words = ", ".join(w for w, _ in entry["top_unknown_words"][:5])
            lines.append(f"tokenizer coverage in {name}: {100 * entry['unknown_rate']:.1f}% of tokens are "
                         f"{tok['unknown_token']} ({entry['texts_with_unknown']} texts); most often: {words}")
        chars = report["characters"].get(name, {})
        size = report["sizes"].get(name, {})
        short_words = size.get("words") and size.get("characters", 0) <= 2 * size["words"]
        if chars.get("cjk_share", 0) >= CJK_SHARE and short_words and entry["tokens_per_word"] >= CJK_TOKENS_PER_WORD:
            lines.append(f"sub-words a word in {name}: {entry['tokens_per_word']} on a CJK file (each character about "
                         f"{entry['tokens_per_word']} tokens, so about that many times the compute): a tokenizer "
                         "without these characters, or lone word-start markers kept (encoding.unspaced_words: none)")
    return lines
