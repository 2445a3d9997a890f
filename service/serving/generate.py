"""/generate: follow an instruction with the adapter of its task family; JSON, or Server-Sent
Events of our own shape ({"text"} pieces, then one {"done": true, ...} event with the usage)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from bioinstruct.instruct.classify import classify_family
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.service.adapters import Target
from bioinstruct.service.auth import Caller
from bioinstruct.service.protocol import GenerateRequest, GenerateResponse, Usage
from bioinstruct.service.serving.base import Prompt, Serving
from bioinstruct.service.serving.streaming import DONE, EngineStream, TokenMeter, sse


class GenerateServing(Serving):
    route = "generate"

    def _prepare(self, req: GenerateRequest) -> tuple[TaskFamily, Prompt, dict[str, Any]]:
        family = classify_family(req.instruction, req.input)
        prompt = self.prompt(family, req.instruction, req.input, req.max_tokens, 256)
        params: dict[str, Any] = {"max_tokens": prompt.max_tokens, "temperature": req.temperature,
                                  "top_p": req.top_p}
        if req.stop:
            params["stop"] = req.stop
        return family, prompt, params

    def _lease(self, req: GenerateRequest, family: TaskFamily, caller: Caller, state: Any):
        return self.gateway.serving(req.adapter, family, self.settings.generate_adapter, caller, state)

    async def serve(self, req: GenerateRequest, caller: Caller, state: Any = None) -> GenerateResponse:
        started = time.perf_counter()
        family, prompt, params = self._prepare(req)
        async with self._lease(req, family, caller, state) as target:
            out = await self.gateway.complete(target, prompt.ids, **params)
        usage = Usage().add(out.get("usage"))
        choice = out["choices"][0]
        return GenerateResponse(text=choice["text"], finish_reason=choice.get("finish_reason"),
                                family=family.value, **self.finish(target, usage, started))

    async def stream(self, req: GenerateRequest, caller: Caller, state: Any = None) -> AsyncIterator[bytes]:
        """Open the stream (the engine's first event is read now, so a refusal is a real status),
        then the SSE events."""
        started = time.perf_counter()
        family, prompt, params = self._prepare(req)

        async def start(target: Target) -> AsyncIterator[dict[str, Any]]:
            body = {"model": target.model, "prompt": prompt.ids, "stream": True,
                    "stream_options": {"include_usage": True}, **params}
            return self.gateway.client.stream_events("/v1/completions", body)

        stream = await EngineStream.open(self._lease(req, family, caller, state), start, prime=True,
                                         meter=lambda target: TokenMeter(self.gateway, self.route, target,
                                                                         started))
        return stream.relay(self._events(stream, family, started))

    async def _events(self, stream: EngineStream, family: TaskFamily, started: float) -> AsyncIterator[bytes]:
        usage, finish = Usage(), None
        event = stream.first
        while event is not None:
            for choice in event.get("choices") or []:
                if choice.get("text"):
                    stream.meter.first_token()
                    yield sse({"text": choice["text"]})
                finish = choice.get("finish_reason") or finish
            if event.get("usage"):
                usage = Usage().add(event["usage"])
            event = await anext(stream.items, None)
        done = {"done": True, "finish_reason": finish, "family": family.value,
                **self.finish(stream.target, usage, started)}
        done["usage"] = usage.model_dump()
        yield sse(done)
        yield DONE
