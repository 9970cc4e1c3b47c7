"""The OpenAI-compatible API (`tuneforge serve` of sft runs): the official `openai` client against a
real uvicorn on loopback, tiny random Llama runs trained here with SmolLM2's tokenizer (ChatML)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import torch

import tuneforge
from tuneforge.runtime.continuous import ContinuousEngine, Sampling, Sequence, ServedDecoder
from tuneforge.serving import ServeOptions, create_app, load_models
from tuneforge.tasks.causal_lm.generation import GenerationSettings, generate_texts

from test_serving import _chromium, _launch, concurrently, metric_samples, ner_run  # noqa: F401 - the NER run fixture
from test_sft import build_tiny_llama, sft_config, smollm_tokenizer_dir, write_chats  # noqa: F401

QUESTIONS = ["What is the capital of France?", "Say hi", "Colour of the sky?", "Name a fruit",
             "How many legs has a cat?", "a much longer question " * 6, "Why?", "Tell me about Paris and Berlin"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, smollm_tokenizer_dir) -> Path:  # noqa: F811
    # untied: a random model with tied embeddings repeats its last input token ("\n") forever
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-api"), smollm_tokenizer_dir, hidden=64,
                            tie_word_embeddings=False)


def _train(base: Path, folder: Path, method: dict, seed: int, epochs: int) -> Path:
    """A run trained little or not at all: its answers differ from question to question (a tiny model
    trained to the end answers every question alike)."""
    train = write_chats(folder / "chats.jsonl")
    cfg = sft_config(base, train, folder / "run", **{"training.epochs": epochs, "training.learning_rate": 1e-2,
                                                      "training.seed": seed, "task.max_new_tokens": 24})
    cfg["method"] = method
    return tuneforge.train(cfg).run_dir


@pytest.fixture(scope="module")
def chat_run(tiny_llama, tmp_path_factory) -> Path:
    return _train(tiny_llama, tmp_path_factory.mktemp("chat-full"), {"name": "full"}, 1, 0)


@pytest.fixture(scope="module")
def lora_runs(tiny_llama, tmp_path_factory) -> list[Path]:
    return [_train(tiny_llama, tmp_path_factory.mktemp(f"chat-lora-{i}"), {"name": "lora", "r": 4}, seed, 1)
            for i, seed in enumerate((2, 3))]


@contextmanager
def serving(specs, **options):
    """uvicorn in a thread on 127.0.0.1; yields (base URL, app)."""
    import uvicorn

    app = create_app(load_models([str(s) for s in specs], precision="fp32"), ServeOptions(**options))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def client(base: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------------------------------------
# The engine alone


def test_engine_rows_joining_and_leaving_give_generate_s_greedy_tokens(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (5, 9, 3, 14, 7, 2, 11, 6)]
    steps, ended = [], {}
    engine = ContinuousEngine({"m": ServedDecoder(model, [-1], 0)}, max_running=3, on_step=lambda s: steps.append(s))
    engine.start()
    seqs = []
    for i, p in enumerate(prompts):  # lengths differ, so rows leave at different steps and others join
        seqs.append(Sequence("m", p, Sampling(max_new_tokens=4 + 2 * i),
                             lambda kind, value, i=i: ended.__setitem__(i, value) if kind != "token" else None))
        engine.submit(seqs[-1])
    engine.stop(timeout=60)
    for p, seq in zip(prompts, seqs):
        out = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             max_new_tokens=seq.sampling.max_new_tokens, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
        assert seq.tokens == out[0, len(p):].tolist()
    assert ended == {i: "length" for i in range(len(prompts))}
    assert max(s.rows for s in steps) == 3  # never more rows than max_running ...
    assert any(s.joined and s.rows > s.joined for s in steps)  # ... and newcomers joined a running batch


# ---------------------------------------------------------------------------------------------
# Answers equal tuneforge.load(run).generate


def test_chat_completions_equal_generate_with_exact_usage_streamed_or_not(chat_run):
    predictor = tuneforge.load(chat_run, precision="fp32")
    with serving([chat_run]) as (base, _):
        api = client(base)
        for question in QUESTIONS[:4]:
            expected = predictor.generate(user(question), max_new_tokens=20)[0]
            prompt_tokens = len(predictor.tokenizer(predictor.prompt_text(user(question)),
                                                    add_special_tokens=False)["input_ids"])
            reply = api.chat.completions.create(model="run", messages=user(question), max_tokens=20)
            assert reply.object == "chat.completion" and reply.model == "run"
            assert reply.choices[0].message.content == expected["text"]
            assert reply.choices[0].finish_reason == expected["finish_reason"]
            assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, expected["completion_tokens"])
            assert reply.usage.total_tokens == prompt_tokens + expected["completion_tokens"]

            events = list(api.chat.completions.create(model="run", messages=user(question), max_tokens=20, stream=True,
                                                      stream_options={"include_usage": True}))
            pieces = [e.choices[0].delta.content for e in events if e.choices and e.choices[0].delta.content]
            assert "".join(pieces) == expected["text"] and len(pieces) > 1  # token by token, not in one piece
            assert events[0].choices[0].delta.role == "assistant"
            assert [e.choices[0].finish_reason for e in events if e.choices][-1] == expected["finish_reason"]
            assert events[-1].usage.completion_tokens == expected["completion_tokens"]
            assert events[-1].usage.prompt_tokens == prompt_tokens
        # a stop string: cut from the answer, as generate cuts it
        full = predictor.generate(user(QUESTIONS[0]), max_new_tokens=20)[0]["text"]
        stop = full[3:5]
        expected = predictor.generate(user(QUESTIONS[0]), max_new_tokens=20, stop=[stop])[0]
        reply = api.chat.completions.create(model="run", messages=user(QUESTIONS[0]), max_tokens=20, stop=[stop])
        assert reply.choices[0].message.content == expected["text"] == full[: full.find(stop)]
        assert reply.usage.completion_tokens == expected["completion_tokens"]
        assert reply.choices[0].finish_reason == "stop"
        streamed = "".join(e.choices[0].delta.content or "" for e in api.chat.completions.create(
            model="run", messages=user(QUESTIONS[0]), max_tokens=20, stop=[stop], stream=True))
        assert streamed == expected["text"]


def test_completions_continue_the_raw_prompt_and_models_list_names_the_runs(chat_run):
    predictor = tuneforge.load(chat_run, precision="fp32")
    prompt = "Once upon a time"
    expected = generate_texts(predictor.model, predictor.tokenizer, [prompt], GenerationSettings(max_new_tokens=12))[0]
    with serving([chat_run]) as (base, _):
        api = client(base)
        reply = api.completions.create(model="run", prompt=prompt, max_tokens=12)
        assert reply.choices[0].text == expected["text"] and reply.object == "text_completion"
        assert reply.usage.completion_tokens == expected["completion_tokens"] == 12
        assert reply.choices[0].finish_reason == "length"
        streamed = "".join(e.choices[0].text for e in api.completions.create(model="run", prompt=prompt, max_tokens=12,
                                                                          stream=True))
        assert streamed == expected["text"]
        assert [m.id for m in api.models.list()] == ["run"]


def test_sampling_with_a_seed_repeats_and_n_choices_differ(chat_run):
    with serving([chat_run]) as (base, _):
        api = client(base)
        ask = dict(model="run", messages=user("Say hi"), max_tokens=16, temperature=1.5, seed=7, n=3)
        first, again = api.chat.completions.create(**ask), api.chat.completions.create(**ask)
        texts = [c.message.content for c in first.choices]
        assert texts == [c.message.content for c in again.choices]
        assert len(set(texts)) == 3 and [c.index for c in first.choices] == [0, 1, 2]
        assert first.usage.prompt_tokens == client(base).chat.completions.create(
            model="run", messages=user("Say hi"), max_tokens=1).usage.prompt_tokens


# ---------------------------------------------------------------------------------------------
# Batching across requests


def test_eight_concurrent_streams_get_their_own_answers_in_one_batch(chat_run):
    predictor = tuneforge.load(chat_run, precision="fp32")
    generated = [predictor.generate(user(q), max_new_tokens=24)[0] for q in QUESTIONS]
    expected = [g["text"] for g in generated]
    with serving([chat_run]) as (base, _):
        def ask(question):
            def call():
                stream = client(base).chat.completions.create(model="run", messages=user(question), max_tokens=24,
                                                              stream=True)
                return "".join(e.choices[0].delta.content or "" for e in stream)
            return call

        answers = concurrently([ask(q) for q in QUESTIONS])
        samples = metric_samples(base)
    assert answers == expected  # no cross-talk: each stream is its own question's answer
    assert len(set(expected)) == len(expected)
    steps = samples[("tuneforge_batch_occupancy_count", (("model", "run"),))]
    rows = samples[("tuneforge_batch_occupancy_sum", (("model", "run"),))]
    assert rows / steps > 2  # several sequences a step: they were batched
    assert samples[("tuneforge_batch_occupancy_bucket", (("le", "1.0"), ("model", "run")))] < steps
    counted = samples[("tuneforge_generated_tokens_total", (("model", "run"),))]
    assert counted == sum(g["completion_tokens"] for g in generated)
    assert samples[("tuneforge_time_to_first_token_seconds_count", (("model", "run"),))] == 8
    assert samples[("tuneforge_generation_queue_depth", ())] == 0


def test_a_client_that_disconnects_mid_stream_frees_its_row(chat_run):
    with serving([chat_run], max_running=1) as (base, app):
        with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=60,
                          json={"model": "run", "messages": user("Say hi"), "max_tokens": 200, "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            while not next(lines).startswith("data: {\"id\""):
                pass
            next(lines)
        deadline = time.monotonic() + 20
        while app.state.engine.occupancy() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.engine.occupancy() == 0  # the row was freed long before 200 tokens
        # the one row serves the next request in full
        reply = client(base).chat.completions.create(model="run", messages=user("Why?"), max_tokens=8)
        assert reply.usage.completion_tokens == 8 or reply.choices[0].finish_reason == "stop"
        samples = metric_samples(base)
    assert samples[("tuneforge_request_errors_total", (("code", "client_gone"), ("model", "run")))] == 1


# ---------------------------------------------------------------------------------------------
# Limits, auth, errors, both kinds in one server, shared LoRA base


def test_limits_auth_and_errors_use_openai_s_error_body(chat_run, ner_run):  # noqa: F811
    with serving([chat_run, f"ner={ner_run}"], api_key="s3cret", max_new_tokens=50, max_chars=100) as (base, _):
        api = client(base, "s3cret")
        with pytest.raises(openai.AuthenticationError) as info:
            client(base, "wrong").chat.completions.create(model="run", messages=user("hi"))
        assert info.value.body["type"] == "authentication_error"
        cases = [
            (dict(max_tokens=51), openai.BadRequestError, "limit_exceeded", "max_tokens"),
            (dict(messages=user("x" * 101)), openai.BadRequestError, "limit_exceeded", "messages.0.content"),
            (dict(presence_penalty=0.5), openai.BadRequestError, "unsupported_parameter", "presence_penalty"),
            (dict(model="nope"), openai.NotFoundError, "model_not_found", "model"),
            (dict(model="ner"), openai.BadRequestError, "model_not_generative", "model"),
            (dict(extra_body={"foo": 1}), openai.BadRequestError, "invalid_request", "foo"),
        ]
        for change, error, code, param in cases:
            ask = dict(model="run", messages=user("hi"), max_tokens=5) | change
            with pytest.raises(error) as info:
                api.chat.completions.create(**ask)
            assert (info.value.code, info.value.param) == (code, param), change
            assert info.value.body["message"]
        # a base with a 256-token context: prompt + max_tokens beyond it is refused before generating
        with serving([chat_run], max_new_tokens=1000) as (other, _):
            with pytest.raises(openai.BadRequestError) as info:
                client(other).chat.completions.create(model="run", messages=user("hi"), max_tokens=250)
            assert info.value.code == "context_length_exceeded"
        # the labelling API keeps working beside the chat routes, on the same server
        got = httpx.post(f"{base}/v1/predict", json={"model": "ner", "texts": ["Mary visited Paris"]},
                         headers={"Authorization": "Bearer s3cret"})
        assert got.status_code == 200 and got.json()["model"] == "ner"
        assert api.chat.completions.create(model="run", messages=user("hi"), max_tokens=3).usage.completion_tokens <= 3
        listed = {m.id: m.task for m in api.models.list()}
        assert listed == {"run": "sft", "ner": "token_classification"}


def test_a_full_queue_answers_429_and_the_waiting_request_still_completes(chat_run):
    with serving([chat_run], max_running=1, max_queue=1) as (base, app):
        long = dict(model="run", messages=user("Say hi"), max_tokens=200, stream=True)
        first = client(base).chat.completions.create(**long)
        next(iter(first))  # running
        results = {}
        waiting = threading.Thread(target=lambda: results.setdefault("second", client(base).chat.completions.create(
            model="run", messages=user("Why?"), max_tokens=4)))
        waiting.start()
        deadline = time.monotonic() + 10
        while app.state.engine.waiting() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as info:
            client(base).chat.completions.create(model="run", messages=user("hi"), max_tokens=4)
        assert info.value.code == "queue_full" and info.value.response.headers["retry-after"] == "1"
        first.close()
        waiting.join(30)
        assert results["second"].usage.completion_tokens <= 4


def test_lora_runs_on_one_base_share_it_and_answer_as_their_own_run(lora_runs):
    a, b = lora_runs
    expected = {name: tuneforge.load(run, precision="fp32").generate(user("Say hi"), max_new_tokens=16)[0]["text"]
                for name, run in (("a", a), ("b", b))}
    assert expected["a"] != expected["b"]
    with serving([f"a={a}", f"b={b}"]) as (base, _):
        listing = httpx.get(f"{base}/v1/models").json()
        assert [m["shares_base"] for m in listing["models"]] == [True, True]

        def ask(name):
            return lambda: client(base).chat.completions.create(model=name, messages=user("Say hi"),
                                                                max_tokens=16).choices[0].message.content

        assert concurrently([ask("a"), ask("b"), ask("a"), ask("b")]) == [expected["a"], expected["b"]] * 2


def test_sigterm_drains_a_stream_in_flight(chat_run, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(Path(tuneforge.__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "serve", str(chat_run), "--port", str(port),
                             "--precision", "fp32", "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        stream = client(base).chat.completions.create(model="run", messages=user("Say hi"), max_tokens=60, stream=True)
        events = iter(stream)
        pieces = [next(events)]
        proc.send_signal(signal.SIGTERM)
        pieces += list(events)
        assert [e.choices[0].finish_reason for e in pieces if e.choices][-1] in ("length", "stop")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_openai_error_body_for_unreadable_json(chat_run):
    with serving([chat_run]) as (base, _):
        got = httpx.post(f"{base}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert got.status_code == 400
    body = got.json()["error"]
    assert body["type"] == "invalid_request_error" and body["code"] == "invalid_request"
    assert body["message"].startswith("body: not JSON")
    assert json.dumps(body)


def test_a_base_decoder_folder_or_gguf_is_served_as_published(tiny_llama, tmp_path):
    from tuneforge.loading import base_decoder_source

    # a Hugging Face folder (config.json of a ...ForCausalLM) serves with its own chat template
    expected = tuneforge.load(tiny_llama, precision="fp32").generate(user("Say hi"), max_new_tokens=12)[0]
    with serving([f"base={tiny_llama}"]) as (base, _):
        reply = client(base).chat.completions.create(model="base", messages=user("Say hi"), max_tokens=12)
        assert reply.choices[0].message.content == expected["text"]
        assert httpx.get(f"{base}/v1/models").json()["models"][0]["task"] == "sft"
    # which folders count as a published decoder: a GGUF file or a folder of one, never a run folder
    (tmp_path / "q.gguf").write_bytes(b"GGUF")
    assert base_decoder_source(tmp_path / "q.gguf") == (str(tmp_path), "q.gguf")
    assert base_decoder_source(tmp_path) == (str(tmp_path), "q.gguf")
    (tmp_path / "r.gguf").write_bytes(b"GGUF")
    assert base_decoder_source(tmp_path) is None  # two: which one is meant is not guessed
    assert base_decoder_source(Path(tiny_llama)) == (str(tiny_llama), None)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["BertForTokenClassification"]}))
    assert base_decoder_source(encoder) is None


def test_web_page_chat_view_streams_a_conversation_in_a_real_browser(chat_run, ner_run, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    run = tuneforge.load(chat_run, precision="fp32")
    first = run.generate(user("Say hi"), max_new_tokens=12)[0]["text"]
    second = run.generate([{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": first},
                           {"role": "user", "content": "Why?"}], max_new_tokens=12)[0]["text"]
    with serving([chat_run, f"ner={ner_run}"]) as (base, _), sync_playwright() as p:
        browser = _launch(p, chromium)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            page.wait_for_selector("#model option[value=ner]", state="attached")
            assert page.input_value("#model") == "run"
            assert page.is_visible("#chat-view") and not page.is_visible("#label-view")
            page.click("#chat-settings summary")
            page.fill("#max-tokens", "12")
            for i, (turn, expected) in enumerate((("Say hi", first), ("Why?", second))):
                page.fill("#chat-input", turn)
                page.press("#chat-input", "Enter")
                page.wait_for_selector(f".msg.assistant[data-finish] >> nth={i}")  # the page's CSP: no string eval
                got = page.eval_on_selector_all(".msg.assistant .content", "els => els.map(e => e.textContent)")
                assert got[-1] == expected
            roles = page.eval_on_selector_all("#chat-log .msg", "els => els.map(e => e.dataset.role)")
            assert roles == ["user", "assistant", "user", "assistant"]
            meta = page.inner_text(".msg.assistant >> nth=0 >> .meta")
            assert "tokens in" in meta and "first token" in meta
            page.screenshot(path=str(tmp_path / "chat-view.png"), full_page=True)
            page.select_option("#model", "ner")  # a labelling run: the page labels texts again
            assert page.is_visible("#label-view") and not page.is_visible("#chat-view")
            assert page.eval_on_selector_all("#chat-log .msg", "els => els.length") == 0
            assert errors == []
        finally:
            browser.close()
