"""/v1/completions and /v1/chat/completions: the body goes to vLLM nearly as sent.

The request models (service/openai_protocol.py) have checked it; here the server's token
limit (a setting) and OpenAI's defaults are applied, `model` (an alias, a pinned version or
the base name) becomes the engine's adapter name, and the answer or the stream comes back as
vLLM wrote it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bioinstruct.instruct.classify import classify_family
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.service.adapters import AUTO, Target
from bioinstruct.service.auth import Caller
from bioinstruct.service.errors import APIError
from bioinstruct.service.openai_protocol import (
    TOKEN_FIELDS,
    ChatCompletionRequest,
    CompletionRequest,
)
from bioinstruct.service.protocol import Usage
from bioinstruct.service.serving.base import Serving
from bioinstruct.service.serving.streaming import EngineStream, TokenMeter, whole_events

OpenAIRequest = CompletionRequest | ChatCompletionRequest
PATHS = {CompletionRequest: "/v1/completions", ChatCompletionRequest: "/v1/chat/completions"}


@dataclass(frozen=True)
class Completion:
    body: dict[str, Any]  # vLLM's answer, as it wrote it
    engine_ms: float  # the engine call alone (X-BioInstruct-Latency-Ms: what the gateway waited on)


class OpenAIServing(Serving):
    route = "completions"  # the metrics label of both routes

    def _payload(self, req: OpenAIRequest) -> dict[str, Any]:
        limit = self.settings.max_tokens_limit
        for key in TOKEN_FIELDS:
            value = getattr(req, key)
            if value is not None and value > limit:
                raise APIError(400, f"'{key}' {value} is above this server's limit of {limit}", param=key,
                               code="max_tokens_too_large")
        payload = req.model_dump(exclude_unset=True)
        if req.max_tokens is None and req.max_completion_tokens is None:
            # Omitted, vLLM would allow the rest of the context: OpenAI's default (16) for
            # completions instead, at most this server's limit for chat.
            payload["max_tokens"] = req.default_max_tokens or limit
            ceiling = payload["max_tokens"]
            if req.min_tokens is not None and req.min_tokens > ceiling:
                raise APIError(400, f"'min_tokens' must be an integer from 0 to max_tokens ({ceiling})",
                               param="min_tokens")
        return payload

    def _lease(self, req: OpenAIRequest, caller: Caller, state: Any):
        # Only "auto" reads the family (to pick its adapter): classifying costs milliseconds on a
        # long prompt (lm-eval's), on the event loop. `model` is required here, so the route
        # default (base) never applies.
        family = classify_family(req.text()) if req.model == AUTO else TaskFamily.GEN
        return self.gateway.serving(req.model, family, "base", caller, state)

    async def complete(self, req: OpenAIRequest, caller: Caller, state: Any = None) -> Completion:
        payload = self._payload(req)
        async with self._lease(req, caller, state) as target:
            started = time.perf_counter()
            body = await self.gateway.client.post(PATHS[type(req)], {**payload, "model": target.model})
            engine_ms = (time.perf_counter() - started) * 1000
        self.gateway.observe(self.route, target, Usage().add(body.get("usage")))
        return Completion(body, engine_ms)

    async def stream(self, req: OpenAIRequest, caller: Caller, state: Any = None) -> AsyncIterator[bytes]:
        """Open the stream (a refusal before the first byte is a real status), then relay vLLM's
        events unchanged."""
        started = time.perf_counter()
        payload = self._payload(req)

        async def start(target: Target) -> AsyncIterator[bytes]:
            _, chunks = await self.gateway.client.stream(PATHS[type(req)], {**payload, "model": target.model})
            return chunks

        stream = await EngineStream.open(self._lease(req, caller, state), start,
                                         meter=lambda target: TokenMeter(self.gateway, self.route, target,
                                                                         started))
        return stream.relay(_relay(stream))


async def _relay(stream: EngineStream) -> AsyncIterator[bytes]:
    async for event in whole_events(stream.items):
        _meter(stream.meter, event)
        yield event


def _meter(meter: TokenMeter, event: bytes) -> None:
    """The first token's time and, when the caller asked for usage, the token counts. Once the
    first token is seen, only an event that carries usage is parsed."""
    if meter.first_token_at is not None and b'"usage"' not in event:
        return
    if not event.startswith(b"data: {"):
        return
    try:
        payload = json.loads(event[6:])
    except ValueError:
        return  # relayed as it came; the caller's client reports it
    for choice in payload.get("choices") or []:
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            meter.first_token()
            break
    if payload.get("usage"):
        meter.tokens(Usage().add(payload["usage"]))
