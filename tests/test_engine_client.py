"""How engine transport failures reach callers: a fault we cannot cause on demand, so a fake transport."""

from __future__ import annotations

import httpx
import pytest

from service.engine_client import EngineClient
from service.errors import APIError


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
