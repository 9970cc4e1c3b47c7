"""The config sections of the decoder tasks (``task.type: causal_lm`` and ``sft``)."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from ...schema import DataConfig, EncodingConfig, ModelConfig, TaskOptions
from ..masked_lm import MaskedLMData


class DecoderModelConfig(ModelConfig):
    """``model:`` of a decoder task: any Hugging Face causal LM, or a GGUF checkpoint in a folder."""

    gguf_file: Optional[str] = Field(
        default=None, description="a .gguf file inside model.name_or_path (dequantised on load to model.dtype)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="the weights' dtype; training.precision bf16 runs autocast on float32 weights")
    gradient_checkpointing: bool = Field(
        default=False, description="recompute activations in the backward pass: less memory, about 30% more time")
    attn_implementation: Optional[Literal["eager", "sdpa", "flash_attention_2"]] = Field(
        default=None, description="the attention kernel; default: transformers' choice (sdpa)")


class CausalLMOptions(TaskOptions):
    type: str = "causal_lm"


class SFTOptions(TaskOptions):
    type: str = "sft"
    chat_template: Optional[str] = Field(
        default=None,
        description="the chat template: 'chatml', a Jinja template string, or a .jinja file; default: the tokenizer's "
                    "(a tokenizer without one needs this)")
    assistant_only_loss: bool = Field(
        default=True, description="loss on the assistant turns only (false: on every token of the conversation)")
    eval_generations: int = Field(
        default=64, ge=0,
        description="dev/test conversations answered by generation for exact match, ROUGE-L, chrF and BLEU "
                    "(the first N; 0: loss and perplexity only)")
    max_new_tokens: int = Field(default=128, ge=1, description="the longest answer those generations may give")


class CausalLMData(MaskedLMData):
    """Raw text documents, read as masked-LM pre-training reads them."""


class SFTData(DataConfig):
    FORMATS: ClassVar[tuple[str, ...]] = ("auto", "jsonl", "json", "parquet", "arrow", "hf")
    messages_column: Optional[str] = Field(
        default=None, description="the column holding each conversation's turns; default: messages / conversations")


class DecoderEncoding(EncodingConfig):
    max_length: int = Field(default=512, ge=8, description="tokens per training row (a packed row, or one conversation)")
    stride: Optional[int] = Field(default=None, description="not used: decoder inputs are packed or truncated, not windowed")
    packing: bool = Field(
        default=False,
        description="pack several conversations into each row of max_length tokens, each attending only to itself "
                    "(block-diagonal mask, positions restarting): no padding")

    @model_validator(mode="after")
    def _check_stride(self) -> "DecoderEncoding":
        if self.stride is not None:
            raise ValueError("'encoding.stride' does not apply to decoder tasks (inputs are packed or truncated, "
                             "not windowed); remove it")
        return self
