"""eval.client: retries only on 429/503 honouring Retry-After, resume, streaming, load shapes.

These use respx / httpx mock transports: they test the client's own behaviour, not the service.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
from fake_hosts import fake_hosts_router

from bioinstruct.eval.client import (
    EvalClient,
    Record,
    RequestItem,
    read_records,
    retry_after_seconds,
)

URL = "http://svc.test"
# Not the global respx router: the session's live gateway must keep reaching its real engine.
svc = fake_hosts_router(assert_all_called=False)
OK = {"answer": "yes", "answer_index": 0, "method": "logprob", "raw_text": "yes", "adapter": "base",
      "version": None, "model": "base", "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
      "latency_ms": 5.0}


def err(status: int, message: str = "busy") -> dict:
    return {"error": {"message": message, "type": "rate_limit_error", "param": None, "code": None}}


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def item(i: int = 0, **body) -> RequestItem:
    return RequestItem(id=str(i), path="/qa", body={"question": f"q{i}", "options": ["yes", "no"], **body})


@svc
async def test_retries_429_and_503_honouring_retry_after():
    route = svc.post(f"{URL}/qa").mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "2"}, json=err(429)),
        httpx.Response(503, headers={"Retry-After": "7"}, json=err(503, "engine restarting")),
        httpx.Response(200, json=OK),
    ])
    sleeps = Sleeps()
    records = await EvalClient(URL, sleep=sleeps).run([item()], progress=False)
    rec = records["0"]
    assert route.call_count == 3
    assert sleeps.waits == [2.0, 7.0]
    assert rec.ok and rec.status == 200 and rec.attempts == 3 and rec.retry_wait_s == 9.0
    assert rec.response["answer"] == "yes" and rec.prompt_tokens == 10 and rec.completion_tokens == 1
    assert rec.served_model == "base"


@svc
async def test_retry_after_as_http_date_and_exponential_backoff_without_it():
    later = time.time() + 30
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(later))
    svc.post(f"{URL}/qa").mock(side_effect=[
        httpx.Response(503, headers={"Retry-After": date}),
        httpx.Response(503),
        httpx.Response(429),
        httpx.Response(200, json=OK),
    ])
    sleeps = Sleeps()
    await EvalClient(URL, sleep=sleeps, backoff_base_s=1.0).run([item()], progress=False)
    assert 27 < sleeps.waits[0] <= 30.5
    # No Retry-After: base * 2^(attempt-1), with jitter between half and full.
    assert 1.0 <= sleeps.waits[1] <= 2.0
    assert 2.0 <= sleeps.waits[2] <= 4.0


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500, 504])
async def test_no_retry_on_other_errors(status):
    with svc:
        route = svc.post(f"{URL}/qa").mock(return_value=httpx.Response(
            status, json={"error": {"message": "options must be distinct", "type": "invalid_request_error"}}))
        sleeps = Sleeps()
        rec = (await EvalClient(URL, sleep=sleeps).run([item()], progress=False))["0"]
    assert route.call_count == 1 and sleeps.waits == []
    assert not rec.ok and rec.status == status and rec.attempts == 1
    assert "options must be distinct" in rec.error
    assert rec.final == (status < 500)


@svc
async def test_gives_up_after_max_retries():
    route = svc.post(f"{URL}/qa").mock(return_value=httpx.Response(429, headers={"Retry-After": "1"}))
    sleeps = Sleeps()
    rec = (await EvalClient(URL, sleep=sleeps, max_retries=2).run([item()], progress=False))["0"]
    assert route.call_count == 3 and sleeps.waits == [1.0, 1.0]
    assert rec.status == 429 and not rec.ok and not rec.final


@svc
async def test_connection_error_is_recorded_not_retried():
    route = svc.post(f"{URL}/qa").mock(side_effect=httpx.ConnectError("refused"))
    rec = (await EvalClient(URL).run([item()], progress=False))["0"]
    assert route.call_count == 1
    assert rec.status == 0 and not rec.ok and "ConnectError" in rec.error and not rec.final


def test_retry_after_parsing():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 10) == pytest.approx(10)


@svc
async def test_resume_does_not_resend_finished_records(tmp_path):
    path = tmp_path / "records.jsonl"
    now = time.time()

    def rec(i, status, ok):
        return Record(id=str(i), path="/qa", status=status, ok=ok, started_at=now, sent_at=now, latency_ms=1,
                      total_ms=1, response=OK if ok else None).model_dump_json(exclude_none=True)

    # 0-2 answered, 3 failed with 503 (send again), 4 refused with 400 (final), and a torn line.
    lines = [rec(0, 200, True), rec(1, 200, True), rec(2, 200, True), rec(3, 503, False), rec(4, 400, False)]
    path.write_text("\n".join(lines) + "\n" + '{"id": "5", "path": "/q')
    sent: list[str] = []

    def answer(request):
        sent.append(json.loads(request.content)["question"])
        return httpx.Response(200, json=OK)

    svc.post(f"{URL}/qa").mock(side_effect=answer)
    records = await EvalClient(URL, concurrency=2).run([item(i) for i in range(7)], path, progress=False)
    assert sorted(sent) == ["q3", "q5", "q6"]
    assert set(records) == {str(i) for i in range(7)}
    assert records["3"].ok and records["4"].status == 400
    on_disk = read_records(path)
    assert on_disk["3"].ok and on_disk["6"].ok and len(on_disk) == 7
    # A second run sends nothing.
    sent.clear()
    await EvalClient(URL).run([item(i) for i in range(7)], path, progress=False)
    assert sent == []


@svc
async def test_streaming_records_ttft_and_usage():
    done = {"done": True, "finish_reason": "stop", "family": "GEN", "adapter": "base", "version": None,
            "model": "base", "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23},
            "latency_ms": 12.0}
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in ({"text": "How "}, {"text": "to "}, {"text": "sleep?"}, done))
    body += "data: [DONE]\n\n"
    svc.post(f"{URL}/generate").mock(return_value=httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=body.encode()))
    it = RequestItem(id="g", path="/generate", body={"instruction": "x", "stream": True})
    rec = (await EvalClient(URL, keep_itl=True).run([it], progress=False))["g"]
    assert rec.ok and rec.response["text"] == "How to sleep?"
    assert rec.completion_tokens == 3 and rec.served_model == "base" and rec.response["finish_reason"] == "stop"
    assert rec.ttft_ms is not None and 0 <= rec.ttft_ms <= rec.latency_ms
    assert len(rec.itl_ms) == 2


@svc
async def test_stream_error_event_is_a_failure():
    body = 'data: {"text": "a"}\n\ndata: {"error": {"message": "engine died", "type": "engine_error"}}\n\n'
    svc.post(f"{URL}/generate").mock(return_value=httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=body.encode()))
    it = RequestItem(id="g", path="/generate", body={"instruction": "x", "stream": True})
    rec = (await EvalClient(URL).run([it], progress=False))["g"]
    assert not rec.ok and "engine died" in rec.error


async def test_concurrency_is_bounded():
    inflight, peak = 0, 0

    async def handler(request):
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.01)
        inflight -= 1
        return httpx.Response(200, json=OK)

    client = EvalClient(URL, concurrency=3, transport=httpx.MockTransport(handler))
    records = await client.run([item(i) for i in range(20)], progress=False)
    assert len(records) == 20 and all(r.ok for r in records.values())
    assert peak == 3


async def test_poisson_arrivals():
    client = EvalClient(URL, rate=20.0, seed=4)
    offsets = np.asarray(client.arrival_offsets(4000))
    assert np.all(np.diff(offsets) >= 0)
    assert np.mean(np.diff(offsets)) == pytest.approx(1 / 20, rel=0.05)
    assert client.arrival_offsets(5) == EvalClient(URL, rate=20.0, seed=4).arrival_offsets(5)

    sent_at: list[float] = []

    async def handler(request):
        sent_at.append(time.perf_counter())
        return httpx.Response(200, json=OK)

    client = EvalClient(URL, rate=50.0, seed=1, concurrency=64, transport=httpx.MockTransport(handler))
    t0 = time.perf_counter()
    await client.run([item(i) for i in range(10)], progress=False)
    expected = client.arrival_offsets(10)
    # Open loop: each request leaves at its scheduled time, not when the previous one returns.
    assert sent_at[-1] - t0 == pytest.approx(expected[-1], abs=0.15)


def test_bad_settings_refused():
    with pytest.raises(ValueError):
        EvalClient(URL, concurrency=0)
    with pytest.raises(ValueError):
        EvalClient(URL, rate=0)


def test_the_fake_router_lets_every_other_host_through():
    """respx patches httpx process-wide: the session's live gateway (another thread) must still
    reach its real engine while a test fakes its `.test` host."""
    import http.server
    import threading

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with svc:
            svc.get(f"{URL}/x").mock(return_value=httpx.Response(204))
            assert httpx.get(f"{URL}/x").status_code == 204
            assert httpx.get(f"http://127.0.0.1:{server.server_port}/").status_code == 200
    finally:
        server.shutdown()
