"""The gateway's state and task logic, shared by the HTTP routes and /compare.

One Gateway per app: the engine supervisor, the adapter manager, admission control,
metrics, and the base model's tokenizer (prompts are rendered here with the shared
`instruct` format and sent to the engine as token ids, exactly as training saw them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from bioinstruct.instruct.classify import classify_family
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.format import render_example, render_prompt
from bioinstruct.instruct.parsing import match_option, parse_entities, parse_relations
from bioinstruct.instruct.prompts import entity_task, qa_task, relation_task
from bioinstruct.service.adapters import AdapterManager, Target
from bioinstruct.service.admission import Admission
from bioinstruct.service.auth import Caller
from bioinstruct.service.engine import EngineProcess, EngineSettings
from bioinstruct.service.errors import APIError
from bioinstruct.service.metrics import Metrics
from bioinstruct.service.model_server_protocol import EngineSnapshot
from bioinstruct.service.protocol import (
    EntityOut,
    ExtractRequest,
    ExtractResponse,
    GenerateRequest,
    GenerateResponse,
    QARequest,
    QAResponse,
    RelationOut,
    Usage,
)
from bioinstruct.service.scoring import score_options
from bioinstruct.service.settings import ServiceSettings
from bioinstruct.service.supervisor import EngineSupervisor

from bioinstruct.model import BaseModelInfo, inspect_base_model
from bioinstruct.registry import open_registry
from bioinstruct.settings import CoreSettings

log = logging.getLogger("bioinstruct.service")



class Gateway:
    def __init__(
        self,
        settings: ServiceSettings,
        core: CoreSettings,
        engine_settings: EngineSettings | None = None,
        engine_process: EngineProcess | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.settings = settings
        self.core = core
        self.engine_settings = engine_settings or EngineSettings()
        self.registry = open_registry(core=core)
        if engine_process is None and settings.engine_url is None and self.engine_settings.registry is None:
            # Our own engine: its LoRA resolver (our vLLM plugin) loads versions from our registry.
            self.engine_settings = self.engine_settings.model_copy(update={
                "registry": self.registry.url, "registry_cache": self.registry.cache_dir})
        model_dir = Path(engine_process.model_dir) if engine_process else core.base_model_dir
        self.base: BaseModelInfo = inspect_base_model(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.max_model_len = self.engine_settings.max_model_len
        self.metrics = Metrics()
        self.supervisor = EngineSupervisor(
            model_dir, self.engine_settings, external_url=settings.engine_url, process=engine_process,
            restart=settings.engine_restart, request_timeout_s=settings.engine_request_timeout_s,
            connect_timeout_s=settings.engine_connect_timeout_s,
        )
        self.client = self.supervisor.client
        self.adapter_limits = self.engine_settings.adapter_limits(self.base.hidden_size)
        self.adapters = AdapterManager(
            self.registry, self.client, self.base,
            limits=self.adapter_limits,
            # vLLM keeps this many adapters in its LoRA cache; more would churn it on every batch.
            capacity=max(self.engine_settings.max_cpu_loras, self.engine_settings.max_loras),
            metrics=self.metrics,
            preload=settings.preload,
            drain_timeout_s=settings.drain_timeout_s,
            stale_after_s=settings.registry_stale_after_s,
            base_name=self.engine_settings.served_name,
            engine_resolves=(settings.engine_url is None and self.engine_settings.registry == self.registry.url),
        )
        self.admission = Admission(settings.max_inflight, settings.max_queue, settings.queue_timeout_s,
                                   settings.retry_after_s, self.metrics)
        self.metrics.protocol.gateway_queued = lambda: self.admission.queued
        self.supervisor.on_down.append(self._engine_down)
        self.supervisor.on_up.append(self._engine_up)
        self._tasks: list[asyncio.Task] = []
        self.started_at = time.time()

    @property
    def settings_publish_root(self) -> Path:
        return (self.settings.publish_root or self.core.home / "runs").resolve()

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._boot(), name="gateway-boot"))

    async def _boot(self) -> None:
        try:
            await self.supervisor.start()
        except Exception as exc:  # noqa: BLE001 - reported by /health/ready
            log.error("engine failed to start: %s", exc)
            return
        self._tasks.append(asyncio.create_task(self._poll(), name="registry-poll"))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            if not self.supervisor.ready:
                continue
            try:
                await self.adapters.reconcile()
            except APIError as exc:
                log.warning("reconcile skipped: %s", exc.message)
            except Exception:  # noqa: BLE001 - keep polling whatever one pass hit
                log.exception("reconcile failed")

    def _engine_down(self) -> None:
        self.metrics.engine_up.set(0)
        if self.supervisor.restart_enabled:
            self.metrics.engine_restarts.inc()
        self.adapters.on_engine_down()

    async def _engine_up(self) -> None:
        """Engine (re)started: bring every alias back before reporting ready."""
        self.metrics.engine_up.set(1)
        try:
            await self.adapters.reconcile()
        except APIError as exc:
            log.warning("reconcile after engine start failed: %s", exc.message)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.supervisor.stop()

    def ready(self) -> tuple[bool, dict[str, Any]]:
        adapters_ok, problems = self.adapters.ready()
        engine_ok = self.supervisor.ready
        if not engine_ok:
            problems.insert(0, f"engine {self.supervisor.current_state}"
                            + (f": {self.supervisor.public_error}" if self.supervisor.last_error else ""))
        return engine_ok and adapters_ok, {
            "engine": self.supervisor.current_state,
            "aliases": dict(self.adapters.routes),
            "problems": problems,
            "warnings": self.adapters.warnings(),
            "registry": {"ok": self.adapters.registry_error is None,
                         "stale_s": round(self.adapters.registry_stale_s(), 1),
                         "error": self.adapters.registry_error},
        }

    async def refresh_protocol_metrics(self) -> None:
        """Before a scrape: the engine's scheduling gauges and our adapter residency."""
        snapshot = EngineSnapshot()
        if self.supervisor.ready:
            try:
                response = await self.client.get("/metrics", timeout=2.0)
                if response.status_code == 200:
                    snapshot = EngineSnapshot.parse(response.text)
            except (APIError, ValueError) as exc:
                log.debug("engine metrics not read: %s", exc)
        self.metrics.protocol.snapshot = snapshot
        self.metrics.protocol.lora_state = self.adapters.lora_state()

    # ---- shared helpers ------------------------------------------------------------------
    def require_engine(self) -> None:
        if not self.supervisor.ready:
            raise APIError(503, f"the engine is {self.supervisor.current_state}; retry shortly",
                           code="engine_unavailable", headers={"Retry-After": "5"})

    @asynccontextmanager
    async def serving(self, spec: str | None, family: TaskFamily, route_default: str, caller: Caller,
                      state: Any = None) -> AsyncIterator[Target]:
        """The one way into the engine, for every inference route (task routes and /v1), in one
        order: the engine is up, an admission slot, the adapter resolved and allowed for this
        caller, then a lease on it (a version is never unloaded under a request). The request
        was validated and its cost limits checked before this: a caller's mistake is a 400
        without taking a slot."""
        self.require_engine()
        async with self.admission.slot():
            # Only an omitted adapter may fall back to base when the route's default alias is not
            # published; one the caller names must exist (404 otherwise), or a typo is served silently.
            target = self.adapters.resolve(spec or route_default, family, base_if_unpublished=not spec,
                                           sticky=caller.session)
            caller.check(target)
            async with self.adapters.lease(target, state):
                yield target

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def budget(self, prompt_ids: list[int], requested: int | None, default: int) -> int:
        """max_tokens for this request, or a 400 that names the limits."""
        limit = self.settings.max_tokens_limit
        if requested is not None and requested > limit:
            raise APIError(400, f"max_tokens {requested} is above this server's limit of {limit}",
                           param="max_tokens", code="max_tokens_too_large")
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise APIError(400, f"the input is {len(prompt_ids)} tokens but the model's context is "
                           f"{self.max_model_len} tokens; shorten the input",
                           param="input", code="context_length_exceeded")
        if requested is not None and requested > room:
            raise APIError(400, f"the input is {len(prompt_ids)} tokens; with max_tokens {requested} it exceeds "
                           f"the model's context of {self.max_model_len} tokens: ask for at most {room}",
                           param="max_tokens", code="context_length_exceeded")
        return min(requested or min(default, limit), room)

    async def complete(self, target: Target, prompt_ids: list[int], **params: Any) -> dict[str, Any]:
        body = {"model": target.model, "prompt": prompt_ids, "temperature": 0.0, **params}
        return await self.client.post("/v1/completions", body)

    async def _top_logprobs(self, target: Target, ids: list[int]) -> dict[int, float]:
        out = await self.complete(target, ids, max_tokens=1, logprobs=self.settings.qa_top_logprobs,
                                  return_tokens_as_token_ids=True)
        top = (out["choices"][0].get("logprobs") or {}).get("top_logprobs") or [{}]
        return {int(k.split(":", 1)[1]): float(v) for k, v in (top[0] or {}).items() if k.startswith("token_id:")}

    def observe(self, route: str, target: Target, usage: Usage) -> None:
        self.metrics.tokens.labels(route=route, adapter=target.label, direction="in").inc(usage.prompt_tokens)
        self.metrics.tokens.labels(route=route, adapter=target.label, direction="out").inc(usage.completion_tokens)

    @staticmethod
    def served(target: Target, usage: Usage, started: float) -> dict[str, Any]:
        return {
            "adapter": target.alias or (target.model if target.name else "base"),
            "version": target.version,
            "model": target.model,
            "usage": usage,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    # ---- /qa -----------------------------------------------------------------------------
    async def qa(self, req: QARequest, caller: Caller, state: Any = None) -> QAResponse:
        started = time.perf_counter()
        instruction, input_text = qa_task(req.question, req.context, req.options)
        prompt = render_prompt(self.tokenizer, TaskFamily.QA, instruction, input_text)
        prompt_ids = self.encode(prompt)
        max_tokens = self.budget(prompt_ids, req.max_tokens, 256 if not req.options else 64)
        async with self.serving(req.adapter, TaskFamily.QA, self.settings.qa_adapter, caller, state) as target:
            usage = Usage()
            if not req.options:
                out = await self.complete(target, prompt_ids, max_tokens=max_tokens, temperature=req.temperature)
                text = out["choices"][0]["text"]
                usage.add(out.get("usage"))
                result = dict(answer=text.strip(), answer_index=None, method="free", raw_text=text)
            else:
                method = req.method or self.settings.qa_method
                result = await self._choose(target, method, prompt_ids, instruction, input_text,
                                            req.options, usage, max_tokens)
        self.observe("qa", target, usage)
        return QAResponse(**result, **self.served(target, usage, started))

    async def _choose(self, target, method, prompt_ids, instruction, input_text, options, usage, max_tokens):
        if method == "constrained":
            out = await self.complete(target, prompt_ids, max_tokens=max_tokens,
                                      structured_outputs={"choice": list(options)})
            text = out["choices"][0]["text"]
            usage.add(out.get("usage"))
            match = match_option(text, options)
            if match.index is not None:
                return dict(answer=options[match.index], answer_index=match.index, method="constrained",
                            raw_text=text)
            method = "logprob"  # the grammar should make this unreachable; never answer off-list
        if method == "generate":
            out = await self.complete(target, prompt_ids, max_tokens=max_tokens)
            text = out["choices"][0]["text"]
            usage.add(out.get("usage"))
            match = match_option(text, options)
            if match.index is not None:
                return dict(answer=options[match.index], answer_index=match.index,
                            method=f"generate:{match.how}", raw_text=text)
            scored = await self._score(target, prompt_ids, instruction, input_text, options, usage)
            scored["method"] = "generate:none->logprob"
            scored["raw_text"] = text
            return scored
        return await self._score(target, prompt_ids, instruction, input_text, options, usage)

    async def _score(self, target, prompt_ids, instruction, input_text, options, usage):
        option_ids = []
        for option in options:
            # The completion as training writes it (option + end-of-turn), so scoring
            # matches what an adapter learned to produce.
            _, completion = render_example(self.tokenizer, TaskFamily.QA, instruction, input_text, option)
            option_ids.append(self.encode(completion))
        calls = 0

        async def top(ids: list[int]) -> dict[int, float]:
            nonlocal calls
            calls += 1
            return await self._top_logprobs(target, ids)

        scores = await score_options(prompt_ids, option_ids, top)
        usage.add({"prompt_tokens": len(prompt_ids) * calls, "completion_tokens": calls})
        best = max(range(len(options)), key=lambda i: (scores[i], -i))
        return dict(answer=options[best], answer_index=best, method="logprob",
                    scores={o: round(s, 4) for o, s in zip(options, scores, strict=True)},
                    raw_text=options[best])

    # ---- /extract ------------------------------------------------------------------------
    async def extract(self, req: ExtractRequest, caller: Caller, state: Any = None) -> ExtractResponse:
        started = time.perf_counter()
        ent_prompt = self.encode(render_prompt(self.tokenizer, TaskFamily.IE, *entity_task(req.text, req.entity_types)))
        ent_budget = self.budget(ent_prompt, req.max_tokens, 384)
        rel_prompt: list[int] | None = None
        if req.relations:
            rel_prompt = self.encode(render_prompt(self.tokenizer, TaskFamily.IE,
                                                   *relation_task(req.text, req.relation_types)))
            rel_budget = self.budget(rel_prompt, req.max_tokens, 256)
        async with self.serving(req.adapter, TaskFamily.IE, self.settings.extract_adapter, caller, state) as target:
            calls = [self.complete(target, ent_prompt, max_tokens=ent_budget)]
            if rel_prompt is not None:
                calls.append(self.complete(target, rel_prompt, max_tokens=rel_budget))
            outs = await asyncio.gather(*calls)
        usage = Usage()
        for out in outs:
            usage.add(out.get("usage"))
        raw = outs[0]["choices"][0]["text"]
        entities, dropped = parse_entities(raw, req.text, req.entity_types)
        relations = None
        if rel_prompt is not None:
            raw_rel = outs[1]["choices"][0]["text"]
            rels, rel_dropped = parse_relations(raw_rel, req.text, req.relation_types)
            dropped += rel_dropped
            types = {(e.start, e.end): e.type for e in entities}
            relations = [
                RelationOut(
                    head=EntityOut(text=r.head, type=types.get((r.head_start, r.head_end), "Entity"),
                                   start=r.head_start, end=r.head_end),
                    type=r.type,
                    tail=EntityOut(text=r.tail, type=types.get((r.tail_start, r.tail_end), "Entity"),
                                   start=r.tail_start, end=r.tail_end),
                )
                for r in rels
            ]
            raw = raw + "\n---\n" + raw_rel
        self.observe("extract", target, usage)
        return ExtractResponse(
            entities=[EntityOut(text=e.text, type=e.type, start=e.start, end=e.end) for e in entities],
            relations=relations, dropped=dropped, raw_text=raw, **self.served(target, usage, started),
        )

    # ---- /generate -----------------------------------------------------------------------
    def _generate_prep(self, req: GenerateRequest, caller: Caller):
        family = classify_family(req.instruction, req.input)
        prompt_ids = self.encode(render_prompt(self.tokenizer, family, req.instruction, req.input))
        max_tokens = self.budget(prompt_ids, req.max_tokens, 256)
        params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": req.temperature, "top_p": req.top_p}
        if req.stop:
            params["stop"] = req.stop
        return family, prompt_ids, params

    async def generate(self, req: GenerateRequest, caller: Caller, state: Any = None) -> GenerateResponse:
        started = time.perf_counter()
        family, prompt_ids, params = self._generate_prep(req, caller)
        async with self.serving(req.adapter, family, self.settings.generate_adapter, caller, state) as target:
            out = await self.complete(target, prompt_ids, **params)
        usage = Usage().add(out.get("usage"))
        choice = out["choices"][0]
        self.observe("generate", target, usage)
        return GenerateResponse(text=choice["text"], finish_reason=choice.get("finish_reason"),
                                family=family.value, **self.served(target, usage, started))

    async def generate_stream(self, req: GenerateRequest, caller: Caller, state: Any = None) -> AsyncIterator[bytes]:
        """Open the stream (errors surface as a real status), then yield SSE events."""
        started = time.perf_counter()
        family, prompt_ids, params = self._generate_prep(req, caller)
        stack = AsyncExitStack()
        try:
            target = await stack.enter_async_context(
                self.serving(req.adapter, family, self.settings.generate_adapter, caller, state))
            body = {"model": target.model, "prompt": prompt_ids, "stream": True,
                    "stream_options": {"include_usage": True}, **params}
            events = self.client.stream_events("/v1/completions", body)
            first = await anext(events, None)
        except BaseException:
            await stack.aclose()
            raise

        async def sse() -> AsyncIterator[bytes]:
            usage, finish, first_token_at = Usage(), None, None
            try:
                event = first
                while event is not None:
                    for choice in event.get("choices") or []:
                        if choice.get("text"):
                            if first_token_at is None:
                                first_token_at = time.perf_counter()
                                self.metrics.ttft.labels(route="generate", adapter=target.label).observe(
                                    first_token_at - started)
                            yield _sse({"text": choice["text"]})
                        finish = choice.get("finish_reason") or finish
                    if event.get("usage"):
                        usage = Usage().add(event["usage"])
                    event = await anext(events, None)
                self.observe("generate", target, usage)
                done = {"done": True, "finish_reason": finish, "family": family.value,
                        **self.served(target, usage, started)}
                done["usage"] = usage.model_dump()
                yield _sse(done)
                yield b"data: [DONE]\n\n"
            except APIError as exc:
                yield _sse({"error": {"message": exc.message, "type": "engine_error", "code": exc.code}})
            finally:
                await events.aclose()
                await stack.aclose()

        return sse()


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"

