"""Hostile input (issue 30): every case ends in one line on stderr and exit 2, or in a right result.

Each test here failed on the code before its fix: a traceback, a silent wrong result, or a promise
the code did not keep.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tuneforge.cli import main

from conftest import HOSTILE_TOPICS as TOPICS
from conftest import hostile_classifier_config as classifier_config
from conftest import tiny_config, write_conll

pytestmark = pytest.mark.hostile


def error_line(capsys) -> str:
    """The one line a failed command printed (and nothing else on stderr but transformers' loading bar)."""
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Loading weights")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def config_file(tiny_bert, ner_files, tmp_path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=1)))
    return path


# ---------------------------------------------------------------------------------------------
# 5. Label Studio tasks from a pool with blank lines


@pytest.mark.parametrize("which", ["hostile_ner_run", "hostile_classifier_run"])
@pytest.mark.parametrize("command", ["suggest", "predict"])
def test_blank_lines_in_a_pool_for_label_studio_are_one_line(request, tmp_path, capsys, which, command):
    run = request.getfixturevalue(which)
    capsys.readouterr()  # the training's own output
    pool = tmp_path / "pool.txt"
    pool.write_text("mary went to paris\n\njohn lives in london\n")
    out = tmp_path / "tasks.json"
    args = (["label", "suggest", str(run), str(pool), "--n", "3"] if command == "suggest"
            else ["predict", str(run), str(pool), "--output-format", "labelstudio"]) + ["--out", str(out)]
    assert main(args) == 2
    assert error_line(capsys) == (f"error: {pool}:2: blank text: a Label Studio task needs one; remove the blank "
                                  "lines (plain predict keeps them as empty rows)")
    assert not out.exists()
    pool.write_text("mary went to paris\njohn lives in london\n")
    assert main(args) == 0
    assert len(json.loads(out.read_text())) == 2


# ---------------------------------------------------------------------------------------------
# 6, 7. Output paths that cannot be what they must be


def test_perturb_out_naming_an_existing_file(ner_files, tmp_path, capsys):
    blocker = tmp_path / "exists.txt"
    blocker.write_text("keep me\n")
    assert main(["data", "perturb", str(ner_files / "train.conll"), "--out", str(blocker), "--perturb", "typo"]) == 2
    assert error_line(capsys) == f"error: --out {blocker}: is a file; give a folder path"
    assert blocker.read_text() == "keep me\n"


@pytest.mark.parametrize("value", ["/", ".", "/tmp/.."])
def test_output_dir_that_no_run_can_own(config_file, capsys, value):
    assert main(["train", str(config_file), "--set", f"output_dir={value}"]) == 2
    assert error_line(capsys) == (f"error: --set output_dir={value}: bad value for 'output_dir': {value} is not a "
                                  "folder a run can own; set output_dir to a named folder such as runs/latest")


# ---------------------------------------------------------------------------------------------
# 8. A base model of pickle weights only


@pytest.fixture()
def pickled_bert(tiny_bert, tmp_path) -> Path:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled-bert"
    folder.mkdir()
    for item in tiny_bert.iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, folder / item.name)
    torch.save(load_file(tiny_bert / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


def test_a_base_model_of_pickle_weights_only(pickled_bert, config_file, tmp_path, capsys):
    expected = (f"error: {pickled_bert}: model.name_or_path has only pickle-format weights (pytorch_model.bin); "
                "tuneforge loads safetensors files only — re-save it with save_pretrained(..., safe_serialization=True)")
    assert main(["train", str(config_file), "--set", f"model.name_or_path={pickled_bert}"]) == 2
    assert error_line(capsys) == expected
    assert not (tmp_path / "run").exists()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("北京上海\n")
    out = tmp_path / "extended"
    assert main(["vocab", "extend", "--model", str(pickled_bert), "--corpus", str(corpus), "--add", "5",
                 "--out", str(out)]) == 2
    assert error_line(capsys) == expected
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# 18. Input from a pipe


@pytest.fixture()
def stdin_pipe(monkeypatch):
    """Feed bytes to this process's standard input through a real pipe (fd 0 and sys.stdin)."""
    import io
    import os

    saved = os.dup(0)

    def feed(data: bytes) -> None:
        read, write = os.pipe()
        os.write(write, data)
        os.close(write)
        os.dup2(read, 0)
        os.close(read)
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.FileIO(0, closefd=False)))

    yield feed
    os.dup2(saved, 0)
    os.close(saved)


@pytest.mark.parametrize("given", ["-", "/dev/stdin"])
def test_predict_reads_piped_input_once(hostile_ner_run, tmp_path, capsys, stdin_pipe, given):
    texts = "mary went to paris\n\njohn lives in london\n"
    (tmp_path / "texts.txt").write_text(texts)
    assert main(["predict", str(hostile_ner_run), str(tmp_path / "texts.txt"), "--out", str(tmp_path / "file.jsonl")]) == 0
    stdin_pipe(texts.encode())
    assert main(["predict", str(hostile_ner_run), given, "--out", str(tmp_path / "piped.jsonl")]) == 0
    assert (tmp_path / "piped.jsonl").read_bytes() == (tmp_path / "file.jsonl").read_bytes()
    assert len((tmp_path / "piped.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    stdin_pipe(b"")
    assert main(["predict", str(hostile_ner_run), given]) == 2
    assert error_line(capsys) == f"error: {given}:1: file is empty; give a file with at least one sentence"


# ---------------------------------------------------------------------------------------------
# 4. data check as a gate: errors exit 1, warnings alone 0


def test_data_check_exits_1_when_it_skipped_malformed_records(ner_files, tmp_path, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("john\tB-PER\nsmith\tI-PER\textra\n\nparis\tX-LOC\n\nmary\tB-PER\n")
    assert main(["data", "check", str(bad), "--out", str(tmp_path / "c1")]) == 1
    out, err = capsys.readouterr()
    assert "- malformed: 2 record(s) skipped; first: " in out
    assert err == "errors: 2 malformed record(s) skipped (listed in the report); exit status 1\n"
    assert (tmp_path / "c1" / "report.json").exists()  # the report is still written
    # warnings alone (a duplicate) leave it at 0
    write_conll(tmp_path / "dup.conll", [("john lives in paris", "B-PER O O B-LOC")] * 2)
    assert main(["data", "check", str(tmp_path / "dup.conll"), "--out", str(tmp_path / "c2")]) == 0
    out, err = capsys.readouterr()
    assert "- duplicates in train: 1 extra exact copies" in out and err == ""


# ---------------------------------------------------------------------------------------------
# 2. A multi-label CSV row with an empty label cell


def test_an_empty_multi_label_cell_is_an_error_unless_allowed(tiny_bert, tmp_path, capsys):
    from tuneforge.data.readers import read_text_file

    data = tmp_path / "ml.csv"
    data.write_text("text,labels\nfirst,a\nsecond,\nthird,a|b\nfourth,|\n")
    cfg = classifier_config(tiny_bert, data, tmp_path / "run", multi_label=True)
    cfg["data"] = {"train": str(data), "label_column": "labels"}
    cfg["training"]["epochs"] = 1
    config = tmp_path / "ml.yaml"
    config.write_text(yaml.safe_dump(cfg))
    message = (f"{data}:3: empty label set in column 'labels'; give at least one label, or set "
               "data.allow_empty_labels: true if texts with no label are meant")
    assert main(["train", str(config)]) == 2
    assert error_line(capsys) == f"error: {message}"
    assert not (tmp_path / "run").exists()
    assert main(["data", "check", str(config), "--out", str(tmp_path / "check")]) == 1
    out = capsys.readouterr().out
    assert f"- malformed: 2 record(s) skipped; first: {message}" in out and "nothing to report" not in out
    report = json.loads((tmp_path / "check" / "report.json").read_text())
    assert [m.split(":")[1] for m in report["malformed"]["train"]] == ["3", "5"]
    allowed = [ex.labels for ex in read_text_file(data, label_column="labels", multi_label=True)]
    assert allowed == [["a"], [], ["a", "b"], []]
    assert main(["train", str(config), "--set", "data.allow_empty_labels=true"]) == 0
    meta = json.loads((tmp_path / "run" / "model" / "tuneforge.json").read_text())
    assert meta["allow_empty_labels"] is True


# ---------------------------------------------------------------------------------------------
# 3. Line ends inside quoted CSV fields come back as given


def test_line_ends_inside_quoted_csv_fields_are_kept(hostile_classifier_run, tmp_path, capsys):
    from tuneforge.data.readers import read_text_file

    data = tmp_path / "crlf.csv"
    data.write_bytes(b'text,label\r\n"three\r\nlines\rhere",travel\r\nplain,chat\rlast,business\n')
    examples = read_text_file(data)
    assert [(ex.text, ex.labels, ex.line) for ex in examples] == [
        ("three\r\nlines\rhere", ["travel"], 2), ("plain", ["chat"], 5), ("last", ["business"], 6)]
    capsys.readouterr()
    assert main(["predict", str(hostile_classifier_run), str(data)]) == 0
    texts = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert texts == ["three\r\nlines\rhere", "plain", "last"]
    assert main(["data", "sample", str(data), "--k", "1", "--out", str(tmp_path / "s.csv")]) == 0
    assert [ex.text for ex in read_text_file(tmp_path / "s.csv")] == ["three\r\nlines\rhere", "plain", "last"]


# ---------------------------------------------------------------------------------------------
# 10. An optional dependency that is not installed: one line naming the extra, before any work


@pytest.mark.parametrize("module, change, expected", [
    ("setfit", {"task": {"type": "setfit"}},
     "error: task.type: setfit: setfit is not installed; pip install setfit (or pip install 'tuneforge[fewshot]')"),
    ("tensorboard", {"training": {"report_to": ["tensorboard"]}},
     "error: training.report_to: tensorboard is not installed; pip install tensorboard (or pip install "
     "'tuneforge[tracking]'); or remove it from report_to"),
    ("datasets", {"data": {"train": "DATA/train.parquet"}},
     "error: data.train: DATA/train.parquet: Parquet, Arrow and hf: data are read with the datasets package: "
     "datasets is not installed; pip install datasets (or pip install 'tuneforge[hf]')"),
])
def test_a_missing_extra_is_one_line_before_any_work(tiny_bert, tmp_path, capsys, monkeypatch, module, change, expected):
    import sys

    cfg = classifier_config(tiny_bert, tmp_path / "missing.csv", tmp_path / "run")  # data never read
    for section, values in change.items():
        cfg[section].update({k: v.replace("DATA", str(tmp_path)) if isinstance(v, str) else v
                             for k, v in values.items()})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    monkeypatch.setitem(sys.modules, module, None)  # what an interpreter without it gets: ImportError
    assert main(["train", str(config)]) == 2
    assert error_line(capsys) == expected.replace("DATA", str(tmp_path))
    assert not (tmp_path / "run").exists()


def test_export_onnx_without_onnxruntime_is_one_line_before_loading(hostile_classifier_run, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["export", "--onnx", str(tmp_path / "no-such-run"), str(tmp_path / "out")]) == 2
    assert error_line(capsys) == ("error: export --onnx: onnxruntime is not installed; pip install onnxruntime "
                                  "(or pip install 'tuneforge[onnx]')")
    assert main(["predict", str(hostile_classifier_run), str(tmp_path / "t.txt"), "--engine", "onnx"]) == 2
    assert error_line(capsys) == ("error: the onnx engine: onnxruntime is not installed; pip install onnxruntime "
                                  "(or pip install 'tuneforge[onnx]')")


# ---------------------------------------------------------------------------------------------
# 17. kill -9 during export: the rerun clears what the killed writer left


KILLED_EXPORT = """
import os, signal, sys
from tuneforge.artifacts import paths
from tuneforge.cli import main

def killed(folder):  # the export has written everything into its temporary folder: kill -9 it now
    os.kill(os.getpid(), signal.SIGKILL)

paths._give_usual_permissions = killed
sys.exit(main(["export", "--merge", sys.argv[1], sys.argv[2]]))
"""


def test_kill_9_during_export_leaves_nothing_the_rerun_keeps(hostile_ner_run, tmp_path, capsys):
    import signal
    import subprocess
    import sys

    out = tmp_path / "merged"
    killed = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(hostile_ner_run), str(out)], capture_output=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".merged.tmp-") and not out.exists()
    assert main(["export", "--merge", str(hostile_ner_run), str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
    assert (out / "model.safetensors").exists()


# ---------------------------------------------------------------------------------------------
# 9, 11. A read-only output folder and a full disk: real tmpfs mounts (root in CI); skipped where
# mounting is not permitted (chmod would not stop root)


def _mount_tmpfs(where: Path, options: str) -> None:
    import subprocess

    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root or CAP_SYS_ADMIN")


def _umount(where: Path) -> None:
    import subprocess

    subprocess.run(["umount", str(where)], capture_output=True)


def _tmpfs(where: Path, options: str):
    """A real tmpfs mounted at ``where`` for the test, unmounted after it (even when it fails)."""
    _mount_tmpfs(where, options)
    try:
        yield where
    finally:
        _umount(where)


@pytest.fixture()
def read_only_dir(tmp_path):
    yield from _tmpfs(tmp_path / "ro", "ro,size=1m")


@pytest.fixture()
def small_disk(tmp_path):
    """A 64 KiB file system: the tiny models' weights (hundreds of KiB) do not fit."""
    yield from _tmpfs(tmp_path / "full", "size=64k")


def test_a_read_only_output_folder_is_one_line(hostile_classifier_run, config_file, tmp_path, read_only_dir, capsys):
    data = tmp_path / "topics.csv"
    write_csv(data, TOPICS)
    pool = tmp_path / "pool.txt"
    pool.write_text("mary went to paris\n")
    cases = [
        (["data", "convert", str(data), str(read_only_dir / "x.jsonl"), "--to", "jsonl"], "OUT", "x.jsonl"),
        (["data", "sample", str(data), "--k", "1", "--out", str(read_only_dir / "s.csv")], "--out", "s.csv"),
        (["label", "suggest", str(hostile_classifier_run), str(pool), "--out", str(read_only_dir / "t.json")], "--out", "t.json"),
        (["data", "check", str(data), "--out", str(read_only_dir / "check")], "--out", "check"),
    ]
    capsys.readouterr()
    for args, flag, name in cases:
        assert main(args) == 2, args
        assert error_line(capsys) == (f"error: {flag} {read_only_dir / name}: cannot write in {read_only_dir} "
                                      "(read-only file system)")
    run = read_only_dir / "run"
    assert main(["train", str(config_file), "--set", f"output_dir={run}"]) == 2
    assert error_line(capsys) == (f"error: {run}: cannot write the run's lock file {read_only_dir / '.run.lock'} "
                                  "(Read-only file system); set output_dir to a folder you can write")
    assert list(read_only_dir.iterdir()) == []


def test_a_full_disk_is_one_line_and_the_rerun_works(hostile_ner_run, config_file, tmp_path, small_disk, capsys):
    import subprocess

    texts = tmp_path / "many.txt"
    texts.write_text("mary visited paris today\n" * 3000)  # ~700 KB of predictions
    capsys.readouterr()
    message = "no space left on device; nothing was kept of what was being written — free some space and run the same command again"
    assert main(["predict", str(hostile_ner_run), str(texts), "--out", str(small_disk / "p.jsonl")]) == 2
    assert error_line(capsys) == f"error: {small_disk / 'p.jsonl'}: {message}"
    assert main(["export", "--merge", str(hostile_ner_run), str(small_disk / "merged")]) == 2
    assert error_line(capsys) == f"error: {small_disk / 'merged'}: {message}"
    run = small_disk / "run"
    assert main(["train", str(config_file), "--set", f"output_dir={run}"]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {run}/") and line.endswith(message)
    assert [p.name for p in small_disk.iterdir()] == [".run.lock"]  # no half run, no temporaries
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)  # space freed
    assert main(["train", str(config_file), "--set", f"output_dir={run}"]) == 0
    assert main(["predict", str(hostile_ner_run), str(texts), "--out", str(small_disk / "p.jsonl")]) == 0
    assert len((small_disk / "p.jsonl").read_text().splitlines()) == 3000
