"""A GGUF checkpoint written here (tests/gguf_writer.py) loads through transformers and tuneforge
with the weights and tokenizer it was written from, and trains as a tuneforge run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tuneforge
from tuneforge.runtime.models import load_causal_lm, load_tokenizer

from gguf_writer import SMOLLM2_GGUF, write_tiny_llama_gguf

NAME = "tiny.gguf"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."}]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(SMOLLM2_GGUF.parent), gguf_file=SMOLLM2_GGUF.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("gguf")
    write_tiny_llama_gguf(model, folder / NAME)
    return model, tokenizer, folder


def test_the_written_gguf_loads_with_the_same_weights_and_tokenizer(original):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer, folder = original
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=NAME, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=False)])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    read = AutoTokenizer.from_pretrained(folder, gguf_file=NAME)
    assert read.apply_chat_template(CHAT, tokenize=False) == tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert read(tokenizer.apply_chat_template(CHAT, tokenize=False))["input_ids"] == \
        tokenizer(tokenizer.apply_chat_template(CHAT, tokenize=False))["input_ids"]


def test_tuneforge_loads_it_drops_the_quantizer_record_and_saves_it_plainly(original, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tokenizer, folder = original
    loaded = load_causal_lm(str(folder), None, False, NAME, "float32", None)
    assert loaded.hf_quantizer is None and not hasattr(loaded.config, "quantization_config")
    assert load_tokenizer(str(folder), None, False, NAME).pad_token_id == tokenizer.pad_token_id
    loaded.save_pretrained(tmp_path / "plain")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "plain", dtype=torch.float32).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, loaded.eval()(ids).logits)


def test_a_lora_sft_run_on_the_gguf_file_trains_and_answers(original, tmp_path):
    _, tokenizer, folder = original
    train = tmp_path / "chats.jsonl"
    train.write_text("".join(json.dumps({"messages": CHAT}) + "\n" for _ in range(3)), encoding="utf-8")
    result = tuneforge.train({
        "task": {"type": "sft", "eval_generations": 0}, "model": {"name_or_path": str(folder), "gguf_file": NAME},
        "data": {"train": str(train), "dev": str(train)}, "method": {"name": "lora"}, "encoding": {"max_length": 128},
        "training": {"epochs": 1, "batch_size": 2, "precision": "fp32", "progress": False},
        "output_dir": str(tmp_path / "run")})
    # the loss covers the assistant's answer and its end-of-turn token, in each of the 3 conversations
    answer_tokens = len(tokenizer("Paris.<|im_end|>", add_special_tokens=False)["input_ids"])
    assert result.metrics["dev"]["loss"] > 0 and result.metrics["dev"]["predicted_tokens"] == 3 * answer_tokens == 9
    answer = tuneforge.load(result.run_dir, precision="fp32").generate("Capital of France?", max_new_tokens=3)[0]
    assert answer["completion_tokens"] >= 1


def test_a_missing_gguf_file_is_one_line_naming_it(original, tmp_path):
    _, _, folder = original
    with pytest.raises(tuneforge.TuneforgeError, match=rf"model.gguf_file: {folder / 'nope.gguf'} does not exist; "
                                                        rf"the folder holds {NAME}"):
        load_causal_lm(str(folder), None, False, "nope.gguf")
