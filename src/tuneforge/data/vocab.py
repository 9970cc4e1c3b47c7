"""Vocabulary extension: add the characters and words a corpus needs to a WordPiece tokenizer, and
grow the model's embeddings to match (``tuneforge vocab extend``, or a ``vocab:`` block in a config).

An English WordPiece vocabulary turns most Chinese characters into ``[UNK]`` (MiniLM: 60% of the
MSRA test characters) and long rare words into many pieces. Extending it is the first step of moving
a model to a new language or domain (Chinese-LLaMA, ...); continued masked-LM pre-training
(``task.type: masked_lm``) then teaches the new rows. The steps:

1. **count** (:func:`count_candidates`): the corpus is normalised and pre-tokenised exactly as the
   tokenizer does it; a word that becomes ``[UNK]`` contributes the characters the vocabulary lacks
   (``c`` at the start of a word, ``##c`` inside one; a Chinese character is always a word of its
   own), a word split into ``min_pieces`` or more pieces contributes itself;
2. **choose** the ``add`` most frequent candidates (ties by text, so the choice is reproducible);
3. **add** them to the WordPiece model itself (not as "added tokens", which would be matched
   before pre-tokenisation and split English words), and **verify by round trip**: every added word
   or character tokenises to exactly its new id;
4. **resize** the embeddings (old rows stay bit-identical) and **initialise** each new row as the
   mean of the rows of the pieces the old tokenizer made of it, else (all ``[UNK]``) the mean of all
   old rows, plus Gaussian noise (``noise_std``) so identical starts can tell apart;
5. **report** the ``[UNK]`` rate and pieces per character before and after, on the corpus and on
   any labelled data given.

``config.json`` of the result records ``tuneforge_vocab_extension`` (the original vocabulary size),
so LoRA can train exactly the new rows later (:mod:`tuneforge.methods.lora`).
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence, Union

import torch

from ..artifacts.paths import atomic_dir
from ..errors import ConfigError, TuneforgeError
from ..runtime.models import load_masked_lm, load_tokenizer
from .encode import long_inputs_expected
from .readers import read_documents

REPORT_FILE = "vocab_extension.json"
CONFIG_KEY = "tuneforge_vocab_extension"
VOCAB_DIR = "vocab"  # the extended base model inside a run folder (a ``vocab:`` block)

TokenizerInput = Union[str, Sequence[str]]  # raw text, or pre-split words (CoNLL)


# ---------------------------------------------------------------------------------------------
# Measuring a tokenizer on text


@dataclass
class TokenStats:
    """How a tokenizer reads some text: ``[UNK]`` rate (share of tokens) and pieces per character."""

    texts: int = 0
    characters: int = 0  # non-space characters
    tokens: int = 0
    unk: int = 0

    @property
    def unk_rate(self) -> float:
        return self.unk / self.tokens if self.tokens else 0.0

    @property
    def pieces_per_char(self) -> float:
        return self.tokens / self.characters if self.characters else 0.0

    def as_dict(self) -> dict:
        return dict(asdict(self), unk_rate=round(self.unk_rate, 6), pieces_per_char=round(self.pieces_per_char, 6))


def token_stats(tokenizer, inputs: Sequence[TokenizerInput], batch_size: int = 2000) -> TokenStats:
    """Tokenise ``inputs`` (texts, or word lists as NER files hold them) without special tokens and count."""
    stats = TokenStats(texts=len(inputs))
    unk_id = tokenizer.unk_token_id
    for start in range(0, len(inputs), batch_size):
        chunk = list(inputs[start:start + batch_size])
        split = bool(chunk) and not isinstance(chunk[0], str)
        if split:
            chunk = [list(words) for words in chunk]
        with long_inputs_expected():  # only counted
            ids = tokenizer(chunk, is_split_into_words=split, add_special_tokens=False)["input_ids"]
        for item, row in zip(chunk, ids):
            text = "".join(item) if split else item
            stats.characters += sum(1 for ch in text if not ch.isspace())
            stats.tokens += len(row)
            stats.unk += sum(1 for i in row if i == unk_id)
    return stats


def _as_text(item: TokenizerInput) -> str:
    return item if isinstance(item, str) else " ".join(item)


# ---------------------------------------------------------------------------------------------
# Candidates


@dataclass
class Candidate:
    """A vocabulary entry the corpus asks for: ``entry`` as the WordPiece vocabulary spells it."""

    entry: str
    count: int  # occurrences in the corpus that need it
    kind: str  # "character" (word-initial or standalone), "continuation" (##c) or "word"
    example: str  # a word of the corpus that needs it


def wordpiece_model(tokenizer):
    """The tokenizer's WordPiece model, or a clear error for other kinds (BPE, Unigram)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = getattr(backend, "model", None)
    if model is None or type(model).__name__ != "WordPiece":
        kind = type(model).__name__ if model is not None else type(tokenizer).__name__
        raise TuneforgeError(
            f"vocabulary extension supports WordPiece tokenizers (BERT, MiniLM, ELECTRA...); this one is {kind}"
        )
    return model


def _pretokenized_words(tokenizer, texts: Sequence[TokenizerInput]) -> Counter:
    """How often each word occurs after the tokenizer's own normaliser and pre-tokeniser."""
    backend = tokenizer.backend_tokenizer
    normalizer, pre = backend.normalizer, backend.pre_tokenizer
    counts: Counter = Counter()
    for item in texts:
        text = _as_text(item)
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        words = pre.pre_tokenize_str(text) if pre is not None else [(w, None) for w in text.split()]
        counts.update(w for w, _ in words)
    return counts


def count_candidates(tokenizer, texts: Sequence[TokenizerInput], kinds: str = "both", min_pieces: int = 3,
                     max_word_chars: int = 24) -> list[Candidate]:
    """Every entry the corpus asks for, most frequent first (ties by entry)."""
    model = wordpiece_model(tokenizer)
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False)
    prefix, unk = model.continuing_subword_prefix, model.unk_token
    found: dict[str, Candidate] = {}

    def add(entry: str, count: int, kind: str, example: str) -> None:
        if entry in found:
            found[entry].count += count
        else:
            found[entry] = Candidate(entry, count, kind, example)

    for word, count in _pretokenized_words(tokenizer, texts).items():
        if len(word) > model.max_input_chars_per_word:
            continue  # WordPiece reads any word this long as [UNK]; no entry would change that
        pieces = [t.value for t in model.tokenize(word)]
        if unk in pieces and kinds in ("characters", "both"):
            for i, ch in enumerate(word):
                entry = ch if i == 0 else prefix + ch
                if entry not in vocab and not unicodedata.category(ch).startswith("C"):
                    add(entry, count, "character" if i == 0 else "continuation", word)
        elif unk not in pieces and len(pieces) >= min_pieces and len(word) <= max_word_chars \
                and kinds in ("words", "both"):
            add(word, count, "word", word)
    return sorted(found.values(), key=lambda c: (-c.count, c.entry))


# ---------------------------------------------------------------------------------------------
# Growing the tokenizer and the model


def add_to_wordpiece(tokenizer, entries: Sequence[str], first_id: int | None = None) -> list[int]:
    """Append ``entries`` to the WordPiece vocabulary (in place); returns their new ids.

    The ids start at ``first_id`` (default: after every id in use, special "added tokens" included),
    so old ids never move.
    """
    from tokenizers.models import WordPiece

    model = wordpiece_model(tokenizer)
    backend = tokenizer.backend_tokenizer
    vocab = backend.get_vocab(with_added_tokens=False)
    next_id = max(max(backend.get_vocab(with_added_tokens=True).values()) + 1, first_id or 0)
    ids = []
    for entry in entries:
        if entry in vocab:
            raise TuneforgeError(f"vocabulary extension: {entry!r} is already in the vocabulary")
        vocab[entry] = next_id
        ids.append(next_id)
        next_id += 1
    backend.model = WordPiece(vocab=vocab, unk_token=model.unk_token,
                              continuing_subword_prefix=model.continuing_subword_prefix,
                              max_input_chars_per_word=model.max_input_chars_per_word)
    return ids


def verify_round_trip(tokenizer, candidates: Sequence[Candidate], ids: Sequence[int]) -> None:
    """Every added character or word must tokenise, through the whole tokenizer (normaliser,
    pre-tokeniser, WordPiece), to exactly its new id; a ``##`` entry (only ever read inside a word)
    must map to its id."""
    failures = []
    backend = tokenizer.backend_tokenizer
    for cand, new_id in zip(candidates, ids):
        if cand.kind == "continuation":
            ok = backend.token_to_id(cand.entry) == new_id
        else:
            ok = tokenizer(cand.entry, add_special_tokens=False)["input_ids"] == [new_id]
        if not ok:
            failures.append(cand.entry)
    if failures:
        raise TuneforgeError(
            f"vocabulary extension: {len(failures)} new entries do not tokenise as one token "
            f"(e.g. {', '.join(repr(f) for f in failures[:5])}); the tokenizer's normaliser changes them"
        )


def _new_row_sources(old_tokenizer, entries: Sequence[str]) -> list[list[int]]:
    """For each new entry, the old ids its text tokenised to, without [UNK] (empty: fall back to the mean)."""
    prefix = wordpiece_model(old_tokenizer).continuing_subword_prefix
    texts = [e[len(prefix):] if e.startswith(prefix) and len(e) > len(prefix) else e for e in entries]
    ids = old_tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [[i for i in row if i != old_tokenizer.unk_token_id] for row in ids]


@torch.no_grad()
def initialise_rows(weight: torch.Tensor, n_old: int, ids: Sequence[int], sources: Sequence[Sequence[int]],
                    init: str, noise_std: float, generator: torch.Generator) -> dict:
    """Fill the rows ``ids`` of an embedding matrix whose first ``n_old`` rows are the trained ones;
    returns how many rows came from pieces / the mean."""
    old = weight[:n_old]
    mean = old.mean(dim=0)
    counts = {"from_pieces": 0, "from_mean": 0}
    for row_id, pieces in zip(ids, sources):
        if init == "pieces" and pieces:
            row = old[list(pieces)].mean(dim=0)
            counts["from_pieces"] += 1
        else:
            row = mean
            counts["from_mean"] += 1
        noise = torch.randn(row.shape, generator=generator) * noise_std if noise_std else 0.0
        weight[row_id] = (row + noise).to(weight.dtype)
    return counts


@dataclass
class VocabResult:
    out: Path
    added: list[Candidate]
    candidates: int
    candidate_occurrences: int
    stats: dict = field(default_factory=dict)  # name -> {"before": ..., "after": ...}
    init_counts: dict = field(default_factory=dict)

    def describe(self) -> str:
        kinds = Counter(c.kind for c in self.added)
        covered = sum(c.count for c in self.added)
        lines = [
            f"added {len(self.added):,} of {self.candidates:,} candidate entries ("
            + ", ".join(f"{n:,} {k}{'s' if n != 1 else ''}" for k, n in sorted(kinds.items()))
            + f"); they cover {covered / max(self.candidate_occurrences, 1):.1%} of the candidates' occurrences",
            f"new embedding rows: {self.init_counts.get('from_pieces', 0):,} from the old pieces' mean, "
            f"{self.init_counts.get('from_mean', 0):,} from the mean embedding",
            format_stats_table(self.stats),
            f"wrote {self.out}",
        ]
        return "\n".join(lines)


def format_stats_table(stats: dict) -> str:
    """``[UNK]`` rate and pieces per character, before -> after, one line per text set."""
    width = max([len(name) for name in stats] + [8])
    rows = [f"{'':<{width}}  {'texts':>8}  {'[UNK] rate':>20}  {'pieces per char':>17}"]
    for name, pair in stats.items():
        before, after = pair["before"], pair.get("after")
        unk = f"{before['unk_rate']:.2%}" + (f" -> {after['unk_rate']:.2%}" if after else "")
        ppc = f"{before['pieces_per_char']:.3f}" + (f" -> {after['pieces_per_char']:.3f}" if after else "")
        rows.append(f"{name:<{width}}  {before['texts']:>8,}  {unk:>20}  {ppc:>17}")
    return "\n".join(rows)


def extend_vocabulary(
    base: str,
    corpus: Sequence[TokenizerInput],
    add: int,
    out: str | Path,
    *,
    reports: dict[str, Sequence[TokenizerInput]] | None = None,
    kinds: str = "both",
    min_count: int = 2,
    min_pieces: int = 3,
    init: str = "pieces",
    noise_std: float = 0.01,
    seed: int = 42,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> VocabResult:
    """Extend ``base``'s tokenizer with the ``add`` entries ``corpus`` needs most; write tokenizer, resized
    masked-LM model and ``vocab_extension.json`` to ``out`` (atomically). ``reports`` names more text
    sets (labelled files, a run's splits) to measure before and after."""
    if init not in ("pieces", "mean"):
        raise ConfigError(f"vocab.init: {init!r}; choose pieces or mean")
    old_tokenizer = load_tokenizer(base, revision, trust_remote_code)
    tokenizer = load_tokenizer(base, revision, trust_remote_code)
    wordpiece_model(tokenizer)
    sets = {"corpus": corpus, **(reports or {})}
    stats = {name: {"before": token_stats(old_tokenizer, texts).as_dict()} for name, texts in sets.items()}

    candidates = [c for c in count_candidates(tokenizer, corpus, kinds, min_pieces) if c.count >= min_count]
    chosen = candidates[:add]
    model = load_masked_lm(base, revision, trust_remote_code, announce_new_head=True)
    n_old = model.get_input_embeddings().weight.shape[0]  # may exceed the tokenizer (padded matrices)
    ids = add_to_wordpiece(tokenizer, [c.entry for c in chosen], first_id=n_old)
    verify_round_trip(tokenizer, chosen, ids)
    for name, texts in sets.items():
        stats[name]["after"] = token_stats(tokenizer, texts).as_dict()

    model.resize_token_embeddings(ids[-1] + 1 if ids else n_old, mean_resizing=False)
    generator = torch.Generator().manual_seed(seed)
    sources = _new_row_sources(old_tokenizer, [c.entry for c in chosen])
    inp = model.get_input_embeddings().weight
    init_counts = initialise_rows(inp.data, n_old, ids, sources, init, noise_std, generator)
    output = model.get_output_embeddings()
    if output is not None and output.weight is not inp:  # untied output matrix: same rule, its own rows
        initialise_rows(output.weight.data, n_old, ids, sources, init, noise_std, generator)
    bias = getattr(output, "bias", None) if output is not None else None
    if bias is not None and ids and bias.shape[0] > ids[-1]:
        with torch.no_grad():
            bias[ids[0]:] = bias[:n_old].mean()
    previous = getattr(model.config, CONFIG_KEY, None) or {}
    original = previous.get("base_vocab_size", n_old)
    rows = model.get_input_embeddings().weight.shape[0]
    setattr(model.config, CONFIG_KEY, {"base_vocab_size": original, "added": rows - original})

    result = VocabResult(
        out=Path(out), added=chosen, candidates=len(candidates),
        candidate_occurrences=sum(c.count for c in candidates), stats=stats, init_counts=init_counts,
    )
    record = {
        "base_model": base, "base_vocab_size": n_old, "vocab_size": rows,
        "settings": {"add": add, "kinds": kinds, "min_count": min_count, "min_pieces": min_pieces, "init": init,
                     "noise_std": noise_std, "seed": seed},
        "candidates": len(candidates), "candidate_occurrences": result.candidate_occurrences,
        "init": init_counts, "stats": stats,
        "added": [dict(asdict(c), id=i) for c, i in zip(chosen, ids)],
    }
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / REPORT_FILE).write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    finally:
        hf_logging.enable_progress_bar()
    return result


def read_report(folder: str | Path) -> dict | None:
    path = Path(folder) / REPORT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


# ---------------------------------------------------------------------------------------------
# A config's ``vocab:`` block


def extend_for_run(cfg, task, data, run_dir: Path):
    """Run the config's ``vocab:`` block into ``RUN/vocab`` (reused on ``--resume``); returns the config
    with ``model.name_or_path`` pointing at the extended model, and notes the report in ``data.report``."""
    v = cfg.vocab
    folder = Path(run_dir) / VOCAB_DIR
    report = read_report(folder)
    if report is None:
        if v.corpus:
            corpus: Sequence[TokenizerInput] = [d.text for d in read_documents(v.corpus)]
        else:
            corpus = task.tokenizer_inputs(data.splits["train"])
        splits = {name: task.tokenizer_inputs(ex) for name, ex in data.splits.items() if ex}
        if not v.corpus:
            splits.pop("train", None)  # it is the corpus
        m = cfg.model
        result = extend_vocabulary(
            m.name_or_path, corpus, v.add, folder, reports=splits, kinds=v.kinds, min_count=v.min_count,
            min_pieces=v.min_pieces, init=v.init, noise_std=v.noise_std, seed=v.seed, revision=m.revision,
            trust_remote_code=m.trust_remote_code,
        )
        print("vocabulary: " + result.describe().replace("\n", "\n  "))
        report = read_report(folder)
    else:
        print(f"vocabulary: reusing the extended model in {folder}")
    data.report["vocab"] = {"folder": str(folder), "added": len(report["added"]),
                            "base_vocab_size": report["base_vocab_size"], "stats": report["stats"]}
    model = cfg.model.model_copy(update={"name_or_path": str(folder.resolve()), "revision": None})
    return cfg.model_copy(update={"model": model})
