"""A preference run loaded from its folder: a decoder that answers prompts as an SFT run does, and
scores preference pairs (loss, reward accuracy and margin, the answers' log-probabilities)."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ...data.readers.chat import read_conversations, read_prompts, records
from ...data.records import ChatExample
from ...data.readers.preference import read_preferences
from ...runtime.precision import autocast_context
from ..causal_lm.predictor import DecoderModel
from ..causal_lm.task import DecoderTask
from .encoding import EncodedPair, PairCollator, encode_pairs
from .loss import STATS, Logps, preference_loss, sequence_logps
from .reference import AdapterDisabled, FrozenCopy, Precomputed, Reference, evaluating

METRICS = ("loss", "reward_accuracy", "reward_margin", "logp_accuracy")


def scored_batches(model, tokenizer, pairs: Sequence[EncodedPair], batch_size: int,
                   precision: str) -> Iterator[tuple[list[int], dict, Logps]]:
    """(the pairs' indices, their batch, the model's log-probabilities) batch by batch, shortest pairs first."""
    collate = PairCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].chosen.input_ids) + len(pairs[i].rejected.input_ids))
    with evaluating(model), torch.no_grad():
        for start in range(0, len(order), batch_size):
            members = order[start:start + batch_size]
            batch = collate([pairs[i] for i in members])
            batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
            with autocast_context(device, precision):
                yield members, batch, sequence_logps(model, batch)


def reference_logps(model, tokenizer, pairs: Sequence[EncodedPair], batch_size: int,
                    precision: str) -> list[tuple[float, float]]:
    """Each pair's (chosen, rejected) summed log-probability under ``model`` (precomputing the reference)."""
    out: list = [None] * len(pairs)
    for members, _, logps in scored_batches(model, tokenizer, pairs, batch_size, precision):
        chosen, rejected = logps.halves()
        for k, i in enumerate(members):
            out[i] = (float(chosen[k]), float(rejected[k]))
    return out


class PreferenceModel(DecoderModel):
    """``generate`` / ``chat`` / ``predict`` as an SFT run; ``evaluate_examples`` scores preference pairs.

    The reference: the training run hands its own over (:meth:`Preference.final_metrics`); a run read
    back later builds it from ``tuneforge.json``: the adapter disabled, or the run's starting model
    loaded beside it (``load_run_model``, set by the loader, reads a ``model.init_from`` run).
    """

    reference: Reference | None = None
    # Pairs are scored in fp32 whatever the predictor's precision: a reward is the small difference of
    # two summed log-probabilities, and bf16 rounding took most of it (a barely trained adapter's dev
    # margin 0.043 in fp32, 0.011 in bf16). So the linear weights stay fp32 here (generation runs bf16
    # autocast on them rather than on weights cast once, as an SFT run's predictor does).
    SCORING_PRECISION = "fp32"

    def prepare_loaded(self) -> None:
        """Nothing: the weights stay fp32 for scoring pairs (see ``SCORING_PRECISION``)."""

    def read(self, path, format: str = "auto", labelled: bool = True, text_column=None, messages_column=None) -> list:
        """Preference pairs; or conversations, when the file holds those (the SFT scores of a DPO'd model)."""
        if not labelled:
            return read_prompts(path, format)
        _, rows = records(path, format)
        first = next(iter(rows), (0, None))[1]
        if isinstance(first, dict) and "chosen" not in first and "rejected" not in first:
            return read_conversations(path, format, messages_column or self.meta.get("messages_column"))
        return read_preferences(path, format)

    def _reference(self) -> Reference | None:
        settings = self.meta.get("preference", {})
        if settings.get("loss") == "orpo":
            return None
        if self.reference is None:
            start = settings.get("reference_model") or {}
            if start.get("base") and hasattr(self.model, "disable_adapter"):
                self.reference = AdapterDisabled()
            else:
                self.reference = FrozenCopy(self.load_run_model(start["path"]) if start.get("run")
                                            else self.load_base_model())
        return self.reference

    def load_base_model(self):
        base = self.meta.get("base_model") or {}
        model = DecoderTask.load_pretrained(base["name_or_path"], meta=self.meta, revision=base.get("revision"))
        return model.to(next(self.model.parameters()).device)

    @torch.no_grad()  # not inference_mode: a reference may swap weights in place
    def evaluate_examples(self, examples: Sequence, batch_size: int = 16, generations: int | None = None):
        if examples and isinstance(examples[0], ChatExample):
            return super().evaluate_examples(examples, batch_size, generations)
        settings = self.meta.get("preference", {})
        pairs, kept, stats = encode_pairs(self.tokenizer, examples, self.meta["max_length"])
        reference = self._reference()
        if isinstance(reference, Precomputed) and not all(id(ex) in reference.table for ex in kept):
            self.reference = None  # pairs the run did not precompute (another file): the reference from the folder
            reference = self._reference()
        if isinstance(reference, Precomputed):
            for pair, ex in zip(pairs, kept):
                pair.reference = reference.table[id(ex)]
        totals = {name: 0.0 for name in (*STATS, "loss", "logp_accuracy")}
        for members, batch, policy in scored_batches(self.model, self.tokenizer, pairs, batch_size,
                                                     self.SCORING_PRECISION):
            ref = None if reference is None else reference.logps(self.model, batch)
            loss, per_pair = preference_loss(settings.get("loss", "dpo"), settings.get("beta", 0.1),
                                             settings.get("label_smoothing", 0.0), policy, ref)
            totals["loss"] += float(loss) * len(members)
            for name, values in per_pair.items():
                totals[name] += float(values.float().sum())
            avg_chosen, avg_rejected = policy.averaged()
            totals["logp_accuracy"] += float((avg_chosen > avg_rejected).float().sum())
        n = len(pairs)
        metrics = {name: value / n for name, value in totals.items()}
        metrics.update(pairs=n, encoding=stats.describe())
        return metrics, self.describe_scores(metrics) + "\n", None

    @staticmethod
    def describe_scores(metrics: dict) -> str:
        return (f"loss {metrics['loss']:.4f} · reward accuracy {metrics['reward_accuracy']:.3f} · margin "
                f"{metrics['reward_margin']:.3f} · own log-prob prefers chosen {metrics['logp_accuracy']:.3f} "
                f"over {metrics['pairs']:,} pairs")

    def headline(self, metrics: dict) -> str:
        return self.describe_scores(metrics) if "reward_accuracy" in metrics else super().headline(metrics)
