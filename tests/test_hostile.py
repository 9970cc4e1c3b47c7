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


# ---------------------------------------------------------------------------------------------
# Commands: check arguments and outputs before the work, one line for each mistake


@pytest.fixture(scope="module")
def trained_run(tiny_bert, tmp_path_factory) -> Path:
    """A small finished run (quality is not the point here); tests copy it before damaging it."""
    from tuneforge.api import train

    data = tmp_path_factory.mktemp("hostile-data")
    for name in ("train", "dev", "test"):
        write_conll(data / f"{name}.conll")
    out = tmp_path_factory.mktemp("hostile-run") / "run"
    train(tiny_config(tiny_bert, data, out, epochs=2))
    return out


@pytest.mark.parametrize("value", ["0", "-1", "two"])
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_batch_size_must_be_positive(trained_run, ner_files, capsys, command, value):
    assert main([command, str(trained_run), str(ner_files / "test.conll"), "--batch-size", value]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: tuneforge {command}: argument --batch-size: ")
    assert line.endswith(f"see tuneforge {command} --help")


def test_batch_size_is_checked_in_the_python_api_too(trained_run):
    import tuneforge

    model = tuneforge.load(trained_run)
    for size in (0, -1):
        with pytest.raises(tuneforge.TuneforgeError, match=f"batch size {size}: must be a whole number of at least 1"):
            model.predict("john lives in paris", batch_size=size)


def test_out_that_cannot_be_written_fails_before_any_work(trained_run, ner_files, tmp_path, capsys, monkeypatch):
    import tuneforge.api

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(tuneforge.api, "load", no_loading)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [(tmp_path, "is a folder; give a file path"), (blocker / "out.json", f"{blocker} is a file")]
    for out, fragment in cases:
        for command in ("predict", "eval"):
            assert main([command, str(trained_run), str(ner_files / "test.conll"), "--out", str(out)]) == 2
            line = error_line(capsys)
            assert line.startswith(f"error: --out {out}: ") and fragment in line
    assert main(["data", "split", str(ner_files / "train.conll"), "--out", str(blocker)]) == 2
    assert error_line(capsys) == f"error: --out {blocker}: is a file; give a folder path"


@pytest.mark.parametrize("ratios", ["0.5,0.5,0.5", "a,b,c", "0.8,0.2", "nan,0.5,0.5", "1.2,-0.1,-0.1", ""])
def test_split_ratios_are_three_numbers_summing_to_one(ner_files, tmp_path, capsys, ratios):
    assert main(["data", "split", str(ner_files / "train.conll"), "--out", str(tmp_path / "s"), "--ratios", ratios]) == 2
    assert error_line(capsys) == (
        f"error: --ratios {ratios}: give three non-negative numbers train,dev,test that sum to 1, such as 0.8,0.1,0.1"
    )
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("flag", ["--near-threshold", "--noise-threshold"])
def test_check_thresholds_are_fractions(ner_files, tmp_path, capsys, flag):
    assert main(["data", "check", str(ner_files / "train.conll"), "--out", str(tmp_path / "c"), flag, "1.5"]) == 2
    assert error_line(capsys).endswith("1.5 must be above 0 and at most 1; see tuneforge data check --help")


def test_usage_mistakes_are_one_line(capsys):
    assert main(["train"]) == 2
    assert error_line(capsys).startswith("error: tuneforge train: the following arguments are required: config")
    assert main(["data", "check", "x.conll", "--scheme", "BIO"]) == 2
    assert "argument --scheme: invalid choice: 'BIO'" in error_line(capsys)


def test_a_run_without_dev_or_test_says_so_instead_of_an_empty_score(tiny_bert, ner_files, tmp_path, capsys):
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=1)
    del cfg["data"]["dev"], cfg["data"]["test"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "{}" not in last
    assert last.startswith(f"run folder: {tmp_path / 'run'} · no dev or test set scored")


# ---------------------------------------------------------------------------------------------
# Saved models and checkpoints: damaged files are named, permissions are the usual ones,
# and a run folder never switches on remote code


def copy_run(trained_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run-copy"
    shutil.copytree(trained_run, run)
    return run


@pytest.mark.parametrize(
    "damage",
    [
        b"garbage" * 10,
        b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94.",  # a pickle
        None,  # cut off half-way
    ],
)
def test_a_damaged_weights_file_is_named(trained_run, tmp_path, capsys, damage):
    run = copy_run(trained_run, tmp_path)
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(damage if damage is not None else weights.read_bytes()[: weights.stat().st_size // 2])
    texts = tmp_path / "t.txt"
    texts.write_text("john lives in paris\n")
    assert main(["predict", str(run), str(texts)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {weights}: damaged weights file (")
    assert line.endswith("restore the run folder or train again")


def test_a_damaged_model_description_is_named(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path)
    meta = run / "model" / "tuneforge.json"
    meta.write_text("{broken")
    assert main(["eval", str(run), str(tmp_path / "missing.conll")]) == 2
    assert error_line(capsys).startswith(f"error: {meta}: cannot be read (")


def test_a_tampered_checkpoint_is_named_not_unpickled(tiny_bert, tmp_path):
    import pickle

    import torch

    from tuneforge.errors import TuneforgeError
    from tuneforge.runtime.models import load_token_classifier
    from tuneforge.training.checkpoint import CHECKPOINT_DIR, load_checkpoint, rank_state, save_checkpoint

    model = load_token_classifier(str(tiny_bert), ["O", "B-PER", "I-PER"], announce_new_head=False)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint(tmp_path, model, optimizer, scheduler, {"global_step": 1}, [rank_state()])
    folder = tmp_path / CHECKPOINT_DIR
    (folder / "optimizer.pt").write_bytes(pickle.dumps(os.getcwd))  # a global that weights_only refuses
    with pytest.raises(TuneforgeError, match=rf"^{folder / 'optimizer.pt'}: damaged checkpoint file \("):
        load_checkpoint(tmp_path, model, optimizer, scheduler)
    (folder / "trainable.safetensors").write_bytes(b"\x00" * 12)
    with pytest.raises(TuneforgeError, match=rf"^{folder / 'trainable.safetensors'}: damaged checkpoint file"):
        load_checkpoint(tmp_path, model, optimizer, scheduler)


def test_saved_model_files_get_the_usual_permissions(tiny_bert, tiny_tokenizer, tmp_path):
    from tuneforge.artifacts.model_folder import save_model
    from tuneforge.methods import get_method
    from tuneforge.runtime.models import load_token_classifier

    model = load_token_classifier(str(tiny_bert), ["O", "B-PER", "I-PER"], announce_new_head=False)
    old = os.umask(0o022)
    try:
        save_model(tmp_path / "model", model, tiny_tokenizer, get_method("full"), {"task": "token_classification"})
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "model").iterdir()}
    assert modes["model.safetensors"] == 0o644  # transformers writes it 0600
    assert set(modes.values()) == {0o644}


def test_a_run_folder_cannot_switch_on_remote_code(tiny_bert, tiny_tokenizer, tmp_path, monkeypatch):
    import inspect

    from tuneforge import loading
    from tuneforge.artifacts.model_folder import save_model
    from tuneforge.methods import get_method
    from tuneforge.runtime.models import load_token_classifier
    from tuneforge.tasks.token_classification import task as token_task

    labels = ["O", "B-PER", "I-PER"]
    method = get_method("bitfit")
    model = method.prepare(load_token_classifier(str(tiny_bert), labels, announce_new_head=False), None)
    meta = {"task": "token_classification", "labels": labels, "max_length": 32, "stride": 8,
            "base_model": {"name_or_path": str(tiny_bert), "revision": None, "trust_remote_code": True},
            "method_config": {"name": "bitfit"}}
    save_model(tmp_path / "model", model, tiny_tokenizer, method, meta)
    seen = []

    def recording_loader(*args, **kwargs):
        seen.append(inspect.signature(load_token_classifier).bind(*args, **kwargs).arguments.get("trust_remote_code"))
        return load_token_classifier(*args, **kwargs)

    monkeypatch.setattr(token_task, "load_token_classifier", recording_loader)
    loading.load_model(tmp_path, device="cpu")
    loading.load_model(tmp_path, device="cpu", trust_remote_code=True)
    assert seen == [False, True]  # the file's true is ignored; only the caller's flag counts


# ---------------------------------------------------------------------------------------------
# Windows longer than the model's positions


def test_position_limits_with_roberta_offsets():
    from transformers import BertConfig, DebertaV2Config, GPT2Config, RobertaConfig

    from tuneforge.runtime.models import check_max_length, position_limit

    assert position_limit(BertConfig(max_position_embeddings=512)) == 512
    assert position_limit(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert position_limit(GPT2Config(n_positions=1024)) == 1024
    assert position_limit(DebertaV2Config(position_biased_input=False)) is None
    check_max_length(RobertaConfig(max_position_embeddings=514, pad_token_id=1), None, 512)
    with pytest.raises(ConfigError, match=r"^encoding.max_length: 513 tokens do not fit the model's 512 positions \(roberta\); set encoding.max_length to 512 or less"):
        check_max_length(RobertaConfig(max_position_embeddings=514, pad_token_id=1), None, 513)
    with pytest.raises(ConfigError, match=r"^encoding.max_length: 1024 tokens"):
        check_max_length(BertConfig(max_position_embeddings=512), None, 1024)


def test_a_saved_window_longer_than_the_model_is_refused_at_load(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path)
    meta_path = run / "model" / "tuneforge.json"
    meta = json.loads(meta_path.read_text())
    meta["max_length"] = 1024  # the tiny BERT has 128 positions
    meta_path.write_text(json.dumps(meta))
    texts = tmp_path / "long.txt"
    texts.write_text("john lives in paris " * 200 + "\n")
    assert main(["predict", str(run), str(texts)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {meta_path}: max_length: 1024 tokens do not fit the model's 128 positions (")
    assert line.endswith("set encoding.max_length to 128 or less (longer inputs are read in windows)")


def test_a_window_longer_than_the_model_is_refused_before_training(tiny_bert, ner_files, tmp_path):
    from tuneforge.api import train

    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=1)
    cfg["encoding"] = {"max_length": 256, "stride": 8}
    with pytest.raises(ConfigError, match=r"^encoding.max_length: 256 tokens do not fit the model's 128 positions"):
        train(cfg)


def test_a_training_set_of_only_o_is_refused_before_training(tiny_bert, ner_files, tmp_path):
    from tuneforge.api import train
    from tuneforge.errors import DataError

    write_conll(ner_files / "train.conll", [("john lives in paris", "O O O O")])
    with pytest.raises(DataError, match="every tag in the 1 training sentence"):
        train(tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=1))


# ---------------------------------------------------------------------------------------------
# Messages


@pytest.mark.parametrize("path", ["/nonexistent/model", "./models/missing"])
def test_a_missing_local_model_is_reported_as_missing(config_file, capsys, path):
    assert main(["train", str(config_file), "--set", f"model.name_or_path={path}"]) == 2
    assert error_line(capsys) == f"error: model.name_or_path: {path} does not exist; check the path to the model folder"


def test_a_folder_that_is_not_a_model(config_file, tmp_path, capsys):
    assert main(["train", str(config_file), "--set", f"model.name_or_path={tmp_path}"]) == 2
    assert "is a folder without config.json" in error_line(capsys)


def test_no_too_long_warning_where_tuneforge_windows(tiny_tokenizer, monkeypatch):
    import logging

    from tuneforge.data.encode import encode_examples
    from tuneforge.data.readers import TokenExample

    monkeypatch.setattr(tiny_tokenizer, "model_max_length", 16)
    monkeypatch.setattr(tiny_tokenizer, "deprecation_warnings", {})  # the warning is given once per tokenizer
    messages: list[str] = []
    grab = logging.Handler()
    grab.emit = lambda record: messages.append(record.getMessage())
    library = logging.getLogger("transformers")  # it does not propagate to the root logger
    library.addHandler(grab)
    try:
        long = TokenExample(words=["john", "lives", "in", "paris"] * 20)
        windows, stats = encode_examples([long, TokenExample(words=["mary"])], tiny_tokenizer, None, 16, 4)
    finally:
        library.removeHandler(grab)
    assert stats.split_examples == 1 and len(windows) > 2
    assert stats.describe() == (f"2 examples -> {len(windows)} windows, 1.0 sub-words a word; "
                                "1 long examples split into overlapping windows")
    assert not [m for m in messages if "indexing errors" in m]


def _without_cjk_fonts_in_matplotlibs_list(monkeypatch, request):
    """What a process sees whose matplotlib font cache was built before the CJK font was installed."""
    from matplotlib import font_manager

    from tuneforge.evaluation.plots import CJK_FONTS

    manager = font_manager.fontManager
    monkeypatch.setattr(manager, "ttflist", [f for f in manager.ttflist if f.name not in CJK_FONTS])
    manager._findfont_cached.cache_clear()
    request.addfinalizer(manager._findfont_cached.cache_clear)


def test_chinese_labels_in_plots_find_an_installed_cjk_font(tmp_path, monkeypatch, request, recwarn):
    from tuneforge.evaluation.plots import cjk_fonts, save_confusion_matrix_png

    if not cjk_fonts():
        pytest.skip("no CJK font on this machine (make test installs fonts-noto-cjk where it can)")
    _without_cjk_fonts_in_matplotlibs_list(monkeypatch, request)
    save_confusion_matrix_png([[3, 1], [0, 2]], ["正面", "负面"], tmp_path / "c.png", title="测试")
    missing = [str(w.message) for w in recwarn if "missing from font" in str(w.message)]
    assert missing == [] and (tmp_path / "c.png").stat().st_size > 0


def test_without_any_cjk_font_the_plot_says_so_once(tmp_path, monkeypatch, request, recwarn, capsys):
    from matplotlib import font_manager

    from tuneforge.evaluation.plots import save_confusion_matrix_png

    _without_cjk_fonts_in_matplotlibs_list(monkeypatch, request)
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda *a, **k: [])
    save_confusion_matrix_png([[3, 1], [0, 2]], ["正面", "负面"], tmp_path / "c.png")
    assert [w for w in recwarn if "missing from font" in str(w.message)] == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: no CJK font installed")


# ---------------------------------------------------------------------------------------------
# Fuzz: malformed data files and configs end in one line and exit 2, or in a right result

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Fixed examples in CI (derandomize); TUNEFORGE_FUZZ_EXAMPLES=5000 for a long hunt on one's own machine.
FUZZ = settings(max_examples=int(os.environ.get("TUNEFORGE_FUZZ_EXAMPLES", 60)), deadline=None,
                derandomize="TUNEFORGE_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
TAGS = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "M-PER", "W-LOC", "L-LOC", "U-LOC", "B-LOC", "I-LOC", "PER",
        "B-", "X-PER", "b-per", "B_ORG", "-", "O O"]
WORDS = ["john", "北", "a b", "-DOCSTART-", "\u200b", "x\x00y", "ö", ""]
token_line = st.tuples(st.sampled_from(WORDS), st.sampled_from(["\t", " ", "  ", "\t\t"]), st.sampled_from(TAGS))
data_file = st.tuples(
    st.lists(st.one_of(token_line, st.just(None)), min_size=0, max_size=12),  # None: a blank line
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff"]),  # nothing, a BOM, a byte that is not UTF-8
)


def _input_types(tags: list[str]) -> set[str]:
    return {t[2:] if len(t) > 2 and t[1] in "-_" else t for t in tags}


@FUZZ
@given(data_file)
def test_fuzz_data_check_exits_2_with_one_line_or_reads_only_labels_it_was_given(tmp_path_factory, capsys, case):
    lines, newline, prefix = case
    text = newline.join("" if line is None else f"{line[0]}{line[1]}{line[2]}" for line in lines) + newline
    path = tmp_path_factory.mktemp("fuzz") / "data.conll"
    path.write_bytes(prefix + text.encode("utf-8"))
    code = main(["data", "check", str(path), "--out", str(path.parent / "check")])
    out, err = capsys.readouterr()
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
        return
    if code == 1:  # records skipped as malformed: errors, one line saying so (issue 30)
        assert err.startswith("errors: ") and err.endswith("malformed record(s) skipped (listed in the report); exit status 1\n"), err
        err = ""
    assert code in (0, 1) and err == ""
    labels = out.strip().splitlines()[-1].removeprefix("labels: ").split(", ")
    given_tags = [line[2] for line in lines if line is not None]
    # every label is IOB2, of an entity type the file named: none invented (B-M-PER, B-X-PER...)
    assert all(label == "O" or (label[:2] in ("B-", "I-") and label[2:] in _input_types(given_tags)) for label in labels)


KEYS = ["task.type", "method", "data", "training.epochs", "training.batch_size", "training.learning_rate", "training.warmup_ratio",
        "training.max_grad_norm", "training.seed", "training.precision", "encoding.max_length", "encoding.stride",
        "data.split", "data.scheme", "data.tag_column", "method.name", "method.r", "task.type", "task.decode",
        "output_dir", "model", "training", "nonsense.key", "training.epochz"]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["", "x", "IOB2", "BMES", "lora", "1e-3", "[", "{a"]),
    st.lists(st.floats(min_value=-1, max_value=2), max_size=4), st.dictionaries(st.sampled_from(["a", "r"]), st.integers(), max_size=2),
)
TEXT_DAMAGE = st.sampled_from(["none", "duplicate-line", "drop-char", "bad-byte", "tab-indent"])


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3), TEXT_DAMAGE, st.integers(0, 400))
@example([("task.type", [])], "none", 0)  # found by this test: a TypeError, not a message
@example([("method.name", [])], "none", 0)
def test_fuzz_configs_are_valid_or_one_line_errors(tmp_path_factory, settings_to_break, damage, where):
    from tuneforge.config import _set_dotted

    tree = {"model": {"name_or_path": "m"}, "data": {"train": "t.conll"}, "training": {"epochs": 1}}
    for key, value in settings_to_break:
        try:
            _set_dotted(tree, key, value)
        except ConfigError:
            pass  # a value set on a key whose section is already a plain value
    text = yaml.safe_dump(tree, allow_unicode=True).encode("utf-8")
    lines = text.split(b"\n")
    at = where % max(len(text), 1)
    if damage == "duplicate-line":
        lines.insert(where % len(lines), lines[where % len(lines)])
        text = b"\n".join(lines)
    elif damage == "drop-char":
        text = text[:at] + text[at + 1:]
    elif damage == "bad-byte":
        text = text[:at] + b"\xfe" + text[at:]
    elif damage == "tab-indent":
        text = text.replace(b"  ", b"\t", 1)
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    path.write_bytes(text)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    import math

    for section in (cfg.training, cfg.encoding):
        for value in section.model_dump().values():
            assert not isinstance(value, float) or math.isfinite(value)


@FUZZ
@given(st.text(max_size=40))
@example("0\n0=")  # found by this test: the key was echoed with its line break
@example("training.epochs=\n")
def test_fuzz_set_pairs_are_valid_or_one_line_errors(pair):
    from tuneforge.config import config_from_dict

    tree = {"model": {"name_or_path": "m"}, "data": {"train": "t.conll"}}
    try:
        config_from_dict(tree, overrides=[pair])
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
