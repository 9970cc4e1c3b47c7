"""Masked-LM training (task.type masked_lm): packing, masking, the loss, training, resume, the result
as a Hugging Face masked-LM and as the base of a fine-tuning run."""

from __future__ import annotations

import json

import pytest
import torch

import tuneforge
from tuneforge.data.encode import NO_GROUP, MaskingCollator, pack_documents, word_groups
from tuneforge.errors import ConfigError
from tuneforge.tasks.masked_lm import masked_lm_loss
from tuneforge.training.callbacks import StepFunction

from conftest import NER_SENTENCES, write_conll

ENGLISH = [words for words, _ in NER_SENTENCES]
CHINESE = ["我爱北京天安门", "张三在上海工作", "李四去了北京", "上海是中国的城市"]


def write_corpus(path, docs):
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    return path


def mlm_config(bert, corpus, out, **training):
    train = {"epochs": 4, "batch_size": 4, "learning_rate": 5e-3, "warmup_ratio": 0.0, "seed": 3, "progress": False}
    train.update(training)
    return {"task": {"type": "masked_lm"}, "model": {"name_or_path": str(bert)},
            "data": {"train": str(corpus), "eval_share": 0.25}, "encoding": {"max_length": 16},
            "training": train, "output_dir": str(out)}


# ---------------------------------------------------------------------------------------------
# Packing


def test_packing_loses_no_token_and_crosses_documents_only_at_a_separator(tiny_tokenizer):
    docs = ENGLISH + CHINESE + ["", "zebras went to paris"]
    tokenized = word_groups(tiny_tokenizer, docs, whole_word=False)
    cls, sep = tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id
    blocks = pack_documents(tokenized, [cls], [sep], sep, max_length=12)

    assert all(len(b.input_ids) == 12 for b in blocks[:-1]) and 2 < len(blocks[-1].input_ids) <= 12
    assert all(b.input_ids[0] == cls and b.input_ids[-1] == sep for b in blocks)
    stream = [i for b in blocks for i in b.input_ids[1:-1]]
    expected = []
    for ids, _ in tokenized:
        if ids:
            expected += ([sep] if expected else []) + ids
    assert stream == expected  # every token, in order; the separator exactly between documents
    assert all(g == NO_GROUP for b in blocks for i, g in zip(b.input_ids, b.groups) if i in (cls, sep))


# ---------------------------------------------------------------------------------------------
# Whole words


def test_whole_word_units_follow_word_pieces_and_jieba_words(tiny_tokenizer):
    (ids, groups), = word_groups(tiny_tokenizer, ["zebras went 我爱北京天安门"], chinese="jieba")
    tokens = tiny_tokenizer.convert_ids_to_tokens(ids)
    units = {}
    for token, group in zip(tokens, groups):
        units.setdefault(group, []).append(token)
    pieces = ["z", "##e", "##b", "##r", "##a", "##s"]
    assert list(units.values()) == [pieces, ["went"], ["我"], ["爱"], ["北", "京"], ["天", "安", "门"]]

    (_, by_char), = word_groups(tiny_tokenizer, ["我爱北京天安门"], chinese="characters")
    assert by_char == list(range(7))  # the fallback: character by character
    (_, by_token), = word_groups(tiny_tokenizer, ["zebras 北京"], whole_word=False)
    assert by_token == list(range(8))


def test_whole_word_masking_masks_every_piece_of_a_word_together(tiny_tokenizer):
    blocks = pack_documents(word_groups(tiny_tokenizer, ["zebras zebras 我爱北京天安门 quokka"] * 4),
                            [2], [3], 3, max_length=24)
    collate = MaskingCollator(0, 4, len(tiny_tokenizer), seed=0)
    seen_partial = 0
    for _ in range(200):
        input_ids, groups, _ = collate.pad(blocks)
        _, labels = collate.mask(input_ids, groups)
        for row in range(len(blocks)):
            for unit in set(groups[row].tolist()) - {NO_GROUP}:
                masked = (labels[row][groups[row] == unit] != -100).tolist()
                seen_partial += len(set(masked)) > 1
    assert seen_partial == 0


# ---------------------------------------------------------------------------------------------
# Masking statistics and determinism


def _token_blocks(n_blocks=8, length=66, vocab=140):
    g = torch.Generator().manual_seed(1)
    tokenized = [(torch.randint(5, vocab, (length - 2,), generator=g).tolist(), list(range(length - 2)))
                 for _ in range(n_blocks)]
    return pack_documents(tokenized, [2], [3], 3, max_length=length)


def test_masking_rates_over_many_draws_are_15_percent_and_80_10_10():
    blocks = _token_blocks()
    collate = MaskingCollator(pad_id=0, mask_id=4, vocab_size=140, seed=5)
    candidates = masked = as_mask = as_random = kept = 0
    for _ in range(400):
        input_ids, groups, _ = collate.pad(blocks)
        out, labels = collate.mask(input_ids, groups)
        chosen = labels != -100
        candidates += int((groups != NO_GROUP).sum())
        masked += int(chosen.sum())
        as_mask += int((out[chosen] == 4).sum())
        kept += int((out[chosen] == input_ids[chosen]).sum())
        as_random += int(((out[chosen] != 4) & (out[chosen] != input_ids[chosen])).sum())
        assert torch.equal(labels[chosen], input_ids[chosen])
        assert torch.equal(out[~chosen], input_ids[~chosen])  # nothing else changes
    assert masked / candidates == pytest.approx(0.15, abs=0.005)
    # a random draw can hit the original token (1/140), which then reads as kept
    assert as_mask / masked == pytest.approx(0.8, abs=0.01)
    assert as_random / masked == pytest.approx(0.1 * 139 / 140, abs=0.01)
    assert kept / masked == pytest.approx(0.1 + 0.1 / 140, abs=0.01)


def test_masks_are_deterministic_by_seed_and_new_each_call():
    blocks = _token_blocks(n_blocks=4)
    draws = {}
    for seed in (1, 1, 2):
        collate = MaskingCollator(0, 4, 140, seed=seed)
        draws.setdefault(seed, []).append([collate(blocks)["input_ids"] for _ in range(3)])
    first, again = draws[1]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # dynamic: the next epoch's batch gets other masks
    assert not torch.equal(first[0], draws[2][0][0])


def test_every_block_gets_at_least_one_target():
    tokenized = [([7, 8, 9], [0, 1, 2])] * 30
    blocks = pack_documents(tokenized, [2], [3], 3, max_length=5)  # 3 text tokens a block
    batch = MaskingCollator(0, 4, 140, mlm_probability=0.01, seed=0)(blocks)
    assert ((batch["labels"] != -100).sum(dim=1) >= 1).all()


# ---------------------------------------------------------------------------------------------
# The loss


def test_masked_positions_only_loss_equals_the_models_own(tiny_bert, tiny_tokenizer):
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert)
    blocks = pack_documents(word_groups(tiny_tokenizer, ENGLISH + CHINESE), [2], [3], 3, max_length=16)
    batch = MaskingCollator(0, 4, len(tiny_tokenizer), seed=0)(blocks)
    batch.pop("n_tokens")
    model.eval()
    ours, _ = masked_lm_loss(model, batch)
    theirs = model(**batch).loss
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Training end to end


@pytest.fixture(scope="module")
def mlm_run(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm")
    corpus = write_corpus(root / "corpus.txt", (ENGLISH + CHINESE) * 6)
    return tuneforge.train(mlm_config(tiny_bert, corpus, root / "run", epochs=6))


def test_a_tiny_models_mlm_loss_falls(mlm_run):
    history = mlm_run.metrics["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.3
    assert history[-1]["dev_loss"] < history[0]["dev_loss"]
    dev = mlm_run.metrics["dev"]
    assert mlm_run.metrics["metric_for_best"] == "loss"
    assert mlm_run.metrics["best_epoch"] == 1 + min(range(6), key=lambda i: history[i]["dev_loss"])
    assert dev["perplexity"] == pytest.approx(2.718281828 ** dev["loss"])
    assert dev["loss"] == pytest.approx(history[mlm_run.metrics["best_epoch"] - 1]["dev_loss"], rel=1e-6)


def test_the_result_is_a_hugging_face_masked_lm(mlm_run):
    from transformers import AutoModelForMaskedLM, pipeline

    folder = str(mlm_run.run_dir / "model")
    model = AutoModelForMaskedLM.from_pretrained(folder)
    assert model.cls.predictions.decoder.weight is model.get_input_embeddings().weight
    filled = pipeline("fill-mask", model=folder)("john [MASK] in new york")
    ours = tuneforge.load(mlm_run.run_dir, precision="fp32").predict("john [MASK] in new york")[0]["predictions"][0]
    assert [p["token"] for p in filled] == [p["token"] for p in ours]
    assert [p["score"] for p in filled] == pytest.approx([p["score"] for p in ours], abs=1e-4)

    metrics, report = tuneforge.evaluate(mlm_run.run_dir, mlm_run.run_dir.parent / "corpus.txt")
    assert metrics["masked_tokens"] > 0 and "perplexity" in report


def test_a_fine_tuning_run_starts_from_the_pretrained_folder(mlm_run, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "dev", "test"):
        write_conll(data / f"{name}.conll")
    from conftest import tiny_config

    cfg = tiny_config(mlm_run.run_dir / "model", data, tmp_path / "ner", epochs=1)
    result = tuneforge.train(cfg)
    assert "new task head for" in capsys.readouterr().out
    from safetensors.torch import load_file

    mlm = load_file(str(mlm_run.run_dir / "model" / "model.safetensors"))
    ner = tuneforge.load(result.run_dir).model
    # the encoder starts from the pre-trained weights: layers the first step barely moves stay close
    start = mlm["bert.encoder.layer.0.attention.self.query.weight"]
    now = ner.bert.encoder.layer[0].attention.self.query.weight.detach()
    assert (now - start).abs().max() < 0.05 < start.abs().max()
    assert not any(k.startswith("cls.") for k in ner.state_dict())  # the MLM head is dropped


def test_resume_is_exact_with_dynamic_masking(tiny_bert, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", (ENGLISH + CHINESE) * 6)
    cfg = mlm_config(tiny_bert, corpus, tmp_path / "killed", epochs=2, checkpoint_every_steps=4)

    def stop(step):
        if step == 9:  # mid-epoch 2 (6 steps an epoch; the checkpoint of step 8 survives)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tuneforge.train(cfg, callbacks=[StepFunction(stop, name="stop")])
    state = json.loads((tmp_path / "killed" / "checkpoint" / "state.json").read_text())
    assert 0 < state["step_in_epoch"] and "masking" in state["callbacks"]
    resumed = tuneforge.train(cfg, resume=True)
    reference = tuneforge.train(dict(cfg, output_dir=str(tmp_path / "reference")))
    assert resumed.metrics["history"] == reference.metrics["history"]
    a = (tmp_path / "killed" / "model" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "reference" / "model" / "model.safetensors").read_bytes()


# ---------------------------------------------------------------------------------------------
# Config


def test_masked_lm_config_errors_name_the_key(tiny_bert, tmp_path):
    from tuneforge.config import config_from_dict

    corpus = write_corpus(tmp_path / "c.txt", ENGLISH)
    base = mlm_config(tiny_bert, corpus, tmp_path / "run")
    with pytest.raises(ConfigError, match="'encoding.stride' does not apply to task.type masked_lm"):
        config_from_dict(base, overrides=["encoding.stride=4"])
    with pytest.raises(ConfigError, match="'task.decode' does not apply to task.type masked_lm"):
        config_from_dict(base, overrides=["task.decode=argmax"])
    with pytest.raises(ConfigError, match="mask_replace_prob' \\+ 'task.random_replace_prob' must not exceed 1"):
        config_from_dict(base, overrides=["task.mask_replace_prob=0.95"])
    with pytest.raises(ConfigError, match="masked_lm trains with full or lora"):
        tuneforge.train(base, overrides=["method.name=adapter"])
