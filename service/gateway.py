"""The gateway's core: wiring, lifecycle, and the one way into the engine.

One Gateway per app: the engine supervisor, the adapter manager, admission control,
metrics, and the base model's tokenizer (prompts are rendered with the shared `instruct`
format and sent to the engine as token ids, exactly as training saw them). Every inference
route enters the engine through `serving()`; what each route does around it lives in its
serving class (service/serving/), built here at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bioinstruct.instruct.families import TaskFamily
from bioinstruct.model import BaseModelInfo, inspect_base_model
from bioinstruct.publishing import PublishTarget
from bioinstruct.registry import open_registry
from bioinstruct.service.adapters import AdapterManager, Target
from bioinstruct.service.admission import Admission
from bioinstruct.service.auth import Caller
from bioinstruct.service.engine import EngineProcess, EngineSettings
from bioinstruct.service.errors import APIError
from bioinstruct.service.metrics import Metrics
from bioinstruct.service.model_server_protocol import EngineSnapshot
from bioinstruct.service.protocol import Usage
from bioinstruct.service.serving import Servings
from bioinstruct.service.settings import ServiceSettings
from bioinstruct.service.supervisor import EngineSupervisor
from bioinstruct.settings import CoreSettings

log = logging.getLogger("bioinstruct.service")



class Gateway:
    servings: Servings  # the per-route serving objects, built in start()

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
        # What every adapter this gateway publishes, verifies or loads must fit.
        self.publish_target = PublishTarget.of(self.base, self.engine_settings)
        self.adapter_limits = self.publish_target.limits
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
        # Built once, before the app takes requests; routes reach them through service/deps.py.
        self.servings = Servings.build(self)
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
