"""bioinstruct.client: the typed client users (and the eval harness) call the gateway with.

Three layers: the client's own behaviour (retries, errors, stream parsing, settings) on an
httpx mock transport; the HTTP shape against a real gateway process in front of the stand-in
engine (tests/fake_engine.py: no vLLM, so these run anywhere); and the task routes for real
against the live gateway on the session's vLLM engine (marked `engine`), including the
example in docs/API.md, run as written.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bioinstruct.client import (
    AsyncBioInstructClient,
    BioInstructClient,
    BioInstructError,
    CompareResult,
    ExtractResult,
    GenerateResult,
    QAResult,
)
from bioinstruct.service.engine import free_port
from tests.fake_engine import FakeEngine
from tests.fake_engine import serve as serve_fake_engine
from tests.server_process import stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
SERVED = {"adapter": "base", "version": None, "model": "base", "usage": USAGE, "latency_ms": 5.0}
QA = {**SERVED, "answer": "Pancreas", "answer_index": 1, "method": "logprob", "raw_text": "Pancreas",
      "scores": {"Liver": -3.0, "Pancreas": -0.1}}


def _error(status: int, message: str, code: str | None = None, type_: str = "invalid_request_error"):
    return httpx.Response(status, json={"error": {"message": message, "type": type_, "param": None,
                                                  "code": code}})


class Recorder:
    """A mock transport answering from a list, recording what was sent."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)

    def sync(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


def _sse(*events: dict | str) -> httpx.Response:
    lines = "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=lines.encode())


# ---- the client's own behaviour ----------------------------------------------------------------

def test_qa_sends_only_what_is_given_and_returns_a_typed_result():
    rec = Recorder(httpx.Response(200, json=QA))
    with BioInstructClient("http://gw.test/", transport=rec.sync()) as client:
        result = client.qa("Which organ produces insulin?", options=["Liver", "Pancreas"], adapter="base")
    assert isinstance(result, QAResult)
    assert (result.answer, result.answer_index, result.usage.total_tokens) == ("Pancreas", 1, 12)
    assert str(rec.requests[0].url) == "http://gw.test/qa"
    assert rec.bodies() == [{"question": "Which organ produces insulin?", "options": ["Liver", "Pancreas"],
                             "adapter": "base"}]


def test_429_and_503_are_retried_honouring_retry_after_then_errors_carry_status_and_code():
    rec = Recorder(_error(429, "busy"), httpx.Response(503, headers={"Retry-After": "0"}, json={}),
                   httpx.Response(200, json=QA))
    rec.answers[0].headers["Retry-After"] = "0"
    with BioInstructClient("http://gw.test", transport=rec.sync(), max_retries=2) as client:
        assert client.qa("q?").answer == "Pancreas"
    assert len(rec.requests) == 3

    rec = Recorder(*[httpx.Response(429, headers={"Retry-After": "0"}, json={}) for _ in range(3)])
    with BioInstructClient("http://gw.test", transport=rec.sync(), max_retries=2) as client:
        with pytest.raises(BioInstructError) as info:
            client.qa("q?")
    assert info.value.status == 429 and len(rec.requests) == 3  # first try plus two retries

    rec = Recorder(_error(404, "unknown adapter 'nope'", code="adapter_not_found", type_="not_found_error"))
    with BioInstructClient("http://gw.test", transport=rec.sync()) as client:
        with pytest.raises(BioInstructError) as info:
            client.generate("Say hi.", adapter="nope")
    err = info.value
    assert (err.status, err.code, err.type) == (404, "adapter_not_found", "not_found_error")
    assert err.message == "unknown adapter 'nope'"
    assert str(err) == "HTTP 404, adapter_not_found: unknown adapter 'nope'"
    assert len(rec.requests) == 1  # a 4xx other than 429 is final


def test_no_answer_is_the_same_exception_type():
    with BioInstructClient(f"http://127.0.0.1:{free_port()}", timeout_s=5) as client:
        with pytest.raises(BioInstructError) as info:
            client.models()
    assert info.value.status is None and info.value.code == "connection_error"


def test_a_stream_yields_text_chunks_then_says_who_served():
    end = {"done": True, "finish_reason": "stop", "family": "GEN", **SERVED}
    rec = Recorder(_sse({"text": "Insulin "}, {"text": "lowers sugar."}, end, "[DONE]"))
    with BioInstructClient("http://gw.test", transport=rec.sync()) as client:
        with client.generate("Explain insulin.", stream=True, max_tokens=8) as stream:
            chunks = list(stream)
    assert chunks == ["Insulin ", "lowers sugar."] and stream.text == "Insulin lowers sugar."
    assert stream.end is not None and stream.end.finish_reason == "stop"
    assert stream.end.usage.completion_tokens == 2
    assert rec.bodies() == [{"instruction": "Explain insulin.", "max_tokens": 8, "stream": True}]


def test_an_error_inside_a_stream_or_a_cut_stream_raises():
    error = {"error": {"message": "engine went away", "type": "engine_error", "code": "engine_unavailable"}}
    rec = Recorder(_sse({"text": "Ins"}, error), _sse({"text": "Ins"}))
    with BioInstructClient("http://gw.test", transport=rec.sync()) as client:
        got: list[str] = []
        with pytest.raises(BioInstructError) as info:
            got.extend(client.generate("x", stream=True))
        assert got == ["Ins"] and info.value.code == "engine_unavailable" and info.value.status is None
        with pytest.raises(BioInstructError, match="without its final event"):
            list(client.generate("x", stream=True))


def test_a_refused_stream_is_retried_then_raises_with_the_status():
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "0"}, json={}),
                   _error(422, "instruction must not be empty", code="invalid_request"))
    with BioInstructClient("http://gw.test", transport=rec.sync()) as client:
        with pytest.raises(BioInstructError) as info:
            client.generate(" ", stream=True)
    assert info.value.status == 422 and len(rec.requests) == 2


def test_compare_results_are_typed_per_route():
    body = {"route": "qa", "latency_ms": 9.0, "results": [
        {"adapter": "base", "status": 200, "response": QA},
        {"adapter": "nope", "status": 404, "error": {"message": "unknown", "type": "not_found_error"}}]}
    rec = Recorder(httpx.Response(200, json=body))
    with BioInstructClient("http://gw.test", transport=rec.sync()) as client:
        result = client.compare("qa", ["base", "nope"], question="q?", options=["a", "b"], context=None)
    assert isinstance(result, CompareResult) and isinstance(result.results[0].response, QAResult)
    assert result.results[1].response is None and result.results[1].error["message"] == "unknown"
    assert rec.bodies() == [{"route": "qa", "adapters": ["base", "nope"],
                             "request": {"question": "q?", "options": ["a", "b"]}}]


def test_settings_come_from_the_environment_and_arguments_win(monkeypatch):
    monkeypatch.setenv("BIOINSTRUCT_CLIENT_BASE_URL", "http://from-env.test:9000/")
    monkeypatch.setenv("BIOINSTRUCT_CLIENT_API_KEY", "env-key")
    monkeypatch.setenv("BIOINSTRUCT_CLIENT_TIMEOUT_S", "12.5")
    monkeypatch.setenv("BIOINSTRUCT_CLIENT_MAX_RETRIES", "0")
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "0"}, json={}))
    with BioInstructClient(transport=rec.sync()) as client:
        assert client.base_url == "http://from-env.test:9000"
        assert (client.timeout_s, client.max_retries) == (12.5, 0)
        with pytest.raises(BioInstructError):
            client.qa("q?")
    assert len(rec.requests) == 1  # max_retries 0 from the environment
    assert rec.requests[0].headers["authorization"] == "Bearer env-key"
    assert str(rec.requests[0].url) == "http://from-env.test:9000/qa"
    with BioInstructClient("http://arg.test", api_key="arg-key", max_retries=3) as client:
        assert (client.base_url, client.headers["Authorization"], client.max_retries) == (
            "http://arg.test", "Bearer arg-key", 3)


async def test_the_async_client_does_the_same():
    end = {"done": True, "finish_reason": "length", "family": "GEN", **SERVED}
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "0"}, json={}), httpx.Response(200, json=QA),
                   _sse({"text": "a"}, {"text": "b"}, end, "[DONE]"))
    async with AsyncBioInstructClient("http://gw.test", transport=httpx.MockTransport(rec)) as client:
        assert (await client.qa("q?", options=["Liver", "Pancreas"])).answer == "Pancreas"
        stream = await client.generate("x", stream=True)
        chunks = [chunk async for chunk in stream]
    assert chunks == ["a", "b"] and stream.end is not None and stream.end.finish_reason == "length"
    assert len(rec.requests) == 3


# ---- the HTTP shape, against a real gateway process (stand-in engine) ------------------------------

@pytest.fixture(scope="module")
def gateway(tmp_path_factory, base_model_dir):
    """`bioinstruct serve` attached to the stand-in engine, with one API key."""
    tmp = tmp_path_factory.mktemp("client-gateway")
    engine_server = serve_fake_engine(FakeEngine(), free_port())
    port = free_port()
    log = tmp / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIOINSTRUCT_")}
    args = [sys.executable, "-m", "bioinstruct.cli", "serve", "--model", str(base_model_dir),
            "--port", str(port),
            "--engine-url", f"http://127.0.0.1:{engine_server.server_address[1]}", "--api-key", "client-key",
            "--registry", str(tmp / "registry"), "--preload-adapters", "", "--shipped-adapters", "off",
            "--log-level", "warning"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 180, proc=proc, log=log)
        yield url
    finally:
        stop(proc)
        engine_server.shutdown()


def test_the_client_reads_a_real_gateways_answers(gateway):
    with BioInstructClient(gateway, api_key="client-key", max_retries=0) as client:
        models = client.models()
        assert models[0].id == "base" and models[0].parent is None
        result = client.generate("Name one organ.", adapter="base", max_tokens=4)
        assert isinstance(result, GenerateResult)
        assert result.text.strip() == "served-by base"  # what the stand-in engine says
        assert (result.adapter, result.model) == ("base", "base") and result.family in ("QA", "IE", "GEN")
        assert result.usage.completion_tokens == 1 and result.latency_ms >= 0
        extracted = client.extract("Aspirin reduces fever.", adapter="base")
        assert isinstance(extracted, ExtractResult) and extracted.entities == []  # nothing to find in it
        compared = client.compare("generate", ["base"], instruction="Say hi.", max_tokens=2)
        assert compared.route == "generate" and compared.results[0].status == 200
        assert isinstance(compared.results[0].response, GenerateResult)


def test_a_real_gateways_errors_reach_the_caller_as_one_type(gateway):
    with BioInstructClient(gateway, api_key="client-key", max_retries=0) as client:
        with pytest.raises(BioInstructError) as info:
            client.generate("Say hi.", adapter="no-such-adapter")
        assert info.value.status == 404 and info.value.code == "adapter_not_found"
        assert "no-such-adapter" in info.value.message
        with pytest.raises(BioInstructError) as info:
            client.qa("Which?", options=["only one"])
        assert info.value.status == 400 and "at least 2 options" in info.value.message
    with BioInstructClient(gateway, api_key="wrong-key", max_retries=0) as client:
        with pytest.raises(BioInstructError) as info:
            client.generate("Say hi.")
        assert info.value.status == 401


async def test_the_async_client_against_a_real_gateway(gateway):
    async with AsyncBioInstructClient(gateway, api_key="client-key", max_retries=0) as client:
        results = await asyncio.gather(*(client.generate(f"Say {i}.", adapter="base", max_tokens=2)
                                         for i in range(4)))
        assert [r.text.strip() for r in results] == ["served-by base"] * 4
        assert [m.id for m in await client.models()][0] == "base"


# ---- the task routes for real: the live gateway on the session's vLLM engine -----------------------

@pytest.mark.engine
def test_task_routes_for_real(live_service):
    with BioInstructClient(live_service.base_url) as client:
        answer = client.qa("Which organ produces insulin?", options=["Liver", "Pancreas", "Kidney"],
                           adapter="base")
        assert answer.answer in ("Liver", "Pancreas", "Kidney")
        assert answer.answer == ["Liver", "Pancreas", "Kidney"][answer.answer_index]
        text = "Aspirin and ibuprofen can cause gastric bleeding."
        extracted = client.extract(text, adapter="base", max_tokens=64)
        assert all(text[e.start:e.end] == e.text for e in extracted.entities)
        whole = client.generate("Name one symptom of diabetes.", adapter="base", max_tokens=12)
        with client.generate("Name one symptom of diabetes.", adapter="base", max_tokens=12,
                             stream=True) as stream:
            chunks = list(stream)
        assert len(chunks) >= 2 and "".join(chunks) == stream.text == whole.text  # greedy: the same text
        assert stream.end is not None and stream.end.usage.completion_tokens == whole.usage.completion_tokens
        compared = client.compare("qa", ["base", "auto"], question="Is insulin a hormone?",
                                  options=["yes", "no"])
        assert [r.status for r in compared.results] == [200, 200]
        assert all(r.response.answer in ("yes", "no") for r in compared.results)


@pytest.mark.engine
async def test_async_streaming_for_real(live_service):
    async with AsyncBioInstructClient(live_service.base_url) as client:
        stream = await client.generate("List two vitamins.", adapter="base", max_tokens=10, stream=True)
        chunks = [chunk async for chunk in stream]
        whole = await client.generate("List two vitamins.", adapter="base", max_tokens=10)
    assert len(chunks) >= 2 and "".join(chunks) == whole.text
    assert stream.end is not None and stream.end.adapter == "base"


def _docs_examples() -> list[str]:
    section = (ROOT / "docs" / "API.md").read_text().split("## Python client", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.engine
def test_the_docs_examples_run_as_written(live_service):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIOINSTRUCT_")}
    outputs = []
    for code in _docs_examples():
        code = code.replace("http://127.0.0.1:8000", live_service.base_url)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(proc.stdout.strip().splitlines())
    sync, asynchronous = outputs
    assert sync[0].split()[0] in ("Liver", "Pancreas", "Kidney")  # the answer is one of the options
    assert sync[1].startswith("[") and sync[-1] == "404 adapter_not_found"
    answers = ast.literal_eval(asynchronous[0])  # the example prints a list of two strings
    assert len(answers) == 2 and set(answers) <= {"yes", "no"}
    same, _adapter, tokens = asynchronous[1].split()
    assert same == "True" and int(tokens) >= 1
