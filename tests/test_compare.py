"""`tuneforge compare` on a tiny BERT: every method trains end to end; files, rows, resume."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from tuneforge.training.callbacks import StepFunction
from tuneforge.cli import main
from tuneforge.workflows.compare import compare, plan_members
from tuneforge.errors import ConfigError
from tuneforge.methods import get_method

from conftest import tiny_config

METHODS = ["full", "freeze", "lora", "ia3", "prompt", "adapter", "bitfit"]


def small(tiny_bert, ner_files, out):
    # a few epochs: enough to exercise training, saving, loading and scoring for every method
    return tiny_config(tiny_bert, ner_files, out, epochs=2)


def test_compare_trains_every_method_and_writes_one_row_each(tiny_bert, ner_files, tmp_path):
    result = compare(small(tiny_bert, ner_files, tmp_path / "cmp"), METHODS, seeds=1,
                     overrides=["training.epochs=2"], isolate=False)
    for path in result.files.values():
        assert path.exists() and path.stat().st_size > 0
    with open(result.files["compare.csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == METHODS
    table = result.files["compare.md"].read_text()
    assert sum(line.startswith(f"| {m} |") for m in METHODS for line in table.splitlines()) == len(METHODS)
    assert "compare.png" in table
    assert result.files["compare.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_method = {r["method"]: r for r in result.rows}
    total = by_method["full"]["total_params"]
    assert by_method["full"]["trainable_params"] == total
    for name in METHODS[1:]:
        row = by_method[name]
        assert 0 < row["trainable_params"] < total and 0 <= row["test_f1_mean"] <= 1
        assert row["weights_mb"] < by_method["full"]["weights_mb"]
        assert row["peak_rss_mb_mean"] is None  # members shared this process: no honest per-run peak
        member = result.out_dir / f"{name}-seed7"
        metrics = json.loads((member / "metrics.json").read_text())
        assert metrics["method"] == name and metrics["parameters"]["trainable"] == row["trainable_params"]
        saved = yaml.safe_load((member / "config.yaml").read_text())
        assert saved["method"]["name"] == name and saved["training"]["epochs"] == 2  # --set wins
        assert saved["training"]["learning_rate"] == get_method(name).DEFAULT_TRAINING["learning_rate"]
    # full keeps the config's own budget
    assert by_method["full"]["learning_rate"] == 5e-3


def test_interrupted_compare_resumes_and_skips_finished_members(tiny_bert, ner_files, tmp_path):
    cfg = small(tiny_bert, ner_files, tmp_path / "cmp")
    short = ["training.epochs=2"]
    out, members = plan_members(cfg, ["bitfit"], seeds=2, overrides=short)
    assert [(m.method, m.seed) for m in members] == [("bitfit", 7), ("bitfit", 8)]
    assert plan_members(cfg, ["full", "lora"], seeds=2)[1][3].run_dir == out / "lora-seed8"

    from tuneforge import api

    api.train(members[0].config)  # the first member finished
    with pytest.raises(KeyboardInterrupt):  # the second was interrupted in epoch 2 (3 steps an epoch)
        def stop(step):
            if step == 4:
                raise KeyboardInterrupt
        api.train(members[1].config, callbacks=[StepFunction(stop)])
    finished_model = (members[0].run_dir / "model" / "tuneforge_method.safetensors").stat().st_mtime_ns

    result = compare(cfg, ["bitfit"], seeds=2, overrides=short, isolate=False)
    assert (members[0].run_dir / "model" / "tuneforge_method.safetensors").stat().st_mtime_ns == finished_model
    assert [(r["method"], r["seeds"]) for r in result.rows] == [("bitfit", 2)]
    f1 = [json.loads((m.run_dir / "metrics.json").read_text())["test"]["f1"] for m in members]
    assert result.rows[0]["test_f1_mean"] == pytest.approx(sum(f1) / 2)
    assert result.rows[0]["test_f1_std"] == pytest.approx(abs(f1[0] - f1[1]) / 2 ** 0.5)
    reference = api.train(dict(members[1].config.model_dump(mode="json"), output_dir=str(tmp_path / "ref")))
    resumed = json.loads((members[1].run_dir / "metrics.json").read_text())
    assert resumed["history"] == reference.metrics["history"]


def test_compare_cli_runs_members_in_their_own_processes(tiny_bert, ner_files, tmp_path, capsys):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(small(tiny_bert, ner_files, tmp_path / "cmp")))
    code = main(["compare", str(config_file), "--methods", "lora", "--set", "training.epochs=1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| lora |" in out and str(tmp_path / "cmp" / "compare.png") in out
    with open(tmp_path / "cmp" / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["lora"]
    assert float(rows[0]["peak_rss_mb_mean"]) > 0  # its own process: an honest peak
    assert (tmp_path / "cmp" / "members" / "lora-seed7.log").read_text().count("run folder:") == 1


def test_export_merge_cli_and_bad_methods(tiny_bert, ner_files, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--methods: unknown qlora"):
        plan_members(small(tiny_bert, ner_files, tmp_path / "x"), ["full", "qlora"])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("{}")
    with pytest.raises(ConfigError, match="single run's folder"):
        plan_members(small(tiny_bert, ner_files, tmp_path / "run"), ["full"])
    assert plan_members(small(tiny_bert, ner_files, tmp_path / "run"), ["full"], out=tmp_path / "c")[0] == tmp_path / "c"
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "--merge" in capsys.readouterr().err


def test_compare_crosses_methods_with_adversarial_training_and_adds_robustness_columns(tiny_bert, ner_files, tmp_path,
                                                                                       capsys):
    cfg = small(tiny_bert, ner_files, tmp_path / "cmp")
    cfg["adversarial"] = {"method": "fgm", "epsilon": 0.05}  # the fgm members keep the config's own block
    out, members = plan_members(cfg, ["full"], seeds=1, adversarial=["none", "fgm", "rdrop"],
                                overrides=["training.epochs=1"])
    assert [m.run_dir.name for m in members] == ["full-seed7", "full+fgm-seed7", "full+rdrop-seed7"]
    assert [m.config.adversarial and m.config.adversarial.model_dump() for m in members] == [
        None, {"method": "fgm", "epsilon": 0.05, "weight": 1.0}, {"method": "rdrop", "weight": 1.0}]
    # --set adversarial.* reaches the adversarial members only
    _, overridden = plan_members(small(tiny_bert, ner_files, tmp_path / "c2"), ["full"], adversarial=["none", "pgd"],
                                 overrides=["adversarial.epsilon=0.5"])
    assert [m.config.adversarial and m.config.adversarial.epsilon for m in overridden] == [None, 0.5]
    with pytest.raises(ConfigError, match="--adversarial: give distinct names from none, fgm, pgd, rdrop"):
        plan_members(cfg, ["full"], adversarial=["fgm", "fgsm"])

    result = compare(cfg, ["full"], seeds=1, adversarial=["none", "fgm", "rdrop"], overrides=["training.epochs=1"],
                     isolate=False, perturb="typo,drop", rate=0.5, perturb_seed=1)
    assert [r["method"] for r in result.rows] == ["full", "full+fgm", "full+rdrop"]
    for member, row in zip(members, result.rows):
        report = json.loads((member.run_dir / "robustness.json").read_text())
        assert (report["perturbations"]["typo"]["changed"], report["rate"], report["seed"]) == (18, 0.5, 1)
        assert row["perturbed_typo_f1_mean"] == report["perturbations"]["typo"]["f1"]
        assert row["f1_drop_mean"] == pytest.approx(row["test_f1_mean"] - row["perturbed_f1_mean"])
    with open(result.files["compare.csv"]) as f:
        header = next(csv.reader(f))
    assert header[:3] == ["method", "adversarial", "seeds"] and "perturbed_drop_f1_std" in header
    assert "## Robustness: test F1 on noisy copies (50% of words changed, noise seed 1)" in \
        result.files["compare.md"].read_text()
    # a rerun reads the scores back (nothing is rescored); other noise settings rescore
    capsys.readouterr()
    compare(cfg, ["full"], seeds=1, adversarial=["none", "fgm", "rdrop"], overrides=["training.epochs=1"],
            isolate=False, perturb="typo,drop", rate=0.5, perturb_seed=1)
    assert "robustness " not in capsys.readouterr().out
    compare(cfg, ["full"], seeds=1, adversarial=["none"], overrides=["training.epochs=1"],
            isolate=False, perturb="typo,drop", rate=0.25, perturb_seed=1)
    assert capsys.readouterr().out.count("robustness full seed 7: clean") == 1
    assert json.loads((members[0].run_dir / "robustness.json").read_text())["rate"] == 0.25


def test_the_plot_puts_every_share_between_labelled_decade_ticks():
    from tuneforge.workflows.compare import share_axis_limits

    lo, hi = share_axis_limits([2.89, 0.41, 100.0])
    assert (lo, hi) == (0.1 / 1.25, 100 * 1.25)  # ticks 0.1%, 1%, 10%, 100% all inside, every point between two
    lo, hi = share_axis_limits([2.89, 100.0])
    assert lo < 1 < 2.89 and hi > 100
