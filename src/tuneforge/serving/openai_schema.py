"""The OpenAI request bodies ``/v1/chat/completions`` and ``/v1/completions`` accept, and the bodies
they answer with (the shapes of the OpenAI API reference, which the ``openai`` client parses).

A field OpenAI defines and we do not implement is refused with a 400 naming it when it asks for
something (``logprobs: true``, a non-zero ``presence_penalty``, ``tools``), never silently ignored; a
field OpenAI does not define is refused as OpenAI itself does ("Unrecognized request argument").
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_N = 8  # choices per request


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id... are accepted; only role and content are read
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[dict[str, Any]], None] = None

    def text(self) -> str:
        """The content as text: a string, or the text parts of a list (other parts are refused)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        pieces = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"a content part of type {part.get('type')!r}: this model reads text parts only")
            pieces.append(part["text"])
        return "".join(pieces)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = Field(default=None, description="a name from GET /v1/models; default: the first generative model")
    max_tokens: Optional[int] = Field(default=None, ge=1, description="new tokens at most (default: the run's max_new_tokens)")
    temperature: Optional[float] = Field(default=None, ge=0, le=2, description="0: greedy; default: the run's setting")
    top_p: Optional[float] = Field(default=None, gt=0, le=1)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None  # an end-user id; nothing to do with it here
    # defined by OpenAI, accepted only at their neutral values (refused otherwise, not ignored)
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    logit_bias: Optional[dict[str, float]] = None
    logprobs: Optional[Union[bool, int]] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("an empty stop sequence would end every answer at once")
        return stops

    def unsupported(self) -> Optional[str]:
        """The first field that asks for something this server does not do."""
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                return name
        if self.logit_bias:
            return "logit_bias"
        if self.logprobs not in (None, False, 0):
            return "logprobs"
        return None


class ChatCompletionRequest(_Common):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "chat", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}]})
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1, description="newer name of max_tokens")
    top_logprobs: Optional[int] = None
    response_format: Optional[dict[str, Any]] = None
    tools: Optional[list[dict[str, Any]]] = None
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None
    metadata: Optional[dict[str, str]] = None
    store: Optional[bool] = None
    service_tier: Optional[str] = None

    def unsupported(self) -> Optional[str]:
        if (found := super().unsupported()) is not None:
            return found
        if self.top_logprobs:
            return "top_logprobs"
        if self.response_format and self.response_format.get("type", "text") != "text":
            return "response_format"
        if self.tools:
            return "tools"
        if self.tool_choice not in (None, "none", "auto"):
            return "tool_choice"
        return None

    def new_tokens(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Common):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "chat", "prompt": "Once upon a time", "max_tokens": 32}]})
    prompt: Union[str, list[str]]
    echo: bool = False
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    def unsupported(self) -> Optional[str]:
        if (found := super().unsupported()) is not None:
            return found
        if self.echo:
            return "echo"
        if self.suffix:
            return "suffix"
        if self.best_of not in (None, 1):
            return "best_of"
        return None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def new_tokens(self) -> Optional[int]:
        return self.max_tokens


# ---------------------------------------------------------------------------------------------
# Response bodies


def completion_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_body(ident: str, model: str, answers: list[dict], prompt_tokens: int, fingerprint: str) -> dict:
    return {"id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": fingerprint,
            "choices": [{"index": i, "message": {"role": "assistant", "content": a["text"]}, "logprobs": None,
                         "finish_reason": a["finish_reason"]} for i, a in enumerate(answers)],
            "usage": usage(prompt_tokens, sum(a["completion_tokens"] for a in answers))}


def completion_body(ident: str, model: str, answers: list[dict], prompt_tokens: int, fingerprint: str) -> dict:
    return {"id": ident, "object": "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": fingerprint,
            "choices": [{"index": i, "text": a["text"], "logprobs": None, "finish_reason": a["finish_reason"]}
                        for i, a in enumerate(answers)],
            "usage": usage(prompt_tokens, sum(a["completion_tokens"] for a in answers))}


def chunk(ident: str, model: str, chat: bool, index: int, text: Optional[str], finish_reason: Optional[str] = None,
          role: bool = False, fingerprint: str = "") -> dict:
    """One server-sent event's body: a piece of choice ``index`` (or its end, with ``finish_reason``)."""
    if chat:
        delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        kind = "text_completion"
    return {"id": ident, "object": kind, "created": int(time.time()), "model": model,
            "system_fingerprint": fingerprint, "choices": [choice]}


def usage_chunk(ident: str, model: str, chat: bool, prompt_tokens: int, completion_tokens: int,
                fingerprint: str = "") -> dict:
    """The last event when ``stream_options.include_usage``: no choices, the request's usage."""
    return {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "system_fingerprint": fingerprint, "choices": [],
            "usage": usage(prompt_tokens, completion_tokens)}


# OpenAI's error "type" for each HTTP status (the openai client raises by status; the type is shown)
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "server_error"}


def error_body(status: int, code: str, message: str, param: Optional[str] = None, **extra) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": code, **extra}}
