"""Training regimes a config block switches on (adversarial training, ...), as callbacks.

A regime is a function ``(cfg, task) -> list[Callback]`` registered here; the driver attaches what
every registered regime returns (usually nothing unless its config block is set) before the caller's
own callbacks. A regime never needs a second loop: it is the loop's events (:mod:`.callbacks`).
"""

from __future__ import annotations

from typing import Callable

from .callbacks import Callback

REGIMES: list[Callable[..., list[Callback]]] = []


def register_regime(builder: Callable[..., list[Callback]]) -> Callable[..., list[Callback]]:
    """Add a regime builder (usable as a decorator)."""
    REGIMES.append(builder)
    return builder


def regime_callbacks(cfg, task) -> list[Callback]:
    """The callbacks the config's regime blocks ask for, in registration order."""
    return [callback for builder in REGIMES for callback in builder(cfg, task)]


# The built-in regimes register themselves on import (after register_regime exists).
from . import adversarial  # noqa: E402,F401
