"""`nlpipe serve` for real: a server subprocess on 127.0.0.1, 16 concurrent clients, bad requests.

The answers are compared with ``pipeline("ner")`` / ``pipeline("translation")`` run in this process on
each text alone, so the server's grouping of requests from different clients must not change them.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from server_process import ServerProcess, post_json, request

NER_TEXTS = [
    "Peter Blackburn met EU officials in Zürich on Monday .",
    "Germany 's representative to the European Union 's veterinary committee Werner Zwingmann said .",
    "EU rejects German call to boycott British lamb .",
    "Zoë Ngũgĩ ( Nairobi ) beat Steffi Graf 6-3 in the Wimbledon final.",
    "John Smith works for Acme Corp in New York.",
    "The match in Paris ended 2-1 .",
    "nothing to see here",
    "Japan began the defence of their Asian Cup title with a lucky 2-1 win against Syria .",
    "Rare Hendrix song draft sells for almost $ 17,000 .",
    "Nadim Ladki",
    "AL-AIN , United Arab Emirates 1996-12-06",
    "BRUSSELS 1996-08-22",
]
TRANSLATION_TEXTS = [
    "die Katze das Buch findet .",
    "das Pferd das alte Buch neben einer Straße findet .",
    "ein Hund läuft .",
    "der Mann sieht die Frau .",
    "eine Frau liest ein Buch neben dem Haus .",
    "zwei Kinder spielen .",
]
CLIENTS = 16


def reference_entities(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    from transformers import pipeline

    import nlpipe  # noqa: F401  (registers the tagger pipeline)

    ner = pipeline("ner", model=str(run_dir), aggregation_strategy="simple")
    return {text: ner(text) for text in NER_TEXTS}


def same_entities(got: list[dict], expected: list[dict]) -> bool:
    def key(entity: dict) -> tuple:
        return entity["entity_group"], entity["start"], entity["end"], entity["word"]

    return [key(e) for e in got] == [key(e) for e in expected] and all(
        abs(g["score"] - float(e["score"])) < 1e-4 for g, e in zip(got, expected, strict=True))


def run_clients(work: Any, requests_per_client: int) -> list[str]:
    """Run ``work(client, rng)`` in 16 threads at once; return the failures they report."""
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(index: int) -> None:
        rng = random.Random(index)
        start.wait(timeout=60)
        for number in range(requests_per_client):
            try:
                problem = work(index, number, rng)
            except Exception as exc:  # noqa: BLE001 - reported below with the client's number
                problem = f"{type(exc).__name__}: {exc}"
            if problem:
                with lock:
                    failures.append(f"client {index} request {number}: {problem}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "clients did not finish in 10 minutes"
    return failures


def test_concurrent_clients_get_the_pipeline_answers(ner_server: ServerProcess, ner_run: Path) -> None:
    expected = reference_entities(ner_run)
    assert sum(len(v) for v in expected.values()) >= 3, "the tiny model should find some entities"
    url = ner_server.url + "/entities"
    before = request(ner_server.url + "/health")[1]

    def work(client: int, number: int, rng: random.Random) -> str | None:
        if number % 7 == 6:  # bad requests mixed into the load must not disturb the others
            status, body = post_json(url, {"texts": [rng.choice(NER_TEXTS), 3]})
            return None if status == 422 and "texts[1]" in body["error"] else f"bad request got {status} {body}"
        texts = rng.sample(NER_TEXTS, rng.randint(1, 3))
        status, body = post_json(url, {"texts": texts})
        if status != 200:
            return f"status {status}: {body}"
        results = body["results"]
        if [r["text"] for r in results] != texts:
            return "results out of order"
        for result in results:
            if not same_entities(result["entities"], expected[result["text"]]):
                return f"{result['text']!r}: {result['entities']} != {expected[result['text']]}"
        return None

    failures = run_clients(work, requests_per_client=20)  # 320 requests
    assert not failures, "\n".join(failures[:10])
    health = request(ner_server.url + "/health")[1]
    answered = health["requests"] - before["requests"]
    assert answered == CLIENTS * 20 - CLIENTS * 2  # every good request reached the model once
    # requests from different clients shared model calls
    assert health["batches"] - before["batches"] < answered


def test_concurrent_translation_clients(translation_run: Path, tmp_path: Path) -> None:
    from transformers import pipeline

    import nlpipe  # noqa: F401

    translate = pipeline("translation", model=str(translation_run))
    expected = {text: translate(text)[0]["translation_text"] for text in TRANSLATION_TEXTS}
    assert any(expected.values())

    with ServerProcess(translation_run, tmp_path / "server.log", "--max-wait-ms", "20") as server:
        info = request(server.url + "/")[1]
        assert info["task"] == "translation" and info["endpoint"] == "/translation"

        def work(client: int, number: int, rng: random.Random) -> str | None:
            texts = rng.sample(TRANSLATION_TEXTS, rng.randint(1, 2))
            status, body = post_json(server.url + "/translation", {"texts": texts})
            if status != 200:
                return f"status {status}: {body}"
            got = [(r["text"], r["translation"]) for r in body["results"]]
            want = [(t, expected[t]) for t in texts]
            return None if got == want else f"{got} != {want}"

        failures = run_clients(work, requests_per_client=5)  # 80 requests
        assert not failures, "\n".join(failures[:10])
        # the NER endpoint is not mounted on a translation server
        status, body = post_json(server.url + "/entities", {"texts": ["x"]})
        assert status == 404 and "POST /translation" in body["error"]


def chunked_post(url: str, body: bytes) -> tuple[int, dict]:
    """POST without a Content-Length (chunked transfer encoding)."""
    host, port = url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", "/entities", body=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
                           headers={"Content-Type": "application/json"}, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


BAD_REQUESTS = [
    # (what, body, expected status, words the error must contain)
    ("empty body", b"", 400, "empty"),
    ("not JSON", b'{"texts": ["a"', 400, "not valid JSON"),
    ("not UTF-8", b'{"texts": ["\xff\xfe"]}', 400, "UTF-8"),
    ("nested too deeply", b"[" * 200_000, 400, "nested too deeply"),
    ("a JSON array", b'["a", "b"]', 422, "JSON object"),
    ("a JSON string", b'"Peter met Paul"', 422, "JSON object"),
    ("null", b"null", 422, "JSON object"),
    ("misspelt field", b'{"text": "Peter met Paul"}', 422, "body.text: unknown field"),
    ("texts a string", b'{"texts": "Peter met Paul"}', 422, "body.texts"),
    ("a number among texts", b'{"texts": ["ok", 5]}', 422, "body.texts[1]"),
    ("a list among texts", b'{"texts": [["nested"]]}', 422, "body.texts[0]"),
    ("unpaired surrogate", b'{"texts": ["ok", "Peter \\ud800 met"]}', 422, "texts[1]: character 6 is an unpaired"),
    ("no texts", b'{"texts": []}', 422, "empty"),
    ("blank text", b'{"texts": ["  "]}', 422, "texts[0]: empty text"),
    ("too many texts", json.dumps({"texts": ["Peter met Paul"] * 9}).encode(), 422, "limit 8"),
    ("text too long", json.dumps({"texts": ["ok", "word " * 200]}).encode(), 422, "texts[1]: 1,000 characters"),
    ("huge body", json.dumps({"texts": ["a" * (3 << 20)]}).encode(), 413, "larger than"),
]


@pytest.mark.parametrize(("what", "body", "status", "words"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_gets_a_4xx_json_error(ner_server: ServerProcess, what: str, body: bytes, status: int,
                                           words: str) -> None:
    got, answer = request(ner_server.url + "/entities", body, {"Content-Type": "application/json"}, method="POST")
    assert got == status, answer
    assert set(answer) == {"error"} and words in answer["error"]


def test_server_is_healthy_after_bad_requests(ner_server: ServerProcess, ner_run: Path) -> None:
    # the worst of them once more, back to back, then wrong routes and methods
    for _, body, _, _ in BAD_REQUESTS:
        status, _ = request(ner_server.url + "/entities", body, {"Content-Type": "text/plain"}, method="POST")
        assert 400 <= status < 500
    status, answer = chunked_post(ner_server.url, json.dumps({"texts": ["a" * (2 << 20)]}).encode())
    assert status == 413 and "larger than" in answer["error"]
    assert request(ner_server.url + "/nowhere")[0] == 404
    assert request(ner_server.url + "/entities")[0] == 405  # GET on a POST route
    assert request(ner_server.url + "/health", b"{}", method="DELETE")[0] == 405

    status, health = request(ner_server.url + "/health")
    assert status == 200 and health["status"] == "ok"
    # `curl -d` sends a form content type: the JSON body is still read
    text = NER_TEXTS[0]
    status, body = request(ner_server.url + "/entities", json.dumps({"texts": [text]}).encode(),
                           {"Content-Type": "application/x-www-form-urlencoded"}, method="POST")
    assert status == 200
    assert same_entities(body["results"][0]["entities"], reference_entities(ner_run)[text])


def test_metadata_at_root_comes_from_the_model_card(ner_server: ServerProcess, ner_run: Path) -> None:
    status, info = request(ner_server.url + "/", headers={"Accept": "application/json"})
    assert status == 200
    metrics = json.loads((ner_run / "metrics.json").read_text())
    assert info["name"] == "ner-bilstm-crf" and info["task"] == "token-classification"
    assert info["endpoint"] == "/entities" and info["backend"] == "pytorch"
    assert info["model"]["type"] == "rnn_tagger" and info["model"]["parameters"] == metrics["parameters"]
    assert info["metrics"]["test"]["f1"] == pytest.approx(metrics["test"]["f1"])
    assert info["data"] == {"dataset": "conll2003", "source": "sample"}
    assert info["card"]["pipeline_tag"] == "token-classification"  # the README.md header the Hub reads
    assert info["limits"]["max_texts"] == 8
    # a browser asking for HTML gets the page, from the same process, without any outside asset
    req_headers = {"Accept": "text/html,application/xhtml+xml"}
    with urllib.request.urlopen(urllib.request.Request(ner_server.url + "/", headers=req_headers)) as response:
        page = response.read().decode()
        assert response.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page and "http://" not in page and "https://" not in page
    for asset in ("app.js", "style.css"):
        with urllib.request.urlopen(f"{ner_server.url}/static/{asset}") as response:
            assert response.status == 200 and "//cdn" not in response.read().decode()
