"""``tuneforge data check``: know your data before a model learns from it.

One report, as JSON (``report.json``) and as one self-contained HTML page (``report.html``, written by
:mod:`.check_report`: tables, plots inline as PNG data URIs, no network), for any task. The task answers
the questions only it can (:class:`tuneforge.tasks.base.Task`: how to read and normalise, label counts,
a label signature per example, token ids as its model reads them, what happens to long inputs); the rest
works on each example's text (``as_text()``) and is the same for every task:

- **sizes** per split, and **malformed records** (every one, with file:line; read leniently via
  :func:`tuneforge.data.readers.collect_bad_records`, so one bad line does not hide the next);
- **labels** per split (entities by type for NER, texts per class), labels missing from train;
- **tag-scheme repairs** (what the task's normalisation rewrote, with examples);
- **duplicates** within and **across** splits (leakage, with the pairs):
  *exact* (identical text), *normalised* (identical after NFKC, case folding, URLs, @mentions and
  digits masked, and everything but letters and digits removed), and *near* (Jaccard similarity of
  character 5-gram shingle sets of the normalised text >= 0.8; candidate pairs from MinHash LSH
  with 128 permutations, ``datasketch``, asked for candidates from 0.25 below the threshold, then every
  candidate's Jaccard computed exactly);
  an exact copy with a different label is a *conflict*;
- **lengths**: words/characters, and with a tokenizer the sub-word distribution, how many inputs
  exceed ``max_length`` and what the task does with them (windows, or cut);
- **characters**: shares of CJK, Latin, digits, punctuation/symbols, emoji; texts with URLs,
  emoji, @mentions, control or zero-width characters;
- **tokenizer coverage**: the share of tokens that are the unknown token, and the words behind them;
- **label noise** (with ``--model RUN``): k-fold cross-validation with that run's config; a unit
  (word or label) whose held-out prediction differs from its gold label with probability >= the
  threshold is a candidate (trained in :mod:`tuneforge.workflows.checks`, which also picks the task).

This module holds the checks themselves, given a task and its examples: it trains nothing, picks no task.

``--strict`` fails (exit 1) when there is leakage (a dev/test text whose exact or normalised text
is in train, or in another evaluation split) or a malformed record.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..artifacts.paths import resolve_path
from ..errors import DataError, TuneforgeError
from .hf_datasets import dataset_format, sample_rows
from .check_tokens import length_stats, tokenizer_findings, tokenizer_section
from .cjk import CJK_SCRIPTS
from .records import collect_bad_records

NEAR_THRESHOLD = 0.8
SHINGLE = 5
MINHASH_PERMUTATIONS = 128
SHOW = 10  # examples listed per finding (the counts are always complete)

_URL = r"https?://\S+|www\.\S+"
_MENTION = r"(?<!\w)@\w+"


@dataclass
class CheckOptions:
    tokenizer: Any = None  # a loaded tokenizer, or None: no sub-word / coverage sections
    tokenizer_name: str | None = None
    max_length: int = 128
    near_threshold: float = NEAR_THRESHOLD
    show: int = SHOW


@dataclass
class Item:
    """One example in the check: where it is and its text."""

    split: str
    index: int
    text: str
    where: str  # file:line
    words: list[str] = field(default_factory=list)  # the example's own words (a CJK CoNLL file: characters)

    def brief(self, width: int = 160) -> dict:
        text = self.text if len(self.text) <= width else self.text[: width - 1] + "…"
        return {"split": self.split, "where": self.where, "text": text}


def _where(ex) -> str:
    source, line = getattr(ex, "source", ""), getattr(ex, "line", 0)
    return f"{source}:{line}" if source else f"#{line}"


def items_of(splits: dict[str, list]) -> dict[str, list[Item]]:
    """Each split's examples as :class:`Item` (split, index, text, file:line, words)."""
    return {name: [Item(name, i, ex.as_text(), _where(ex), ex.word_list()) for i, ex in enumerate(exs)]
            for name, exs in splits.items()}


# ---------------------------------------------------------------------------------------------
# Reading


def read_for_check(task) -> tuple[dict[str, list], dict[str, list[DataError]], dict]:
    """The task's splits read leniently and normalised: (splits, malformed records per split, normalise report).

    Empty splits are dropped. A split cut from one file (``data.split``) shares that file's malformed records.
    """
    with collect_bad_records() as bad:
        splits, report = task.read_splits()
        read_bad = list(bad)
        task.normalise(splits, report)
    malformed: dict[str, list[DataError]] = defaultdict(list)
    files = {name: getattr(task.cfg.data, name) for name in ("train", "dev", "test")}
    for error in bad:
        owner = next((name for name, path in files.items() if path and _same_file(error.path, path)), "train")
        if error not in read_bad:  # a tag rejected during normalisation: find the split holding it
            owner = next((name for name, exs in splits.items()
                          if any(getattr(ex, "source", None) == error.path for ex in exs)), owner)
        malformed[owner].append(error)
    return {k: v for k, v in splits.items() if v}, dict(malformed), report


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(resolve_path(b)).resolve()
    except (OSError, TuneforgeError):
        return False


# ---------------------------------------------------------------------------------------------
# Text normalisation and duplicates


def normalise_text(text: str) -> str:
    """The key near-duplicates share: NFKC, case-folded, URLs/@mentions/digits masked, only letters and digits kept."""
    import regex

    text = unicodedata.normalize("NFKC", text).casefold()
    text = regex.sub(_URL, "<url>", text)
    text = regex.sub(_MENTION, "@user", text)
    text = regex.sub(r"\d", "0", text)
    return "".join(regex.findall(r"[\p{L}\p{N}]", text))


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    if len(text) <= size:
        return {text} if text else set()
    return {text[i: i + size] for i in range(len(text) - size + 1)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _pair_name(a: str, b: str) -> str:
    return f"{a}/{b}"


def find_duplicates(items: Sequence[Item], signatures: Sequence[tuple], threshold: float = NEAR_THRESHOLD,
                    show: int = SHOW) -> dict:
    """Exact, normalised and near duplicates within each split and across splits (see the module docstring)."""
    splits = list(dict.fromkeys(it.split for it in items))
    by_text: dict[str, list[int]] = defaultdict(list)
    by_norm: dict[str, list[int]] = defaultdict(list)
    norms = [normalise_text(it.text) for it in items]
    for i, it in enumerate(items):
        by_text[it.text].append(i)
        by_norm[norms[i]].append(i)

    report: dict = {
        "method": (f"exact: identical text; normalised: identical after NFKC, case folding, URL/@mention/digit masking "
                   f"and removing all but letters and digits; near: Jaccard of character {SHINGLE}-gram shingles of "
                   f"the normalised text >= {threshold} (MinHash LSH, {MINHASH_PERMUTATIONS} permutations, candidates "
                   "from 0.25 below, verified exactly)"),
        "within": {}, "across": {},
    }
    # --- within each split
    for split in splits:
        exact_groups = [g for g in by_text.values() if len([i for i in g if items[i].split == split]) > 1]
        exact_groups = [[i for i in g if items[i].split == split] for g in exact_groups]
        conflicts = [g for g in exact_groups if len({signatures[i] for i in g}) > 1]
        norm_groups = [[i for i in g if items[i].split == split] for g in by_norm.values()]
        norm_groups = [g for g in norm_groups if len(g) > 1 and len({items[i].text for i in g}) > 1]
        report["within"][split] = {
            "exact_groups": len(exact_groups),
            "exact_extra_copies": sum(len(g) - 1 for g in exact_groups),
            "conflicting_labels": len(conflicts),
            "normalised_groups": len(norm_groups),
            "normalised_extra_copies": sum(len(g) - 1 for g in norm_groups),
            "exact_examples": [[items[i].brief() for i in g[:3]] for g in sorted(exact_groups, key=len, reverse=True)[:show]],
            "conflict_examples": [[dict(items[i].brief(), labels=list(signatures[i])[:40]) for i in g[:3]]
                                  for g in conflicts[:show]],
            "normalised_examples": [[items[i].brief() for i in g[:3]] for g in norm_groups[:show]],
        }
    # --- across splits: exact and normalised, per ordered pair (earlier split first)
    for a_pos, a in enumerate(splits):
        for b in splits[a_pos + 1:]:
            exact_pairs, norm_pairs = [], []
            exact_b, norm_b = set(), set()
            for groups, pairs, hit in ((by_text, exact_pairs, exact_b), (by_norm, norm_pairs, norm_b)):
                for g in groups.values():
                    left = [i for i in g if items[i].split == a]
                    right = [i for i in g if items[i].split == b]
                    if left and right:
                        for j in right:
                            if groups is by_norm and items[j].text in {items[i].text for i in left}:
                                continue  # already an exact pair
                            hit.add(j)
                            pairs.append((left[0], j))
            report["across"][_pair_name(a, b)] = {
                "exact": len(exact_b), "normalised": len(norm_b), "near": 0,
                "exact_pairs": [[items[i].brief(), items[j].brief()] for i, j in exact_pairs[:show]],
                "normalised_pairs": [[items[i].brief(), items[j].brief()] for i, j in norm_pairs[:show]],
                "near_pairs": [],
            }
    _near_duplicates(items, norms, threshold, report, show)
    return report


def _near_duplicates(items: Sequence[Item], norms: Sequence[str], threshold: float, report: dict, show: int) -> None:
    """Pairs with shingle Jaccard >= threshold that are not already exact or normalised copies."""
    from datasketch import MinHash, MinHashLSH

    sets = [shingles(n) for n in norms]
    # LSH finds pairs above its threshold only with some probability; asking it for candidates well below
    # the verified threshold keeps that miss rate negligible, and every candidate is then checked exactly
    lsh = MinHashLSH(threshold=max(0.3, threshold - 0.25), num_perm=MINHASH_PERMUTATIONS)
    hashes = []
    for i, s in enumerate(sets):
        m = MinHash(num_perm=MINHASH_PERMUTATIONS, seed=1)
        m.update_batch([x.encode("utf-8") for x in s])
        hashes.append(m)
        lsh.insert(i, m)
    seen: set[tuple[int, int]] = set()
    within: dict[str, list] = defaultdict(list)
    across: dict[str, list] = defaultdict(list)
    order = {split: k for k, split in enumerate(dict.fromkeys(it.split for it in items))}
    for i in range(len(items)):
        for j in lsh.query(hashes[i]):
            if j <= i or (i, j) in seen or norms[i] == norms[j]:
                continue
            seen.add((i, j))
            score = jaccard(sets[i], sets[j])
            if score < threshold:
                continue
            a, b = sorted((i, j), key=lambda k: (order[items[k].split], k))
            if items[a].split == items[b].split:
                within[items[a].split].append((a, b, score))
            else:
                across[_pair_name(items[a].split, items[b].split)].append((a, b, score))
    for split, entry in report["within"].items():
        pairs = sorted(within.get(split, []), key=lambda p: -p[2])
        entry["near_pairs"] = len(pairs)
        entry["near_examples"] = [[items[a].brief(), items[b].brief(), round(s, 3)] for a, b, s in pairs[:show]]
    for name, entry in report["across"].items():
        pairs = sorted(across.get(name, []), key=lambda p: -p[2])
        entry["near"] = len({b for _, b, _ in pairs})
        entry["near_pairs"] = [[items[a].brief(), items[b].brief(), round(s, 3)] for a, b, s in pairs[:show]]


# ---------------------------------------------------------------------------------------------
# Lengths, characters, tokenizer


# text scraped from HTML and never unescaped (WNUT-16's tweets hold "&quot;", "&amp;", "&lt;3"): the
# model sees "& quot ;" where the user wrote a quote; html.unescape on the data before training fixes it
_HTML_ENTITY = r"&(?:[A-Za-z]{2,8}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});"


def character_classes(texts: Sequence[str]) -> dict:
    import regex

    counts = Counter()
    with_url = with_emoji = with_mention = with_control = with_entity = 0
    for text in texts:
        for ch in text:
            if ch.isspace():
                continue
            counts["all"] += 1
            if regex.match(rf"[{CJK_SCRIPTS}]", ch):
                counts["cjk"] += 1
            elif regex.match(r"\p{Latin}", ch):
                counts["latin"] += 1
            elif regex.match(r"\p{N}", ch):
                counts["digit"] += 1
            elif regex.match(r"\p{Extended_Pictographic}", ch):
                counts["emoji"] += 1
            elif regex.match(r"[\p{P}\p{S}]", ch):
                counts["punctuation"] += 1
            else:
                counts["other"] += 1
        with_url += bool(regex.search(_URL, text))
        with_emoji += bool(regex.search(r"\p{Extended_Pictographic}", text))
        with_mention += bool(regex.search(_MENTION, text))
        with_control += bool(regex.search(r"[\p{Cc}\p{Cf}--[\t\n\r]]", text, flags=regex.V1))
        with_entity += bool(regex.search(_HTML_ENTITY, text))
    total = counts["all"] or 1
    return {
        "characters": counts["all"],
        **{f"{k}_share": round(counts[k] / total, 4) for k in ("cjk", "latin", "digit", "punctuation", "emoji", "other")},
        "texts_with_url": with_url, "texts_with_emoji": with_emoji, "texts_with_mention": with_mention,
        "texts_with_control_or_zero_width": with_control, "texts_with_html_entities": with_entity,
    }


# ---------------------------------------------------------------------------------------------
# The whole report


def check(task, splits: dict[str, list], malformed: dict[str, list[DataError]], normalise_report: dict,
          options: CheckOptions, noise: dict | None = None) -> dict:
    """The report as a JSON-ready dict (see the module docstring)."""
    items = items_of(splits)
    flat = [it for name in splits for it in items[name]]
    signatures = [task.label_signature(ex) for name in splits for ex in splits[name]]
    labels = {name: task.label_counts(exs) for name, exs in splits.items()}
    train_labels = set(labels.get("train", {}))
    report: dict = {
        "task": task.name,
        "files": {name: str(getattr(task.cfg.data, name) or "") for name in ("train", "dev", "test")
                  if getattr(task.cfg.data, name, None)},
        "splits": list(splits),
        "sizes": {name: {"examples": len(exs), "malformed": len(malformed.get(name, [])),
                         "empty": sum(1 for it in items[name] if not it.text.strip()),
                         "words": sum(len(it.words) for it in items[name]),
                         "characters": sum(len(it.text) for it in items[name])} for name, exs in splits.items()},
        "malformed": {name: [str(e) for e in errors[: options.show]] for name, errors in malformed.items()},
        "labels": {"space": task.label_list([ex for exs in splits.values() for ex in exs]),
                   "per_split": labels,
                   "not_in_train": {name: sorted(set(c) - train_labels) for name, c in labels.items()
                                    if name != "train" and "train" in labels and set(c) - train_labels}},
        "scheme": normalise_report.get("scheme", {}),
        "duplicates": find_duplicates(flat, signatures, options.near_threshold, options.show),
        "lengths": {name: {"words": length_stats([len(it.words) for it in items[name]]),
                           "characters": length_stats([len(it.text) for it in items[name]]),
                           "longest": [dict(it.brief(), characters=len(it.text)) for it in
                                       sorted(items[name], key=lambda it: -len(it.text))[:3]]}
                    for name in splits},
        "characters": {name: character_classes([it.text for it in items[name]]) for name in splits},
        "tokenizer": None,
        "max_length": options.max_length,
        "long_inputs": task.long_input_handling(),
    }
    if options.tokenizer is not None:
        report["tokenizer"] = {"name": options.tokenizer_name, "unknown_token": options.tokenizer.unk_token,
                               "splits": {name: tokenizer_section(task, options.tokenizer, splits[name], items[name],
                                                                  options.max_length, options.show)
                                          for name in splits}}
    report["noise"] = noise
    report["leakage"] = leakage(report)
    report["findings"] = findings(report)
    return report


def leakage(report: dict) -> dict:
    """Evaluation examples whose exact or normalised text is in another split (what --strict fails on)."""
    out = {}
    for name, entry in report["duplicates"]["across"].items():
        count = entry["exact"] + entry["normalised"]
        if count:
            out[name] = count
    return out


def findings(report: dict) -> list[str]:
    """One line per thing worth a look, most serious first."""
    lines = []
    bad = sum(s["malformed"] for s in report["sizes"].values())
    if bad:
        first = next(iter(v[0] for v in report["malformed"].values() if v))
        lines.append(f"malformed: {bad} record(s) skipped; first: {first}")
    for name, entry in report["duplicates"]["across"].items():
        if entry["exact"] or entry["normalised"] or entry["near"]:
            b = name.split("/")[1]
            lines.append(f"leakage {name}: {entry['exact']} {b} example(s) with an exact copy in the other split, "
                         f"{entry['normalised']} more after normalising, {entry['near']} more near-duplicates")
    for name, entry in report["duplicates"]["within"].items():
        if entry["exact_extra_copies"] or entry["normalised_extra_copies"] or entry["near_pairs"]:
            lines.append(f"duplicates in {name}: {entry['exact_extra_copies']} extra exact copies in "
                         f"{entry['exact_groups']} group(s) ({entry['conflicting_labels']} with conflicting labels), "
                         f"{entry['normalised_extra_copies']} more after normalising, {entry['near_pairs']} near pair(s)")
    for name, missing in report["labels"]["not_in_train"].items():
        lines.append(f"labels in {name} never in train: {', '.join(missing)}")
    for name, scheme in report["scheme"].items():
        if scheme.get("rewritten"):
            lines.append(f"scheme ({name}): read as {scheme['read_as']}; {scheme['rewritten']} tag(s) rewritten to IOB2")
    for name, chars in report["characters"].items():
        if chars.get("texts_with_html_entities"):
            lines.append(f"HTML entities in {name}: {chars['texts_with_html_entities']} text(s) hold escapes such as "
                         "&quot; or &amp; (text scraped from HTML and never unescaped; html.unescape fixes it)")
    for name, size in report["sizes"].items():
        if size["empty"]:
            lines.append(f"empty texts in {name}: {size['empty']}")
    lines += tokenizer_findings(report)
    noise = report.get("noise")
    if noise and noise["candidates"]:
        lines.append(f"label noise: {noise['candidates']} example(s) whose label a held-out model confidently "
                     f"disputes ({noise['units_flagged']} unit(s), threshold {noise['threshold']})")
    return lines


def strict_failures(report: dict) -> list[str]:
    out = []
    bad = sum(s["malformed"] for s in report["sizes"].values())
    if bad:
        out.append(f"{bad} malformed record(s)")
    for name, count in report["leakage"].items():
        out.append(f"{count} {name.split('/')[1]} example(s) leaked from {name.split('/')[0]}")
    return out


# ---------------------------------------------------------------------------------------------
# What a task's guess looks at

# How many records the task guess reads: enough that a file whose first records carry no labels (a
# doccano sequence-labelling export starting with sentences without entities) is still told apart.
SNIFF_RECORDS = 1000


def sample_records(path: str, limit: int = SNIFF_RECORDS) -> list[dict]:
    """The first ``limit`` JSON objects of a JSON list or JSONL file, or rows of a Parquet / Arrow / ``hf:``
    dataset (ClassLabel integers as names): what a task's ``sniff`` looks at; [] for other files or
    unreadable ones (a dataset that cannot be loaded stops here, with the reader's one-line error)."""
    if dataset_format(path):
        return sample_rows(path, limit)
    resolved = Path(resolve_path(path))
    if resolved.suffix.lower() not in (".json", ".jsonl", ".ndjson") or not resolved.is_file():
        return []
    try:
        text = resolved.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return []
    stripped = text.lstrip()
    records: list = []
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)[:limit]
        except (json.JSONDecodeError, TypeError):
            return []
    else:
        for line in stripped.splitlines():
            if len(records) >= limit:
                break
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a bad line is the reader's to report; the guess looks at the others
    return [r for r in records if isinstance(r, dict)]
