"""How engine transport failures reach callers: a fault we cannot cause on demand, so a fake transport."""

from __future__ import annotations

import httpx
import pytest

from bioinstruct.service.engine_client import EngineClient
from bioinstruct.service.errors import APIError


def _client_raising(exc_type: type[httpx.TransportError]) -> EngineClient:
    client = EngineClient("http://engine.invalid")

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    client._http = httpx.AsyncClient(base_url=client.base_url, transport=httpx.MockTransport(handler))
    return client


@pytest.mark.parametrize(("exc_type", "status", "code", "retry_after"), [
    (httpx.ConnectTimeout, 503, "engine_busy", True),  # never sent: safe to retry, so 503 + Retry-After
    (httpx.ConnectError, 503, "engine_unavailable", True),
    (httpx.ReadTimeout, 504, "engine_timeout", False),
])
async def test_transport_failures_map_to_retryable_statuses(exc_type, status, code, retry_after):
    client = _client_raising(exc_type)
    with pytest.raises(APIError) as info:
        await client.post("/v1/completions", {"prompt": "x"})
    assert info.value.status == status and info.value.code == code
    assert ("Retry-After" in (info.value.headers or {})) is retry_after
    await client.aclose()


def test_connect_timeout_is_configurable():
    assert EngineClient("http://x", connect_timeout_s=42.0)._http.timeout.connect == 42.0
    assert EngineClient("http://x")._http.timeout.connect == 30.0


class _Stream(httpx.AsyncByteStream):
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self):
        for i in range(0, len(self.body), 7):  # in pieces, as a network delivers it
            yield self.body[i:i + 7]


def _client_streaming(body: bytes) -> EngineClient:
    client = EngineClient("http://engine.invalid")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(body), headers={"content-type": "text/event-stream"})

    client._http = httpx.AsyncClient(base_url=client.base_url, transport=httpx.MockTransport(handler))
    return client


async def _events(body: bytes) -> list:
    client = _client_streaming(body)
    try:
        return [e async for e in client.stream_events("/v1/completions", {"stream": True})]
    finally:
        await client.aclose()


async def test_stream_events_pass_a_complete_stream():
    events = await _events(b'data: {"choices": [{"text": "a"}]}\n\ndata: {"choices": [{"text": "b"}]}\n\n'
                           b'data: [DONE]\n\n')
    assert [e["choices"][0]["text"] for e in events] == ["a", "b"]


@pytest.mark.parametrize(("body", "fragment"), [
    (b'data: {"choices": [{"text": "a"}]}\n\ndata: {"error": {"message": "EngineCore died", "code": 500}}\n\n',
     "EngineCore died"),
    (b'data: {"choices": [{"text": "a"}]}\n\ndata: {not json\n\ndata: [DONE]\n\n', "malformed"),
    (b'data: {"choices": [{"text": "a"}]}\n\n', "ended before"),
])
async def test_stream_events_raise_on_engine_errors_garbage_and_cut_streams(body, fragment):
    with pytest.raises(APIError) as info:
        await _events(body)
    assert info.value.status == 502 and fragment in info.value.message
