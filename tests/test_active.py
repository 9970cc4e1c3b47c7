"""Active learning: each strategy picks what it should on constructed probability tables; suggest writes
pre-annotated Label Studio tasks; simulate writes one row per round and strategy."""

import csv
import json

import numpy as np
import pytest

from tuneforge.workflows.active import select, simulate, suggest, uncertainty_scores, unit_uncertainty, savings
from tuneforge.tasks.predictor import Units

from conftest import NER_SENTENCES, tiny_config, write_conll


def table(*rows):
    return Units(names=[f"w{i}" for i in range(len(rows))], classes=["O", "B-X", "I-X"],
                 probabilities=np.array(rows, dtype=float))


def test_unit_uncertainty_values():
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.6, 0.3, 0.1]])
    np.testing.assert_allclose(unit_uncertainty(p, "entropy"),
                               [0.0, np.log(2), -(0.6 * np.log(0.6) + 0.3 * np.log(0.3) + 0.1 * np.log(0.1))])
    np.testing.assert_allclose(unit_uncertainty(p, "least-confidence"), [0.0, 0.5, 0.4])
    np.testing.assert_allclose(unit_uncertainty(p, "margin"), [0.0, 1.0, 0.7])


def test_strategies_pick_what_they_should():
    # Example 0: sure. Example 1: two-way tie on one word (small margin, moderate entropy).
    # Example 2: spread over three classes with a clear leader (high entropy, larger margin).
    units = [
        table([0.98, 0.01, 0.01], [0.97, 0.02, 0.01]),
        table([0.98, 0.01, 0.01], [0.50, 0.49, 0.01]),
        table([0.98, 0.01, 0.01], [0.40, 0.30, 0.30]),
    ]
    assert select(uncertainty_scores(units, "margin"), 1) == [1]
    assert select(uncertainty_scores(units, "entropy"), 1) == [2]
    assert select(uncertainty_scores(units, "least-confidence"), 1) == [2]  # 1 - 0.40 > 1 - 0.50
    assert select(uncertainty_scores(units, "entropy"), 3) == [2, 1, 0]
    # random: a seeded permutation, the same for the same seed, touching every example
    first = select(uncertainty_scores(units, "random", seed=3), 3)
    assert sorted(first) == [0, 1, 2] and first == select(uncertainty_scores(units, "random", seed=3), 3)


def test_aggregates_and_empty_examples():
    long_mildly_unsure = table(*([[0.9, 0.05, 0.05]] * 8))
    short_very_unsure = table([0.34, 0.33, 0.33])
    empty = Units(names=[], classes=["O"], probabilities=np.zeros((0, 3)))
    units = [long_mildly_unsure, short_very_unsure, empty]
    assert select(uncertainty_scores(units, "least-confidence", "sum"), 1) == [0]  # 8 x 0.1 > 0.66
    assert select(uncertainty_scores(units, "least-confidence", "max"), 1) == [1]
    assert select(uncertainty_scores(units, "least-confidence", "mean"), 3) == [1, 0, 2]


def test_diversity_takes_one_per_cluster():
    # The four best candidates are near-copies of one text; diversity takes the best of them and then
    # the best of the other group, where plain top-k would take two copies.
    texts = ["the cat sat on the mat"] * 4 + ["stock prices fell sharply today"] * 4 + ["zzz"] * 2
    scores = [0.99, 0.98, 0.97, 0.96, 0.50, 0.49, 0.48, 0.47, 0.0, 0.0]
    assert select(scores, 2) == [0, 1]
    assert select(scores, 2, texts, diversity=True, seed=0) == [0, 4]


def test_savings_interpolates():
    rows = [
        {"strategy": "random", "labelled": 100, "test_mean": 0.2},
        {"strategy": "random", "labelled": 200, "test_mean": 0.4},
        {"strategy": "entropy", "labelled": 100, "test_mean": 0.3},
        {"strategy": "entropy", "labelled": 200, "test_mean": 0.5},
    ]
    by_base = {s["baseline_labelled"]: s for s in savings(rows)}
    assert by_base[100]["labelled_needed"] == 100 and by_base[100]["saved"] == 0.0  # already above at the start
    assert by_base[200]["labelled_needed"] == pytest.approx(150.0) and by_base[200]["saved"] == pytest.approx(0.25)


@pytest.fixture()
def ner_pool(tmp_path):
    """12 training sentences (the six twice), dev/test the six."""
    write_conll(tmp_path / "train.conll", NER_SENTENCES * 2)
    write_conll(tmp_path / "dev.conll")
    write_conll(tmp_path / "test.conll")
    return tmp_path


def test_simulate_one_row_per_round_and_strategy(tiny_bert, ner_pool, tmp_path, capsys):
    config = tiny_config(tiny_bert, ner_pool, tmp_path / "unused", epochs=2)
    out = tmp_path / "al"
    result = simulate(config, ["entropy", "random"], rounds=3, batch=2, initial=4, seeds=2, out=out)
    with open(out / "al.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["strategy"], r["round"], r["labelled"], r["seeds"]) for r in rows] == [
        (s, str(r), str(4 + 2 * r), "2") for s in ("entropy", "random") for r in range(3)]
    with open(out / "al_runs.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2 * 3 * 2
    # round 0 is shared by the strategies; later rounds add what each strategy picked, never twice
    for seed in (7, 8):  # training.seed of tiny_config, +1
        assert (out / f"start-seed{seed}" / "round00" / "metrics.json").exists()
        for strategy in ("entropy", "random"):
            picked = [json.loads((out / f"{strategy}-seed{seed}" / f"picked-after-round{r:02d}.json").read_text())["picked"]
                      for r in range(2)]
            assert all(len(p) == 2 for p in picked) and len(set(picked[0] + picked[1])) == 4
            train = (out / f"{strategy}-seed{seed}" / "data" / "round02.jsonl").read_text().splitlines()
            assert len(train) == 8
    assert (out / "al.png").read_bytes()[:4] == b"\x89PNG"
    assert "| labelled | entropy | random |" in (out / "al.md").read_text()
    # a second call reads every finished round back instead of training again
    again = simulate(config, ["entropy", "random"], rounds=3, batch=2, initial=4, seeds=2, out=out)
    assert again.runs == result.runs


def test_suggest_writes_pre_annotated_tasks(tiny_bert, ner_files, tmp_path):
    import tuneforge

    run = tuneforge.train(tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=30)).run_dir
    pool = tmp_path / "pool.txt"
    pool.write_text("mary visited paris today\nthe the the\njohn smith lives in new york\ngoogle and apple\n")
    tasks, picked, scores = suggest(run, pool, n=2, strategy="entropy")
    assert len(tasks) == 2 and len(scores) == 4
    assert picked == sorted(range(4), key=lambda i: -scores[i])[:2]
    for task, index in zip(tasks, picked):
        text = pool.read_text().splitlines()[index]
        assert task["data"]["text"] == text and task["meta"]["pool_index"] == index
        prediction = task["predictions"][0]
        assert 0 <= prediction["score"] <= 1 and prediction["model_version"] == "tuneforge:run"
        for item in prediction["result"]:
            value = item["value"]
            assert text[value["start"]:value["end"]] == value["text"] and 0 <= item["score"] <= 1


def test_suggest_takes_a_label_studio_task_list_as_pool(tiny_bert, ner_files, tmp_path, capsys):
    """Tasks imported into Label Studio and not yet annotated (just "data") are a pool; so is a doccano file."""
    import tuneforge
    from tuneforge.cli import main
    from tuneforge.data.readers import read_text_file, read_token_file

    run = tuneforge.train(tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=1)).run_dir
    texts = ["mary visited paris today", "google and apple", "john smith lives in new york"]
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps([
        {"id": 11, "data": {"text": texts[0]}},
        {"id": 12, "data": {"text": texts[1]}, "annotations": []},
        {"id": 13, "data": {"text": texts[2], "word_offsets": [[0, 4], [5, 10], [11, 16], [17, 19], [20, 28]]},
         "annotations": [{"result": [{"type": "labels", "value": {"start": 0, "end": 4, "labels": ["PER"]}}]}]},
    ]))
    assert [(ex.words, ex.tags) for ex in read_token_file(pool, tag_column=None)] == [
        (["mary", "visited", "paris", "today"], None), (["google", "and", "apple"], None),
        (["john", "smith", "lives", "in", "new york"], None)]  # carried word offsets are kept
    out = tmp_path / "next.json"
    assert main(["label", "suggest", str(run), str(pool), "--n", "2", "--strategy", "entropy", "--out", str(out)]) == 0
    tasks = json.loads(out.read_text())
    assert len(tasks) == 2 and "(of 3 in the pool" in capsys.readouterr().err
    for task in tasks:
        assert task["data"]["text"] == texts[task["meta"]["pool_index"]]
    # the same list read as a text classifier's pool: every text, no labels
    assert [(ex.text, ex.labels) for ex in read_text_file(pool, label_column=None)] == [(t, None) for t in texts]
    # a doccano file as a pool: its labels are not needed (and not read)
    doccano = tmp_path / "pool.jsonl"
    doccano.write_text(json.dumps({"text": texts[0], "label": []}) + "\n" + json.dumps({"text": texts[1]}) + "\n")
    assert [ex.words for ex in read_token_file(doccano, "doccano", tag_column=None)] == [texts[0].split(), texts[1].split()]
    assert [ex.text for ex in read_text_file(doccano, "doccano", label_column=None)] == texts[:2]
    # labelled reading still skips (and counts) the unannotated tasks
    assert [ex.words[0] for ex in read_token_file(pool)] == ["john"]
    assert "2 task(s) without an annotation skipped" in capsys.readouterr().err
