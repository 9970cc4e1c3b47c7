"""``tuneforge data check`` from the command line's inputs to a written report: the config the data is
read with (a YAML config, or data files and a task, guessed from the records when not given), the task,
a tokenizer, k-fold label-noise runs with a trained run's config (``--model RUN``), the plots, and the
files. The checks themselves are :mod:`tuneforge.data.checks`; the page is :mod:`tuneforge.data.check_report`.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Sequence

import numpy as np

from ..artifacts.model_folder import find_model_folder
from ..config import config_from_dict, load_config, merge_trees, parse_overrides
from ..data.check_report import write_report
from ..data.checks import NEAR_THRESHOLD, SHOW, CheckOptions, Item, check, items_of, read_for_check, sample_records
from ..errors import TuneforgeError
from ..evaluation.plots import CJK_FONTS, cjk_fonts, png_bytes
from ..loading import load_predictor
from ..runtime.models import load_tokenizer
from ..tasks import REGISTRY, make_task
from ..tasks.capabilities import DataChecks, require, supports
from .multirun import run_finished, train_config


# ---------------------------------------------------------------------------------------------
# Label noise


def label_noise(task, config_tree: dict, examples_by_split: dict[str, list], items_by_split: dict[str, list[Item]],
                out_dir: Path, folds: int = 5, threshold: float = 0.9, overrides: list[str] | None = None,
                labels: list[str] | None = None, seed: int = 0, show: int = SHOW) -> dict:
    """k-fold cross-validation over every example of every split with ``config_tree`` (a run's config):
    each fold trains an ordinary run on the other folds and predicts its own; units whose held-out
    prediction confidently (>= ``threshold``) differs from the gold label are candidates."""
    import copy
    import random

    pool = [(split, k) for split, exs in examples_by_split.items() for k in range(len(exs))]
    if folds < 2 or folds > len(pool):
        raise TuneforgeError(f"--folds {folds}: give between 2 and the number of examples ({len(pool)})")
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    fold_of = {idx: f % folds for f, idx in enumerate(order)}
    settled = merge_trees(config_tree, parse_overrides(overrides))
    candidates: list[dict] = []
    units_checked = 0
    for f in range(folds):
        run_dir = out_dir / "noise" / f"fold{f}"
        held = [pool[i] for i in range(len(pool)) if fold_of[i] == f]
        train = [examples_by_split[s][k] for i, (s, k) in enumerate(pool) if fold_of[i] != f]
        if not run_finished(run_dir):
            train_file = out_dir / "noise" / "data" / f"fold{f}.jsonl"
            read_back = task.write_labelled(train, train_file)
            member = copy.deepcopy(settled)
            section = {k: v for k, v in (member.get("data") or {}).items()
                       if k not in ("split", "max_train_examples", "dev", "test")}
            member["data"] = {**section, **read_back, "train": str(train_file), "dev": None, "test": None,
                              "labels": labels}
            member["output_dir"] = str(run_dir)
            train_config(config_from_dict(member, source=f"label-noise fold {f}"), isolate=False)
        predictor = load_predictor(run_dir, precision="fp32")
        held_examples = [examples_by_split[s][k] for s, k in held]
        for (s, k), units in zip(held, predictor.units(held_examples)):
            units_checked += len(units.names)
            flagged = []
            for u, (name, probs) in enumerate(zip(units.names, units.probabilities)):
                gold = units.gold[u] if units.gold else -1
                pred = int(np.argmax(probs))
                if pred != gold and probs[pred] >= threshold:
                    flagged.append({"unit": name, "position": u,
                                    "gold": units.classes[gold] if gold >= 0 else "(unknown to the fold's model)",
                                    "predicted": units.classes[pred], "probability": round(float(probs[pred]), 4)})
            if flagged:
                item = items_by_split[s][k]
                candidates.append(dict(item.brief(), fold=f, units=flagged,
                                       score=max(x["probability"] for x in flagged)))
    candidates.sort(key=lambda c: -c["score"])
    return {"method": f"{folds}-fold cross-validation with the run's config; a unit is a candidate when the held-out "
                      f"model's most likely class differs from the gold one with probability >= {threshold}",
            "folds": folds, "threshold": threshold, "examples_checked": len(pool), "units_checked": units_checked,
            "candidates": len(candidates), "units_flagged": sum(len(c["units"]) for c in candidates),
            "examples": candidates[: max(show, 25)]}


# ---------------------------------------------------------------------------------------------
# Plots (inline in the HTML page)


def _png(fig) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi=100, close=True)).decode("ascii")


def _plots(report: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cjk_fonts()
    plots = {}
    with matplotlib.rc_context({"font.sans-serif": CJK_FONTS + list(matplotlib.rcParams["font.sans-serif"])}):
        per_split = report["labels"]["per_split"]
        names = list(dict.fromkeys(label for counts in per_split.values() for label in counts))[:40]
        if names:
            fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names) + 2), 3.6))
            width = 0.8 / max(1, len(per_split))
            for k, (split, counts) in enumerate(per_split.items()):
                total = sum(counts.values()) or 1
                ax.bar(np.arange(len(names)) + k * width, [counts.get(n, 0) / total for n in names], width, label=split)
            ax.set_xticks(np.arange(len(names)) + width * (len(per_split) - 1) / 2, names, rotation=45, ha="right")
            ax.set_ylabel("share of the split's labels")
            ax.legend()
            ax.set_title("Label distribution per split")
            fig.tight_layout()
            plots["labels"] = _png(fig)
        tok = report.get("tokenizer")
        if tok:
            fig, ax = plt.subplots(figsize=(7, 3.4))
            for split, entry in tok["splits"].items():
                ax.hist(entry["_lengths"], bins=40, alpha=0.5, label=split)
            ax.axvline(report["max_length"], color="red", linestyle="--", label=f"max_length {report['max_length']}")
            ax.set_xlabel("sub-word tokens per input (special tokens included)")
            ax.set_ylabel("inputs")
            ax.set_yscale("log")
            ax.legend()
            ax.set_title("Sub-word lengths")
            fig.tight_layout()
            plots["lengths"] = _png(fig)
        classes = ["cjk", "latin", "digit", "punctuation", "emoji", "other"]
        fig, ax = plt.subplots(figsize=(7, 0.6 * len(report["characters"]) + 1.4))
        left = np.zeros(len(report["characters"]))
        for cls in classes:
            values = np.array([c[f"{cls}_share"] for c in report["characters"].values()])
            ax.barh(list(report["characters"]), values, left=left, label=cls)
            left += values
        ax.set_xlabel("share of non-space characters")
        ax.legend(ncol=6, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35))
        ax.set_title("Character classes")
        fig.tight_layout()
        plots["characters"] = _png(fig)
    return plots


# ---------------------------------------------------------------------------------------------
# From the command line's inputs to a written report


def guess_task(path: str) -> str:
    """The registered task whose ``sniff`` claims the file (first in registry order), judged on its first
    :data:`tuneforge.data.checks.SNIFF_RECORDS` records."""
    records = sample_records(path)
    for name, task in REGISTRY.items():
        if supports(task, DataChecks) and task.sniff(path, records):
            return name
    seen = f" (none of its first {len(records)} record(s) has a label that tells)" if records else ""
    raise TuneforgeError(f"{path}: cannot tell which task this data is for{seen}; pass --task ({', '.join(REGISTRY)})")


def check_config(inputs: Sequence[str], task: str = "auto", overrides: list[str] | None = None,
                 tokenizer: str | None = None, encoding: dict | None = None):
    """The config a check reads its data with: a YAML config (one input ending in .yaml/.yml), or data
    files given as ``train=PATH dev=PATH test=PATH`` (bare paths fill train, dev, test in order).
    ``encoding``: a run's encoding section (``--model RUN``), so sub-words are counted as it encoded them."""
    if len(inputs) == 1 and Path(inputs[0]).suffix.lower() in (".yaml", ".yml"):
        if task != "auto":
            raise TuneforgeError("--task: a config names its task (task.type); drop --task")
        return load_config(inputs[0], overrides), True
    files: dict[str, str] = {}
    free = iter(("train", "dev", "test"))
    for value in inputs:
        name, sep, path = value.partition("=")
        if not sep or name not in ("train", "dev", "test"):
            name, path = next((n for n in free if n not in files), None), value
            if name is None:
                raise TuneforgeError(f"{value}: at most three files (train, dev, test); name them train=PATH ...")
        if name in files:
            raise TuneforgeError(f"{name}={path}: {name} is given twice")
        files[name] = path
    if "train" not in files:
        raise TuneforgeError("give a train file (train=PATH, or a bare path first)")
    task_type = guess_task(files["train"]) if task == "auto" else task
    tree = {"task": {"type": task_type}, "model": {"name_or_path": tokenizer or "(no tokenizer)"}, "data": files,
            **({"encoding": encoding} if encoding else {})}
    return config_from_dict(tree, source="data check", overrides=overrides), False


def run_check(inputs: Sequence[str], task: str = "auto", overrides: list[str] | None = None,
              tokenizer: str | None = None, max_length: int | None = None, model_run: str | None = None,
              folds: int = 5, noise_threshold: float = 0.9, near_threshold: float = NEAR_THRESHOLD,
              out: str | Path = "data-check") -> tuple[dict, dict[str, Path]]:
    """Everything ``tuneforge data check`` does: read, check, (cross-validate), write report.json/.html."""
    import yaml

    run_tree = None
    if model_run is not None:
        folder = find_model_folder(model_run)
        run_config = Path(model_run) / "config.yaml"
        if not run_config.exists():
            raise TuneforgeError(f"{model_run}: no config.yaml; --model needs a run folder made by tuneforge train")
        run_tree = yaml.safe_load(run_config.read_text(encoding="utf-8"))
        tokenizer = tokenizer or str(folder)
    cfg, from_config = check_config(inputs, task, overrides, tokenizer)
    if run_tree is not None and (run_tree.get("task") or {}).get("type", "token_classification") != cfg.task.type:
        raise TuneforgeError(f"--model {model_run}: a {run_tree['task']['type']} run cannot cross-validate "
                             f"{cfg.task.type} data")
    if run_tree is not None and run_tree.get("encoding") and not from_config:  # count sub-words as the run did
        cfg, _ = check_config(inputs, cfg.task.type, overrides, tokenizer, run_tree["encoding"])
    the_task = make_task(cfg)
    require(the_task, DataChecks, "tuneforge data check")
    splits, malformed, normalise_report = read_for_check(the_task)
    loaded = None
    name = tokenizer or (cfg.model.name_or_path if from_config else None)
    if name:
        loaded = load_tokenizer(name) if name != cfg.model.name_or_path else the_task.load_tokenizer()
    options = CheckOptions(tokenizer=loaded, tokenizer_name=name, near_threshold=near_threshold,
                           max_length=max_length or cfg.encoding.max_length)
    noise = None
    if run_tree is not None:
        items = items_of(splits)
        all_labels = the_task.label_list([ex for exs in splits.values() for ex in exs])
        data_section = cfg.data.model_dump(mode="json")
        tree = dict(run_tree, data=data_section, task=dict(run_tree.get("task") or {}, type=cfg.task.type))
        noise = label_noise(the_task, tree, splits, items, Path(out), folds, noise_threshold,
                            labels=all_labels, show=options.show)
    report = check(the_task, splits, malformed, normalise_report, options, noise)
    return report, write_report(report, out, _plots(report))
