"""Vocabulary extension: what is counted, what is added, how it tokenises, how the model grows; the
CLI, the ``vocab:`` config block, and LoRA training exactly the new rows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import tuneforge
from tuneforge.errors import TuneforgeError
from tuneforge.data.vocab import count_candidates, extend_vocabulary, token_stats

from conftest import write_conll

# the tiny vocabulary knows 我爱北京天安门上海是中国的城市张三在工作李四去了 and single letters, not 你好世界 or "zebra"
CORPUS = ["你好世界", "你好北京", "世界你好", "zebras went to paris", "zebras visited london", "你们"]


def test_candidates_are_counted_as_the_tokenizer_reads_the_text(tiny_tokenizer):
    found = [(c.entry, c.count, c.kind) for c in count_candidates(tiny_tokenizer, CORPUS, min_pieces=3)]
    # most frequent first, ties by the entry's text
    assert found == [("你", 4, "character"), ("好", 3, "character"), ("zebras", 2, "word"), ("世", 2, "character"),
                     ("界", 2, "character"), ("们", 1, "character")]
    assert [c.entry for c in count_candidates(tiny_tokenizer, CORPUS, kinds="characters")] == ["你", "好", "世", "界", "们"]
    assert [c.entry for c in count_candidates(tiny_tokenizer, CORPUS, kinds="words")] == ["zebras"]


def test_token_stats_count_unk_and_pieces_per_character(tiny_tokenizer):
    stats = token_stats(tiny_tokenizer, ["你好北京", "zebras"])
    # 你 好 -> [UNK] [UNK]; 北 京; z ##e ##b ##r ##a ##s
    assert (stats.tokens, stats.unk, stats.characters) == (10, 2, 10)
    assert stats.unk_rate == 0.2 and stats.pieces_per_char == 1.0
    assert token_stats(tiny_tokenizer, [["你", "好"], ["北", "京"]]).unk == 2  # pre-split words (CoNLL) too


@pytest.fixture(scope="module")
def extended(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab") / "extended"
    result = extend_vocabulary(str(tiny_bert), CORPUS, add=5, out=out, reports={"labelled": [["你", "好"]]},
                               min_count=2, noise_std=0.0)
    return result, out


def test_new_tokens_tokenise_as_one_token(extended, tiny_bert):
    from transformers import AutoTokenizer

    result, out = extended
    assert [c.entry for c in result.added] == ["你", "好", "zebras", "世", "界"]  # 们 is seen once: below min_count
    tokenizer = AutoTokenizer.from_pretrained(out)
    old = AutoTokenizer.from_pretrained(tiny_bert)
    for cand in result.added:
        assert tokenizer(cand.entry, add_special_tokens=False)["input_ids"] == [tokenizer.convert_tokens_to_ids(cand.entry)]
    assert tokenizer.tokenize("你好世界 zebras 北京") == ["你", "好", "世", "界", "zebras", "北", "京"]
    # every text the old tokenizer read without [UNK] keeps its ids
    assert tokenizer("john went to paris")["input_ids"] == old("john went to paris")["input_ids"]
    assert result.stats["corpus"]["before"]["unk"] > 0 and result.stats["corpus"]["after"]["unk"] == 1  # 们
    assert result.stats["labelled"]["after"]["unk_rate"] == 0.0


def test_resized_model_keeps_old_embeddings_bit_identical(extended, tiny_bert):
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    result, out = extended
    base = load_file(str(tiny_bert / "model.safetensors"))["embeddings.word_embeddings.weight"]
    model = AutoModelForMaskedLM.from_pretrained(out)
    grown = model.get_input_embeddings().weight.detach()
    n_old = base.shape[0]
    assert grown.shape[0] == n_old + 5 and torch.equal(grown[:n_old], base)
    assert model.cls.predictions.decoder.weight is model.get_input_embeddings().weight  # still tied
    # noise_std 0: a character that was [UNK] starts at the mean row; "zebras" at the mean of z ##e ##b ##r ##a ##s
    assert torch.allclose(grown[n_old], base.mean(dim=0))
    old = AutoTokenizer.from_pretrained(tiny_bert)
    pieces = old("zebras", add_special_tokens=False)["input_ids"]
    assert torch.allclose(grown[n_old + 2], base[pieces].mean(dim=0))
    assert model.config.tuneforge_vocab_extension == {"base_vocab_size": n_old, "added": 5}
    record = json.loads((out / "vocab_extension.json").read_text())
    assert [a["id"] for a in record["added"]] == list(range(n_old, n_old + 5))
    assert record["init"] == {"from_pieces": 1, "from_mean": 4}


def test_noise_is_seeded_and_small(tiny_bert, tmp_path):
    from transformers import AutoModelForMaskedLM

    rows = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        extend_vocabulary(str(tiny_bert), CORPUS, add=2, out=tmp_path / name, noise_std=0.01, seed=seed)
        rows.append(AutoModelForMaskedLM.from_pretrained(tmp_path / name).get_input_embeddings().weight[-2:].detach())
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])
    assert 0 < (rows[0][0] - rows[0][1]).abs().max() < 0.1


def test_a_tokenizer_that_is_not_wordpiece_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "[UNK]": 2}, merges=[], unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(TuneforgeError, match="supports WordPiece tokenizers.*BPE"):
        count_candidates(PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]"), ["ab"])


def test_cli_vocab_extend_reports_before_and_after(tiny_bert, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    labelled = write_conll(tmp_path / "ner.conll", [("你 好 北 京", "O O B-LOC I-LOC")])
    out = tmp_path / "ext"
    cli = [sys.executable, "-m", "tuneforge", "vocab", "extend", "--model", str(tiny_bert)]
    done = subprocess.run(cli + ["--corpus", str(corpus), "--add", "3", "--out", str(out), "--labelled", str(labelled)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "added 3 of" in done.stdout and "ner.conll" in done.stdout
    assert "50.00% -> 0.00%" in done.stdout  # the labelled file: 你 好 were [UNK], now known
    assert (out / "vocab_extension.json").exists() and (out / "model.safetensors").exists()
    bad = subprocess.run(cli + ["--corpus", str(tmp_path / "missing.txt"), "--add", "3", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "missing.txt" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_vocab_block_and_lora_train_exactly_the_new_rows(tiny_bert, tmp_path):
    from transformers import AutoModelForMaskedLM

    data = tmp_path / "data"
    data.mkdir()
    write_conll(data / "train.conll", [("你 好 北 京", "O O B-LOC I-LOC"), ("世 界 你 好", "O O O O")] * 3)
    write_conll(data / "dev.conll", [("你 好 上 海", "O O B-LOC I-LOC")])
    from conftest import tiny_config

    cfg = tiny_config(tiny_bert, data, tmp_path / "run", epochs=3, learning_rate=1e-2)
    cfg["data"].pop("test")
    cfg["vocab"] = {"add": 4, "min_count": 1}
    cfg["method"] = {"name": "lora", "r": 2}
    result = tuneforge.train(cfg)
    vocab = result.metrics["data"]["vocab"]
    assert vocab["added"] == 4 and vocab["stats"]["dev"]["after"]["unk"] == 0
    assert result.metrics["model"] == str(tiny_bert)  # what the config named; the extended copy is RUN/vocab

    from tuneforge.loading import export_merged

    merged = export_merged(result.run_dir, tmp_path / "merged")
    base = AutoModelForMaskedLM.from_pretrained(result.run_dir / "vocab").get_input_embeddings().weight
    from transformers import AutoModel

    after = AutoModel.from_pretrained(merged).get_input_embeddings().weight
    n_old = vocab["base_vocab_size"]
    assert torch.equal(after[:n_old], base[:n_old])  # LoRA leaves the old rows alone
    assert (after[n_old:] != base[n_old:]).any(dim=1).all()  # every new row trained
