"""Training regimes a config block switches on (adversarial training, ...), as callbacks.

A regime is a function ``(cfg, task) -> list[Callback]`` listed here; the driver attaches what every
listed regime returns (usually nothing unless its config block is set) before the caller's own
callbacks. A regime never needs a second loop: it is the loop's events (:mod:`.callbacks`). A regime
with a config block names it in :data:`SECTIONS` (the block's key -> its tag key and its shapes, defined
beside the regime's code), from which :mod:`tuneforge.config` builds the block's union.
"""

from __future__ import annotations

from typing import Callable

from . import adversarial
from .callbacks import Callback

REGIMES: list[Callable[..., list[Callback]]] = [adversarial.adversarial_callbacks]
SECTIONS: dict[str, tuple[str, tuple]] = {"adversarial": ("method", adversarial.CONFIGS)}


def register_regime(builder: Callable[..., list[Callback]]) -> Callable[..., list[Callback]]:
    """Add a regime builder (usable as a decorator)."""
    REGIMES.append(builder)
    return builder


def regime_callbacks(cfg, task) -> list[Callback]:
    """The callbacks the config's regime blocks ask for, in registration order."""
    return [callback for builder in REGIMES for callback in builder(cfg, task)]
