"""Decoder LLMs: ``task.type: causal_lm`` (raw text) and ``sft`` (instructions and chats); see :mod:`.task`."""

from .predictor import DecoderModel
from .task import SFT, CausalLM, DecoderTask

__all__ = ["SFT", "CausalLM", "DecoderModel", "DecoderTask"]
