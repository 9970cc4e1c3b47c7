"""What every route of the server shares: the JSON error, the body size limit, reading a JSON body
into a pydantic model with one clear error, and refusing text that is not text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from .openai_schema import error_body


@dataclass
class ServeOptions:
    """Batching, limits and access; ``tuneforge serve`` flags of the same names."""

    max_batch_size: int = 32  # inputs per micro-batch (and per forward pass)
    max_wait_ms: float = 5.0  # how long a request waits for others to join its batch
    max_texts: int = 64  # texts (or token lists) per request
    max_chars: int = 10_000  # characters per text (a token list: its words' characters)
    max_body_bytes: int = 1_000_000  # request body
    api_key: Optional[str] = None  # when set, /v1/* needs "Authorization: Bearer KEY"
    cors_origins: list[str] = field(default_factory=list)  # empty: no CORS headers (browsers refuse other origins)
    # generative runs (/v1/chat/completions, /v1/completions)
    max_running: int = 16  # sequences generated together per model (rows of the continuous batch)
    max_queue: int = 256  # requests waiting for a row; 429 beyond
    max_new_tokens: int = 1024  # max_tokens a request may ask for (400 above)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.extra = status, code, message, headers, extra

    def response(self, openai: bool = False) -> JSONResponse:
        """The JSON error; ``openai``: OpenAI's shape (``message``, ``type``, ``param``, ``code``), which
        the OpenAI routes answer with so that its clients show the message."""
        if openai:
            extra = dict(self.extra)
            body = error_body(self.status, self.code, self.message, extra.pop("param", None), **extra)
        else:
            body = {"error": {"code": self.code, "message": self.message, **self.extra}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def limit_error(status: int, limit: str, maximum: int, got: int, what: str) -> ApiError:
    return ApiError(status, "limit_exceeded", f"{what}: {got} is over the server's {limit} of {maximum}",
                    limit=limit, max=maximum, got=got)


class BodySizeLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, by its Content-Length or while it streams in.

    Starlette and uvicorn have no body limit of their own; this one refuses before the body is read
    (declared size) or as soon as it passes the limit (chunked uploads).
    """

    def __init__(self, app, max_bytes: int, on_reject):
        self.app, self.max_bytes, self.on_reject = app, max_bytes, on_reject

    def _error(self) -> ApiError:
        return ApiError(413, "limit_exceeded", f"request body: over the server's max_body_bytes of {self.max_bytes}",
                        limit="max_body_bytes", max=self.max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            self.on_reject()
            return await self._error().response()(scope, receive, send)
        received, rejected = 0, False

        async def limited_receive():
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a streamed body: answer now, and let the app see a disconnect
                    rejected = True
                    self.on_reject()
                    await self._error().response()(scope, receive, send)
            return {"type": "http.disconnect"} if rejected else message

        async def guarded_send(message):
            if not rejected:  # the app's own answer to a cut-off body is dropped
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


def text_chars(item) -> int:
    return len(item) if isinstance(item, str) else sum(len(x) for x in item) + max(len(item) - 1, 0)


def parse_json_body(raw: bytes, content_type: str, schema: type[BaseModel], status: int = 422) -> BaseModel:
    """A request body as ``schema``, or a ``status`` (422; the OpenAI routes: 400) ``invalid_request``
    naming what is wrong with it: a charset other than UTF-8, bytes that are not UTF-8, text that is not JSON (or nested too
    deep to read), JSON that is not a request."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower().replace("_", "-") not in ("utf-8", "utf8"):
            raise ApiError(status, "invalid_request", f"body: charset {value.strip()} is not accepted; send the JSON as UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(status, "invalid_request", f"body: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                                               "send the JSON as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(status, "invalid_request", f"body: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ApiError(status, "invalid_request", "body: JSON nested too deep to read; a request is one object "
                                               "of texts or tokens") from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        named = {"param": where} if status == 400 and where else {}  # OpenAI's error names the field
        raise ApiError(status, "invalid_request", f"{where or 'body'}: {first.get('msg', 'invalid request')}",
                       **named) from None


def refuse_lone_surrogates(item, index: int) -> None:
    """A JSON ``\\ud800`` without its pair decodes to a string that is not text (no UTF-8 for it)."""
    for piece in [item] if isinstance(item, str) else item:
        try:
            piece.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ApiError(422, "invalid_input", f"text {index}: a lone surrogate (U+{ord(piece[exc.start]):04X}) at "
                                                 f"character {exc.start} is not text; send whole characters") from None


