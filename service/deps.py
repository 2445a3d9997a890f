"""FastAPI dependencies: the gateway, the caller, the admin check, each route family's serving
object (built once at start-up, service/serving/), bodies read into models, disconnect-aware calls.

All are coroutines: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
dependency per request (about a millisecond of the gateway's own time on this machine)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from bioinstruct.service.auth import Caller, authenticate, require_admin
from bioinstruct.service.errors import APIError
from bioinstruct.service.gateway import Gateway
from bioinstruct.service.serving import (
    ExtractServing,
    GenerateServing,
    OpenAIServing,
    QAServing,
    ServingModels,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
S = TypeVar("S")


async def get_gateway(request: Request) -> Gateway:
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise APIError(503, "the gateway is starting; retry shortly", code="starting",
                       headers={"Retry-After": "2"})
    return gateway


async def get_caller(request: Request, gateway: Gateway = Depends(get_gateway)) -> Caller:
    return authenticate(request, gateway.settings)


async def get_admin(request: Request, gateway: Gateway = Depends(get_gateway)) -> Gateway:
    require_admin(request, gateway.settings)
    return gateway


async def get_admin_models(gateway: Gateway = Depends(get_admin)) -> ServingModels:
    """The models object, for an admin caller."""
    return gateway.servings.models


def _serving(room: str, kind: type[S]) -> Callable[..., Awaitable[S]]:
    """The dependency that hands a route its serving class (each built once, at start-up)."""
    async def get(gateway: Gateway = Depends(get_gateway)) -> S:
        return getattr(gateway.servings, room)
    return get


get_qa_serving = _serving("qa", QAServing)
get_extract_serving = _serving("extract", ExtractServing)
get_generate_serving = _serving("generate", GenerateServing)
get_openai_serving = _serving("openai", OpenAIServing)
get_models = _serving("models", ServingModels)


def body_as(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency that reads the body as JSON into `model`, whatever its content type (the /v1
    routes always did: `curl -d` sends form encoding). A body that does not fit is a 400 that
    names the field, from the same handler as every other validation error."""

    async def read(request: Request) -> M:
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None

    return read


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run work, cancelling it (and so the engine request) if the client goes away."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        # Sleep first: most requests end within the first period and never pay for a check.
        while True:
            await asyncio.sleep(0.2)
            if task.done():
                return
            if await request.is_disconnected():
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and task.cancelled():
            raise APIError(499, "client closed the request", code="client_closed") from None
        raise
    finally:
        watcher.cancel()
