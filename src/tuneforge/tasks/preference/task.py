"""``task.type: preference``: preference tuning of a decoder (DPO, IPO, ORPO) on the one loop.

- **Data**: prompt / chosen / rejected pairs, plain or as chat messages (:mod:`tuneforge.data.readers.preference`).
- **Encoding**: each side is the prompt and its answer through the chat template (the tokenizer's or
  ``task.chat_template``), trained on the answer's tokens (:mod:`.encoding`); cuts are counted.
- **Loss**: ``task.loss`` dpo / ipo / orpo with ``task.beta`` (and ``task.label_smoothing`` for dpo)
  (:mod:`.loss`); one forward of chosen and rejected rows together; the reference log-probabilities
  come from the same model where the method allows it (:mod:`.reference`).
- **Chain**: ``model.init_from`` an ``sft`` run (same base and method block) continues its weights;
  the reference is then that SFT model.
- **Scores**: dev loss picks the best checkpoint (or ``training.metric_for_best: reward_accuracy``);
  each step logs the reward accuracy, margin and the answers' log-probabilities beside the loss (trackers,
  ``curves.png``); dev/test: loss, reward accuracy and margin, and how often the model's own averaged
  log-probability prefers the chosen answer (meaningful before training too).
- **Result**: a decoder run like ``sft``'s: ``generate``, ``chat``, ``serve``, ``export --merge``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import torch

from ...artifacts.model_folder import find_model_folder
from ...data.readers.preference import read_preferences
from ...runtime.models import load_tokenizer
from ...training.callbacks import Callback
from ..base import TaskData
from ..causal_lm.task import DecoderTask
from .config import PreferenceData, PreferenceEncoding, PreferenceOptions
from .encoding import PairCollator, encode_pairs
from .loss import STATS, preference_loss, sequence_logps
from .predictor import PreferenceModel, reference_logps
from .reference import Precomputed, Reference, choose_reference, unwrap


class PreferenceLog(Callback):
    """Logs each micro-batch's reward accuracy, margin and answer log-probabilities beside the loss."""

    name = "preference"

    def after_forward(self, ctx, batch, outputs, loss) -> None:
        for key in STATS:
            ctx.log_term(f"preference.{key}", outputs[key].float().mean())


class Preference(DecoderTask):
    name = "preference"
    Options = PreferenceOptions
    Data = PreferenceData
    Predictor = PreferenceModel
    Encoding = PreferenceEncoding
    chat = True
    CONTINUES: ClassVar[tuple[str, ...]] = ("sft",)
    # random batches, as SFT (measured there: length-grouped batches trained a worse dev loss in 3 of 3
    # seeds); not measured for DPO itself
    DEFAULT_TRAINING: ClassVar[dict] = {"group_by_length": False}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.reference: Reference | None = None

    def load_tokenizer(self):
        """The base's tokenizer with the chat template of the run ``model.init_from`` continues (the one
        its SFT trained on) unless ``task.chat_template`` names one."""
        m = self.cfg.model
        if m.init_from and self.cfg.task.chat_template is None:
            tokenizer = load_tokenizer(m.name_or_path, m.revision, m.trust_remote_code, m.gguf_file)
            trained = self.load_saved_tokenizer(find_model_folder(m.init_from), False, m.trust_remote_code)
            if trained.chat_template:
                tokenizer.chat_template = trained.chat_template
                return tokenizer
        return super().load_tokenizer()

    def read(self, path: str, labelled: bool = True) -> list:
        return read_preferences(path, self.cfg.data.format)

    def describe(self, splits, labels) -> dict:
        return {"pairs": {name: len(ex) for name, ex in splits.items()}}

    def data_summary(self, data: TaskData) -> str:
        return f"{data.report['pairs']} preference pairs"

    def encode(self, tokenizer, examples, labels):
        pairs, _, stats = encode_pairs(tokenizer, examples, self.cfg.encoding.max_length)
        return pairs, [len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in pairs], stats

    def collator(self, tokenizer):
        return PairCollator(tokenizer.pad_token_id)

    def callbacks(self) -> list:
        return [PreferenceLog()]

    def before_train(self, model, tokenizer, items, data: TaskData, precision: str) -> None:
        """The reference, from the model as training starts (before any resumed checkpoint is read)."""
        t = self.cfg.task
        if not t.uses_reference:
            return
        if t.reference == "auto":
            self.reference = choose_reference(model, self.cfg.method.name, bool(self.cfg.model.init_from))
            return
        started = time.perf_counter()
        batch_size = self.cfg.training.eval_batch_size
        # on the device the loop will train on (the loop would move it there next anyway)
        inner = unwrap(model).to("cuda" if torch.cuda.is_available() else "cpu")
        # the training pairs at the training precision (as a live reference runs), dev and test as they are scored
        for pair, logps in zip(items, reference_logps(inner, tokenizer, items, batch_size, precision)):
            pair.reference = logps
        reference = Precomputed()
        for split in ("dev", "test"):
            if data.splits[split]:
                pairs, kept, _ = encode_pairs(tokenizer, data.splits[split], self.cfg.encoding.max_length)
                scored = reference_logps(inner, tokenizer, pairs, batch_size, PreferenceModel.SCORING_PRECISION)
                for ex, logps in zip(kept, scored):
                    reference.table[id(ex)] = logps
        reference.seconds = time.perf_counter() - started
        self.reference = reference

    def loss(self, model, batch: dict):
        t = self.cfg.task
        # the reference first: a reference that swaps weights in place must not follow a forward whose
        # saved tensors autograd still needs (reference.StartingWeights)
        ref = self.reference.logps(model, batch) if t.uses_reference else None
        policy = sequence_logps(model, batch)
        return preference_loss(t.loss, t.beta, t.label_smoothing, policy, ref)

    def loss_units(self, batch: dict):
        return batch["input_ids"].shape[0] // 2  # pairs: the loss is a mean over them

    def predictor(self, model, tokenizer, meta: dict, precision: str = "fp32") -> PreferenceModel:
        predictor = super().predictor(model, tokenizer, meta, precision)
        predictor.reference = self.reference
        return predictor

    def evaluate_dev(self, model, tokenizer, examples, meta: dict, precision: str) -> dict:
        metrics, _, _ = self.predictor(model, tokenizer, meta, precision).evaluate_examples(
            examples, self.cfg.training.eval_batch_size)
        return metrics

    def final_metrics(self, predictor) -> dict:
        """The saved model scores dev and test against this run's own reference (no second load)."""
        predictor.reference = self.reference
        return {"reference": self.reference.describe() if self.reference is not None else {"kind": "none (orpo)"}}

    def model_meta(self, labels) -> dict:
        t, m = self.cfg.task, self.cfg.model
        start = {"run": True, "path": str(Path(m.init_from).resolve())} if m.init_from else {"base": True}
        # eval_generations: answers generated when the run is scored on conversations (tuneforge eval)
        return {**super().model_meta(labels), "max_new_tokens": 128, "eval_generations": 64,
                "preference": {"loss": t.loss, "beta": t.beta, "label_smoothing": t.label_smoothing,
                               "reference_model": start}}

    @classmethod
    def summary(cls, metrics: dict) -> str:
        scores = {k: round(metrics[k]["reward_accuracy"], 3) for k in ("dev", "test") if "reward_accuracy" in metrics.get(k, {})}
        return f"reward accuracy {scores}" if scores else "no dev or test set scored"
