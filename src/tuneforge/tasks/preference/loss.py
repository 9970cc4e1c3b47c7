"""Sequence log-probabilities of the answers and the three preference losses.

The formulas are TRL's (``DPOTrainer`` loss types ``sigmoid`` and ``ipo``, ``ORPOTrainer``'s odds-ratio
loss), written here on plain tensors so one forward of the one loop computes them;
``tests/test_preference.py`` checks each against TRL's own code on the same log-probabilities (DPO's
label smoothing against the formula: TRL 1.16's ``sigmoid`` has none).

- **dpo**: ``-(1-ε) log σ(β d) - ε log σ(-β d)`` with ``d = (log π(y_w) - log π_ref(y_w)) - (log π(y_l) -
  log π_ref(y_l))``, log-probabilities summed over the answer's tokens; ``ε`` is ``label_smoothing``
  (conservative DPO; ε = 0 is TRL's ``sigmoid``).
- **ipo**: ``(d' - 1/(2β))²`` with ``d'`` the same difference of per-token *averaged* log-ratios (TRL's
  length normalisation, confirmed by the IPO authors).
- **orpo**: ``NLL(y_w) - β log σ(log odds(y_w) - log odds(y_l))``, odds of the per-token averaged
  log-probability; the NLL is the mean cross-entropy of the chosen answers' tokens (the paper's SFT
  term; TRL's trainer also counts the prompt's tokens in it). No reference model.

Rewards (for the metrics): ``β (log π - log π_ref)`` (dpo, ipo); ``β · averaged log π`` (orpo, as TRL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..causal_lm.encoding import IGNORE
from ..causal_lm.loss import predicted_logits

STATS = ("reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward", "chosen_logps", "rejected_logps")


@dataclass
class Logps:
    """Summed answer log-probabilities of a batch's rows (chosen rows first) and their token counts."""

    sums: torch.Tensor  # (2n,)
    tokens: torch.Tensor  # (2n,)

    def halves(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sums.chunk(2)

    def averaged(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.sums / self.tokens.clamp_min(1)).chunk(2)


def sequence_logps(model, batch: dict) -> Logps:
    """Each row's summed log-probability of its labelled tokens, projecting only those positions."""
    logits, targets = predicted_logits(model, batch)
    token_logps = -F.cross_entropy(logits.float(), targets, reduction="none")
    rows = (batch["labels"][:, 1:] != IGNORE).nonzero()[:, 0]  # row of each selected position, in mask order
    n = batch["labels"].shape[0]
    return Logps(token_logps.new_zeros(n).index_add(0, rows, token_logps), torch.bincount(rows, minlength=n))


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -log 2 (Mächler 2012)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def preference_loss(kind: str, beta: float, label_smoothing: float, policy: Logps,
                    reference: Logps | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(the batch's mean loss, per-pair rewards and log-probabilities) for ``kind`` dpo, ipo or orpo."""
    chosen, rejected = policy.halves()
    if kind == "orpo":
        avg_chosen, avg_rejected = policy.averaged()
        log_odds = (avg_chosen - avg_rejected) - (log1mexp(avg_chosen) - log1mexp(avg_rejected))
        chosen_tokens = policy.tokens.chunk(2)[0]
        nll = -chosen.sum() / chosen_tokens.sum().clamp_min(1)
        loss = nll - (beta * F.logsigmoid(log_odds)).mean()
        chosen_reward, rejected_reward = beta * avg_chosen.detach(), beta * avg_rejected.detach()
    else:
        ref_chosen, ref_rejected = reference.halves()
        chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
        if kind == "dpo":
            d = chosen_ratio - rejected_ratio
            losses = -(1 - label_smoothing) * F.logsigmoid(beta * d) - label_smoothing * F.logsigmoid(-beta * d)
        elif kind == "ipo":
            chosen_tokens, rejected_tokens = policy.tokens.chunk(2)
            d = chosen_ratio / chosen_tokens.clamp_min(1) - rejected_ratio / rejected_tokens.clamp_min(1)
            losses = (d - 1 / (2 * beta)) ** 2
        else:
            raise ValueError(f"unknown preference loss {kind!r}")
        loss = losses.mean()
        chosen_reward, rejected_reward = beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
    stats = {"reward_accuracy": (chosen_reward > rejected_reward).float(),
             "reward_margin": chosen_reward - rejected_reward, "chosen_reward": chosen_reward,
             "rejected_reward": rejected_reward, "chosen_logps": chosen.detach(), "rejected_logps": rejected.detach()}
    return loss, stats
