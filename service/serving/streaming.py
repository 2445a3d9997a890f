"""One streamed engine call, for /generate and /v1 alike.

The admission slot and the adapter lease (Gateway.serving()) are held until the last byte
has gone to the caller or the caller has left; then the engine response is closed, which
makes vLLM abort the request. An engine failure after the status line has gone out cannot
change the status: it becomes an SSE error event of its own. Time to the first token and
the token counts go to the metrics under the route's and the adapter's labels.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Any

from bioinstruct.service.adapters import Target
from bioinstruct.service.errors import APIError
from bioinstruct.service.protocol import Usage

if TYPE_CHECKING:
    from bioinstruct.service.gateway import Gateway

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of events


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def error_event(exc: APIError) -> bytes:
    return sse({"error": {"message": exc.message, "type": "engine_error", "code": exc.code}})


class TokenMeter:
    """Time to first token and tokens in/out of one stream, under its route's and adapter's labels."""

    def __init__(self, gateway: Gateway, route: str, target: Target, started: float) -> None:
        self.gateway, self.route, self.target, self.started = gateway, route, target, started
        self.first_token_at: float | None = None

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.gateway.metrics.ttft.labels(route=self.route, adapter=self.target.label).observe(
                self.first_token_at - self.started)

    def tokens(self, usage: Usage) -> None:
        self.gateway.observe(self.route, self.target, usage)


class EngineStream:
    """A streamed engine call opened inside Gateway.serving(). `items` are what the engine sends
    (raw bytes or parsed events, as the route needs); `first` is the first one when the stream
    was primed, so that an engine that refuses at once is a real HTTP status."""

    def __init__(self, target: Target, items: AsyncIterator[Any], stack: AsyncExitStack, meter: TokenMeter,
                 first: Any = None) -> None:
        self.target, self.items, self.meter, self.first = target, items, meter, first
        self._stack = stack

    @classmethod
    async def open(cls, lease: AbstractAsyncContextManager[Target],
                   start: Callable[[Target], Awaitable[AsyncIterator[Any]]],
                   meter: Callable[[Target], TokenMeter],
                   prime: bool = False) -> EngineStream:
        stack = AsyncExitStack()
        items: AsyncIterator[Any] | None = None
        try:
            target = await stack.enter_async_context(lease)
            items = await start(target)
            first = await anext(items, None) if prime else None
        except BaseException:
            if items is not None:
                await items.aclose()  # type: ignore[attr-defined]
            await stack.aclose()
            raise
        return cls(target, items, stack, meter(target), first)

    async def relay(self, frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The route's frames, then the error event if the engine failed, then the clean-up."""
        try:
            async for frame in frames:
                yield frame
        except APIError as exc:
            yield error_event(exc)
        finally:
            await self.items.aclose()  # type: ignore[attr-defined]
            await self._stack.aclose()


async def whole_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Raw SSE bytes regrouped into whole events (each with its blank line), so that an error
    event we add never lands inside a half-relayed one. A tail without a blank line is relayed
    as it came."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            yield event + b"\n\n"
    if buffer:
        yield buffer
