"""Bad input gets a clear OpenAI-shaped 4xx, never a 500 or a stack trace."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def http(live_service):
    with httpx.Client(base_url=live_service.base_url, timeout=120) as client:
        yield client


def _err(r: httpx.Response, status: int, *fragments: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    for fragment in fragments:
        assert fragment.lower() in body["error"]["message"].lower(), body
    assert "Traceback" not in r.text
    return body["error"]


LONG = "word " * 6000


@pytest.mark.parametrize(
    ("route", "payload", "status", "fragments"),
    [
        ("/qa", {}, 400, ["question", "required"]),
        ("/qa", {"question": ""}, 400, ["question"]),
        ("/qa", {"question": "   "}, 400, ["empty"]),
        ("/qa", {"question": 42}, 400, ["question"]),
        ("/qa", {"question": "x?", "options": []}, 400, ["at least 2 options"]),
        ("/qa", {"question": "x?", "options": ["yes"]}, 400, ["at least 2 options"]),
        ("/qa", {"question": "x?", "options": [f"o{i}" for i in range(40)]}, 400, ["at most 32"]),
        ("/qa", {"question": "x?", "options": ["yes", "yes"]}, 400, ["distinct"]),
        ("/qa", {"question": "x?", "method": "magic", "options": ["a", "b"]}, 400, ["method"]),
        ("/qa", {"question": "x?", "temperature": -1}, 400, ["temperature"]),
        ("/qa", {"question": "x?", "max_tokens": 10**6}, 400, ["limit of 1024"]),
        ("/qa", {"question": "x?", "max_tokens": 0}, 400, ["max_tokens"]),
        ("/qa", {"question": "x?", "adapter": "../../etc/passwd"}, 400, ["adapter"]),
        ("/qa", {"question": "x?", "adapter": "Bad Name!"}, 400, ["adapter"]),
        ("/qa", {"question": "x?", "adapter": "no-such-alias"}, 404, ["unknown adapter", "no-such-alias"]),
        ("/qa", {"question": "x?", "adapter": "ghost@7"}, 404, ["ghost@7"]),
        ("/qa", {"question": "x?", "unexpected": 1}, 400, ["unexpected"]),
        ("/qa", {"question": LONG}, 400, ["context", "4096"]),
        ("/qa", {"question": "\x00\x01 hidden"}, 400, ["control characters"]),
        ("/extract", {"text": ""}, 400, ["text"]),
        ("/extract", {"text": "x", "entity_types": []}, 400, ["entity_types"]),
        ("/extract", {"text": "x", "entity_types": ["Drug; DROP TABLE"]}, 400, ["entity_types"]),
        ("/generate", {"instruction": "hi", "max_tokens": 4000, "input": "x"}, 400, ["limit"]),
        ("/generate", {"instruction": "hi", "top_p": 0}, 400, ["top_p"]),
        ("/generate", {"instruction": "Summarize.", "input": LONG}, 400, ["context"]),
        ("/compare", {"route": "qa", "adapters": [], "request": {"question": "x"}}, 400, ["adapters"]),
        ("/compare", {"route": "qa", "adapters": ["base", "base"], "request": {"question": "x"}}, 400, ["distinct"]),
        ("/compare", {"route": "qa", "adapters": ["base"], "request": {"question": ""}}, 400, ["question"]),
        ("/compare", {"route": "sing", "adapters": ["base"], "request": {}}, 400, ["route"]),
    ],
)
def test_bad_task_requests(http, route, payload, status, fragments):
    _err(http.post(route, json=payload), status, *fragments)


def test_malformed_bodies(http):
    _err(http.post("/qa", content=b"{not json", headers={"content-type": "application/json"}), 400, "not valid JSON")
    _err(http.post("/qa", content=b"\xff\xfe\x00garbage", headers={"content-type": "application/json"}), 400)
    _err(http.post("/qa", content=b"[1, 2]", headers={"content-type": "application/json"}), 400)
    deep = b"[" * 100_000 + b"]" * 100_000
    r = http.post("/v1/chat/completions", content=deep, headers={"content-type": "application/json"})
    _err(r, 400)
    r = http.post("/qa", content=deep, headers={"content-type": "application/json"})
    assert r.status_code in (400, 413) and "Traceback" not in r.text
    _err(http.post("/qa", content=b"x" * (3 * 1024 * 1024), headers={"content-type": "application/json"}), 413, "limit")

    def chunked(n):  # no Content-Length: the size is only known while reading
        for _ in range(n):
            yield b"x" * (256 * 1024)

    for route in ("/qa", "/admin/adapters"):
        _err(http.post(route, content=chunked(12), headers={"content-type": "application/json"}), 413, "limit")


def test_unknown_route_and_method(http):
    _err(http.get("/nope"), 404, "no such route")
    _err(http.get("/qa"), 405, "method not allowed")


def test_openai_routes_refuse_bad_parameters(http):
    chat = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    _err(http.post("/v1/chat/completions", json={**chat, "model": "nope"}), 404, "unknown adapter")
    _err(http.post("/v1/chat/completions", json={k: v for k, v in chat.items() if k != "model"}), 400, "model")
    _err(http.post("/v1/chat/completions", json={**chat, "max_tokens": 10**7}), 400, "limit")
    _err(http.post("/v1/chat/completions", json={**chat, "n": 100}), 400, "'n'")
    _err(http.post("/v1/completions", json={"model": "base", "prompt": "hi", "logprobs": 100}), 400, "at most 20")
    _err(http.post("/v1/completions", json={"model": "qa@²", "prompt": "hi", "max_tokens": 2}), 400, "pinned")
    _err(http.post("/v1/completions", json={"model": "base", "prompt": ["hi"] * 1024, "max_tokens": 2}),
         400, "sequences")
    _err(http.post("/v1/completions", json={"model": "base", "prompt": ["a", "b", "c"], "n": 3, "max_tokens": 2}),
         400, "sequences")
    _err(http.post("/v1/completions", json={"model": "base", "prompt": "hi", "max_tokens": 2, "min_tokens": 50}),
         400, "min_tokens")
    _err(http.post("/v1/completions", json={"model": "base", "prompt": "hi", "max_tokens": 2, "ignore_eos": "yes"}),
         400, "ignore_eos")
    # an omitted max_tokens is OpenAI's default (16), not the rest of the context
    r = http.post("/v1/completions", json={"model": "base", "prompt": "Tell a long story:", "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 16
    _err(http.post("/v1/chat/completions", json={**chat, "messages": "not a list"}), 400)
    long_prompt = {"model": "base", "prompt": "word " * 6000, "max_tokens": 4}
    _err(http.post("/v1/completions", json=long_prompt), 400)


def test_engine_still_serves_after_all_that(http):
    r = http.post("/generate", json={"instruction": "Name a vitamin.", "max_tokens": 4, "adapter": "base"})
    assert r.status_code == 200
