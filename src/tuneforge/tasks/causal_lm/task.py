"""The decoder tasks: ``causal_lm`` (continued pre-training of a decoder on raw text, the GPT
counterpart of ``masked_lm``) and ``sft`` (instruction and chat fine-tuning).

- **Models**: any Hugging Face causal LM by name or folder (GPT-2, Llama, Qwen2, SmolLM2), or a GGUF
  checkpoint (``model.gguf_file``, dequantised to ``model.dtype``); ``model.gradient_checkpointing``
  and ``model.attn_implementation`` as options.
- **Data**: ``causal_lm`` reads documents as ``masked_lm`` does (``.txt``, ``.jsonl``, datasets) and
  holds out ``data.eval_share`` for dev; ``sft`` reads alpaca, sharegpt and OpenAI ``messages``
  records (:mod:`tuneforge.data.readers.chat`).
- **Encoding**: raw text is joined by the end-of-text token and cut into blocks; a conversation goes
  through the chat template (the tokenizer's, or ``task.chat_template``) with the loss on its
  assistant tokens (``task.assistant_only_loss``); ``encoding.packing`` packs conversations into
  rows that keep them apart (:mod:`.encoding`). What is cut by ``encoding.max_length`` is counted.
- **Methods**: full, freeze, LoRA (DoRA, rsLoRA), IA3 and BitFit through the one method registry,
  peft's ``CAUSAL_LM`` task type; the pre-trained ``lm_head`` is no new head (:class:`HeadSpec`), and
  tied embeddings stay tied.
- **Scores**: dev loss picks the best checkpoint; dev/test loss and perplexity over the predicted
  tokens; for ``sft`` also exact match, ROUGE-L, chrF and BLEU of greedy answers to the first
  ``task.eval_generations`` conversations, and ``test_generations.jsonl``.
- **Result**: ``RUN/model`` loads with ``AutoModelForCausalLM`` and ``pipeline("text-generation")``
  (full runs; LoRA runs save an adapter, ``tuneforge export --merge`` folds it), chat template included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from ...artifacts.paths import atomic_write_text, resolve_path
from ...data.readers import read_documents
from ...data.readers.chat import read_conversations
from ...errors import ConfigError
from ...methods.base import HEAD_ATTRIBUTE, HeadSpec
from ...runtime.models import load_causal_lm, load_tokenizer
from ..base import Task, TaskData, hold_out_documents
from .config import CausalLMData, CausalLMOptions, DecoderEncoding, DecoderModelConfig, SFTData, SFTOptions
from .encoding import DecoderCollator, encode_conversations, encode_text_blocks, resolve_chat_template
from .loss import next_token_loss, predicted_tokens
from .predictor import DecoderModel

DECODER_METHODS = ("full", "freeze", "lora", "ia3", "bitfit")
DECODER_HEAD = HeadSpec(modules=(), peft_task_type="CAUSAL_LM")  # lm_head is pre-trained, not a new head
LOSS_METRICS = ("loss", "perplexity")


class DecoderTask(Task):
    """What ``causal_lm`` and ``sft`` share: the model, the loss, loss/perplexity scoring."""

    Model = DecoderModelConfig
    Encoding = DecoderEncoding
    Predictor = DecoderModel
    metric_for_best = "loss"
    greater_is_better = False
    score_name = "loss"
    chat: ClassVar[bool] = False

    def label_list(self, train) -> list[str]:
        return []

    def load_tokenizer(self):
        m = self.cfg.model
        tokenizer = load_tokenizer(m.name_or_path, m.revision, m.trust_remote_code, m.gguf_file)
        if self.chat:
            resolve_chat_template(tokenizer, self.cfg.task.chat_template)  # saved with the model
        return tokenizer

    @classmethod
    def load_pretrained(cls, name_or_path, labels=None, meta=None, revision=None, trust_remote_code=False,
                        announce_new_head=True, gguf_file=None, dtype=None, attn_implementation=None):
        """The causal LM; a run's ``meta`` names the GGUF file and dtype of the base it was trained on."""
        base = (meta or {}).get("base_model") or {}
        if gguf_file is None and base.get("gguf_file") and (Path(resolve_path(name_or_path)) / base["gguf_file"]).is_file():
            gguf_file = base["gguf_file"]
        model = load_causal_lm(name_or_path, revision, trust_remote_code, gguf_file, dtype or base.get("dtype", "float32"),
                               attn_implementation or base.get("attn_implementation"))
        setattr(model, HEAD_ATTRIBUTE, DECODER_HEAD)
        return model

    def build_model(self, labels):
        m, method = self.cfg.model, self.cfg.method.name
        if method not in DECODER_METHODS:
            raise ConfigError(f"method.name {method}: task.type {self.name} trains with {', '.join(DECODER_METHODS)}")
        model = self.load_pretrained(m.name_or_path, None, None, m.revision, m.trust_remote_code,
                                     gguf_file=m.gguf_file, dtype=m.dtype, attn_implementation=m.attn_implementation)
        if method == "bitfit" and not any(n.endswith("bias") for n, _ in model.named_parameters()):
            raise ConfigError(f"method.name bitfit: {m.name_or_path} has no bias terms ({model.config.model_type}); "
                              "use lora or ia3")
        model.config.use_cache = False  # training: no KV cache
        if m.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    def collator(self, tokenizer):
        return DecoderCollator(tokenizer.pad_token_id)

    def loss(self, model, batch: dict):
        return next_token_loss(model, batch)

    def loss_units(self, batch: dict):
        return predicted_tokens(batch)

    def evaluate_dev(self, model, tokenizer, examples, meta: dict, precision: str) -> dict:
        """Loss and perplexity each epoch; answers are generated only when the best checkpoint is
        chosen by a generation metric (``training.metric_for_best: rouge_l``, say)."""
        predictor = self.predictor(model, tokenizer, meta, precision)
        metric = self.cfg.training.metric_for_best or self.metric_for_best
        generations = 0 if metric in LOSS_METRICS else None
        metrics, _, _ = predictor.evaluate_examples(examples, self.cfg.training.eval_batch_size, generations)
        return metrics

    def model_meta(self, labels) -> dict:
        return {"labels": [], "max_length": self.cfg.encoding.max_length, "chat": self.chat}

    @classmethod
    def summary(cls, metrics: dict) -> str:
        scores = {k: round(metrics[k]["perplexity"], 3) for k in ("dev", "test") if "perplexity" in metrics.get(k, {})}
        return f"perplexity {scores}" if scores else "no dev or test set scored"


class CausalLM(DecoderTask):
    """Continued pre-training of a decoder on raw text; best checkpoint by dev loss."""

    name = "causal_lm"
    Options = CausalLMOptions
    Data = CausalLMData

    def read(self, path: str, labelled: bool = True) -> list:
        d = self.cfg.data
        return read_documents(path, d.format, d.text_column)

    def normalise(self, splits: dict[str, list], report: dict) -> None:
        hold_out_documents(self.cfg.data, splits, report)

    def describe(self, splits, labels) -> dict:
        return {"documents": {name: len(ex) for name, ex in splits.items()}}

    def data_summary(self, data: TaskData) -> str:
        return f"{data.report['documents']} documents"

    def encode(self, tokenizer, examples, labels):
        blocks, stats = encode_text_blocks(tokenizer, [ex.text for ex in examples], self.cfg.encoding.max_length)
        if not blocks:
            raise ConfigError(f"{self.cfg.data.train}: the training documents tokenise to nothing")
        return blocks, [len(b.input_ids) for b in blocks], stats

    def tokenizer_inputs(self, examples) -> list:
        return [ex.text for ex in examples]

    def model_meta(self, labels) -> dict:
        return {**super().model_meta(labels), "text_column": self.cfg.data.text_column}


class SFT(DecoderTask):
    """Instruction / chat fine-tuning of a decoder; loss on the assistant's answers."""

    name = "sft"
    Options = SFTOptions
    Data = SFTData
    chat = True
    # random batches, not length-grouped: grouping is 1.4x faster on SmolLM2 but its dev loss is worse
    # in all 3 seeds (1.778-1.820 vs 1.684-1.743; benchmarks/RESULTS.md "Decoder LLMs")
    DEFAULT_TRAINING: ClassVar[dict] = {"group_by_length": False}

    def read(self, path: str, labelled: bool = True) -> list:
        d = self.cfg.data
        return read_conversations(path, d.format, d.messages_column, labelled)

    def describe(self, splits, labels) -> dict:
        return {"conversations": {name: len(ex) for name, ex in splits.items()},
                "turns": {name: sum(len(e.messages) for e in ex) for name, ex in splits.items()}}

    def data_summary(self, data: TaskData) -> str:
        return f"{data.report['conversations']} conversations"

    def encode(self, tokenizer, examples, labels):
        e, t = self.cfg.encoding, self.cfg.task
        rows, stats = encode_conversations(tokenizer, examples, e.max_length, t.assistant_only_loss, e.packing)
        return rows, [len(r.input_ids) for r in rows], stats

    def tokenizer_inputs(self, examples) -> list:
        return [ex.text for ex in examples]

    def model_meta(self, labels) -> dict:
        t = self.cfg.task
        return {**super().model_meta(labels), "assistant_only_loss": t.assistant_only_loss,
                "eval_generations": t.eval_generations, "max_new_tokens": t.max_new_tokens,
                "messages_column": self.cfg.data.messages_column}

    def write_outputs(self, run_dir: Path, split, examples, predictions, metrics, predictor) -> None:
        """``test_generations.jsonl``: each scored test conversation's prompt, reference and answer."""
        if split != "test" or not predictions:
            return
        answered = [ex for ex in examples if ex.reference is not None]
        lines = [json.dumps({"source": f"{ex.source}:{ex.line}", "prompt": ex.prompt_messages, "reference": ex.reference,
                             "generated": p["text"], "finish_reason": p["finish_reason"]}, ensure_ascii=False)
                 for ex, p in zip(answered, predictions)]
        atomic_write_text(run_dir / "test_generations.jsonl", "\n".join(lines) + "\n")
