"""Other tokenizer families and languages: byte-level BPE encoders (RoBERTa), decoder models
(GPT-2) and Chinese with a character-level vocabulary — each built tiny in the test."""

from pathlib import Path

import pytest

import tuneforge
from tuneforge.api import train

from conftest import NER_SENTENCES, tiny_config, write_conll


def build_byte_level_bpe(folder: Path, kind: str) -> Path:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2Model, GPT2Tokenizer, RobertaConfig, RobertaModel, RobertaTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    corpus = [s for s, _ in NER_SENTENCES] + ["new words appear sometimes, like zebra or quux"]
    bpe.train_from_iterator(corpus * 3, vocab_size=320, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    _, merges_file = bpe.save_model(str(folder))
    merges = [tuple(line.split()) for line in Path(merges_file).read_text().splitlines()[1:] if line.strip()]
    vocab = bpe.get_vocab()
    torch.manual_seed(0)
    if kind == "gpt2":
        tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
        config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                            bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"])
        GPT2Model(config).save_pretrained(folder)
    else:
        tokenizer = RobertaTokenizer(vocab=vocab, merges=merges)
        config = RobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=130, pad_token_id=vocab["<pad>"])
        RobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["roberta", "gpt2"])
def test_byte_level_bpe_models_overfit(kind, tmp_path, ner_files):
    model_dir = build_byte_level_bpe(tmp_path / kind, kind)
    # a causal model sees only the left context of each word, so it needs longer to memorise
    epochs = 60 if kind == "gpt2" else 40
    result = train(tiny_config(model_dir, ner_files, tmp_path / "run", epochs=epochs, learning_rate=1e-2))
    assert result.metrics["test"]["f1"] == 1.0
    model = tuneforge.load(result.run_dir)
    assert model.label_position == ("last" if kind == "gpt2" else "first")
    seen, unseen = model.predict(["john smith lives in new york", "zebra quux"])
    assert seen["tags"] == ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    assert len(unseen["tags"]) == 2  # words outside the training text still get one tag each


CHINESE = [
    ("张三在北京工作", "B-PER I-PER O B-LOC I-LOC O O"),
    ("李四去了上海", "B-PER I-PER O O B-LOC I-LOC"),
    ("我爱北京天安门", "O O B-LOC I-LOC B-LOC I-LOC I-LOC"),
    ("上海是中国的城市", "B-LOC I-LOC O B-LOC I-LOC O O O"),
    ("john在北京", "B-PER O B-LOC I-LOC"),
]


def test_chinese_character_level_ner(tiny_bert, tmp_path):
    sentences = []
    for text, tags in CHINESE:
        words = ["john"] + list(text[4:]) if text.startswith("john") else list(text)
        sentences.append((" ".join(words), tags))
    for name in ("train", "dev", "test"):
        write_conll(tmp_path / f"{name}.conll", sentences)
    result = train(tiny_config(tiny_bert, tmp_path, tmp_path / "run", epochs=60))
    assert result.metrics["test"]["f1"] == 1.0
    model = tuneforge.load(result.run_dir)
    (pred,) = model.predict("李四去了上海")  # raw text: split into characters, spans with offsets
    assert pred["words"] == list("李四去了上海")
    assert [(e["type"], e["text"], e["start_char"], e["end_char"]) for e in pred["entities"]] == [
        ("PER", "李四", 0, 2), ("LOC", "上海", 4, 6)
    ]
    (mixed,) = model.predict("John在北京")
    assert mixed["words"] == ["John", "在", "北", "京"]
    assert [(e["type"], e["text"]) for e in mixed["entities"]] == [("PER", "John"), ("LOC", "北京")]
