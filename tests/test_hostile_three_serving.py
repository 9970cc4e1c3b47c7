"""Hostile input (issue 30), the server's part and what holds across batches: one line or the documented
error body, and the promise on batch invariance exactly as docs/serving.md states it.

Each test here failed on the code before its fix (cases 12-16); case 1's test checks the promise as
changed (bytes under fp32; under bf16 tags and labels, confidences within 0.01).
"""

from __future__ import annotations

import json

import pytest

from tuneforge.cli import main

from test_hostile_three import error_line

pytestmark = pytest.mark.hostile

# ---------------------------------------------------------------------------------------------
# 12-16. Server messages


@pytest.fixture(scope="module")
def served_ner(hostile_ner_run):
    from tuneforge.serving import load_models

    return load_models([f"ner={hostile_ner_run}"])


def _post(base: str, body: bytes, content_type: str = "application/json", **headers):
    import httpx

    return httpx.post(f"{base}/v1/predict", content=body, headers={"content-type": content_type, **headers}, timeout=30)


BAD_BODIES = [
    ("café".encode("latin-1").join([b'{"texts": ["', b'"]}']), "application/json",
     "body: not UTF-8 (byte 0xe9 at offset 15); send the JSON as UTF-8"),
    (b'{"texts": ["cafe"]}', "application/json; charset=latin-1",
     "body: charset latin-1 is not accepted; send the JSON as UTF-8"),
    (b"[" * 30_000 + b"]" * 30_000, "application/json",
     "body: JSON nested too deep to read; a request is one object of texts or tokens"),
    (b'{"texts"', "application/json", "body: not JSON (Expecting ':' delimiter at line 1 column 9)"),
]


def test_bodies_that_cannot_be_parsed_get_the_documented_error_and_are_counted(served_ner):
    from test_serving import metric_samples, serving

    with serving(served_ner) as base:
        for body, content_type, message in BAD_BODIES:
            response = _post(base, body, content_type)
            assert response.status_code == 422, response.text
            assert response.json() == {"error": {"code": "invalid_request", "message": message}}
        samples = metric_samples(base)
    # no model could be read from them: counted under the label unknown model names get (issue 31)
    assert samples[("tuneforge_requests_total", (("model", "(unknown)"), ("status", "422")))] == len(BAD_BODIES)
    assert samples[("tuneforge_request_errors_total", (("code", "invalid_request"), ("model", "(unknown)")))] == len(BAD_BODIES)


def test_a_lone_surrogate_is_invalid_input_and_an_empty_model_name_is_unknown(served_ner):
    from test_serving import serving

    with serving(served_ner) as base:
        for body in (b'{"texts": ["paris", "a\\ud800b"]}', b'{"tokens": [["paris"], ["a", "\\udfffb"]]}'):
            response = _post(base, body)
            assert response.status_code == 422
            code = "D800" if b"ud800" in body else "DFFF"
            at = 1 if code == "D800" else 0
            assert response.json() == {"error": {"code": "invalid_input", "message": (
                f"text 1: a lone surrogate (U+{code}) at character {at} is not text; send whole characters")}}
        response = _post(base, json.dumps({"model": "", "texts": ["paris"]}).encode())
        assert response.status_code == 404
        assert response.json() == {"error": {"code": "unknown_model", "message": (
            "model '' is not served; GET /v1/models lists them"), "models": ["ner"]}}
        assert _post(base, json.dumps({"texts": ["paris"]}).encode()).json()["model"] == "ner"


def test_the_api_key_is_checked_before_the_body(served_ner):
    from test_serving import serving

    unauthorized = {"error": {"code": "unauthorized", "message": "send the server's API key as 'Authorization: Bearer KEY'"}}
    with serving(served_ner, api_key="s3cret") as base:
        for body, content_type, _ in [*BAD_BODIES, (b'{"texts": 3}', "application/json", "")]:
            response = _post(base, body, content_type)
            assert (response.status_code, response.json()) == (401, unauthorized)
        response = _post(base, b'{"texts": 3}', authorization="Bearer s3cret")
        assert response.status_code == 422
        assert response.json() == {"error": {"code": "invalid_request", "message": "texts: Input should be a valid list"}}


def test_serve_on_a_port_in_use_stops_before_loading(tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the run folder does not exist: had the models been loaded first, that would be the error
        assert main(["serve", str(tmp_path / "no-such-run"), "--port", str(port)]) == 2
    assert error_line(capsys) == (f"error: --port {port}: cannot listen on 127.0.0.1:{port} (Address already in "
                                  "use); stop what uses it or pick another --port")


# ---------------------------------------------------------------------------------------------
# 1. What holds across batches: bytes under fp32; under bf16 tags and labels, confidences within 0.01

TEXTS = ["Mary visited Paris today", "John Smith lives in New York", "google and apple met in london",
         "she works at microsoft in berlin", "he went to the city of paris", "john said the city was new",
         "Mary met John in London and then visited Paris with Google and Apple today", "paris",
         "北京 is a city", "mary", "apple and google", "the city of new york was new today", "he met mary"]


def test_fp32_gives_the_same_bytes_alone_in_a_file_and_in_a_server_batch(hostile_ner_run, hostile_classifier_run, tmp_path, capsys):
    import httpx

    import tuneforge
    from test_serving import concurrently, serving
    from tuneforge.serving import load_models

    for run in (hostile_ner_run, hostile_classifier_run):
        predictor = tuneforge.load(run, precision="fp32")
        together = [predictor.to_json(r) for r in predictor.predict(TEXTS, batch_size=64)]
        alone = [predictor.to_json(predictor.predict([t])[0]) for t in TEXTS]
        assert together == alone
        (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
        capsys.readouterr()
        assert main(["predict", str(run), str(tmp_path / "texts.txt"), "--precision", "fp32", "--batch-size", "5"]) == 0
        assert capsys.readouterr().out.splitlines() == alone
        with serving(load_models([f"m={run}"], precision="fp32"), max_wait_ms=50) as base:
            answers = concurrently([lambda t=t: httpx.post(f"{base}/v1/predict", json={"texts": [t]}, timeout=60).content
                                    for t in TEXTS])
        assert answers == [('{"model": "m", "results": [' + line + "]}").encode() for line in alone]


def strip_confidence(entities: list[dict]) -> list[dict]:
    """Entities without their confidence: under bf16 it may move by a few thousandths with the batch
    (on an AMX CPU; this test must hold on any x86-64 CPU), the spans must not."""
    return [{k: v for k, v in e.items() if k != "confidence"} for e in entities]


def test_bf16_tags_and_labels_do_not_depend_on_the_batch(hostile_ner_run, hostile_classifier_run):
    import tuneforge

    ner = tuneforge.load(hostile_ner_run, precision="bf16")
    assert ner.runtime["precision"] == "bf16"
    for together, alone in zip(ner.predict(TEXTS, batch_size=64), [ner.predict([t])[0] for t in TEXTS]):
        assert together["tags"] == alone["tags"]
        assert strip_confidence(together["entities"]) == strip_confidence(alone["entities"])
        assert max(abs(a - b) for a, b in zip(together["confidences"], alone["confidences"])) <= 0.01
    classifier = tuneforge.load(hostile_classifier_run, precision="bf16")
    for together, alone in zip(classifier.predict(TEXTS, batch_size=64), [classifier.predict([t])[0] for t in TEXTS]):
        assert together["label"] == alone["label"]
        assert max(abs(together["probabilities"][k] - alone["probabilities"][k]) for k in alone["probabilities"]) <= 0.01
