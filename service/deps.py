"""FastAPI dependencies: the gateway, the caller, the admin check, disconnect-aware calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from bioinstruct.service.auth import Caller, authenticate, require_admin
from bioinstruct.service.errors import APIError
from bioinstruct.service.gateway import Gateway
from fastapi import Depends, Request

T = TypeVar("T")


def get_gateway(request: Request) -> Gateway:
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise APIError(503, "the gateway is starting; retry shortly", code="starting", headers={"Retry-After": "2"})
    return gateway


def get_caller(request: Request, gateway: Gateway = Depends(get_gateway)) -> Caller:
    return authenticate(request, gateway.settings)


def get_admin(request: Request, gateway: Gateway = Depends(get_gateway)) -> Gateway:
    require_admin(request, gateway.settings)
    return gateway


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run work, cancelling it (and so the engine request) if the client goes away."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while not task.done():
            if await request.is_disconnected():
                task.cancel()
                return
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and task.cancelled():
            raise APIError(499, "client closed the request", code="client_closed") from None
        raise
    finally:
        watcher.cancel()
