"""Inference routes for the biomedical tasks: /qa, /extract, /generate, /compare. Each handler
hands its validated body to its family's serving class (service/serving/)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from bioinstruct.service.auth import Caller
from bioinstruct.service.deps import (
    get_caller,
    get_extract_serving,
    get_gateway,
    get_generate_serving,
    get_qa_serving,
    until_disconnect,
)
from bioinstruct.service.errors import APIError, ErrorDetail, error_body, responses
from bioinstruct.service.gateway import Gateway
from bioinstruct.service.protocol import (
    CompareRequest,
    CompareResponse,
    CompareResult,
    ExtractRequest,
    ExtractResponse,
    GenerateRequest,
    GenerateResponse,
    QARequest,
    QAResponse,
)
from bioinstruct.service.serving import ExtractServing, GenerateServing, QAServing
from bioinstruct.service.serving.streaming import HEADERS

router = APIRouter(tags=["tasks"])
TASK_ERRORS = responses(400, 401, 403, 404, 413, 429, 499, 503, 504)


@router.post("/qa", response_model=QAResponse, responses=TASK_ERRORS,
             summary="Answer a biomedical question; with options, always one of them")
async def qa(body: QARequest, request: Request, serving: QAServing = Depends(get_qa_serving),
             caller: Caller = Depends(get_caller)) -> QAResponse:
    return await until_disconnect(request, serving.serve(body, caller, request.state))


@router.post("/extract", response_model=ExtractResponse, responses=TASK_ERRORS,
             summary="Extract entities (and relations) with character offsets that match the text")
async def extract(body: ExtractRequest, request: Request,
                  serving: ExtractServing = Depends(get_extract_serving),
                  caller: Caller = Depends(get_caller)) -> ExtractResponse:
    return await until_disconnect(request, serving.serve(body, caller, request.state))


@router.post(
    "/generate", response_model=GenerateResponse,
    responses={**TASK_ERRORS, 200: {"description": "JSON, or Server-Sent Events when stream=true",
                                     "content": {"text/event-stream": {}}}},
    summary="Follow an instruction; stream=true answers with Server-Sent Events",
)
async def generate(body: GenerateRequest, request: Request,
                   serving: GenerateServing = Depends(get_generate_serving),
                   caller: Caller = Depends(get_caller)):
    if body.stream:
        events = await serving.stream(body, caller, request.state)
        return StreamingResponse(events, media_type="text/event-stream", headers=HEADERS)
    return await until_disconnect(request, serving.serve(body, caller, request.state))


def document_token_limit(openapi: dict, max_tokens_limit: int) -> None:
    """The task routes' max_tokens (and /compare's bodies of them) in the schema with this
    server's limit (BIOINSTRUCT_MAX_TOKENS_LIMIT, enforced by Gateway.budget): a setting, so
    not in the pydantic models."""
    for component in openapi.get("components", {}).get("schemas", {}).values():
        prop = component.get("properties", {}).get("max_tokens")
        for variant in (prop or {}).get("anyOf", [prop] if prop else []):
            if variant.get("type") == "integer":
                variant["maximum"] = max_tokens_limit


@router.post("/compare", response_model=CompareResponse, responses=TASK_ERRORS,
             summary="Send one request to several adapters at once and get the answers side by side")
async def compare(body: CompareRequest, request: Request, gw: Gateway = Depends(get_gateway),
                  caller: Caller = Depends(get_caller)) -> CompareResponse:
    started = time.perf_counter()
    # Looked up here, after the body is validated, not in a dependency (those run first): a
    # wrong body is refused without touching the gateway.
    serving = gw.servings.tasks[body.route]

    async def one(item) -> CompareResult:
        try:
            result = await serving.serve(item, caller)
            return CompareResult(adapter=item.adapter, status=200, response=result.model_dump())
        except APIError as exc:
            err = error_body(exc.status, exc.message, exc.param, exc.code)["error"]
            return CompareResult(adapter=item.adapter, status=exc.status, error=ErrorDetail(**err))

    results = await until_disconnect(request, asyncio.gather(*(one(b) for b in body.bodies())))
    return CompareResponse(route=body.route, results=list(results),
                           latency_ms=round((time.perf_counter() - started) * 1000, 2))
