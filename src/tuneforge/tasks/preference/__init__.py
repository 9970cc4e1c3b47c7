"""``task.type: preference``: DPO, IPO and ORPO on preference pairs, after SFT (:mod:`.task`)."""

from .task import Preference

__all__ = ["Preference"]
