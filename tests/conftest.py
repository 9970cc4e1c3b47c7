"""Shared fixtures: a tiny WordPiece vocabulary and a tiny randomly initialised BERT, built here.

Nothing is downloaded: the model folder is written by the test session itself.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = [
    "the", "a", "in", "of", "to", "and", "is", "was", "at", "on", "new", "york", "john", "smith", "paris",
    "london", "google", "apple", "went", "lives", "works", "city", "visited", "said", "today", "mary",
    "berlin", "microsoft", "he", "she", "met", "from", "with", "##s", "##ed", "##ing",
]
CHINESE = list("我爱北京天安门上海是中国的城市张三在工作李四去了")


def tiny_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits) + list(".,!?'-@#:/")
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    return specials + chars + pieces + WORDS + CHINESE


def build_tiny_bert(folder: Path, hidden: int = 32, layers: int = 2, max_positions: int = 128,
                    dropout: float = 0.1) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(tiny_vocab())}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tiny_vocab()), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=hidden * 2, max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_bert):
    from tuneforge.runtime.models import load_tokenizer

    return load_tokenizer(str(tiny_bert))


NER_SENTENCES = [
    ("john smith lives in new york", "B-PER I-PER O O B-LOC I-LOC"),
    ("mary visited paris today", "B-PER O B-LOC O"),
    ("google and apple met in london", "B-ORG O B-ORG O O B-LOC"),
    ("she works at microsoft in berlin", "O O O B-ORG O B-LOC"),
    ("he went to the city of paris", "O O O O O O B-LOC"),
    ("john said the city was new", "B-PER O O O O O"),
]


def write_conll(path: Path, sentences=NER_SENTENCES) -> Path:
    lines = []
    for words, tags in sentences:
        for w, t in zip(words.split(), tags.split()):
            lines.append(f"{w}\t{t}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def ner_files(tmp_path) -> Path:
    write_conll(tmp_path / "train.conll")
    write_conll(tmp_path / "dev.conll")
    write_conll(tmp_path / "test.conll")
    return tmp_path


def tiny_config(tiny_bert: Path, data_dir: Path, out: Path, **training) -> dict:
    train = {"epochs": 40, "batch_size": 2, "learning_rate": 5e-3, "warmup_ratio": 0.0, "seed": 7, "progress": False}
    train.update(training)
    return {
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(data_dir / "train.conll"), "dev": str(data_dir / "dev.conll"),
                 "test": str(data_dir / "test.conll")},
        "encoding": {"max_length": 32, "stride": 8},
        "training": train,
        "output_dir": str(out),
    }


def train_and_kill_9(cfg: dict, config_file: Path, after_epoch: int = 2) -> None:
    """Start ``tuneforge train`` on ``cfg`` in a child process and SIGKILL it once its checkpoint has
    reached ``after_epoch`` (the resume-after-kill-9 tests); fails if the run ended first."""
    import json
    import signal
    import subprocess
    import sys
    import time

    import yaml

    config_file.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "train", str(config_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = Path(cfg["output_dir"]) / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= after_epoch:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


@pytest.fixture(scope="session")
def hostile_ner_run(tiny_bert, tmp_path_factory) -> Path:
    """A small finished NER run for tests/test_hostile_three*.py (quality is not the point)."""
    from tuneforge.api import train

    data = tmp_path_factory.mktemp("h3-ner")
    for name in ("train", "dev", "test"):
        write_conll(data / f"{name}.conll")
    train(tiny_config(tiny_bert, data, data / "run", epochs=2))
    return data / "run"


HOSTILE_TOPICS = [("mary visited paris today", "travel"), ("john went to london", "travel"),
                  ("google and apple met", "business"), ("microsoft works with apple", "business"),
                  ("he said the city was new", "chat"), ("she met john today", "chat")]


def hostile_classifier_config(model: Path, data: Path, out: Path, **task) -> dict:
    return {"task": {"type": "text_classification", **task}, "model": {"name_or_path": str(model)},
            "data": {"train": str(data), "dev": str(data)}, "encoding": {"max_length": 32, "stride": 8},
            "training": {"epochs": 2, "batch_size": 4, "seed": 7, "progress": False}, "output_dir": str(out)}


@pytest.fixture(scope="session")
def hostile_classifier_run(tiny_bert, tmp_path_factory) -> Path:
    """A small finished text-classification run for tests/test_hostile_three*.py."""
    import csv

    from tuneforge.api import train

    folder = tmp_path_factory.mktemp("h3-cls")
    with open(folder / "topics.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *HOSTILE_TOPICS])
    train(hostile_classifier_config(tiny_bert, folder / "topics.csv", folder / "run"))
    return folder / "run"
