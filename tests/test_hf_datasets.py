"""Data where users keep it: Parquet and Arrow files and hf: sources, read through the real `datasets` library
(datasets built in the test: Parquet files, a folder of them, save_to_disk folders); the Hub path offline."""

import json
import os
import subprocess
import sys

import pytest

datasets = pytest.importorskip("datasets")

from tuneforge.cli import main
from tuneforge.data.readers import collect_bad_records, read_documents, read_jsonl, read_text_file, read_token_file
from tuneforge.errors import ConfigError, DataError

from conftest import NER_SENTENCES, tiny_config

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"]
NER_FEATURES = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=TAGS))})


def ner_dataset(sentences=NER_SENTENCES, features=NER_FEATURES):
    """The conftest sentences with ClassLabel tags, as the Hub's NER sets (conll2003, wnut_17) store them."""
    return datasets.Dataset.from_dict(
        {"tokens": [words.split() for words, _ in sentences],
         "ner_tags": [[TAGS.index(t) for t in tags.split()] for _, tags in sentences]}, features=features)


def words_and_tags(examples):
    return [(ex.words, ex.tags) for ex in examples]


EXPECTED = [(words.split(), tags.split()) for words, tags in NER_SENTENCES]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Token classification


def test_parquet_and_arrow_files_with_classlabel_tags(tmp_path):
    ner_dataset().to_parquet(str(tmp_path / "train.parquet"))
    examples = read_token_file(tmp_path / "train.parquet")
    assert words_and_tags(examples) == EXPECTED  # integers read as the ClassLabel's names
    assert (examples[1].source, examples[1].line, examples[1].tag_lines) == (str(tmp_path / "train.parquet"), 2, [2] * 4)
    ner_dataset().save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))  # the Arrow stream save_to_disk writes
    assert words_and_tags(read_token_file(arrow)) == EXPECTED
    # unlabelled (predict, a pool): words only, the tags column is not read
    assert [(ex.words, ex.tags) for ex in read_token_file(arrow, tag_column=None)][0] == (EXPECTED[0][0], None)


def test_string_tags_in_named_columns_are_normalised(tmp_path):
    """Other column names through data.tokens_column / tags_column; a BIOES set normalised like any file."""
    table = datasets.Dataset.from_dict({"id": [0, 1], "words_of": [["Mary", "Ann", "Lee"], ["in", "Paris"]],
                                        "bioes": [["B-PER", "I-PER", "E-PER"], ["O", "S-LOC"]]})
    table.to_parquet(str(tmp_path / "t.parquet"))
    with pytest.raises(DataError, match=r"t\.parquet: no column 'tokens' or 'words' \(the words of each row: a list "
                                        r"of strings; columns: id, words_of, bioes\); set data.tokens_column"):
        read_token_file(tmp_path / "t.parquet")
    from tuneforge.config import config_from_dict
    from tuneforge.tasks import make_task

    cfg = config_from_dict({"model": {"name_or_path": "x"}, "data": {
        "train": str(tmp_path / "t.parquet"), "tokens_column": "words_of", "tags_column": "bioes"}})
    task = make_task(cfg)
    splits, report = task.read_splits()
    task.normalise(splits, report)
    assert words_and_tags(splits["train"]) == [(["Mary", "Ann", "Lee"], ["B-PER", "I-PER", "I-PER"]),
                                               (["in", "Paris"], ["O", "B-LOC"])]
    assert report["train_scheme"] == "tags read as BIOES; 2 tag(s) rewritten to IOB2"
    # the same keys name a JSONL file's keys
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(json.dumps({"words_of": ["Bob"], "bioes": ["S-PER"]}) + "\n")
    assert words_and_tags(read_jsonl(jsonl, tokens_key="words_of", tags_key="bioes")) == [(["Bob"], ["S-PER"])]
    with pytest.raises(DataError, match=r't\.jsonl:1: missing "bioes2"'):
        read_jsonl(jsonl, tokens_key="words_of", tags_key="bioes2")


def test_integer_tags_without_names_stop_with_one_line(tmp_path, capsys):
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.Value("int64"))})
    ner_dataset(features=features).to_parquet(str(tmp_path / "ints.parquet"))
    with pytest.raises(DataError) as err:
        read_token_file(tmp_path / "ints.parquet")
    assert str(err.value) == (
        f"{tmp_path / 'ints.parquet'}: column 'ner_tags' holds integer tags, and the dataset's features give no names "
        "for them (no ClassLabel); store tag strings, or cast the column to Sequence(ClassLabel(names=[...])) before "
        "saving")
    assert main(["data", "check", str(tmp_path / "ints.parquet"), "--out", str(tmp_path / "check")]) == 2
    assert "holds integer tags" in one_line(capsys)


def test_bad_rows_name_the_row_and_data_check_counts_them(tmp_path):
    rows = {"tokens": [["John", "ran"], ["Mary", "left"], [], ["Bob"]],
            "ner_tags": [["B-PER", "O"], ["B-PER"], [], ["B-PER"]]}
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "bad.parquet"))
    path = str(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=f"^{path}:2: 2 words but 1 tags; give exactly one tag per word$"):
        read_token_file(path)
    with collect_bad_records() as bad:
        examples = read_token_file(path)
    assert [ex.words for ex in examples] == [["John", "ran"], ["Bob"]]
    assert [str(e) for e in bad] == [f"{path}:2: 2 words but 1 tags; give exactly one tag per word",
                                     f"{path}:3: no words in column 'tokens'; drop the row or fill in the words"]
    # ClassLabel's -1 (no label) is a bad row too, never a silent O
    missing = datasets.Dataset.from_dict({"tokens": [["John"]], "ner_tags": [[-1]]}, features=NER_FEATURES)
    missing.to_parquet(str(tmp_path / "missing.parquet"))
    with pytest.raises(DataError, match=r"missing\.parquet:1: tag -1 has no name \(missing label"):
        read_token_file(tmp_path / "missing.parquet")
    from tuneforge.workflows.checks import run_check

    report, _ = run_check([path], out=tmp_path / "check")
    assert report["task"] == "token_classification"
    assert report["sizes"]["train"] == {**report["sizes"]["train"], "examples": 2, "malformed": 2}
    assert report["malformed"]["train"] == [str(e) for e in bad]


def test_hf_sources_folders_splits_and_disk(tmp_path, capsys):
    folder = tmp_path / "pq"
    folder.mkdir()
    ner_dataset().to_parquet(str(folder / "train.parquet"))
    ner_dataset(NER_SENTENCES[:2]).to_parquet(str(folder / "test.parquet"))
    assert words_and_tags(read_token_file(f"hf:{folder}@test")) == EXPECTED[:2]  # load_dataset(folder), split by file
    with pytest.raises(DataError) as err:
        read_token_file(f"hf:{folder}")
    assert str(err.value) == f"hf:{folder}: holds 2 splits (train, test); name one, e.g. hf:{folder}@train"
    with pytest.raises(DataError) as err:
        read_token_file(f"hf:{folder}@validation")
    assert str(err.value) == (f"hf:{folder}@validation: no split 'validation' (splits: train, test); "
                              f"write hf:{folder}@NAME with one of them")
    datasets.DatasetDict({"train": ner_dataset(), "validation": ner_dataset(NER_SENTENCES[2:3])}).save_to_disk(
        str(tmp_path / "dict"))
    assert words_and_tags(read_token_file(f"hf:{tmp_path / 'dict'}@validation")) == EXPECTED[2:3]  # load_from_disk
    ner_dataset(NER_SENTENCES[3:4]).save_to_disk(str(tmp_path / "one"))
    assert words_and_tags(read_token_file(f"hf:{tmp_path / 'one'}")) == EXPECTED[3:4]
    assert words_and_tags(read_token_file(f"hf:{folder / 'test.parquet'}")) == EXPECTED[:2]  # a file through hf:
    with pytest.raises(DataError, match="a save_to_disk folder has no configs"):
        read_token_file(f"hf:{tmp_path / 'dict'}:conll@train")
    with pytest.raises(ConfigError, match="nothing after '@'; name the split"):
        read_token_file(f"hf:{folder}@")
    with pytest.raises(DataError, match=f"^{tmp_path / 'nothing.parquet'}: file not found; check the path$"):
        read_token_file(tmp_path / "nothing.parquet")


def test_hub_names_go_through_load_dataset_and_fail_in_one_line_offline(tmp_path):
    """The real load_dataset call, with the Hub unreachable (offline mode: no network wait)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "tuneforge", "data", "check", "hf:someone/ner-set:english@train",
                           "--out", str(tmp_path / "check")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith("error: hf:someone/ner-set:english@train: no local folder or file has this name, and "
                                "datasets.load_dataset('someone/ner-set', 'english') could not load it from the "
                                "Hugging Face Hub (")
    assert "check the path, or the name and the network" in errors[0]


def test_train_and_eval_on_hf_sources(tiny_bert, tmp_path, capsys):
    """A run whose train/dev/test are hf: splits and a Parquet file, with its own column names; eval reads
    the run's columns back from the model folder."""
    import yaml

    import tuneforge

    renamed = ner_dataset().rename_columns({"tokens": "words_of", "ner_tags": "labels_of"})
    datasets.DatasetDict({"train": renamed, "validation": renamed}).save_to_disk(str(tmp_path / "ner"))
    renamed.to_parquet(str(tmp_path / "test.parquet"))
    config = tiny_config(tiny_bert, tmp_path, tmp_path / "run", epochs=1)
    config["data"] = {"train": f"hf:{tmp_path / 'ner'}@train", "dev": f"hf:{tmp_path / 'ner'}@validation",
                      "test": str(tmp_path / "test.parquet"), "tokens_column": "words_of", "tags_column": "labels_of"}
    result = tuneforge.train(config)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["test"]["sentences"] == 6 and metrics["dev"]["sentences"] == 6
    meta = json.loads((result.run_dir / "model" / "tuneforge.json").read_text())
    assert (meta["tokens_column"], meta["tags_column"]) == ("words_of", "labels_of")
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["data"]["train"].startswith("hf:")
    capsys.readouterr()
    assert main(["eval", str(result.run_dir), f"hf:{tmp_path / 'ner'}@validation"]) == 0
    assert "on 6 sentences" in capsys.readouterr().out
    assert main(["predict", str(result.run_dir), str(tmp_path / "test.parquet"), "--out", str(tmp_path / "p.jsonl")]) == 0
    assert [json.loads(line)["words"] for line in (tmp_path / "p.jsonl").read_text().splitlines()] == [
        words for words, _ in EXPECTED]


def test_data_check_and_convert_take_datasets(tmp_path, capsys):
    ner_dataset().to_parquet(str(tmp_path / "ner.parquet"))
    out = tmp_path / "tasks.json"
    assert main(["data", "convert", str(tmp_path / "ner.parquet"), str(out), "--to", "labelstudio"]) == 0  # task guessed
    tasks = json.loads(out.read_text())
    assert tasks[0]["data"]["text"] == "john smith lives in new york"
    assert [r["value"] for r in tasks[0]["annotations"][0]["result"]] == [
        {"start": 0, "end": 10, "text": "john smith", "labels": ["PER"]},
        {"start": 20, "end": 28, "text": "new york", "labels": ["LOC"]}]
    texts = datasets.Dataset.from_dict({"text": ["great app", "slow again"], "label": [1, 0]}, features=datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}))
    texts.save_to_disk(str(tmp_path / "texts"))
    from tuneforge.workflows.checks import run_check

    report, _ = run_check([f"hf:{tmp_path / 'texts'}"], out=tmp_path / "check")
    assert report["task"] == "text_classification" and report["labels"]["space"] == ["neg", "pos"]
    assert main(["data", "convert", f"hf:{tmp_path / 'texts'}", str(tmp_path / "t.jsonl"), "--to", "jsonl"]) == 0
    assert [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()] == [
        {"text": "great app", "label": "pos"}, {"text": "slow again", "label": "neg"}]


# ---------------------------------------------------------------------------------------------
# Text classification and raw text


def test_text_rows_classlabel_pairs_and_multi_label(tmp_path):
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "verdict": datasets.ClassLabel(names=["entailment", "contradiction"])})
    datasets.Dataset.from_dict({"premise": ["a cat sat", "it rains"], "hypothesis": ["an animal sat", "it is dry"],
                                "verdict": [0, 1]}, features=features).to_parquet(str(tmp_path / "nli.parquet"))
    examples = read_text_file(tmp_path / "nli.parquet", text_column="premise", label_column="verdict",
                              text_pair_column="hypothesis")
    assert [(e.text, e.text_pair, e.labels, e.line) for e in examples] == [
        ("a cat sat", "an animal sat", ["entailment"], 1), ("it rains", "it is dry", ["contradiction"], 2)]
    with pytest.raises(DataError) as err:
        read_text_file(tmp_path / "nli.parquet")
    assert str(err.value) == (f"{tmp_path / 'nli.parquet'}: no column 'text' (the text; columns: premise, hypothesis, "
                              "verdict); set data.text_column to the column's name")
    # multi-label: a list of ClassLabel integers (the "labels" column first, as JSONL's key)
    multi = datasets.Features({"text": datasets.Value("string"),
                               "labels": datasets.Sequence(datasets.ClassLabel(names=["sports", "politics", "tech"]))})
    datasets.Dataset.from_dict({"text": ["vote on the stadium", "quiet day"], "labels": [[1, 0], []]},
                               features=multi).save_to_disk(str(tmp_path / "multi"))
    got = read_text_file(f"hf:{tmp_path / 'multi'}", multi_label=True)
    assert [(e.text, e.labels) for e in got] == [("vote on the stadium", ["politics", "sports"]), ("quiet day", [])]
    # plain integers without names read as the JSONL reader reads them: as their text; an empty text stops
    datasets.Dataset.from_dict({"text": ["fine", " "], "label": [3, 4]}).to_parquet(str(tmp_path / "ints.parquet"))
    with pytest.raises(DataError, match=r"ints\.parquet:2: empty text in column 'text'; fill it in or drop the row"):
        read_text_file(tmp_path / "ints.parquet")
    with collect_bad_records() as bad:
        assert [(e.text, e.labels) for e in read_text_file(tmp_path / "ints.parquet")] == [("fine", ["3"])]
    assert len(bad) == 1
    # unlabelled (predict): the texts, no label column needed
    assert [e.text for e in read_text_file(tmp_path / "nli.parquet", text_column="premise", label_column=None)] == [
        "a cat sat", "it rains"]


def test_documents_from_a_dataset(tmp_path):
    datasets.Dataset.from_dict({"body": ["first document", "second one"]}).to_parquet(str(tmp_path / "docs.parquet"))
    assert [d.text for d in read_documents(tmp_path / "docs.parquet", text_key="body")] == ["first document",
                                                                                           "second one"]
