"""Callbacks on the one loop: extra loss terms, perturbation between backward passes, stateful
callbacks that resume exactly after ``kill -9``, and experiment trackers read back with their own readers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

import tuneforge
from tuneforge.training.callbacks import Callback, CallbackList, StepFunction

from callbacks_for_tests import DuplicateOne, EmbeddingNudge, HeadL2
from conftest import tiny_config

TESTS = Path(__file__).resolve().parent


def _head_norm(run_dir) -> float:
    from safetensors.torch import load_file

    return float(load_file(str(run_dir / "model" / "model.safetensors"))["classifier.weight"].norm())


def test_extra_loss_term_trains_and_is_logged_separately(tiny_bert, ner_files, tmp_path):
    plain = tuneforge.train(tiny_config(tiny_bert, ner_files, tmp_path / "plain", epochs=8))
    penalised = tuneforge.train(tiny_config(tiny_bert, ner_files, tmp_path / "l2", epochs=8),
                                callbacks=[HeadL2(weight=2.0)])
    history = penalised.metrics["history"]
    assert all(h["train_HeadL2.l2"] > 0 for h in history)  # the term, per epoch, beside the task loss
    assert "train_HeadL2.l2" not in plain.metrics["history"][0]
    # the term is part of what is minimised: the penalised head ends smaller
    assert _head_norm(penalised.run_dir) < 0.9 * _head_norm(plain.run_dir)
    # and the task loss reported stays the task's own (the term is not folded into it)
    assert history[0]["train_loss"] == pytest.approx(plain.metrics["history"][0]["train_loss"], rel=0.05)


def test_perturbation_between_backward_passes_is_restored_and_changes_gradients(tiny_bert, ner_files, tmp_path):
    nudge = EmbeddingNudge(epsilon=0.5)
    result = tuneforge.train(tiny_config(tiny_bert, ner_files, tmp_path / "run"), callbacks=[nudge])
    assert nudge.calls == 40 * 3  # every micro-batch: 40 epochs x 3 batches
    assert nudge.restored_exactly  # embeddings bit-identical after each perturbation
    assert nudge.grad_changed == nudge.calls  # the second backward added its gradients
    assert result.metrics["test"]["f1"] == 1.0  # and it still trains to the tiny set


def test_every_event_fires_in_the_documented_order(tiny_bert, ner_files, tmp_path):
    seen: list[str] = []

    class Recorder(Callback):
        pass

    for event in ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "before_forward",
                  "after_forward", "after_backward", "before_optimizer_step", "after_optimizer_step",
                  "on_step_end", "on_evaluate"):
        setattr(Recorder, event, lambda self, *args, _e=event: seen.append(_e))
    Recorder.on_batch_items = lambda self, ctx, items: seen.append("on_batch_items") or items
    Recorder.extra_loss = lambda self, ctx, batch, out: seen.append("extra_loss") or {}

    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=1, batch_size=6, gradient_accumulation_steps=1)
    tuneforge.train(cfg, callbacks=[Recorder()])
    assert seen == [
        "on_train_begin", "on_epoch_begin", "on_batch_items", "before_forward", "after_forward", "extra_loss",
        "after_backward", "before_optimizer_step", "after_optimizer_step", "on_step_end", "on_evaluate",
        "on_epoch_end", "on_train_end",
    ]


def test_optimizer_events_fire_only_on_update_steps(tiny_bert, ner_files, tmp_path):
    counts = {"after_backward": 0, "before_optimizer_step": 0}

    class Count(Callback):
        def after_backward(self, ctx, batch):
            counts["after_backward"] += 1

        def before_optimizer_step(self, ctx):
            counts["before_optimizer_step"] += 1

    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=2, batch_size=1, gradient_accumulation_steps=3)
    tuneforge.train(cfg, callbacks=[Count()])
    assert counts == {"after_backward": 12, "before_optimizer_step": 4}


def test_callbacks_need_distinct_names():
    with pytest.raises(ValueError, match="two callbacks named 'HeadL2'"):
        CallbackList([HeadL2(), HeadL2()])


def test_resume_after_kill_9_is_exact_with_a_stateful_callback(tiny_bert, ner_files, tmp_path):
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "killed", epochs=60, checkpoint_every_steps=1)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    script = tmp_path / "train_with_callback.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import tuneforge
        from callbacks_for_tests import DuplicateOne, HeadL2
        tuneforge.train({str(config_file)!r}, resume=len(sys.argv) > 1, callbacks=[DuplicateOne(seed=3), HeadL2(0.01)])
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        # a mid-epoch checkpoint: the loader has read ahead of the step there, the hard case for a stateful hook
        if state.exists() and (lambda s: s["epoch"] >= 2 and s["step_in_epoch"] >= 1)(json.loads(state.read_text())):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    saved = json.loads(state.read_text())
    assert saved["step_in_epoch"] >= 1 and saved["callbacks"]["DuplicateOne"]["added"] > 0  # callback state saved

    resumed_proc = subprocess.run([sys.executable, str(script), "--resume"], capture_output=True, text=True)
    assert resumed_proc.returncode == 0, resumed_proc.stderr[-2000:]
    duplicate = DuplicateOne(seed=3)
    reference = tuneforge.train(dict(cfg, output_dir=str(tmp_path / "reference")),
                                callbacks=[duplicate, HeadL2(0.01)])
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert resumed["history"] == reference.metrics["history"]
    assert resumed["test"] == reference.metrics["test"]
    a = (tmp_path / "killed" / "model" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "reference" / "model" / "model.safetensors").read_bytes()
    assert duplicate.added == 60 * 3


def test_a_lost_callback_state_is_reported_not_ignored(tiny_bert, ner_files, tmp_path, capsys):
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=3, checkpoint_every_steps=1)

    def stop(step):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tuneforge.train(cfg, callbacks=[StepFunction(stop, name="stop")])
    tuneforge.train(cfg, resume=True, callbacks=[DuplicateOne()])
    assert "holds no state for callback(s) DuplicateOne" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Experiment trackers: real files, read back with each library's own reader


def test_tensorboard_mlflow_and_jsonl_logs_read_back(tiny_bert, ner_files, tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=4, log_every_steps=2,
                      report_to=["tensorboard", "mlflow", "jsonl"])
    result = tuneforge.train(cfg, callbacks=[HeadL2(0.01)])
    history = result.metrics["history"]
    logs = result.run_dir / "logs"

    events = EventAccumulator(str(next((logs / "tensorboard").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    expected = [(3 * (i + 1), pytest.approx(h["dev_f1"])) for i, h in enumerate(history)]  # 3 steps an epoch
    assert [(e.step, e.value) for e in events.Scalars("dev/f1")] == expected  # float32 in event files
    train_loss = events.Scalars("train/loss")
    assert [e.step for e in train_loss] == list(range(2, 13, 2))
    assert "train/HeadL2.l2" in events.Tags()["scalars"] and "train/tokens_per_second" in events.Tags()["scalars"]

    from mlflow.tracking import MlflowClient

    from tuneforge.training.tracking import mlflow_store_uri

    client = MlflowClient(tracking_uri=mlflow_store_uri(logs / "mlflow"))
    (experiment,) = [e for e in client.search_experiments() if e.name == "tuneforge"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["training.log_every_steps"] == "2"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "dev/f1")] == expected
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 6

    lines = [json.loads(line) for line in (logs / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["dev/f1"]) for r in lines if "dev/f1" in r] == [(3 * (i + 1), h["dev_f1"])
                                                                          for i, h in enumerate(history)]


def test_tracker_not_installed_is_a_one_line_error(tiny_bert, ner_files, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=1, report_to=["mlflow"])
    with pytest.raises(tuneforge.ConfigError, match="training.report_to: mlflow is not installed; pip install mlflow"):
        tuneforge.train(cfg)
