"""Adversarial and consistency training as callbacks on the one loop (the ``adversarial:`` config block).

The loss becomes ``L = L_task + weight * L_adv``:

- ``fgm`` (fast gradient method, Miyato et al. 2017): after the task backward, the gradient of the
  task loss with respect to the word-embedding output, ``g``, gives the perturbation
  ``delta = epsilon * g / ||g||`` (L2 norm per example, over its tokens and hidden units). One more
  forward/backward on the perturbed batch adds ``weight * L_adv``'s gradients; the perturbation is
  then removed.
- ``pgd`` (projected gradient descent, Madry et al. 2018): ``steps`` ascent steps of length
  ``alpha`` from the clean gradient, each projected back into the L2 ball of radius ``epsilon`` (per
  example). Intermediate steps only ask autograd for the gradient with respect to the perturbation
  (no parameter gradients are touched); the last step's loss is back-propagated with ``weight``.
  ``steps`` extra forward passes per batch.
- ``rdrop`` (R-Drop, Liang et al. 2021): a second forward pass of the same batch (another dropout
  mask); the loss is the mean of the two task losses plus ``weight`` times the symmetric KL between
  the two predictions. The divergence is the task's (:meth:`tuneforge.tasks.base.Task.prediction_divergence`):
  over labelled word positions for NER, over classes (softmax) or labels (sigmoid) for classifiers.

Where the perturbation goes. We perturb the *output* of the word-embedding module through a
forward hook, not its weight matrix (the popular FGM recipe adds ``epsilon * grad / ||grad||`` to
``embedding.weight`` and copies the weights back afterwards). The output is the right place here:

- it works whether or not the embedding weights train: under LoRA, IA3, prompt tuning, BitFit or
  ``freeze`` the embedding matrix is frozen and has no ``.grad``, but the gradient with respect to
  its output still exists once that output requires grad (the hook makes it so);
- restoring is exact by construction: the weights are never written, the hook simply stops adding;
- each occurrence of a token gets its own perturbation, and the norm is per example (the paper's
  definition) rather than over the whole vocabulary matrix, so ``epsilon`` does not shrink as the
  batch grows.

The module is found with ``get_input_embeddings()`` (transformers defines it for BERT, RoBERTa,
DeBERTa, XLM-R, MiniLM, GPT-2, Llama...; a peft model forwards it to its base model), unwrapping
tuneforge's own wrappers (prompt tuning's :class:`~tuneforge.methods.prompt.VirtualTokenAligner`).

FGM and PGD call backward more than once per step, which DistributedDataParallel does not allow
on a synchronising step; they run in one process (one device) and say so otherwise. R-Drop has a
single backward and runs anywhere.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import ConfigError
from ..schema import StrictModel
from .callbacks import Callback, LoopContext

CALLBACK_NAME = "adversarial"  # history keys: train_adversarial.adv_loss, train_adversarial.kl ...


# ---------------------------------------------------------------------------------------------
# Adversarial training: the ``adversarial:`` block, one shape per method (``method`` picks it).
# Perturbations are added to the word-
# embedding output, per example, with L2 norms (so epsilon is in units of embedding-vector length).


class FGMConfig(StrictModel):
    """Fast gradient method: one step of length ``epsilon`` along the loss gradient (L2-normalised per example)."""

    method: Literal["fgm"]
    # 0.1: the measured best of 0.1 / 0.3 / 1.0 (WNUT-16, 3 seeds; README "Measured: plain, FGM, PGD
    # and R-Drop"): at 1.0 MiniLM learns no entity at all, at 0.3 it learns less than plain
    epsilon: float = Field(default=0.1, gt=0, description="L2 length of each example's perturbation")
    weight: float = Field(default=1.0, gt=0, description="alpha in L = L_task + alpha * L_adv")


class PGDConfig(StrictModel):
    """Projected gradient descent: ``steps`` ascent steps of length ``alpha``, projected into the ``epsilon`` ball."""

    method: Literal["pgd"]
    # FGM's measured radius; the step keeps the ratio alpha = 0.3 x epsilon of the first defaults
    epsilon: float = Field(default=0.1, gt=0, description="radius of each example's L2 ball")
    alpha: float = Field(default=0.03, gt=0, description="length of one ascent step")
    steps: int = Field(default=3, ge=1, description="ascent steps (forward passes) per batch")
    weight: float = Field(default=1.0, gt=0, description="alpha in L = L_task + alpha * L_adv")


class RDropConfig(StrictModel):
    """R-Drop: a second forward pass (another dropout mask); the two predictions are pulled together by a KL term."""

    method: Literal["rdrop"]
    weight: float = Field(default=1.0, gt=0, description="weight of the symmetric KL between the two passes")


CONFIGS = (FGMConfig, PGDConfig, RDropConfig)  # the ``adversarial:`` block's shapes, by ``method``


def find_word_embeddings(model: nn.Module) -> nn.Module:
    """The module that maps token ids to word vectors, through peft and tuneforge wrappers."""
    seen = set()
    current = model
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        getter = getattr(current, "get_input_embeddings", None)
        if callable(getter):
            try:
                module = getter()
            except NotImplementedError:
                module = None
            if isinstance(module, nn.Module):
                return module
        current = getattr(current, "peft_model", None)  # prompt tuning's VirtualTokenAligner
    raise ConfigError(
        f"adversarial: cannot find the word embeddings of {type(model).__name__} (no get_input_embeddings()); "
        "remove the adversarial block for this model"
    )


def per_example_norm(tensor: torch.Tensor) -> torch.Tensor:
    """L2 norm of each example (over every dimension but the first), shaped to broadcast back."""
    return tensor.flatten(1).norm(dim=1).view(-1, *([1] * (tensor.dim() - 1)))


def normalised_step(grad: torch.Tensor, length: float) -> torch.Tensor:
    """``length * grad / ||grad||`` per example; an example with a zero gradient gets no step."""
    norm = per_example_norm(grad)
    return torch.where(norm > 0, length * grad / norm.clamp_min(torch.finfo(grad.dtype).tiny), torch.zeros_like(grad))


def project(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Scale each example's perturbation back onto the L2 ball of radius ``epsilon`` if it left it."""
    norm = per_example_norm(delta)
    return delta * torch.clamp(epsilon / norm.clamp_min(torch.finfo(delta.dtype).tiny), max=1.0)


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Per row, ``(KL(p_a || p_b) + KL(p_b || p_a)) / 2`` of the softmax over the last dimension."""
    logp_a = torch.log_softmax(logits_a.float(), dim=-1)
    logp_b = torch.log_softmax(logits_b.float(), dim=-1)
    return 0.5 * ((logp_a.exp() - logp_b.exp()) * (logp_a - logp_b)).sum(-1)


def bernoulli_symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """The same per independent sigmoid output (multi-label), summed over the last dimension."""
    two_way = lambda x: torch.stack([torch.zeros_like(x), x.float()], dim=-1)  # noqa: E731 - sigmoid = 2-way softmax
    return symmetric_kl(two_way(logits_a), two_way(logits_b)).sum(-1)


class EmbeddingPerturbation:
    """A forward hook on the word-embedding module: adds ``delta`` to its output when set, and, while
    ``record`` is on, keeps that output (requiring grad) so the loss gradient with respect to it can be read."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.delta: torch.Tensor | None = None
        self.record = False
        self.output: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if self.delta is not None:
            if self.delta.shape != output.shape:
                raise RuntimeError(f"adversarial: perturbation of shape {tuple(self.delta.shape)} for an embedding "
                                   f"output of shape {tuple(output.shape)}; the embeddings ran twice in one forward")
            output = output + self.delta
        if self.record:
            if not output.requires_grad:  # frozen embeddings (LoRA...): make the output a leaf that gets .grad
                output = output.detach().requires_grad_(True)
            else:
                output.retain_grad()
            self.output = output
        return output

    def take_gradient(self) -> torch.Tensor | None:
        """The gradient of the last recorded forward's loss with respect to the embedding output."""
        grad = None if self.output is None else self.output.grad
        self.output = None
        return None if grad is None else grad.detach()

    def remove(self) -> None:
        self.handle.remove()
        self.delta, self.output, self.record = None, None, False


class EmbeddingAdversary(Callback):
    """What FGM and PGD share: the hook, reading the clean gradient, the adversarial backward."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.hook: EmbeddingPerturbation | None = None

    @property
    def name(self) -> str:
        return CALLBACK_NAME

    def on_train_begin(self, ctx: LoopContext) -> None:
        if ctx.accelerator.num_processes > 1:
            raise ConfigError(
                f"adversarial.method {self.cfg.method}: runs a second backward per step, which distributed "
                "training does not allow; train on one process, or use adversarial.method rdrop"
            )
        self.hook = EmbeddingPerturbation(find_word_embeddings(ctx.unwrapped_model))

    def on_train_end(self, ctx: LoopContext) -> None:
        if self.hook is not None:
            self.hook.remove()
            self.hook = None

    def before_forward(self, ctx: LoopContext, batch: dict) -> None:
        self.hook.record = True  # the task forward: keep its embedding output for the gradient

    def after_forward(self, ctx: LoopContext, batch: dict, outputs, loss) -> None:
        self.hook.record = False

    def after_backward(self, ctx: LoopContext, batch: dict) -> None:
        grad = self.hook.take_gradient()
        if grad is None:
            return  # nothing upstream of the loss depends on the embeddings (cannot happen for our tasks)
        try:
            delta = self.attack(ctx, batch, grad)
            self.hook.delta = delta.detach()
            adv_loss, _ = ctx.compute_loss(batch)
            ctx.backward(self.cfg.weight * adv_loss)
        finally:
            self.hook.delta = None  # restored: the next forward sees the clean embeddings
        ctx.log_term(f"{self.name}.adv_loss", adv_loss)

    def attack(self, ctx: LoopContext, batch: dict, grad: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class FGM(EmbeddingAdversary):
    """One step of length epsilon along the per-example normalised gradient."""

    def attack(self, ctx, batch, grad):
        return normalised_step(grad, self.cfg.epsilon)


class PGD(EmbeddingAdversary):
    """``steps`` normalised steps of length alpha, each projected into the epsilon ball; the first from
    the clean gradient, the next ones from the gradient at the current perturbation."""

    def attack(self, ctx, batch, grad):
        delta = torch.zeros_like(grad)
        for step in range(self.cfg.steps):
            delta = project(delta + normalised_step(grad, self.cfg.alpha), self.cfg.epsilon)
            if step == self.cfg.steps - 1:
                break
            probe = delta.detach().requires_grad_(True)
            self.hook.delta = probe
            loss, _ = ctx.compute_loss(batch)
            # only the gradient w.r.t. the perturbation: parameter gradients stay as the task left them
            (grad,) = torch.autograd.grad(loss, probe)
        return delta


class RDrop(Callback):
    """Two dropout masks, one batch: the mean of both task losses plus ``weight`` x symmetric KL."""

    def __init__(self, cfg, task):
        self.cfg = cfg
        self.task = task
        self._loss: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return CALLBACK_NAME

    def after_forward(self, ctx: LoopContext, batch: dict, outputs, loss) -> None:
        self._loss = loss

    def extra_loss(self, ctx: LoopContext, batch: dict, outputs) -> dict[str, torch.Tensor]:
        loss_b, outputs_b = ctx.compute_loss(batch)
        divergence = self.task.prediction_divergence(batch, outputs.logits, outputs_b.logits)
        first, self._loss = self._loss, None
        # loss + (loss_b - loss) / 2 is the mean of the two passes' task losses (R-Drop's objective)
        return {"second_pass": 0.5 * (loss_b - first), "kl": self.cfg.weight * divergence}


def adversarial_callbacks(cfg, task) -> list[Callback]:
    """The ``adversarial:`` block's callback, or none."""
    block = getattr(cfg, "adversarial", None)
    if block is None:
        return []
    if block.method == "rdrop" and not callable(getattr(task, "prediction_divergence", None)):
        # a task opts into R-Drop with the Consistency capability (tuneforge.tasks.capabilities)
        raise ConfigError(f"adversarial.method rdrop: task {task.name!r} defines no prediction_divergence; "
                          "use fgm or pgd, or add the hook to the task")
    builders = {"fgm": lambda: FGM(block), "pgd": lambda: PGD(block), "rdrop": lambda: RDrop(block, task)}
    return [builders[block.method]()]
