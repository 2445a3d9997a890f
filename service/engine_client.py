"""HTTP calls from the gateway to the vLLM engine, with engine failures mapped to 503/504.

An engine that died mid-request resets its connections, so callers fail fast with 503
and a Retry-After instead of hanging. Every call carries the request's X-Request-Id and, with
tracing on, a client span's `traceparent` (service/observability.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bioinstruct.service import observability
from bioinstruct.service.errors import APIError


class EngineClient:
    def __init__(self, base_url: str, timeout_s: float = 600.0, max_connections: int = 512,
                 connect_timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        # A dead engine refuses connections at once, so a long connect timeout costs nothing
        # there; it only matters when a busy CPU engine is slow to accept (CI saw 5 s run out).
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            # Idle connections are dropped well before vLLM's own 5 s keep-alive closes them:
            # reusing one the engine is closing that instant fails the request (a stray 503).
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                                keepalive_expiry=2.0),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    @staticmethod
    def _unavailable(exc: Exception) -> APIError:
        if isinstance(exc, httpx.ConnectTimeout):
            return APIError(503, "the engine is too busy to accept the request; retry shortly",
                            code="engine_busy", headers={"Retry-After": "2"})
        if isinstance(exc, httpx.TimeoutException):
            return APIError(504, f"the engine did not answer in time ({type(exc).__name__}); "
                            "retry with a smaller max_tokens or later", code="engine_timeout")
        return APIError(503, "the engine is unavailable (starting or restarting); retry shortly",
                        code="engine_unavailable", headers={"Retry-After": "2"})

    @staticmethod
    def _engine_error(response: httpx.Response) -> APIError:
        try:
            body = response.json()
            message = body.get("error", {}).get("message") or body.get("message") or response.text
        except (json.JSONDecodeError, AttributeError):
            message = response.text
        status = response.status_code
        if status >= 500:
            return APIError(503, f"the engine failed: {str(message)[:300]}", code="engine_error",
                            headers={"Retry-After": "2"})
        return APIError(status, str(message)[:1000], code="engine_rejected")

    async def post(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        with observability.engine_span("POST", self.base_url + path) as span:
            try:
                r = await self._http.post(path, json=body, timeout=timeout or httpx.USE_CLIENT_DEFAULT,
                                          headers=observability.engine_headers())
            except httpx.HTTPError as exc:
                raise self._unavailable(exc) from exc
            observability.record_response(span, r.status_code)
        if r.status_code != 200:
            raise self._engine_error(r)
        return r.json()

    async def get(self, path: str, timeout: float = 5.0) -> httpx.Response:
        try:
            return await self._http.get(path, timeout=timeout, headers=observability.engine_headers())
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc

    async def stream(self, path: str, body: dict[str, Any]) -> tuple[httpx.Response, AsyncIterator[bytes]]:
        """Open a streaming request; errors before the first byte raise APIError (a real status)."""
        # The span outlives this call: it ends when the stream does.
        span = observability.start_engine_span("POST", self.base_url + path)
        request = self._http.build_request("POST", path, json=body,
                                           headers=observability.engine_headers(span))
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            observability.end_span(span, exc)
            raise self._unavailable(exc) from exc
        observability.record_response(span, response.status_code)
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            observability.end_span(span)
            raise self._engine_error(response)

        async def chunks() -> AsyncIterator[bytes]:
            error: BaseException | None = None
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:
                error = exc
                raise EngineClient._unavailable(exc) from exc
            finally:
                await response.aclose()  # closing the connection makes vLLM abort the request
                observability.end_span(span, error)

        return response, chunks()

    async def stream_events(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Parsed `data:` events of an SSE stream (without the final [DONE]). An error event
        from the engine mid-stream, a line that is not JSON, or a stream cut before [DONE]
        raise APIError: a caller must never be told a broken generation succeeded."""
        _, chunks = await self.stream(path, body)
        buffer, finished = b"", False
        async for chunk in chunks:
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                for line in event.splitlines():
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        finished = True
                        continue
                    if not data:
                        continue
                    try:
                        payload = json.loads(data)
                    except ValueError:
                        raise APIError(502, "the engine sent a malformed stream event", code="engine_error") from None
                    if isinstance(payload, dict) and payload.get("error"):
                        error = payload["error"]
                        message = error.get("message") if isinstance(error, dict) else str(error)
                        raise APIError(502, f"the engine failed mid-stream: {message}", code="engine_error")
                    yield payload
        if not finished:
            raise APIError(502, "the engine's stream ended before it finished", code="engine_error")

    async def healthy(self) -> bool:
        return await self.health_status() == 200

    async def health_status(self, timeout: float = 2.0) -> int | None:
        """/health's status code; 0 when nothing listens; None when it did not answer in time."""
        try:
            r = await self._http.get("/health", timeout=timeout, headers=observability.engine_headers())
            return r.status_code
        except httpx.TimeoutException:
            return None
        except httpx.HTTPError:
            return 0

    async def lora_names(self) -> set[str]:
        r = await self.get("/v1/models")
        if r.status_code != 200:
            raise self._engine_error(r)
        return {m["id"] for m in r.json().get("data", []) if m.get("parent")}

    async def load_lora(self, name: str, path: str) -> None:
        try:
            r = await self._http.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path},
                                      timeout=300, headers=observability.engine_headers())
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if r.status_code != 200 and "already been loaded" not in r.text:
            raise self._engine_error(r)

    async def unload_lora(self, name: str) -> None:
        try:
            r = await self._http.post("/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60,
                                      headers=observability.engine_headers())
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if r.status_code not in (200, 404) and "not found" not in r.text.lower():
            raise self._engine_error(r)
