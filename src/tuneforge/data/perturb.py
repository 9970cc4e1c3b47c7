"""Character-level noise for robustness checks: deterministic by seed, word counts and labels kept.

Noisy text is what a tagger or classifier meets in use (tweets, user queries): typos, odd casing,
dropped or swapped letters, look-alike characters. Each perturbation changes one word in place and
never splits, joins, empties or adds a word, so a token-classification example keeps exactly one
tag per word (entity spans stay where they were) and a text keeps its whitespace layout.

======== ===================================================================== ======================
name     what happens to a chosen word                                          example
======== ===================================================================== ======================
typo     one letter becomes a neighbouring key on a QWERTY keyboard (case kept) ``london -> lobdon``
case     every cased letter flips case with probability 1/2, at least one does ``London -> lONdoN``
drop     one character is deleted (words of two or more characters)            ``London -> Lndon``
swap     two neighbouring, different characters trade places                   ``London -> Lodnon``
homoglyph one Latin letter becomes a look-alike from Cyrillic or Greek         ``London -> Lоndon``
charswap one ASCII letter becomes a different random letter (case kept)        ``London -> Lqndon``
======== ===================================================================== ======================

Which words: over a whole list of examples, ``k = round(rate x words)`` words are drawn without
replacement, uniformly among the words the perturbation can change (``typo`` needs an ASCII
letter, ``case`` a cased letter, ``drop`` two characters, ``swap`` two different neighbours,
``homoglyph`` a letter with a look-alike, ``charswap`` an ASCII letter); when fewer words can
change, all of them do and :class:`PerturbStats` says so. Every drawn word changes. The draws come
from ``random.Random("<seed>:<name>")``, so the same file, name, rate and seed always give the same
noisy copy, on any machine.

A model with an uncased vocabulary (the bundled MiniLM) lowercases its input, so ``case`` noise
cannot reach it: its drop is zero by construction, which the robustness table shows as it is.

Hand-written rather than taken from nlpaug or TextAttack: their augmenters re-tokenize and re-join
the text (word counts and tag alignment are not kept), draw from the global RNG, and pick a share
per sentence; the tables below are small and the rules above are the whole specification.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import TuneforgeError

# QWERTY neighbours (same row and the rows above and below), lowercase
_KEYBOARD = {
    "q": "wa", "w": "qeas", "e": "wrsd", "r": "etdf", "t": "ryfg", "y": "tugh", "u": "yihj", "i": "uojk",
    "o": "ipkl", "p": "ol", "a": "qwsz", "s": "weadzx", "d": "erfscx", "f": "rtdgcv", "g": "tyfhvb",
    "h": "yugjbn", "j": "uihknm", "k": "iojlm", "l": "opk", "z": "asx", "x": "zsdc", "c": "xdfv",
    "v": "cfgb", "b": "vghn", "n": "bhjm", "m": "njk",
}
# Latin letters and look-alikes from other scripts (Unicode's confusables), one character each
_HOMOGLYPHS = {
    "a": "а", "c": "с", "d": "ԁ", "e": "е", "h": "һ", "i": "і", "j": "ј", "l": "ӏ", "o": "оο", "p": "р",
    "q": "ԛ", "s": "ѕ", "w": "ԝ", "x": "х", "y": "у",
    "A": "АΑ", "B": "ВΒ", "C": "С", "E": "ЕΕ", "H": "НΗ", "I": "ІΙ", "J": "Ј", "K": "КΚ", "M": "МΜ",
    "N": "Ν", "O": "ОΟ", "P": "РΡ", "S": "Ѕ", "T": "ТΤ", "X": "ХΧ", "Y": "Υ", "Z": "Ζ",
}
_LETTERS = set(string.ascii_letters)


def _keep_case(new: str, old: str) -> str:
    return new.upper() if old.isupper() else new


def _positions(word: str, test: Callable[[str], bool]) -> list[int]:
    return [i for i, ch in enumerate(word) if test(ch)]


def _typo_positions(word: str) -> list[int]:
    return _positions(word, lambda ch: ch.lower() in _KEYBOARD and ch in _LETTERS)


def _typo(word: str, rng: random.Random) -> str:
    i = rng.choice(_typo_positions(word))
    return word[:i] + _keep_case(rng.choice(_KEYBOARD[word[i].lower()]), word[i]) + word[i + 1:]


def _cased(ch: str) -> bool:
    return ch.swapcase() != ch


def _case(word: str, rng: random.Random) -> str:
    cased = _positions(word, _cased)
    forced = rng.choice(cased)
    return "".join(ch.swapcase() if i == forced or (i in cased and rng.random() < 0.5) else ch
                   for i, ch in enumerate(word))


def _drop(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word))
    return word[:i] + word[i + 1:]


def _swap_positions(word: str) -> list[int]:
    return [i for i in range(len(word) - 1) if word[i] != word[i + 1]]


def _swap(word: str, rng: random.Random) -> str:
    i = rng.choice(_swap_positions(word))
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def _homoglyph(word: str, rng: random.Random) -> str:
    i = rng.choice(_positions(word, lambda ch: ch in _HOMOGLYPHS))
    return word[:i] + rng.choice(_HOMOGLYPHS[word[i]]) + word[i + 1:]


def _charswap(word: str, rng: random.Random) -> str:
    i = rng.choice(_positions(word, lambda ch: ch in _LETTERS))
    new = rng.choice([c for c in string.ascii_lowercase if c != word[i].lower()])
    return word[:i] + _keep_case(new, word[i]) + word[i + 1:]


@dataclass(frozen=True)
class Perturbation:
    name: str
    description: str
    applies: Callable[[str], bool]  # can this word be changed?
    apply: Callable[[str, random.Random], str]  # a different, non-empty word without whitespace


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p for p in (
        Perturbation("typo", "one letter -> a neighbouring QWERTY key", lambda w: bool(_typo_positions(w)), _typo),
        Perturbation("case", "cased letters flip case (p 1/2, at least one)", lambda w: any(map(_cased, w)), _case),
        Perturbation("drop", "one character deleted", lambda w: len(w) >= 2, _drop),
        Perturbation("swap", "two neighbouring characters swapped", lambda w: bool(_swap_positions(w)), _swap),
        Perturbation("homoglyph", "one letter -> a Cyrillic/Greek look-alike",
                     lambda w: any(ch in _HOMOGLYPHS for ch in w), _homoglyph),
        Perturbation("charswap", "one letter -> a random other letter",
                     lambda w: any(ch in _LETTERS for ch in w), _charswap),
    )
}


def parse_perturbations(spec: str | Sequence[str]) -> list[str]:
    """``"typo,case"`` (or a list; ``all`` for every one) -> checked names, in the order given."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if names == ["all"]:
        return list(PERTURBATIONS)
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown or not names:
        raise TuneforgeError(f"--perturb: unknown {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(PERTURBATIONS)} or all")
    if len(set(names)) != len(names):
        raise TuneforgeError(f"--perturb: {', '.join(names)} names a perturbation twice")
    return names


def check_rate(rate: float) -> float:
    if not 0 <= rate <= 1:
        raise TuneforgeError(f"--rate {rate}: give the share of words to change, between 0 and 1")
    return rate


@dataclass
class PerturbStats:
    """How much of a list of examples one perturbation changed."""

    name: str
    rate: float
    seed: int
    words: int  # all words
    eligible: int  # words this perturbation can change
    changed: int  # words it changed

    @property
    def share(self) -> float:
        return self.changed / self.words if self.words else 0.0

    @property
    def capped(self) -> bool:
        """Fewer words could change than the rate asked for."""
        return self.changed < round(self.rate * self.words)

    def describe(self) -> str:
        text = f"{self.name}: {self.changed:,} of {self.words:,} words changed ({self.share:.1%})"
        if self.capped:
            text += f"; only {self.eligible:,} could be (asked for {self.rate:.0%})"
        return text

    def as_dict(self) -> dict:
        return {"words": self.words, "eligible": self.eligible, "changed": self.changed, "share": self.share}


def perturb_word_lists(word_lists: Sequence[Sequence[str]], name: str, rate: float,
                       seed: int = 0) -> tuple[list[list[str]], PerturbStats]:
    """A noisy copy of ``word_lists`` (same shapes) and what changed; see the module docstring."""
    perturbation = PERTURBATIONS[parse_perturbations([name])[0]]
    check_rate(rate)
    rng = random.Random(f"{seed}:{name}")
    out = [list(words) for words in word_lists]
    eligible = [(i, j) for i, words in enumerate(out) for j, word in enumerate(words) if perturbation.applies(word)]
    n_words = sum(len(words) for words in out)
    k = min(round(rate * n_words), len(eligible))
    for pick in sorted(rng.sample(range(len(eligible)), k)):
        i, j = eligible[pick]
        out[i][j] = perturbation.apply(out[i][j], rng)
    return out, PerturbStats(name, rate, seed, n_words, len(eligible), k)


def perturb_examples(examples: Sequence, name: str, rate: float, seed: int, task) -> tuple[list, PerturbStats]:
    """Noisy copies of labelled examples of ``task`` (its ``example_words`` / ``with_words`` hooks say
    what a word is for that task); labels are untouched."""
    noisy, stats = perturb_word_lists([task.example_words(ex) for ex in examples], name, rate, seed)
    return [task.with_words(ex, words) for ex, words in zip(examples, noisy)], stats
