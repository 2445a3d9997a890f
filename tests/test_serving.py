"""The per-route serving classes and the /v1 protocol models, in front of a stand-in engine
that records what it is sent (no vLLM: what is under test is the gateway's side).

The real engine's side of the same routes: test_service_routes.py, test_service_openai.py,
test_service_errors.py, test_fuzz.py and test_lm_eval.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from http.server import ThreadingHTTPServer

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from bioinstruct.service import deps
from bioinstruct.service.app import create_app
from bioinstruct.service.auth import Caller
from bioinstruct.service.openai_protocol import (
    MAX_N,
    ChatCompletionRequest,
    CompletionRequest,
    request_body,
)
from bioinstruct.service.serving import Servings
from bioinstruct.service.settings import ServiceSettings
from tests.fake_engine import QuietHandler

# ---- a stand-in engine ---------------------------------------------------------------------


class StandInEngine:
    """/health, /v1/models, /metrics, /v1/completions and /v1/chat/completions (JSON, or SSE when
    stream is true). `cut_after` events into a stream, it sends half an event and drops the
    connection. Every POST body is recorded."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict]] = []
        self.cut_after: int | None = None
        engine = self

        class Handler(QuietHandler):

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/v1/models":
                    return self.send(200, b'{"object": "list", "data": [{"id": "base", "parent": null}]}')
                self.send(200, b"" if self.path == "/metrics" else b"{}", "text/plain")

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                engine.bodies.append((self.path, body))
                chat = self.path == "/v1/chat/completions"
                if not body.get("stream"):
                    choice = {"message": {"role": "assistant", "content": "ok"}} if chat else {"text": " ok"}
                    return self.send(200, json.dumps({
                        "choices": [{"index": 0, "finish_reason": "length", **choice}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode())
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for i, event in enumerate(stream_events(chat, body)):
                    if engine.cut_after is not None and i == engine.cut_after:
                        self._chunk(event[: len(event) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return  # no last chunk: the gateway sees the stream broken
                    self._chunk(event)
                self.wfile.write(b"0\r\n\r\n")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def last(self, path: str) -> dict:
        return [b for p, b in self.bodies if p == path][-1]


def stream_events(chat: bool, body: dict) -> list[bytes]:
    def event(payload: dict) -> bytes:
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    if chat:  # vLLM announces the role first, with no content
        pieces = [{"delta": {"role": "assistant", "content": ""}}, {"delta": {"content": "o"}},
                  {"delta": {"content": "k"}, "finish_reason": "stop"}]
    else:
        pieces = [{"text": " o"}, {"text": "k", "finish_reason": "length"}]
    events = [event({"choices": [{"index": 0, **p}]}) for p in pieces]
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(event({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                                                      "total_tokens": 7}}))
    return [*events, b"data: [DONE]\n\n"]


@pytest.fixture(scope="module")
def engine():
    e = StandInEngine()
    yield e
    e.server.shutdown()
    e.server.server_close()


@pytest.fixture(scope="module")
def gateway(engine, base_model_dir, tmp_path_factory):
    """The real app and Gateway (tokenizer, registry, admission, metrics) on the stand-in."""
    core_dir = tmp_path_factory.mktemp("serving-registry")
    from bioinstruct.settings import CoreSettings

    core = CoreSettings().model_copy(update={"registry": str(core_dir)})
    settings = ServiceSettings(engine_url=engine.url, preload_adapters=[], max_tokens_limit=100)
    app = create_app(settings, core=core)
    with TestClient(app) as client:
        gw = app.state.gateway
        for _ in range(100):
            if gw.ready()[0]:
                break
            import time

            time.sleep(0.1)
        assert gw.ready()[0], gw.ready()
        yield client


def _error(r: httpx.Response, param: str | None, *fragments: str) -> dict:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    for fragment in fragments:
        assert fragment in error["message"], error
    return error


# ---- /v1 bodies: the models are the schema ----------------------------------------------------


BAD_COMPLETIONS = [
    ({"prompt": "hi"}, "model", ["'model' is required"]),
    ({"model": "  ", "prompt": "hi"}, "model", []),
    ({"model": "base"}, "prompt", ["'prompt' is required"]),
    ({"model": "base", "prompt": 5}, "prompt", ["a list of token ids"]),
    ({"model": "base", "prompt": []}, "prompt", []),
    ({"model": "base", "prompt": [1, -2]}, "prompt", []),
    ({"model": "base", "prompt": ["a", "b", "c"], "n": 3}, "prompt", ["9 sequences", "limit is 8"]),
    ({"model": "base", "prompt": ["hi"] * 1024}, "prompt", ["1024 sequences"]),
    ({"model": "base", "prompt": "hi", "n": 9}, "n", ["at most 8"]),
    ({"model": "base", "prompt": "hi", "n": True}, "n", []),
    ({"model": "base", "prompt": "hi", "max_tokens": 0}, "max_tokens", ["at least 1"]),
    ({"model": "base", "prompt": "hi", "max_tokens": "5"}, "max_tokens", []),
    ({"model": "base", "prompt": "hi", "max_tokens": 2, "min_tokens": 5}, "min_tokens", ["max_tokens (2)"]),
    ({"model": "base", "prompt": "hi", "min_tokens": 20}, "min_tokens", ["max_tokens (16)"]),  # OpenAI's 16
    ({"model": "base", "prompt": "hi", "logprobs": 21}, "logprobs", ["at most 20"]),
    ({"model": "base", "prompt": "hi", "temperature": 3}, "temperature", []),
    ({"model": "base", "prompt": "hi", "top_p": 0}, "top_p", []),
    ({"model": "base", "prompt": "hi", "ignore_eos": "yes"}, "ignore_eos", []),
    ({"model": "base", "prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop", ["at most 4"]),
    ({"model": "base", "prompt": "hi", "seed": 2**64}, "seed", []),
]
BAD_CHATS = [
    ({"model": "base", "messages": "not a list"}, "messages", []),
    ({"model": "base", "messages": []}, "messages", []),
    ({"model": "base", "messages": [{"content": "hi"}]}, "messages.0.role", ["is required"]),
    ({"model": "base", "messages": [{"role": "user", "content": 5}]}, "messages.0.content", []),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 50}, "top_logprobs",
     ["at most 20"]),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "logprobs": 3}, "logprobs", []),
]


@pytest.fixture(scope="module")
def validation_only():
    """The app without its lifespan: a body that fails validation never reaches a gateway."""
    app = create_app(ServiceSettings(max_tokens_limit=100))
    app.dependency_overrides[deps.get_gateway] = app.dependency_overrides[deps.get_caller] = lambda: None
    return TestClient(app)


@pytest.mark.parametrize(("body", "param", "fragments"), BAD_COMPLETIONS)
def test_a_bad_completions_body_is_a_400_naming_the_field(validation_only, body, param, fragments):
    _error(validation_only.post("/v1/completions", json=body), param, *fragments)


@pytest.mark.parametrize(("body", "param", "fragments"), BAD_CHATS)
def test_a_bad_chat_body_is_a_400_naming_the_field(validation_only, body, param, fragments):
    _error(validation_only.post("/v1/chat/completions", json=body), param, *fragments)


def test_bodies_that_are_not_json_objects(validation_only):
    for raw in (b"{not json", b"", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000):
        r = validation_only.post("/v1/chat/completions", content=raw)
        assert r.status_code == 400 and "Traceback" not in r.text, (raw[:10], r.text)
    error = validation_only.post("/v1/completions", content=b"{x").json()["error"]
    assert "not valid JSON" in error["message"]


def test_the_published_schema_and_the_models_agree():
    """One source: every body above is refused by the published schema as by the model, and
    these valid ones pass both (the token limit, a setting, is the one thing added at start-up)."""
    schema = create_app(ServiceSettings(max_tokens_limit=100)).openapi()
    good = {
        CompletionRequest: [{"model": "qa", "prompt": "hi"}, {"model": "qa", "prompt": [1, 2], "n": 8},
                            {"model": "qa", "prompt": [[1], "x"], "n": 4, "max_tokens": None, "echo": True,
                             "logprobs": 1, "vllm_field": {"any": 1}},
                            {"model": "qa", "prompt": "x", "max_tokens": 5.0, "stop": "\n", "seed": -1}],
        ChatCompletionRequest: [{"model": "qa", "messages": [{"role": "user", "content": "hi", "name": "x"}],
                                 "max_completion_tokens": 9, "logprobs": True, "top_logprobs": 2},
                                {"model": "qa", "messages": [{"role": "assistant", "content": None,
                                                              "tool_calls": []}]}],
    }
    bad = {CompletionRequest: BAD_COMPLETIONS, ChatCompletionRequest: BAD_CHATS}
    routes = ((CompletionRequest, "/v1/completions"), (ChatCompletionRequest, "/v1/chat/completions"))
    for model, path in routes:
        published = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        properties = published["properties"]
        assert properties["max_tokens"]["maximum"] == properties["max_completion_tokens"]["maximum"] == 100
        del properties["max_tokens"]["maximum"], properties["max_completion_tokens"]["maximum"]
        generated = request_body(model)["requestBody"]["content"]["application/json"]["schema"]
        assert _plain(published) == _plain(generated)
        validator = jsonschema.Draft202012Validator(published)
        for body in good[model]:
            assert validator.is_valid(body), body
            model.model_validate_json(json.dumps(body))
        for body, _, _ in bad[model]:
            if body.get("model") == "  " or "min_tokens" in body:
                continue  # beyond JSON Schema: "not only spaces", one field at most another
            assert not validator.is_valid(body), body
            with pytest.raises(ValidationError):
                model.model_validate_json(json.dumps(body))


def _plain(node):
    """As FastAPI's OpenAPI model writes a schema: numbers as floats, no null defaults."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return float(node) if isinstance(node, int) and not isinstance(node, bool) else node


def test_sequence_rule_is_the_same_in_the_model_and_the_schema():
    for k in range(1, MAX_N + 1):
        for n in range(1, MAX_N + 1):
            body = json.dumps({"model": "qa", "prompt": ["p"] * k, "n": n})
            try:
                CompletionRequest.model_validate_json(body)
                ok = True
            except ValidationError:
                ok = False
            assert ok == (k * n <= MAX_N), (k, n)


# ---- through the gateway, on the stand-in engine ---------------------------------------------


def test_completions_go_to_the_engine_as_sent_with_openai_defaults(gateway, engine):
    r = gateway.post("/v1/completions", json={"model": " base ", "prompt": "hi", "vllm_knob": [1, 2],
                                              "logprobs": 2.0, "max_tokens": None})
    assert r.status_code == 200, r.text
    assert float(r.headers["x-bioinstruct-latency-ms"]) >= 0
    assert engine.last("/v1/completions") == {"model": "base", "prompt": "hi", "vllm_knob": [1, 2],
                                              "logprobs": 2, "max_tokens": 16}
    r = gateway.post("/v1/chat/completions", json={"model": "base", "messages": [
        {"role": "user", "content": "hi", "name": "me"}], "min_tokens": 50})
    assert r.status_code == 200, r.text
    sent = engine.last("/v1/chat/completions")
    assert sent["max_tokens"] == 100 and sent["messages"] == [{"role": "user", "content": "hi", "name": "me"}]
    # the server's limit is a setting: checked when served, named in the error
    r = gateway.post("/v1/chat/completions", json={"model": "base", "min_tokens": 101,
                                                   "messages": [{"role": "user", "content": "x"}]})
    _error(r, "min_tokens", "max_tokens (100)")
    error = _error(gateway.post("/v1/completions", json={"model": "base", "prompt": "x", "max_tokens": 101}),
                   "max_tokens", "limit of 100")
    assert error["code"] == "max_tokens_too_large"
    r = gateway.post("/v1/completions", content=json.dumps({"model": "base", "prompt": "x"}),
                     headers={"content-type": "application/x-www-form-urlencoded"})  # what `curl -d` sends
    assert r.status_code == 200, r.text


def _metric(gateway, name: str, **labels: str) -> float:
    gw = gateway.app.state.gateway
    value = gw.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_v1_streams_are_relayed_unchanged_and_metered(gateway, engine):
    before_ttft = _metric(gateway, "bioinstruct_time_to_first_token_seconds_count", route="completions",
                          adapter="base")
    before_out = _metric(gateway, "bioinstruct_tokens_total", route="completions", adapter="base",
                         direction="out")
    body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    with gateway.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        received = b"".join(r.iter_bytes())
    assert received == b"".join(stream_events(True, body))
    assert _metric(gateway, "bioinstruct_time_to_first_token_seconds_count", route="completions",
                   adapter="base") == before_ttft + 1
    assert _metric(gateway, "bioinstruct_tokens_total", route="completions", adapter="base",
                   direction="out") == before_out + 2


def test_generate_streams_its_own_events_then_done(gateway):
    body = {"instruction": "Say ok.", "stream": True, "adapter": "base", "max_tokens": 5}
    with gateway.stream("POST", "/generate", json=body) as r:
        assert r.status_code == 200
        text = b"".join(r.iter_bytes()).decode()
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    assert "".join(p.get("text", "") for p in payloads[:-1]) == " ok"
    done = payloads[-1]
    assert done["done"] is True and done["finish_reason"] == "length" and done["model"] == "base"
    assert done["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


@pytest.mark.parametrize(("path", "body"), [
    ("/generate", {"instruction": "Say ok.", "stream": True, "adapter": "base"}),
    ("/v1/completions", {"model": "base", "prompt": "hi", "stream": True}),
])
def test_a_stream_broken_mid_event_ends_with_an_error_event_of_its_own(gateway, engine, path, body):
    """The status line has gone out: the failure is an SSE event, never glued to half an event,
    and the admission slot and the lease are given back."""
    engine.cut_after = 1
    try:
        with gateway.stream("POST", path, json=body) as r:
            assert r.status_code == 200
            text = b"".join(r.iter_bytes()).decode()
    finally:
        engine.cut_after = None
    events = [e for e in text.split("\n\n") if e]
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["type"] == "engine_error" and error["message"]
    assert all(e.startswith("data: {") for e in events)  # whole events only
    gw = gateway.app.state.gateway
    assert gw.admission.inflight == 0 and not gw.adapters.inflight


def test_task_routes_on_their_serving_classes(gateway, engine):
    r = gateway.post("/qa", json={"question": "Is insulin a hormone?", "adapter": "base", "max_tokens": 3})
    assert r.status_code == 200 and r.json()["method"] == "free" and r.json()["answer"] == "ok"
    assert engine.last("/v1/completions")["max_tokens"] == 3
    r = gateway.post("/qa", json={"question": "Is insulin a hormone?", "options": ["yes", "no"],
                                  "adapter": "base", "method": "generate"})
    body = r.json()  # " ok" matches neither option: scored instead, and always one of them
    assert r.status_code == 200 and body["method"] == "generate:none->logprob"
    assert body["answer"] in ("yes", "no")
    r = gateway.post("/extract", json={"text": "Aspirin helps.", "relations": True, "adapter": "base"})
    assert r.status_code == 200 and r.json()["entities"] == [] and r.json()["usage"]["prompt_tokens"] == 6
    r = gateway.post("/compare", json={"route": "generate", "adapters": ["base", "nope"],
                                       "request": {"instruction": "Say hi.", "max_tokens": 2}})
    assert {x["adapter"]: x["status"] for x in r.json()["results"]} == {"base": 200, "nope": 404}
    r = gateway.get("/v1/models")
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "base"


def test_servings_are_built_once_and_reached_through_coroutine_dependencies(gateway):
    gw = gateway.app.state.gateway
    assert isinstance(gw.servings, Servings)
    assert set(gw.servings.tasks) == {"qa", "extract", "generate"}
    for name in ("get_gateway", "get_caller", "get_admin", "get_qa_serving", "get_extract_serving",
                 "get_generate_serving", "get_openai_serving", "get_models"):
        # FastAPI runs a plain-def dependency in its thread pool: a thread hop on every request.
        assert inspect.iscoroutinefunction(getattr(deps, name)), name
    assert inspect.iscoroutinefunction(deps.body_as(CompletionRequest))


def test_models_views(gateway):
    models = gateway.app.state.gateway.servings.models
    listed = asyncio.run(models.list(Caller(None, ["base"])))
    assert [c.id for c in listed.data] == ["base"]
    # The admin views are ServingModels' own: an empty registry shows no versions and no aliases,
    # and a version that is not there is the registry's NotFound (the routes make it a 404).
    overview = asyncio.run(models.overview())
    assert overview.versions == [] and overview.aliases == [] and isinstance(overview.swaps, list)
    from bioinstruct.registry import NotFound

    with pytest.raises(NotFound, match="x@1 is not in the registry"):
        asyncio.run(models.describe("x", 1))


# ---- the rooms' import rules (docs/ARCHITECTURE.md, "One request pipeline") -------------------


def _runtime_imports(path) -> set[str]:
    """Modules a file imports when it runs (not those under `if TYPE_CHECKING:`)."""
    import ast

    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_each_room_imports_only_what_it_may():
    from pathlib import Path

    service = Path(__file__).resolve().parents[1] / "service"
    forbidden = {
        # serving classes know nothing of HTTP frameworks or routes; the Gateway only as a type
        "serving/*.py": ("fastapi", "starlette", "bioinstruct.service.gateway", "bioinstruct.service.routes",
                         "bioinstruct.service.deps"),
        # handlers reach the engine and the adapters only through their serving objects
        "routes/inference.py": ("bioinstruct.service.adapters", "bioinstruct.service.engine_client",
                                "bioinstruct.service.admission", "httpx"),
        "routes/openai_compat.py": ("bioinstruct.service.adapters", "bioinstruct.service.engine_client",
                                    "bioinstruct.service.admission", "bioinstruct.service.gateway", "httpx"),
        # models are models: nothing of the gateway, the serving classes or HTTP
        "openai_protocol.py": ("fastapi", "bioinstruct.service.gateway", "bioinstruct.service.serving"),
        "protocol.py": ("fastapi", "bioinstruct.service.gateway", "bioinstruct.service.serving"),
    }
    for pattern, banned in forbidden.items():
        files = sorted(service.glob(pattern))
        assert files, pattern
        for file in files:
            bad = {m for m in _runtime_imports(file) if any(m == b or m.startswith(b + ".") for b in banned)}
            assert not bad, f"{file.relative_to(service)} imports {sorted(bad)}"
