"""Hostile input (issue 18): every case ends in one line on stderr and exit 2, or in a right result.

Each test here failed on the code before the fix: a traceback, a silent wrong result, or an
error blamed on the wrong place.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from tuneforge.cli import main
from tuneforge.config import load_config
from tuneforge.errors import ConfigError

from conftest import tiny_config, write_conll


def error_line(capsys) -> str:
    """The one line a failed command printed (and nothing else on stderr)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture()
def config_file(tiny_bert, ner_files, tmp_path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=2)))
    return path


# ---------------------------------------------------------------------------------------------
# Config: one place validates numbers; YAML read strictly


@pytest.mark.parametrize(
    "section, text, key, fragment",
    [
        ("training", "learning_rate: .inf", "training.learning_rate", "finite number"),
        ("training", "learning_rate: .nan", "training.learning_rate", "finite number"),
        ("training", "warmup_ratio: -.inf", "training.warmup_ratio", "finite number"),
        ("training", "epochs: true", "training.epochs", "true/false is not a number"),
        ("training", "learning_rate: false", "training.learning_rate", "true/false is not a number"),
        ("encoding", "max_length: true", "encoding.max_length", "true/false is not a number"),
        ("method", "{name: lora, r: true}", "method.r", "true/false is not a number"),
    ],
)
def test_numbers_are_finite_and_not_bools(config_file, capsys, section, text, key, fragment):
    tree = yaml.safe_load(config_file.read_text())
    if text.startswith("{"):
        tree[section] = yaml.safe_load(text)
    else:
        tree.setdefault(section, {}).update(yaml.safe_load(text))
    config_file.write_text(yaml.dump(tree))
    assert main(["train", str(config_file)]) == 2
    line = error_line(capsys)
    assert f"bad value for '{key}'" in line and fragment in line and str(config_file) in line
    assert not (config_file.parent / "run").exists()


def test_bools_inside_lists_and_maps_are_caught_too(tiny_bert, tmp_path):
    from tuneforge.config import config_from_dict

    tree = {"model": {"name_or_path": "x"}, "data": {"train": "t.csv"}, "task": {"type": "text_classification"}}
    with pytest.raises(ConfigError, match=r"bad value for 'task.class_weights': true/false is not a number"):
        config_from_dict(tree, overrides=["task.class_weights={a: true}"])
    with pytest.raises(ConfigError, match=r"bad value for 'task.class_weights.a': Input should be a finite number$"):
        config_from_dict(tree, overrides=["task.class_weights={a: .nan}"])
    with pytest.raises(ConfigError, match=r"'data.split': true/false"):
        config_from_dict(tree, overrides=["data.split=[0.5, 0.5, true]"])
    assert config_from_dict(tree, overrides=["training.progress=false"]).training.progress is False


def test_a_duplicate_section_or_key_is_an_error_naming_the_line(config_file, capsys):
    text = config_file.read_text() + "training:\n  epochs: 3\n"
    config_file.write_text(text)
    first = 1 + next(i for i, line in enumerate(text.splitlines()) if line == "training:")
    assert main(["train", str(config_file)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {config_file}:{len(text.splitlines()) - 1}: ")
    assert f"key 'training' appears twice (first on line {first}); keep one" in line
    flow = config_file.parent / "flow.yaml"
    flow.write_text("model: {name_or_path: x, name_or_path: y}\n")
    with pytest.raises(ConfigError, match=r"flow.yaml:1: .*key 'name_or_path' appears twice"):
        load_config(flow)


def test_yaml_merge_keys_still_override_on_purpose():
    from tuneforge.config import _load_yaml

    tree = _load_yaml("base: &b {epochs: 2, batch_size: 4}\ntraining:\n  <<: *b\n  epochs: 3\n", "c.yaml")
    assert tree["training"] == {"epochs": 3, "batch_size": 4}


@pytest.mark.parametrize(
    "pair, expected",
    [
        ("training.epochs=[", "error: --set training.epochs=[: not valid YAML"),
        ("training.epochs={a", "error: --set training.epochs={a: not valid YAML"),
        ("training.learning_rate=-1", "error: --set training.learning_rate=-1: bad value for 'training.learning_rate'"),
        ("training.learning_rate=.inf", "error: --set training.learning_rate=.inf: bad value for 'training.learning_rate'"),
        ("task.decode=argmax", None),
    ],
)
def test_set_errors_name_the_set_not_the_file(config_file, capsys, pair, expected):
    args = ["train", str(config_file), "--set", pair]
    if expected is None:  # a cross-key check: task.decode is named by the --set that set it
        args += ["--set", "task.type=text_classification"]
        expected = "error: --set task.decode=argmax: 'task.decode' does not apply to task.type text_classification"
    assert main(args) == 2
    line = error_line(capsys)
    assert line.startswith(expected)
    assert str(config_file) not in line


def test_config_that_is_a_folder_or_not_utf8(tmp_path, config_file, capsys):
    assert main(["train", str(tmp_path)]) == 2
    assert error_line(capsys) == f"error: {tmp_path}: is a folder; give the config's YAML file"
    raw = config_file.read_bytes().replace(b"model:", b"# caf\xe9\nmodel:", 1)
    config_file.write_bytes(raw)
    assert main(["train", str(config_file)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {config_file}:") and "invalid UTF-8 (byte 0xe9); re-save the config as UTF-8" in line


def test_output_dir_that_is_a_file(config_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    for out in (blocker, blocker / "run"):
        assert main(["train", str(config_file), "--set", f"output_dir={out}"]) == 2
        line = error_line(capsys)
        assert f"bad value for 'output_dir': {blocker} is a file; set output_dir to a folder path" in line
    assert blocker.read_text() == "not a folder\n"
