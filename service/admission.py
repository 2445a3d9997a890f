"""Admission control: a bounded number of requests at the engine and a bounded queue.

Beyond both bounds a request is refused at once with 429 and Retry-After, so overload
turns into fast refusals rather than a pile of timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bioinstruct.service.errors import APIError
from bioinstruct.service.metrics import Metrics


class Admission:
    def __init__(self, max_inflight: int, max_queue: int, queue_timeout_s: float, retry_after_s: int,
                 metrics: Metrics) -> None:
        self.max_inflight = max_inflight
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.retry_after = str(retry_after_s)
        self.metrics = metrics
        self._slots = asyncio.Semaphore(max_inflight)
        self.inflight = 0
        self.queued = 0
        # Inference requests inside the gateway, counted by the middleware once their body is
        # in (before parsing and tokenizing): a burst is refused at once, not after that work,
        # and a stalled upload never counts.
        self.arrived = 0

    def _refuse(self, reason: str, message: str) -> APIError:
        self.metrics.rejected.labels(reason=reason).inc()
        return APIError(429, message, code="overloaded", headers={"Retry-After": self.retry_after})

    def refuse_early(self) -> APIError | None:
        """The 429 a new request would get anyway (every slot busy, queue full), or None.
        The middleware asks this before the body is read, so that refusals under overload
        cost microseconds instead of waiting behind parsing and tokenizing."""
        if self.arrived > self.max_inflight + self.max_queue:
            return self._busy()
        return self._busy() if self._slots.locked() and self.queued >= self.max_queue else None

    def _busy(self) -> APIError:
        return self._refuse("queue_full", f"server busy: {self.inflight} requests running and "
                            f"{self.queued} queued; retry after {self.retry_after} s")

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked():
            if self.queued >= self.max_queue:
                raise self._busy()
            self.queued += 1
            self.metrics.queued.set(self.queued)
            try:
                await asyncio.wait_for(self._slots.acquire(), self.queue_timeout_s)
            except TimeoutError:
                raise self._refuse("queue_timeout", f"server busy: no slot within {self.queue_timeout_s:g} s; "
                                   f"retry after {self.retry_after} s") from None
            finally:
                self.queued -= 1
                self.metrics.queued.set(self.queued)
        else:
            await self._slots.acquire()
        self.inflight += 1
        self.metrics.inflight.set(self.inflight)
        try:
            yield
        finally:
            self.inflight -= 1
            self.metrics.inflight.set(self.inflight)
            self._slots.release()
