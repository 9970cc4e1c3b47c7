"""Optional dependencies (pyproject's extras: ``onnx``, ``hf``, ``fewshot``, ``tracking``): one check and one
message for each, made before any work (reading data, loading a model), not an ``ImportError`` deep inside it."""

from __future__ import annotations

import importlib.util
import sys

from ..errors import ConfigError, TuneforgeError


def is_missing(module: str) -> bool:
    """True when ``import module`` would fail: not installed, or blocked (``sys.modules[module] = None``)."""
    if module in sys.modules and sys.modules[module] is None:
        return True
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def require_extra(what: str, module: str, extra: str, package: str | None = None,
                  error: type[TuneforgeError] = ConfigError, alternative: str = "") -> None:
    """Raise ``error`` naming ``what`` needs ``module`` and how to install it (the package, or the extra)."""
    if is_missing(module):
        raise error(f"{what}: {module} is not installed; pip install {package or module} (or pip install "
                    f"'tuneforge[{extra}]'){alternative}")
