"""The HTTP service: a FastAPI app over the served models (:mod:`.pool`) and the micro-batcher.

Endpoints: ``POST /v1/predict``, ``GET /v1/models``, ``GET /health`` (the process is up),
``GET /ready`` (models loaded, batcher running, not draining), ``GET /metrics`` (Prometheus), the
web page at ``/`` and the OpenAPI docs at ``/docs``. Every error is JSON:
``{"error": {"code": ..., "message": ..., ...}}``; a refused limit names it (``"limit": "max_texts"``).

Nothing here depends on the task: requests become inputs through ``Predictor.inputs_from_request``,
results become JSON through ``Predictor.to_json`` (the same bytes ``tuneforge predict`` writes).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional, Union

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputError, TuneforgeError
from ..version import __version__
from .batcher import MicroBatcher
from .http import (
    ApiError, BodySizeLimit, ServeOptions, limit_error, parse_json_body, refuse_lone_surrogates, text_chars,
)
from .metrics import ServerMetrics
from .openai_api import OPENAI_PATHS, add_openai_routes, decoder_engine, is_generative
from .pool import ServedModel

STATIC = Path(__file__).parent / "static"
API_KEY_ENV = "TUNEFORGE_API_KEY"
# the /metrics model label of a request whose model is not served or could not be read: one label, so
# clients cannot create metric series
UNKNOWN_MODEL = "(unknown)"


class PredictRequest(BaseModel):
    """Give ``texts`` or, for models that label words, pre-split ``tokens``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"texts": ["Empire State Building is in New York"]},
                     {"model": "ner", "tokens": [["Empire", "State", "Building"]]}]})
    model: Optional[str] = Field(default=None, description="a name from GET /v1/models; default: the first model")
    texts: Optional[list[Union[str, list[str]]]] = Field(
        default=None, description="raw texts (entities get character offsets); [text, pair] for pair classifiers")
    tokens: Optional[list[list[str]]] = Field(default=None, description="pre-split words, one list per text")


def parse_predict_body(raw: bytes, content_type: str) -> PredictRequest:
    """A ``/v1/predict`` body as :class:`PredictRequest`, or a 422 ``invalid_request`` naming what is wrong
    with it: a charset other than UTF-8, bytes that are not UTF-8, text that is not JSON (or nested too
    deep to read), JSON that is not a request."""
    return parse_json_body(raw, content_type, PredictRequest)


def create_app(models: list[ServedModel], options: ServeOptions | None = None) -> FastAPI:
    """The app for already loaded models (:func:`tuneforge.serving.pool.load_models`)."""
    options = options or ServeOptions()
    if not models:
        raise ValueError("create_app needs at least one model")
    by_name = {m.name: m for m in models}
    default = models[0].name
    metrics = ServerMetrics()
    metrics.add_models(by_name)

    def run_batch(name: str, inputs: list) -> list[str]:
        """In the inference thread: switch to the model's adapter, predict, render each result as JSON."""
        served = by_name[name]
        served.activate()
        predictor = served.predictor
        return [predictor.to_json(r) for r in predictor.predict(inputs, batch_size=options.max_batch_size)]

    batcher = MicroBatcher(run_batch, options.max_batch_size, options.max_wait_ms,
                           on_batch=metrics.record_batch, on_queue=metrics.record_queue)
    generative = [m for m in models if is_generative(m)]
    engine = decoder_engine(generative, options, metrics) if generative else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        if engine is not None:
            engine.start()
        app.state.ready = True
        yield
        # uvicorn runs this after the in-flight requests have been answered (graceful shutdown)
        app.state.ready = False
        await batcher.stop()
        if engine is not None:
            await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the fastapi-offline package,
    # not from a CDN, so they work on an air-gapped server (FastAPI's own pages fetch them from jsDelivr)
    app = FastAPIOffline(title="tuneforge", version=_version(), lifespan=lifespan,
                  description="Predictions from tuneforge run folders: entities with character offsets, "
                              "or labels with probabilities. Web page at /.")
    app.state.ready = False
    app.state.draining = False
    app.state.started = time.time()
    app.state.models = models
    app.state.batcher = batcher
    app.state.engine = engine
    app.state.metrics = metrics

    if options.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=options.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodySizeLimit, max_bytes=options.max_body_bytes,
                       on_reject=lambda: metrics.record_request("", 413, 0.0, "limit_exceeded"))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response(openai=request.url.path in OPENAI_PATHS)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if request.url.path == "/v1/predict":
            metrics.record_request("", 422, 0.0, "invalid_request")
        return ApiError(422, "invalid_request", f"{where or 'body'}: {first.get('msg', 'invalid request')}").response(
            openai=request.url.path in OPENAI_PATHS)

    api_key = options.api_key

    async def require_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), api_key.encode()):
            raise ApiError(401, "unauthorized", "send the server's API key as 'Authorization: Bearer KEY'",
                           headers={"WWW-Authenticate": "Bearer"})

    # the body is read here, after the key check (a dependency: it runs before the body is touched), so
    # that a body FastAPI could not parse (not UTF-8, another charset, JSON nested past Python's
    # recursion limit) gets the documented error and is counted like any other bad request
    @app.post("/v1/predict", dependencies=[Depends(require_key)], tags=["predict"],
              summary="Entities (token classifiers) or labels with probabilities (text classifiers)",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": PredictRequest.model_json_schema()}}}})
    async def predict(request: Request):
        started = time.perf_counter()
        try:
            raw = await request.body()
        except ClientDisconnect:  # gone, or cut off by BodySizeLimit (which has answered 413): no one to answer
            return Response(status_code=400)
        try:
            body = parse_predict_body(raw, request.headers.get("content-type", ""))
        except ApiError as exc:
            metrics.record_request(UNKNOWN_MODEL, exc.status, time.perf_counter() - started, exc.code)
            raise
        name = default if body.model is None else body.model
        try:
            served = by_name.get(name)
            if served is None:
                raise ApiError(404, "unknown_model", f"model {name!r} is not served; GET /v1/models lists them",
                               models=list(by_name))
            if (body.texts is None) == (body.tokens is None):
                raise ApiError(422, "invalid_request", "give exactly one of 'texts' or 'tokens'")
            items = body.texts if body.texts is not None else body.tokens
            if len(items) > options.max_texts:
                raise limit_error(422, "max_texts", options.max_texts, len(items), "texts in one request")
            for i, item in enumerate(items):
                if (chars := text_chars(item)) > options.max_chars:
                    raise limit_error(422, "max_chars", options.max_chars, chars, f"characters in text {i}")
                refuse_lone_surrogates(item, i)
            try:
                inputs = served.predictor.inputs_from_request(body.texts, body.tokens)
            except InputError as exc:
                raise ApiError(422, "invalid_input", str(exc)) from None
            results = await batcher.submit(name, inputs)
        except ApiError as exc:
            # a name no model has is counted under one label: clients must not create metric series
            shown = name if name in by_name else UNKNOWN_MODEL
            metrics.record_request(shown, exc.status, time.perf_counter() - started, exc.code)
            raise
        except Exception as exc:  # still a JSON error body, naming what failed
            metrics.record_request(name, 500, time.perf_counter() - started, "internal")
            raise ApiError(500, "internal", f"prediction failed: {type(exc).__name__}: {exc}") from exc
        payload = '{"model": ' + json.dumps(name) + ', "results": [' + ", ".join(results) + "]}"
        metrics.record_request(name, 200, time.perf_counter() - started)
        return Response(payload.encode("utf-8"), media_type="application/json")

    if engine is not None:
        add_openai_routes(app, models, engine, options, metrics, require_key)

    @app.get("/v1/models", dependencies=[Depends(require_key)], tags=["models"])
    async def list_models():
        """Name, task, method, labels and base model of every served model; the first is the default.
        ``object``/``data`` are OpenAI's listing (``client.models.list()``) of the same models."""
        created = int(app.state.started)
        return {"object": "list", "data": [{"id": m.name, "object": "model", "created": created,
                                            "owned_by": "tuneforge", "task": m.predictor.task_name}
                                           for m in models],
                "default": default, "models": [m.info() for m in models]}

    @app.get("/health", tags=["operations"])
    async def health():
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    async def ready():
        """Models loaded and the batcher running, not shutting down (readiness)."""
        if app.state.ready and batcher.running and (engine is None or engine.running) and not app.state.draining:
            return {"status": "ready", "models": list(by_name)}
        return JSONResponse({"status": "draining" if app.state.draining else "starting"}, status_code=503)

    @app.get("/metrics", tags=["operations"])
    async def prometheus_metrics():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# The page loads only its own script and style and calls only this server.
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:", "X-Content-Type-Options": "nosniff"}


def _version() -> str:
    return __version__


def bind_port(host: str, port: int) -> socket.socket:
    """The listening socket for ``host:port``, opened before the models load (``tuneforge serve``), so a
    port in use is one line at once rather than an exit after a long load."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise TuneforgeError(f"--port {port}: cannot listen on {host}:{port} ({why}); stop what "
                             "uses it or pick another --port") from None


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, graceful_seconds: float = 30.0,
          log_level: str = "info", sock: socket.socket | None = None) -> None:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM; then stop accepting connections, answer every
    request already received (up to ``graceful_seconds``), and exit. ``/ready`` says 503 meanwhile.
    ``sock``: a socket :func:`bind_port` already opened (else uvicorn binds ``host:port`` itself)."""
    import signal
    import threading

    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.draining = True
            super().handle_exit(sig, frame)

    saved = {}
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the signal once it has drained; with these handlers in place that ends
        # serve() normally (exit status 0 after a clean shutdown), not as a kill or a KeyboardInterrupt
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, lambda *_: None)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_seconds)
    try:
        DrainingServer(config).run(sockets=[sock] if sock is not None else None)
    finally:
        for sig, handler in saved.items():  # a Python program that called serve() gets Ctrl-C back
            signal.signal(sig, handler)
