"""Pure-ASGI middleware: request ids and traces (outermost), early 429s, body size limit and
per-request metrics (streaming-safe)."""

from __future__ import annotations

import asyncio
import json
import time

from bioinstruct.service.errors import error_body
from bioinstruct.service.observability import (
    Tracing,
    accept_request_id,
    finish_server_span,
    request_context,
    server_span,
)

# Routes that take an admission slot: refused before their body is read when the server is full.
INFERENCE_PATHS = frozenset({"/qa", "/extract", "/generate", "/compare", "/v1/chat/completions", "/v1/completions"})


class GatewayMiddleware:
    def __init__(self, app, *, max_body_bytes: int, body_timeout_s: float = 10.0) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            return await self._buffered(scope, receive, send)
        return await self._handle(scope, receive, send)

    async def _buffered(self, scope, receive, send):
        """Read the whole body first (bounded in size and time: 413 and 408 with clear messages,
        with or without Content-Length), then, for inference routes, count the request and refuse
        early if the server is full. A client that stalls its upload holds only its own
        connection, never an admission place (a few hundred stalled uploads once locked every
        caller out), and is dropped with 408 after body_timeout_s."""
        too_long = self._declared_too_long(scope)
        if too_long:
            return await _reject(send, 413, too_long, code="body_too_large")
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except TimeoutError:
                return await _reject(send, 408, f"the request body did not arrive within {self.body_timeout_s:g} s; "
                                     "send it at once", code="body_timeout")
            if message["type"] == "http.disconnect":
                return None
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return await _reject(send, 413, f"request body is over the limit of {self.max_body_bytes} bytes",
                                     code="body_too_large")
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # afterwards: disconnect detection

        gateway = getattr(getattr(scope.get("app"), "state", None), "gateway", None)
        if gateway is None or scope["method"] != "POST" or scope["path"] not in INFERENCE_PATHS:
            return await self._handle(scope, replay, send)
        admission = gateway.admission
        admission.arrived += 1
        try:
            refusal = admission.refuse_early()
            if refusal is not None:
                gateway.metrics.requests.labels(route=scope["path"], adapter="-", status="429").inc()
                gateway.metrics.errors.labels(route=scope["path"], status="429").inc()
                return await _reject(send, 429, refusal.message, code=refusal.code, headers=refusal.headers)
            return await self._handle(scope, replay, send)
        finally:
            admission.arrived -= 1

    def _declared_too_long(self, scope) -> str | None:
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > self.max_body_bytes:
            return f"request body is {int(length)} bytes; the limit is {self.max_body_bytes}"
        return None

    async def _handle(self, scope, receive, send):
        too_long = self._declared_too_long(scope)
        if too_long:
            return await _reject(send, 413, too_long, code="body_too_large")

        received = 0
        too_big = False

        async def limited_receive():
            nonlocal received, too_big
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_big = True
                    raise _BodyTooLarge()
            return message

        status = 500
        started = time.perf_counter()

        async def tracking_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        scope.setdefault("state", {})
        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            status = 413
            await _reject(send, 413, f"request body is over the limit of {self.max_body_bytes} bytes",
                          code="body_too_large")
        finally:
            app = scope.get("app")
            gateway = getattr(getattr(app, "state", None), "gateway", None)
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            if gateway is not None and path not in ("/metrics", "/health/live", "/health/ready"):
                adapter = scope["state"].get("adapter", "-")
                m = gateway.metrics
                m.requests.labels(route=path, adapter=adapter, status=str(status)).inc()
                m.latency.labels(route=path, adapter=adapter).observe(time.perf_counter() - started)
                if status >= 400:
                    m.errors.labels(route=path, status=str(status)).inc()


class _BodyTooLarge(Exception):
    pass


async def _reject(send, status: int, message: str, *, code: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


UNTRACED_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})


class RequestContextMiddleware:
    """Around everything, error pages included: the request's id (the caller's X-Request-Id when
    safe, else a new one) is current while the request runs (logs, engine calls) and returned on
    the response; with tracing on, the request runs inside a server span."""

    def __init__(self, app, *, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope.get("headers") or []
        incoming = next((v.decode("latin-1") for k, v in headers if k == b"x-request-id"), None)
        request_id = accept_request_id(incoming)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers") or [] if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        # Probes and scrapes every few seconds per pod would bury the traces that matter.
        tracing = None if scope.get("path") in UNTRACED_PATHS else self.tracing
        with request_context(request_id, tracing), server_span(tracing, scope) as span:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                finish_server_span(span, scope, status, request_id)


def install_request_context(app, tracing: Tracing | None = None) -> None:
    """Make RequestContextMiddleware the app's outermost layer. add_middleware() would put it
    inside Starlette's ServerErrorMiddleware, whose 500 page would then go out without the id."""
    build = app.build_middleware_stack

    def build_with_request_context():
        return RequestContextMiddleware(build(), tracing=tracing)

    app.build_middleware_stack = build_with_request_context
