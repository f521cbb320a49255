"""The JSON API behind ``rnnkit serve``, through FastAPI's test client: results equal the library's, every bad
request is a JSON 4xx with a one-line message, and nothing outside the package's three static files is served."""

import json
import warnings

import pytest
import torch

pytest.importorskip("fastapi")
with warnings.catch_warnings():  # starlette would rather the test client used httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from rnnkit.checkpoint import load_run  # noqa: E402
from rnnkit.generate import generate  # noqa: E402
from rnnkit.inspect_units import trace_text  # noqa: E402
from rnnkit.web.app import create_app  # noqa: E402
from rnnkit.web.service import Limits  # noqa: E402


@pytest.fixture(scope="module")
def client(tiny_run):
    with TestClient(create_app(tiny_run, limits=Limits(max_length=500, max_text=300, max_body=4096))) as c:
        yield c


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_run(tiny_run)


def ndjson(response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines()]


def assert_error(response, status, *fragments):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_info(client, loaded):
    model, vocab, _ = loaded
    info = client.get("/api/info").json()
    assert info["cell"] == "lnlstm" and info["num_layers"] == 2 and info["hidden_size"] == 32  # the CPU default
    assert info["states"] == ["h", "c"] and info["vocab"] == "".join(vocab.chars)
    assert info["parameters"] == model.num_parameters() and info["limits"]["max_length"] == 500


def test_streamed_text_equals_unstreamed_and_the_library(client, loaded):
    model, vocab, _ = loaded
    body = {"prompt": "The ", "length": 80, "temperature": 1.0, "top_k": 20, "top_p": 0.95, "seed": 7}
    whole = client.post("/api/generate", json={**body, "stream": False}).json()
    streamed = client.post("/api/generate", json=body)
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    lines = ndjson(streamed)
    assert lines[0] == {"seed": 7, "prompt": "The "} and lines[-1] == {"done": True}
    chars = [line["text"] for line in lines[1:-1]]
    assert len(chars) == 80 and all(len(c) == 1 for c in chars)  # one message per character, as sampled
    ids = generate(model, vocab.encode("The ").tolist(), 80, 1.0, 20, 0.95, seed=7)
    assert "".join(chars) == whole["text"] == vocab.decode(ids[0].tolist())


def test_unseeded_generation_reports_a_seed_that_reproduces_it(client):
    first = client.post("/api/generate", json={"length": 40, "stream": False}).json()
    again = client.post("/api/generate", json={"length": 40, "seed": first["seed"], "stream": False}).json()
    assert again["text"] == first["text"] and len(first["text"]) == 40


@pytest.mark.parametrize("body, fragment", [
    ({"length": 501}, "length must be in 1..500"),
    ({"length": 0}, "length must be in 1..500"),
    ({"prompt": "x" * 1001}, "at most 1000"),
    ({"prompt": "\x00日本"}, "vocabulary does not hold"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": 1e300}, "temperature"),
    ({"top_k": 0}, "top-k"),
    ({"top_p": 0}, "top-p"),
    ({"top_p": 1.5}, "top-p"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**70}, "seed"),
])
def test_bad_generation_requests_are_400(client, body, fragment):
    assert_error(client.post("/api/generate", json=body), 400, fragment)
    assert_error(client.post("/api/generate", json={**body, "stream": False}), 400, fragment)


@pytest.mark.parametrize("raw, fragment", [
    (b'{"temperature": NaN}', "temperature"),
    (b'{"temperature": Infinity}', "temperature"),
    (b'{"length": "many"}', "length"),
    (b'{"length": 2.5}', "length"),
    (b'{"colour": "red"}', "colour"),
    (b'{"prompt": ', "not valid JSON"),
    (b'[1, 2]', "body"),
    (b'"text"', "body"),
])
def test_malformed_requests_are_422(client, raw, fragment):
    response = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 422, fragment)


def test_oversized_bodies_are_413_before_parsing(client):
    big = json.dumps({"prompt": "a" * 5000})
    assert_error(client.post("/api/generate", content=big, headers={"content-type": "application/json"}), 413)

    def chunks():  # no content-length: the limit is counted as the body arrives
        for _ in range(10):
            yield b" " * 1000
    assert_error(client.post("/api/units", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_activations_equal_the_library_trace(client, loaded):
    model, vocab, _ = loaded
    text = 'print("x", [a + b])\nfor i in range(3):'
    reference = trace_text(model, vocab, text)
    for layer, state, unit in ((0, "h", 3), (1, "c", 31), (None, "h", 0)):
        body = {"text": text, "state": state, "unit": unit} | ({} if layer is None else {"layer": layer})
        got = client.post("/api/activations", json=body).json()
        want = reference.unit(1 if layer is None else layer, state, unit)
        assert got["layer"] == (1 if layer is None else layer) and got["text"] == text
        torch.testing.assert_close(torch.tensor(got["values"]), want, atol=1e-4, rtol=0)
        assert len(got["top"]) == len(text) and all(len(row) == 5 for row in got["top"])
        for t in (0, len(text) // 2, len(text) - 1):
            probs = [p for _, p in got["top"][t]]
            assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
            best = reference.probs[t].argmax().item()
            assert got["top"][t][0][0] == vocab.chars[best]
    assert got["vmax"] == 1.0  # h is drawn on a fixed ±1 scale


@pytest.mark.parametrize("body, status, fragment", [
    ({"text": ""}, 400, "empty"),
    ({"text": "a" * 301}, 400, "at most 300"),
    ({"text": "ab\x00"}, 400, "vocabulary"),
    ({"text": "ab", "layer": 2}, 400, "layer must be in 0..1"),
    ({"text": "ab", "unit": 32}, 400, "unit must be in 0..31"),
    ({"text": "ab", "unit": -1}, 400, "unit must be in 0..31"),
    ({"text": "ab", "state": "z"}, 400, "unknown state"),
    ({"unit": 1}, 422, "text"),
])
def test_bad_activation_requests(client, body, status, fragment):
    assert_error(client.post("/api/activations", json=body), status, fragment)


def test_units_ranked_on_the_models_sample_and_on_a_text(client):
    default = client.post("/api/units", json={}).json()
    assert default["source"] == "sample" and len(default["text"]) > 1000
    assert list(default["features"]) == ["in_quotes", "in_brackets", "line_position", "vowel"]
    text = 'a = f("b", (c))\n' * 8
    ranked = client.post("/api/units", json={"text": text}).json()
    assert ranked["source"] == "text" and ranked["text"] == text
    for feature in ranked["features"].values():
        assert feature["available"] and len(feature["units"]) == 5
        rs = [abs(u["r"]) for u in feature["units"]]
        assert rs == sorted(rs, reverse=True) and all(0 <= r <= 1 for r in rs)
    plain = client.post("/api/units", json={"text": "abc def\nghi"}).json()["features"]
    assert not plain["in_quotes"]["available"] and plain["in_quotes"]["units"] == []


def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text and "default-src 'self'" in page.headers[
        "content-security-policy"]
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", [
    "/config.json", "/static/config.json", "/static/../config.json", "/static/..%2Fconfig.json",
    "/static/%2e%2e/config.json", "/static/%2e%2e%2fconfig.json", "/static/..%5Cconfig.json",
    "/static/%2Fetc%2Fpasswd", "/static//etc/passwd", "/static/index.html", "/static/__init__.py",
    "/static/../app.py", "/model.safetensors", "/api/../config.json", "/..%2F..%2Fconfig.json",
])
def test_nothing_outside_the_static_files_is_served(client, tiny_run, path):
    response = client.get(path)
    assert_error(response, 404)
    config = (tiny_run / "config.json").read_text()
    assert '"format_version"' not in response.text and config[:40] not in response.text


def test_wrong_methods_and_routes_are_json(client):
    assert_error(client.get("/api/generate"), 405)
    assert_error(client.post("/api/nothing", json={}), 404)


def test_a_client_that_leaves_stops_the_sampling(loaded):
    import asyncio
    import threading
    import time

    from anyio import CapacityLimiter

    from rnnkit.web.app import _stream
    from rnnkit.web.service import Service

    service = Service(*loaded, name="run")
    sampled, finished, real_run = [], threading.Event(), service.run

    def slow_run(job, on_char):  # 1 ms a character: 2 s if nobody stops it
        try:
            return real_run(job, lambda ch: (sampled.append(ch), on_char(ch), time.sleep(0.001)))
        finally:
            finished.set()

    service.run = slow_run
    job = service.generation("The ", 2000, 1.0, None, None, 1)

    async def leave_early():
        stream = _stream(service, job, CapacityLimiter(1))
        lines = [json.loads(await anext(stream)) for _ in range(6)]
        await stream.aclose()  # what the server does when the client disconnects
        for _ in range(500):  # the loop keeps running, as a server's does, until the sampling ends
            if finished.is_set():
                break
            await asyncio.sleep(0.01)
        return lines

    lines = asyncio.run(leave_early())
    assert lines[0]["seed"] == 1 and all("text" in line for line in lines[1:])
    assert finished.is_set() and len(sampled) < 200


def test_a_full_queue_is_503_and_the_server_carries_on(loaded):
    import asyncio
    import threading

    import httpx

    from rnnkit.web.app import build_app
    from rnnkit.web.service import Service

    service = Service(*loaded, name="run", limits=Limits(workers=1, max_waiting=0))
    release, real_run = threading.Event(), service.run
    service.run = lambda job, on_char=None: (release.wait(10), real_run(job, on_char))[1]
    body = {"length": 5, "seed": 1, "stream": False}

    async def crowd():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(service)), base_url="http://t") as c:
            first = asyncio.ensure_future(c.post("/api/generate", json=body))
            await asyncio.sleep(0.5)  # the first request now holds the only worker
            turned_away = await c.post("/api/generate", json=body)
            release.set()
            return await first, turned_away, await c.post("/api/generate", json=body)

    first, turned_away, later = asyncio.run(crowd())
    assert_error(turned_away, 503, "waiting")
    assert first.status_code == later.status_code == 200 and first.json() == later.json()
