"""Callbacks written the way a user would, for the loop's event tests (importable by subprocesses too)."""

from __future__ import annotations

import torch

from tuneforge.training.callbacks import Callback


class HeadL2(Callback):
    """An extra loss term: ``weight * ||classifier.weight||²`` (logged as ``HeadL2.l2``)."""

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def extra_loss(self, ctx, batch, outputs):
        head = ctx.unwrapped_model.classifier.weight
        return {"l2": self.weight * head.pow(2).sum()}


class EmbeddingNudge(Callback):
    """Perturb between backward passes, as adversarial training does: after the task backward, move the
    word embeddings along their gradient, run a second forward/backward on the same batch, restore.

    It records what a test needs: whether the embeddings came back bit-identical, and the gradient
    norm of the head before and after the second backward.
    """

    def __init__(self, epsilon: float = 0.5):
        self.epsilon = epsilon
        self.calls = 0
        self.restored_exactly = True
        self.grad_changed = 0

    def after_backward(self, ctx, batch):
        embeddings = ctx.unwrapped_model.get_input_embeddings().weight
        if embeddings.grad is None:
            return
        head_grad = ctx.unwrapped_model.classifier.weight.grad.clone()
        backup = embeddings.data.clone()
        norm = embeddings.grad.norm()
        if norm > 0:
            embeddings.data.add_(self.epsilon * embeddings.grad / norm)
        loss, _ = ctx.compute_loss(batch)
        ctx.backward(loss)
        embeddings.data.copy_(backup)
        self.calls += 1
        self.restored_exactly &= bool(torch.equal(embeddings.data, backup))
        self.grad_changed += int(not torch.equal(head_grad, ctx.unwrapped_model.classifier.weight.grad))


class DuplicateOne(Callback):
    """A stateful batch hook (like replay): adds a copy of one batch member, chosen by its own RNG,
    and counts what it added. Its generator and count live in the checkpoint, so a resumed run
    duplicates exactly the members an unbroken run would."""

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)
        self.added = 0

    def on_batch_items(self, ctx, items):
        pick = int(torch.randint(len(items), (1,), generator=self.generator))
        self.added += 1
        return list(items) + [items[pick]]

    def state_dict(self):
        return {"generator": self.generator.get_state(), "added": self.added}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self.added = state["added"]


class CountItems(Callback):
    """Stateful and harmless: counts the examples this process trained on (the state is per process)."""

    def __init__(self):
        self.items = 0

    def on_batch_items(self, ctx, items):
        self.items += len(items)
        return items

    def state_dict(self):
        return {"items": self.items}

    def load_state_dict(self, state):
        self.items = state["items"]
