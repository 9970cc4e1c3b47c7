"""Preference tuning (task.type preference: DPO, IPO, ORPO) on tiny random Llama models built here with
SmolLM2's tokenizer: the losses against TRL's own code, the answer mask, the reference model without a
second copy, training to a perfect reward accuracy, resume after kill -9, the SFT -> DPO chain."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import tuneforge
from tuneforge.data.readers.preference import read_preferences
from tuneforge.errors import DataError
from tuneforge.tasks.causal_lm.encoding import CHATML, IGNORE
from tuneforge.tasks.preference.encoding import PairCollator, encode_pairs
from tuneforge.tasks.preference.loss import Logps, preference_loss, sequence_logps
from tuneforge.tasks.preference.reference import AdapterDisabled, FrozenCopy, StartingWeights

from conftest import train_and_kill_9
# the tiny random Llama with SmolLM2's tokenizer, as the SFT tests build it (module fixtures, shared)
from test_sft import smollm_tokenizer_dir, tiny_llama, tokenizer, write_chats  # noqa: F401

PAIRS = [
    {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "London, I think."},
    {"prompt": [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Sky?"},
                {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "And grass?"}],
     "chosen": [{"role": "assistant", "content": "Green."}], "rejected": "Purple, obviously."},
    {"chosen": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi there, friend!"}],
     "rejected": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "No."}]},
]


def write_pairs(path: Path, pairs=PAIRS) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return path


def preference_config(model: Path, train: Path, out: Path, **overrides) -> dict:
    cfg = {"task": {"type": "preference", "beta": 0.5}, "model": {"name_or_path": str(model)},
           "data": {"train": str(train), "dev": str(train)}, "encoding": {"max_length": 128},
           "method": {"name": "lora"},
           "training": {"epochs": 8, "batch_size": 3, "learning_rate": 5e-3, "progress": False, "seed": 1},
           "output_dir": str(out)}
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return cfg


def batch_of(tokenizer, tmp_path, pairs=PAIRS) -> dict:
    rows, _, _ = encode_pairs(tokenizer, read_preferences(write_pairs(tmp_path / "batch.jsonl", pairs)), 128)
    batch = PairCollator(tokenizer.pad_token_id)(rows)
    return {k: v for k, v in batch.items() if torch.is_tensor(v)}


# --- the losses against TRL ------------------------------------------------------------------------

def _fixed_logps(seed: int = 0, n: int = 5, width: int = 7):
    """Per-token log-probabilities of 2n rows (chosen first) with a completion mask, and reference sums."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(2 * n, width + 1, dtype=torch.long)
    for row in range(2 * n):
        start = int(torch.randint(1, 4, (1,), generator=g))
        end = int(torch.randint(start + 1, width + 2, (1,), generator=g))
        mask[row, start:end] = 1
    per_token = -torch.rand(2 * n, width, generator=g, dtype=torch.float32) * 3 * mask[:, 1:]
    ref = -torch.rand(2 * n, generator=g) * 3 * mask[:, 1:].sum(1)
    return per_token, mask, ref


def _trl_dpo_loss(loss_type: str, beta: float, per_token, mask, ref) -> float:
    """TRL's DPOTrainer._compute_loss on given log-probabilities (its model's forward replaced by them)."""
    from accelerate import Accelerator
    from trl import DPOTrainer

    n = mask.shape[0] // 2
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=Accelerator(cpu=True), aux_loss_enabled=False,
        ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[loss_type],
        loss_weights=[1.0], beta=beta, label_smoothing=0.0, use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    outputs = SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token),
                              mean_logits=torch.zeros_like(per_token), is_top1=torch.zeros_like(per_token, dtype=torch.bool))
    inputs = {"input_ids": torch.zeros_like(mask), "attention_mask": torch.ones_like(mask), "completion_mask": mask,
              "ref_chosen_logps": ref[:n], "ref_rejected_logps": ref[n:]}
    return float(DPOTrainer._compute_loss(trainer, lambda **kwargs: outputs, inputs, False))


@pytest.mark.parametrize("kind, trl_type", [("dpo", "sigmoid"), ("ipo", "ipo")])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_and_ipo_equal_trls_own_loss_on_the_same_log_probabilities(kind, trl_type, beta):
    per_token, mask, ref = _fixed_logps(seed=int(beta * 10))
    policy = Logps(per_token.sum(1), mask[:, 1:].sum(1))
    reference = Logps(ref, mask[:, 1:].sum(1))
    ours, _ = preference_loss(kind, beta, 0.0, policy, reference)
    assert float(ours) == pytest.approx(_trl_dpo_loss(trl_type, beta, per_token, mask, ref), abs=1e-6)


def test_dpo_label_smoothing_is_conservative_dpo():
    per_token, mask, ref = _fixed_logps(seed=3)
    policy, reference = Logps(per_token.sum(1), mask[:, 1:].sum(1)), Logps(ref, mask[:, 1:].sum(1))
    ours, _ = preference_loss("dpo", 0.2, 0.1, policy, reference)
    (c, r), (rc, rr) = policy.halves(), reference.halves()
    d = 0.2 * ((c - rc) - (r - rr))
    by_hand = (-0.9 * torch.nn.functional.logsigmoid(d) - 0.1 * torch.nn.functional.logsigmoid(-d)).mean()
    assert float(ours) == pytest.approx(float(by_hand), abs=1e-6)


def test_orpo_equals_trls_odds_ratio_loss():
    from trl.experimental.orpo import ORPOTrainer

    per_token, mask, _ = _fixed_logps(seed=5)
    tokens = mask[:, 1:].sum(1)
    policy = Logps(per_token.sum(1), tokens)
    ours, stats = preference_loss("orpo", 0.25, 0.0, policy, None)
    trainer = SimpleNamespace(beta=0.25, accelerator=SimpleNamespace(device=torch.device("cpu")))
    avg_chosen, avg_rejected = policy.averaged()
    losses, chosen_rewards, rejected_rewards, _, _ = ORPOTrainer.odds_ratio_loss(trainer, avg_chosen, avg_rejected)
    n = tokens.shape[0] // 2
    nll = -per_token[:n].sum() / tokens[:n].sum()
    assert float(ours) == pytest.approx(float(nll - losses.mean()), abs=1e-6)
    assert torch.allclose(stats["chosen_reward"], chosen_rewards) and torch.allclose(stats["rejected_reward"], rejected_rewards)


def test_sequence_log_probabilities_equal_trls_batch_logps_and_a_hand_sum(tiny_llama, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM
    from trl.experimental.orpo import ORPOTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    batch = batch_of(tokenizer, tmp_path)
    with torch.no_grad():
        ours = sequence_logps(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    trl = ORPOTrainer.get_batch_logps(logits, batch["labels"])
    assert torch.allclose(ours.sums, trl, atol=1e-5)
    by_hand = []
    for row in range(logits.shape[0]):
        total = 0.0
        for t in range(1, logits.shape[1]):
            if batch["labels"][row, t] != IGNORE:
                total += float(torch.log_softmax(logits[row, t - 1].double(), -1)[batch["labels"][row, t]])
        by_hand.append(total)
    assert ours.sums.double().tolist() == pytest.approx(by_hand, abs=1e-4)
    assert ours.tokens.tolist() == (batch["labels"][:, 1:] != IGNORE).sum(1).tolist()


# --- data and the mask ------------------------------------------------------------------------------

def test_the_mask_covers_exactly_the_final_answer_of_each_side(tokenizer, tmp_path):
    examples = read_preferences(write_pairs(tmp_path / "pairs.jsonl"))
    rows, kept, _ = encode_pairs(tokenizer, examples, 128)
    assert len(rows) == 3 and kept == examples
    # the second pair's prompt holds an earlier assistant turn ("Blue."), which is not trained on
    for row, ex in zip(rows, examples):
        for side in ("chosen", "rejected"):
            item = getattr(row, side)
            labelled = [t for t, label in zip(item.input_ids, item.labels) if label != IGNORE]
            assert [label for label in item.labels if label != IGNORE] == labelled
            assert tokenizer.decode(labelled) == getattr(ex, side) + "<|im_end|>"
            start = item.labels.index(next(label for label in item.labels if label != IGNORE))
            assert tokenizer.decode(item.input_ids[:start]) == tokenizer.apply_chat_template(
                ex.prompt_messages, tokenize=False, add_generation_prompt=True)
    assert examples[1].prompt_messages[0] == {"role": "system", "content": "You answer in one word."}
    assert examples[2].prompt_messages == [{"role": "user", "content": "Say hi"}]


def test_pairs_read_from_parquet_equal_the_jsonl_ones(tmp_path):
    from datasets import Dataset

    plain = [{**PAIRS[0], "system": None}, {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Loud.", "system": "One word."}]
    Dataset.from_list(plain).to_parquet(str(tmp_path / "pairs.parquet"))
    from_parquet = read_preferences(tmp_path / "pairs.parquet")
    from_jsonl = read_preferences(write_pairs(tmp_path / "pairs.jsonl", plain))
    assert [(e.prompt_messages, e.chosen, e.rejected, e.line) for e in from_parquet] == \
        [(e.prompt_messages, e.chosen, e.rejected, e.line) for e in from_jsonl]
    assert from_parquet[1].prompt_messages[0] == {"role": "system", "content": "One word."}


@pytest.mark.parametrize("record, message", [
    ({"prompt": "Hi", "chosen": "Hello"}, "no 'rejected' answer"),
    ({"prompt": "", "chosen": "Hello", "rejected": "Go away"}, "empty content"),
    ({"prompt": "Hi", "chosen": "Hello", "rejected": " Hello "}, "are the same text"),
    ({"chosen": "Hello", "rejected": "Go away"}, "no 'prompt'"),
    ({"chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"}],
      "rejected": [{"role": "user", "content": "C"}, {"role": "assistant", "content": "D"}]}, "differ before their last turn"),
    ({"prompt": "Hi", "chosen": [{"role": "user", "content": "x"}], "rejected": "y"}, "one assistant answer"),
    ({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "system": "Be long.",
      "chosen": "Hello", "rejected": "Go away"}, "'system' differs from the prompt's own system turn"),
])
def test_malformed_pairs_are_one_line_errors_with_file_and_line(tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_preferences(path)
    assert str(caught.value).startswith(f"{path}:2: ") and message in str(caught.value)


def test_the_cli_reports_a_malformed_pair_in_one_line_and_writes_nothing(tiny_llama, tmp_path):
    import yaml

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps({"prompt": "Hi", "chosen": "A", "rejected": "A"}) + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(preference_config(tiny_llama, bad, tmp_path / "run")))
    proc = subprocess.run([sys.executable, "-m", "tuneforge", "train", str(config)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {bad}:2: 'chosen' and 'rejected' are the same text: the pair "
                                                "teaches nothing; remove it"]
    assert not (tmp_path / "run").exists()


def test_a_reference_option_for_orpo_is_a_config_error(tiny_llama, tmp_path):
    cfg = preference_config(tiny_llama, write_pairs(tmp_path / "p.jsonl"), tmp_path / "run",
                            **{"task.loss": "orpo", "task.reference": "precompute"})
    with pytest.raises(tuneforge.errors.ConfigError, match="task.reference"):
        tuneforge.train(cfg)


def test_truncated_pairs_are_counted(tiny_llama, tmp_path):
    long = {"prompt": "word " * 60, "chosen": "yes " * 40, "rejected": "no " * 40}
    train = write_pairs(tmp_path / "pairs.jsonl", PAIRS + [long])
    result = tuneforge.train(preference_config(tiny_llama, train, tmp_path / "run", **{"training.epochs": 1}))
    encoding = result.metrics["data"]["encoding"]
    assert "1 pairs longer than encoding.max_length 128 were cut" in encoding


# --- the reference ----------------------------------------------------------------------------------

def test_the_adapter_disabled_reference_equals_a_frozen_copy_and_starting_weights_restore_bit_for_bit(
        tiny_llama, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from tuneforge.methods import get_method
    from tuneforge.methods.lora import LoraMethodConfig

    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    frozen = FrozenCopy(base)
    from tuneforge.tasks.preference import Preference

    model = get_method("lora").prepare(Preference.load_pretrained(str(tiny_llama)), LoraMethodConfig(name="lora"))
    start = StartingWeights(model)
    with torch.no_grad():  # move the adapter away from its start, as training does
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    batch = batch_of(tokenizer, tmp_path)
    expected = frozen.logps(None, batch).sums
    trained = [p.detach().clone() for p in model.parameters()]
    model.train()
    assert not torch.allclose(sequence_logps(model.eval(), batch).sums, expected, atol=1e-3)  # the adapter matters
    model.train()
    assert torch.allclose(AdapterDisabled().logps(model, batch).sums, expected, atol=1e-6)
    assert torch.allclose(start.logps(model, batch).sums, expected, atol=1e-6)
    assert model.training  # back in training mode
    assert all(torch.equal(a, b) for a, b in zip(trained, model.parameters()))  # the trained tensors, bit for bit


# --- training -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dpo_run(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dpo")
    train = write_pairs(folder / "pairs.jsonl")
    return tuneforge.train(preference_config(tiny_llama, train, folder / "run")), train


def test_dpo_raises_the_reward_accuracy_on_its_training_pairs_to_one(dpo_run):
    result, _ = dpo_run
    history = result.metrics["history"]
    assert history[0]["train_preference.reward_accuracy"] == 0.0  # the policy starts as the reference
    assert history[-1]["train_preference.reward_accuracy"] == 1.0
    assert result.metrics["dev"]["reward_accuracy"] == 1.0
    assert result.metrics["dev"]["loss"] < 0.5 < history[0]["train_loss"]
    assert history[0]["train_loss"] == pytest.approx(0.693147, abs=1e-5)  # log 2: no margin yet
    assert result.metrics["reference"] == {"kind": "adapter_disabled"}
    for key in ("reward_margin", "chosen_reward", "rejected_reward", "chosen_logps", "rejected_logps"):
        assert f"train_preference.{key}" in history[-1]
    assert history[-1]["train_preference.reward_margin"] > history[1]["train_preference.reward_margin"] > 0
    assert (result.run_dir / "curves.png").stat().st_size > 0


def test_a_loaded_run_scores_pairs_as_training_did_and_answers_prompts(dpo_run):
    result, train = dpo_run
    metrics, report = tuneforge.evaluate(result.run_dir, train, precision=result.metrics["inference"]["precision"])
    for key in ("loss", "reward_accuracy", "reward_margin", "logp_accuracy"):
        assert metrics[key] == pytest.approx(result.metrics["dev"][key], abs=1e-5)
    assert "reward accuracy 1.000" in report
    answer = tuneforge.load(result.run_dir, precision="fp32").generate("Say hi", max_new_tokens=4)[0]
    assert answer["completion_tokens"] <= 4


@pytest.mark.parametrize("loss", ["ipo", "orpo"])
def test_ipo_and_orpo_train_to_a_perfect_reward_accuracy(tiny_llama, tmp_path, loss):
    train = write_pairs(tmp_path / "pairs.jsonl")
    result = tuneforge.train(preference_config(tiny_llama, train, tmp_path / "run", **{"task.loss": loss,
                                               "training.epochs": 12}))
    assert result.metrics["dev"]["reward_accuracy"] == 1.0
    assert result.metrics["reference"]["kind"] == ("none (orpo)" if loss == "orpo" else "adapter_disabled")


def test_precomputed_reference_trains_exactly_as_the_live_one(dpo_run, tiny_llama, tmp_path):
    result, train = dpo_run
    pre = tuneforge.train(preference_config(tiny_llama, train, tmp_path / "pre", **{"task.reference": "precompute"}))
    assert pre.metrics["reference"]["kind"] == "precomputed"
    for a, b in zip(pre.metrics["history"], result.metrics["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
    assert pre.metrics["dev"]["loss"] == pytest.approx(result.metrics["dev"]["loss"], abs=1e-5)


def test_full_fine_tuning_uses_a_frozen_copy_and_a_loaded_run_rebuilds_it_from_the_base(tiny_llama, tmp_path):
    train = write_pairs(tmp_path / "pairs.jsonl")
    result = tuneforge.train(preference_config(tiny_llama, train, tmp_path / "run", **{
        "method.name": "full", "training.learning_rate": 1e-3, "training.epochs": 4}))
    assert result.metrics["reference"] == {"kind": "frozen_copy"}
    assert result.metrics["dev"]["reward_accuracy"] == 1.0
    metrics, _ = tuneforge.evaluate(result.run_dir, train, precision=result.metrics["inference"]["precision"])
    assert metrics["reward_margin"] == pytest.approx(result.metrics["dev"]["reward_margin"], abs=1e-5)


@pytest.mark.parametrize("reference", ["auto", "precompute"])
def test_resume_after_kill_9_is_exact_for_dpo(tiny_llama, tmp_path, reference):
    train = write_pairs(tmp_path / "pairs.jsonl", PAIRS * 4)
    cfg = preference_config(tiny_llama, train, tmp_path / "killed", **{
        "training.epochs": 30, "training.checkpoint_every_steps": 1, "training.batch_size": 2,
        "task.reference": reference})
    train_and_kill_9(cfg, tmp_path / "config.yaml")
    resumed = tuneforge.train(cfg, resume=True)
    reference = tuneforge.train(dict(cfg, output_dir=str(tmp_path / "reference")))
    assert resumed.metrics["history"] == reference.metrics["history"]
    a = (tmp_path / "killed" / "model" / "adapter_model.safetensors").read_bytes()
    assert a == (tmp_path / "reference" / "model" / "adapter_model.safetensors").read_bytes()


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_dpo_continues_an_sft_run_with_that_sft_model_as_reference(tiny_llama, tmp_path, precision):
    chats = write_chats(tmp_path / "chats.jsonl", [
        [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi there, friend!"}]] * 3)
    # the SFT run's own template (ChatML without SmolLM2's default system turn) carries over to DPO
    sft = tuneforge.train({"task": {"type": "sft", "eval_generations": 0, "chat_template": "chatml"},
                           "model": {"name_or_path": str(tiny_llama)},
                           "data": {"train": str(chats)}, "encoding": {"max_length": 128},
                           "method": {"name": "lora", "dropout": 0.0},  # no dropout: the first step is exact
                           "training": {"epochs": 3, "batch_size": 3, "learning_rate": 5e-3, "progress": False},
                           "output_dir": str(tmp_path / "sft")})
    train = write_pairs(tmp_path / "pairs.jsonl")
    # bf16 autocast caches its copy of each trainable weight; fp32 autograd refuses in-place changes of
    # saved tensors: the starting-weights swap must get past both
    dpo = tuneforge.train(preference_config(tiny_llama, train, tmp_path / "dpo", **{
        "model.init_from": str(sft.run_dir), "training.epochs": 4, "method.dropout": 0.0,
        "training.precision": precision}))
    assert dpo.metrics["reference"] == {"kind": "starting_weights"}
    assert tuneforge.load(dpo.run_dir).tokenizer.chat_template == CHATML
    history = dpo.metrics["history"]
    # each epoch is one batch: the first step's loss is log 2 only if the reference is the SFT model
    assert history[0]["train_loss"] == pytest.approx(0.693147, abs=1e-5)
    assert 0 < history[1]["train_preference.reward_margin"] < history[-1]["train_preference.reward_margin"]
    assert history[-1]["train_preference.reward_accuracy"] == 1.0 and dpo.metrics["dev"]["reward_accuracy"] == 1.0
    # read back, the run loads its reference from the SFT run and scores as training did
    metrics, _ = tuneforge.evaluate(dpo.run_dir, train, precision=dpo.metrics["inference"]["precision"])
    assert metrics["reward_margin"] == pytest.approx(dpo.metrics["dev"]["reward_margin"], rel=1e-3)
    assert metrics["reward_margin"] == pytest.approx(history[-1]["dev_reward_margin"], rel=1e-2)


def test_only_sft_runs_and_its_own_task_can_be_continued(tiny_llama, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("A short document about the sky.\nAnother one about grass.\n", encoding="utf-8")
    causal = tuneforge.train({"task": {"type": "causal_lm"}, "model": {"name_or_path": str(tiny_llama)},
                              "data": {"train": str(text), "eval_share": 0}, "encoding": {"max_length": 64},
                              "method": {"name": "lora"}, "training": {"epochs": 1, "progress": False},
                              "output_dir": str(tmp_path / "clm")})
    train = write_pairs(tmp_path / "pairs.jsonl")
    with pytest.raises(tuneforge.errors.ConfigError, match="a preference run continues preference or sft runs"):
        tuneforge.train(preference_config(tiny_llama, train, tmp_path / "dpo", **{"model.init_from": str(causal.run_dir)}))
