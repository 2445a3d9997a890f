"""OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions.

The bodies are read into the request models of service/openai_protocol.py, which are also
their published schema; OpenAIServing (service/serving/openai.py) relays them to vLLM.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from bioinstruct.service.auth import Caller
from bioinstruct.service.deps import (
    body_as,
    get_caller,
    get_models,
    get_openai_serving,
    until_disconnect,
)
from bioinstruct.service.errors import responses
from bioinstruct.service.openai_protocol import (
    MAX_LOGPROBS,
    MAX_N,
    TOKEN_FIELDS,
    ChatCompletionRequest,
    CompletionRequest,
    ModelList,
    request_body,
)
from bioinstruct.service.serving import OpenAIServing, ServingModels
from bioinstruct.service.serving.openai import OpenAIRequest
from bioinstruct.service.serving.streaming import HEADERS

__all__ = ["MAX_LOGPROBS", "MAX_N", "document_request_bodies", "router"]

router = APIRouter(prefix="/v1", tags=["openai"])
ERRORS = responses(400, 401, 403, 404, 413, 429, 499, 503, 504)


@router.get("/models", response_model=ModelList, responses=responses(401, 503))
async def models(models: ServingModels = Depends(get_models),
                 caller: Caller = Depends(get_caller)) -> ModelList:
    return await models.list(caller)


# The caller is authenticated before the body is read: a wrong key is a 401 whatever it sent.
@router.post("/chat/completions", responses=ERRORS, openapi_extra=request_body(ChatCompletionRequest),
             summary="OpenAI chat completions (model: alias, name@version or base)")
async def chat_completions(request: Request, caller: Caller = Depends(get_caller),
                           body: ChatCompletionRequest = Depends(body_as(ChatCompletionRequest)),
                           serving: OpenAIServing = Depends(get_openai_serving)):
    return await _answer(request, serving, body, caller)


@router.post("/completions", responses=ERRORS, openapi_extra=request_body(CompletionRequest),
             summary="OpenAI completions (model: alias, name@version or base)")
async def completions(request: Request, caller: Caller = Depends(get_caller),
                      body: CompletionRequest = Depends(body_as(CompletionRequest)),
                      serving: OpenAIServing = Depends(get_openai_serving)):
    return await _answer(request, serving, body, caller)


async def _answer(request: Request, serving: OpenAIServing, body: OpenAIRequest, caller: Caller):
    if body.stream:
        events = await serving.stream(body, caller, request.state)
        return StreamingResponse(events, media_type="text/event-stream", headers=HEADERS)
    done = await until_disconnect(request, serving.complete(body, caller, request.state))
    return JSONResponse(done.body, headers={"X-BioInstruct-Latency-Ms": f"{done.engine_ms:.1f}"})


def document_request_bodies(openapi: dict[str, Any], max_tokens_limit: int) -> None:
    """This server's token limit (BIOINSTRUCT_MAX_TOKENS_LIMIT, a setting) in the /v1 request
    bodies, whose schema is otherwise their models' (openai_protocol.request_body)."""
    for path in ("/v1/completions", "/v1/chat/completions"):
        operation = openapi.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            continue
        properties = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]
        for key in TOKEN_FIELDS:
            if key in properties:
                properties[key]["maximum"] = max_tokens_limit
