"""OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions.

The body goes to vLLM nearly as sent: `model` (an alias, a pinned version or the base
name) is resolved to the engine's adapter name, and the few parameters that would let
one caller hurt others are checked first.
"""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bioinstruct.instruct.classify import classify_family
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.service.auth import Caller
from bioinstruct.service.deps import get_caller, get_gateway, until_disconnect
from bioinstruct.service.errors import APIError, responses
from bioinstruct.service.gateway import Gateway
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

router = APIRouter(prefix="/v1", tags=["openai"])
ERRORS = responses(400, 401, 403, 404, 413, 429, 499, 503, 504)
MAX_N = 8
MAX_LOGPROBS = 20


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "bioinstruct"
    root: str | None = None
    parent: str | None = None
    target: str | None = None
    category: str | None = None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


@router.get("/models", response_model=ModelList, responses=responses(401, 503))
async def models(gw: Gateway = Depends(get_gateway), caller: Caller = Depends(get_caller)) -> ModelList:
    created = int(gw.started_at)
    base = gw.engine_settings.served_name
    # The model's folder name, not its path on this machine (unauthenticated callers see it).
    cards = [ModelCard(id=base, created=created, root=Path(gw.base.path).name)]
    for alias, ref in sorted(gw.adapters.routes.items()):
        cards.append(ModelCard(id=alias, created=created, parent=base, target=ref))
    import asyncio

    manifests = await asyncio.to_thread(gw.registry.manifests)
    for m in manifests:
        cards.append(ModelCard(id=m.ref, created=created, parent=base, category=m.category))
    if caller.allowed is not None and "*" not in caller.allowed:
        allowed = set(caller.allowed)
        cards = [c for c in cards if c.id == base and "base" in allowed or c.id in allowed
                 or c.id.split("@")[0] in allowed or (c.target and c.id in allowed)]
    return ModelList(data=cards)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except RecursionError:
        raise APIError(400, "the JSON body is nested too deeply", code="invalid_json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc}); send a JSON object",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def _check(gw: Gateway, body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise APIError(400, "'model' is required: an alias, a pinned version <name>@<version>, or "
                       f"'{gw.engine_settings.served_name}' (GET /v1/models lists them)", param="model")
    for key in ("max_tokens", "max_completion_tokens", "n", "min_tokens", "logprobs", "top_logprobs", "seed"):
        value = body.get(key)
        if isinstance(value, float) and value.is_integer():
            body[key] = int(value)  # 5.0 is an integer to JSON Schema (and to our published schema)
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise APIError(400, f"'{key}' must be a positive integer", param=key)
        if value > gw.settings.max_tokens_limit:
            raise APIError(400, f"'{key}' {value} is above this server's limit of {gw.settings.max_tokens_limit}",
                           param=key, code="max_tokens_too_large")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        raise APIError(400, f"'n' must be an integer from 1 to {MAX_N}", param="n")
    # One request takes one admission place: bound the sequences it may run on it, as the
    # task routes do (a list prompt of 1,024 strings once ran on one place).
    prompts = _prompt_count(body.get("prompt"))
    if prompts * n > MAX_N:
        raise APIError(400, f"this request asks for {prompts} prompt(s) x n={n} = {prompts * n} sequences; "
                       f"the limit is {MAX_N} per request: send several requests", param="prompt",
                       code="too_many_sequences")
    # An omitted max_tokens would mean "the rest of the context": OpenAI's own defaults instead
    # (16 for completions), and at most this server's limit for chat.
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = 16 if "messages" not in body else gw.settings.max_tokens_limit
    min_tokens = body.get("min_tokens")
    if min_tokens is not None:
        ceiling = body.get("max_tokens") or body.get("max_completion_tokens")
        if not isinstance(min_tokens, int) or isinstance(min_tokens, bool) or not 0 <= min_tokens <= ceiling:
            raise APIError(400, f"'min_tokens' must be an integer from 0 to max_tokens ({ceiling})", param="min_tokens")
    if "ignore_eos" in body and not isinstance(body["ignore_eos"], bool):
        raise APIError(400, "'ignore_eos' must be true or false", param="ignore_eos")
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 2):
        raise APIError(400, "'temperature' must be a number from 0 to 2", param="temperature")
    # `seed` and prompt log-probabilities (echo + logprobs, prompt_logprobs) pass: the CPU
    # engine's seeded-sampling crash is fixed in our vLLM plugin (bioinstruct/vllm_plugin/
    # cpu_seed.py), and prompt logprobs with LoRA run on vLLM 0.32 (tests/test_service_openai.py).
    for key in ("logprobs", "top_logprobs"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_LOGPROBS:
            raise APIError(400, f"'{key}' may be at most {MAX_LOGPROBS}", param=key)


def document_request_bodies(openapi: dict[str, Any], max_tokens_limit: int) -> None:
    """Put the /v1 request bodies into the OpenAPI schema. The bodies are relayed to vLLM nearly
    as sent, so the routes read them as JSON; the schema says what `_check` and the engine
    accept (required `model`, the limits above), and lets other fields through as vLLM does."""
    tokens = {"type": "integer", "minimum": 1, "maximum": max_tokens_limit,
              "description": f"At most {max_tokens_limit} (BIOINSTRUCT_MAX_TOKENS_LIMIT); "
              "default 16 for completions, the limit for chat"}
    logprobs_n = {"type": "integer", "minimum": 0, "maximum": MAX_LOGPROBS}
    common = {
        "model": {"type": "string", "minLength": 1, "description": "An alias (`qa`), a pinned version "
                  "(`bioinstruct-qa@3`) or the base model's name; GET /v1/models lists them"},
        "max_tokens": tokens,
        "n": {"type": "integer", "minimum": 1, "maximum": MAX_N},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "seed": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
        "stream": {"type": "boolean"},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
        "min_tokens": {"type": "integer", "minimum": 0, "description": "At most max_tokens"},
        "ignore_eos": {"type": "boolean"},
    }
    text = {"type": "string", "minLength": 1}
    token_ids = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
    completions = {
        "type": "object", "required": ["model", "prompt"], "additionalProperties": True,
        "properties": {
            **common,
            "prompt": {"anyOf": [text, token_ids,
                                 {"type": "array", "items": {"anyOf": [text, token_ids]}, "minItems": 1, "maxItems": MAX_N}],
                       "description": f"A string, token ids, or a list of either: prompts x n at most {MAX_N}"},
            "echo": {"type": "boolean"},
            "logprobs": logprobs_n,
        },
        "allOf": _sequence_rules(),
    }
    message = {"type": "object", "required": ["role", "content"], "additionalProperties": True,
               "properties": {"role": {"type": "string"},
                              "content": {"anyOf": [{"type": "string"}, {"type": "array"}]}}}
    chat = {
        "type": "object", "required": ["model", "messages"], "additionalProperties": True,
        "properties": {
            **common,
            "messages": {"type": "array", "items": message, "minItems": 1},
            "max_completion_tokens": tokens,
            "logprobs": {"type": "boolean"},
            "top_logprobs": logprobs_n,
        },
    }
    for path, schema in (("/v1/completions", completions), ("/v1/chat/completions", chat)):
        operation = openapi.get("paths", {}).get(path, {}).get("post")
        if operation is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}


def _sequence_rules() -> list[dict[str, Any]]:
    """prompts x n <= MAX_N in JSON Schema: a list of k prompts (strings or token-id lists, not a
    list of token ids, which is one prompt) allows n up to MAX_N // k, one rule per step down."""
    rules, cap = [], MAX_N
    for k in range(2, MAX_N + 1):
        if MAX_N // k < cap:
            cap = MAX_N // k
            prompts = {"type": "array", "minItems": k, "items": {"type": ["string", "array"]}}
            rules.append({"if": {"properties": {"prompt": prompts}, "required": ["prompt"]},
                          "then": {"properties": {"n": {"maximum": cap}}}})
    return rules


def _prompt_count(prompt: Any) -> int:
    """How many prompts a completions `prompt` holds: a string or a token-id list is one; a list
    of strings or of token-id lists is one each."""
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        return len(prompt)
    return 1


def _family(body: dict[str, Any]) -> TaskFamily:
    messages = body.get("messages")
    if isinstance(messages, list):
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        text = users[-1] if users and isinstance(users[-1], str) else ""
    else:
        text = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
    return classify_family(text or "")


async def _proxy(path: str, request: Request, gw: Gateway, caller: Caller):
    body = await _body(request)
    _check(gw, body)
    stack = AsyncExitStack()
    try:
        # `model` is required here, so the route default (base) never applies.
        target = await stack.enter_async_context(
            gw.serving(body["model"].strip(), _family(body), "base", caller, request.state))
        body["model"] = target.model
        if body.get("stream"):
            response, chunks = await gw.client.stream(path, body)
        else:
            started = time.perf_counter()
            result = await until_disconnect(request, gw.client.post(path, body))
            await stack.aclose()
            usage = result.get("usage") or {}
            route = path.rsplit("/", 1)[-1]
            gw.metrics.tokens.labels(route=route, adapter=target.label, direction="in").inc(usage.get("prompt_tokens") or 0)
            gw.metrics.tokens.labels(route=route, adapter=target.label, direction="out").inc(usage.get("completion_tokens") or 0)
            return JSONResponse(result, headers={"X-BioInstruct-Latency-Ms": f"{(time.perf_counter() - started) * 1000:.1f}"})
    except BaseException:
        await stack.aclose()
        raise

    async def relay():
        tail = b"\n\n"
        try:
            async for chunk in chunks:
                if chunk:
                    tail = (tail + chunk)[-2:]
                yield chunk
        except APIError as exc:
            payload = {"error": {"message": exc.message, "type": "engine_error", "code": exc.code}}
            # Close a half-received event first: the error must be an event of its own.
            yield (b"" if tail == b"\n\n" else b"\n\n") + b"data: " + json.dumps(payload).encode() + b"\n\n"
        finally:
            await chunks.aclose()
            await stack.aclose()

    return StreamingResponse(relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/chat/completions", responses=ERRORS, summary="OpenAI chat completions (model: alias, name@version or base)")
async def chat_completions(request: Request, gw: Gateway = Depends(get_gateway), caller: Caller = Depends(get_caller)):
    return await _proxy("/v1/chat/completions", request, gw, caller)


@router.post("/completions", responses=ERRORS, summary="OpenAI completions (model: alias, name@version or base)")
async def completions(request: Request, gw: Gateway = Depends(get_gateway), caller: Caller = Depends(get_caller)):
    return await _proxy("/v1/completions", request, gw, caller)
