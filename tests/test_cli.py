"""The command line: exit codes, one-line errors, and the train -> eval -> predict path."""

import json
import subprocess
import sys

import pytest
import yaml

from tuneforge.cli import main

from conftest import tiny_config


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tuneforge", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture()
def config_file(tiny_bert, ner_files, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=30)))
    return path


def test_unknown_config_key_is_named_where_it_was_written(config_file):
    result = run_cli("train", config_file, "--set", "training.epochz=3")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    # the key came from --set, not from the file: the message says so
    assert line == "error: --set training.epochz=3: unknown key 'training.epochz'; remove it or check its spelling"
    config_file.write_text(config_file.read_text() + "seed: 3\n")
    line = one_error_line(run_cli("train", config_file).stderr)
    assert "unknown key 'seed'" in line and line.startswith(f"error: {config_file}: ")


def test_bad_value_is_named(config_file, capsys):
    assert main(["train", str(config_file), "--set", "training.learning_rate=-1"]) == 2
    assert "bad value for 'training.learning_rate'" in capsys.readouterr().err


def test_bad_training_file_names_file_and_line(config_file, tmp_path, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("John\tB-PER\nlives\n")
    assert main(["train", str(config_file), "--set", f"data.train={bad}"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err
    assert not (tmp_path / "run" / "model").exists()  # nothing half-written


def test_train_eval_predict_and_split(config_file, tmp_path, ner_files, capsys):
    assert main(["train", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "Entity-level report" in out and "entity F1" in out
    run = tmp_path / "run"

    assert main(["eval", str(run), str(ner_files / "test.conll"), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["f1"] == 1.0

    unseen = tmp_path / "unseen.conll"
    unseen.write_text("paris\tB-LOC\n\njohn\tB-CITY\n")
    assert main(["eval", str(run), str(unseen)]) == 2
    assert f"{unseen}:3: tag 'B-CITY' was never seen in training" in capsys.readouterr().err

    texts = tmp_path / "texts.txt"
    texts.write_text("Mary visited Paris today\n\nJohn Smith lives in New York\n")
    assert main(["predict", str(run), str(texts), "--out", str(tmp_path / "p.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[1]["words"] == [] and rows[1]["entities"] == []
    assert [(e["text"], e["type"]) for e in rows[0]["entities"]] == [("Mary", "PER"), ("Paris", "LOC")]

    conll_in = tmp_path / "words.conll"
    conll_in.write_text("mary\nvisited\nparis\n")
    assert main(["predict", str(run), str(conll_in), "--output-format", "conll"]) == 0
    assert capsys.readouterr().out.splitlines()[:3] == ["mary\tB-PER", "visited\tO", "paris\tB-LOC"]

    assert main(["data", "split", str(ner_files / "train.conll"), "--out", str(tmp_path / "split"),
                 "--ratios", "0.5,0.25,0.25", "--seed", "1"]) == 0
    sizes = [len((tmp_path / "split" / f"{n}.conll").read_text().strip().split("\n\n")) for n in ("train", "dev", "test")]
    assert sizes == [3, 2, 1]


def test_resume_refuses_a_changed_config(config_file, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(config_file.read_text())
    assert main(["train", str(config_file), "--resume", "--set", "training.epochs=31"]) == 2
    assert "differs from the one this run started with" in capsys.readouterr().err


def test_atomic_outputs_get_the_usual_permissions_not_the_temp_files_0600(tmp_path):
    import os
    import stat

    from tuneforge.artifacts.paths import atomic_dir, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "out.txt", "x")
        with atomic_dir(tmp_path / "run") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o755


def test_openmp_threads_sleep_while_they_wait_unless_the_user_chose():
    """import tuneforge sets OMP_WAIT_POLICY=PASSIVE (two jobs on shared cores: docs/measured.md)
    before torch is imported, and keeps a value the user set."""
    import os
    import subprocess
    import sys

    code = "import os, sys, tuneforge; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["PASSIVE", "True"]
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"),
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["ACTIVE", "True"]
