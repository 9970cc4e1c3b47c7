"""`tuneforge export|serve`: a trained run as a plain model folder, or behind an HTTP API."""

from __future__ import annotations

import os

from ..artifacts.paths import check_output_path
from ..errors import TuneforgeError
from ..loading import export_merged, export_onnx
from ..runtime.onnx import require_onnxruntime
from ..serving import ServeOptions, create_app, load_models, serve
from ..serving.app import API_KEY_ENV, bind_port
from ..serving.pool import process_rss_mb
from .common import add_precision


def _cmd_export(args) -> int:
    if args.merge == args.onnx:
        raise TuneforgeError("export: pass --merge (a plain Hugging Face model) or --onnx (an ONNX Runtime model)")
    if args.quantize and not args.onnx:
        raise TuneforgeError("--quantize: only with --onnx")

    if args.onnx:
        require_onnxruntime("export --onnx")  # before the run is loaded
        if args.out:
            check_output_path(args.out, "OUT", folder=True)
        out = export_onnx(args.run, args.out, args.quantize)
        print(f"wrote an ONNX model to {out} (tuneforge predict/eval/serve {out}; onnxruntime alone reads model.onnx)")
        return 0

    check_output_path(args.out, "OUT", folder=True)
    out = export_merged(args.run, args.out)
    print(f"wrote a plain Hugging Face model to {out} (loads with transformers alone)")
    return 0


def _cmd_serve(args) -> int:
    options = ServeOptions(
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_texts=args.max_texts,
        max_chars=args.max_chars, max_body_bytes=args.max_body_bytes, max_running=args.max_running,
        max_queue=args.max_queue, max_new_tokens=args.max_new_tokens,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None, cors_origins=args.cors_origin or [],
    )
    for flag in ("max_batch_size", "max_texts", "max_chars", "max_body_bytes", "max_running", "max_queue",
                 "max_new_tokens"):
        if getattr(options, flag) < 1:
            raise TuneforgeError(f"--{flag.replace('_', '-')} must be at least 1")
    if options.max_wait_ms < 0:
        raise TuneforgeError("--max-wait-ms must not be negative")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sock = bind_port(args.host, args.port)  # a port in use stops here, before the models load
    try:
        models = load_models(args.runs, device=args.device, precision=args.precision, share=not args.no_share,
                             engine=args.engine)
        print(_serving_summary(models, options, args.host, args.port), flush=True)
        serve(create_app(models, options), host=args.host, port=args.port, graceful_seconds=args.graceful_seconds,
              log_level=args.log_level, sock=sock)
    finally:
        sock.close()
    return 0


def _serving_summary(models, options, host: str, port: int) -> str:
    lines = [(f"serving {len(models)} model(s) at http://{host}:{port}/ (API docs /docs; "
              f"{'API key required' if options.api_key else 'no API key'}; "
              f"micro-batches of up to {options.max_batch_size}, {options.max_wait_ms:g} ms wait under load)")]
    for m in models:
        info = m.info()
        memory = m.sharing() if len(models) > 1 else f"{m.bytes_total / 2**20:.1f} MB of tensors"
        what = (f"OpenAI routes /v1/chat/completions and /v1/completions, up to {options.max_running} sequences "
                f"a continuous batch" if getattr(m.predictor, "generative", False) else f"{len(info['labels'])} labels")
        lines.append(f"  {m.name}: {info['task']}, method {info['method']}, {what}, "
                     f"base {info['base_model'] or '(own weights)'} — {memory}")
    lines.append(f"process memory after loading: {process_rss_mb():.0f} MB resident")
    return "\n".join(lines)


def add_parsers(sub) -> None:
    """``export`` and ``serve``."""

    p = sub.add_parser("export", help="write a trained run as a plain Hugging Face model folder")
    p.add_argument("run")
    p.add_argument("out")
    p.add_argument("--merge", action="store_true", help="fold LoRA / IA3 / BitFit / freeze weights into the base model")
    p.add_argument("--onnx", action="store_true", help="an ONNX model folder for ONNX Runtime (methods folded first)")
    p.add_argument("--quantize", choices=["int8"], help="with --onnx: also write ONNX Runtime's dynamic int8 model")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("serve", help="serve run folders over HTTP: JSON API, metrics, a web page")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder, or NAME=RUN to name the model")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    add_precision(p)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--max-batch-size", type=int, default=32, help="inputs per micro-batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to join its micro-batch, when others are about (a lone "
                        "request runs at once)")
    p.add_argument("--max-texts", type=int, default=64, help="texts per request (422 above)")
    p.add_argument("--max-chars", type=int, default=10_000, help="characters per text (422 above)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="request body size (413 above)")
    p.add_argument("--max-running", type=int, default=16,
                   help="generative runs: sequences decoded together in one continuous batch, per run")
    p.add_argument("--max-queue", type=int, default=256,
                   help="generative runs: requests waiting for a row (429 with Retry-After above)")
    p.add_argument("--max-new-tokens", type=int, default=1024,
                   help="generative runs: the most max_tokens a request may ask for (400 above)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/* (better: set TUNEFORGE_API_KEY, "
                                     "which other users cannot read from the process list)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="let pages from ORIGIN (e.g. https://app.example.com) call the API; repeatable; off by default")
    p.add_argument("--threads", type=int, help="torch threads for inference (default: one per core)")
    p.add_argument("--no-share", action="store_true", help="load every run as its own copy (no shared base weights)")
    p.add_argument("--graceful-seconds", type=float, default=30.0,
                   help="on SIGTERM/Ctrl-C, time to finish requests already received")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_cmd_serve)
