"""The README's tour runs as written after `make demo`: its shell lines, in order, in a fresh folder.

Two cheapenings, both said in the README: the `train` lines get a 24-tweet slice and one epoch (the
real MiniLM and the bundled tweets still); `compare` (an hour) and `serve` (waits for Ctrl-C) are not run.
The `--resume` line is shown for "after an interruption": on the finished run it must stop with the
one-line "nothing to resume" and exit 2.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHEAP_TRAINING = " --set data.max_train_examples=24 --set training.epochs=1 --set training.progress=false"
NOT_RUN = ("tuneforge compare", "tuneforge serve", "source ")


def tour_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        lines += [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    return lines


def test_the_readme_tour_has_the_commands_this_test_runs():
    lines = tour_lines()
    assert any(line.startswith("tuneforge data split") for line in lines)
    assert sum(line.startswith("tuneforge train") for line in lines) == 2
    assert any(line.startswith("tuneforge eval runs/mine data/test.conll") for line in lines)
    assert any(line.startswith("tuneforge predict runs/mine texts.txt") for line in lines)


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    outputs = {}
    for line in tour_lines():
        if line.startswith(NOT_RUN):
            continue
        command = line.split("  #", 1)[0].strip()
        if command.startswith("tuneforge train"):
            command += CHEAP_TRAINING
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True)
        outputs[command] = done
        if "--resume" in command:
            assert done.returncode == 2 and "already finished; nothing to resume" in done.stderr, done.stderr
        else:
            assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["dev.conll", "test.conll", "train.conll"]
    assert (tmp_path / "runs" / "mine" / "metrics.json").exists()
    predictions = [out for cmd, out in outputs.items() if cmd.startswith("tuneforge predict")][0].stdout
    assert predictions.count('"entities"') == 2  # one JSON line per text of texts.txt
