"""The adapter lifecycle in one replica: reconcile the engine to the registry, route, drain.

The registry says which version each alias should serve. For every change this replica
validates the new version, loads it into vLLM as `<name>@<version>`, warms it, flips the
alias (new requests resolve to it from that instant), waits until requests still running
on the old version have finished, then unloads the old one. A version that fails any step
never becomes visible: the old one keeps serving and the failure is reported.

Changes by other processes (a training run publishing, another replica's admin call) are
picked up by polling the registry every `poll_interval_s` (alias files are tiny).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from bioinstruct.instruct.families import TaskFamily
from bioinstruct.service.engine_client import EngineClient
from bioinstruct.service.errors import APIError
from bioinstruct.service.metrics import Metrics

from bioinstruct.adapter_files import AdapterLimits
from bioinstruct.model import BaseModelInfo
from bioinstruct.registry import NotFound, Registry, RegistryError, parse_ref

log = logging.getLogger("bioinstruct.adapters")

BASE = "base"
AUTO = "auto"


@dataclass(frozen=True)
class Target:
    """What one request runs on."""

    model: str  # the engine's model name: "base" or "<name>@<version>"
    requested: str  # what the caller asked for (alias, pinned ref, base, auto)
    name: str | None = None
    version: int | None = None
    alias: str | None = None

    @property
    def label(self) -> str:
        """Metric label: the alias or pinned ref, bounded in number."""
        return self.alias or (self.model if self.name else BASE)


@dataclass
class SwapEvent:
    alias: str
    old: str | None
    new: str
    ok: bool
    seconds: float
    at: float = field(default_factory=time.time)
    error: str | None = None


class AdapterManager:
    def __init__(
        self,
        registry: Registry,
        client: EngineClient,
        base: BaseModelInfo,
        *,
        limits: AdapterLimits,
        pinned_capacity: int,
        metrics: Metrics,
        drain_timeout_s: float = 300.0,
        base_name: str = BASE,
    ) -> None:
        self.registry = registry
        self.client = client
        self.base = base
        self.limits = limits
        self.pinned_capacity = max(pinned_capacity, 1)
        self.metrics = metrics
        self.drain_timeout_s = drain_timeout_s
        self.base_name = base_name
        self.routes: dict[str, str] = {}  # alias -> ref now serving it
        self.desired: dict[str, str] = {}  # alias -> ref the registry asks for
        self.loaded: set[str] = set()  # refs resident in the engine
        self.synced = False  # a reconcile pass completed since the engine (re)started
        self.unreadable: dict[str, str] = {}  # alias -> what is wrong with its registry file
        self.inflight: collections.Counter[str] = collections.Counter()
        self.last_used: dict[str, float] = {}
        self.failed: dict[str, str] = {}  # ref -> why it was refused (validation: permanent)
        self.alias_errors: dict[str, str] = {}
        self.events: collections.deque[SwapEvent] = collections.deque(maxlen=100)
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()

    # ---- resolution ----------------------------------------------------------------------
    def resolve(self, spec: str, family: TaskFamily | None = None, *, base_if_unpublished: bool = False) -> Target:
        """Map an adapter spec to an engine model. Sync: no await between this and lease().

        base_if_unpublished: an alias never published answers from base instead of 404 (only for a
        route's default, when the caller named no adapter)."""
        if spec == AUTO:
            alias = (family or TaskFamily.GEN).default_alias
            if alias in self.routes:
                return self._alias_target(alias, AUTO)
            return Target(self.base_name, AUTO)
        if spec in (BASE, self.base_name):
            return Target(self.base_name, spec)
        if "@" in spec:
            name, version = parse_ref(spec)
            if f"{name}@{version}" in self.failed:
                raise APIError(400, f"{spec} was refused: {self.failed[f'{name}@{version}']}",
                               param="adapter", code="invalid_adapter")
            return Target(f"{name}@{version}", spec, name, version)
        if spec in self.routes:
            return self._alias_target(spec, spec)
        if spec in self.desired:
            why = self.alias_errors.get(spec, "it is still loading")
            raise APIError(503, f"alias {spec!r} is not serving yet: {why}", param="adapter",
                           code="adapter_not_ready", headers={"Retry-After": "2"})
        if base_if_unpublished:
            return Target(self.base_name, spec)
        known = ", ".join(["base", "auto", *sorted(self.routes)])
        raise APIError(404, f"unknown adapter {spec!r}; use one of: {known}, or a pinned version "
                       "<name>@<version> (GET /v1/models lists them)", param="adapter", code="adapter_not_found")

    def _alias_target(self, alias: str, requested: str) -> Target:
        ref = self.routes[alias]
        name, version = parse_ref(ref)
        return Target(ref, requested, name, version, alias)

    @contextlib.asynccontextmanager
    async def lease(self, target: Target, state: Any = None) -> AsyncIterator[Target]:
        """Hold a version for one request: it is not unloaded until every lease is released.
        `state` (the request's) gets the metrics label only now, once the version is known to
        exist: caller-chosen `name@version` strings never become Prometheus label values."""
        self.inflight[target.model] += 1
        try:
            if target.name is not None and target.model not in self.loaded:
                await self._load_pinned(target)
            self.last_used[target.model] = time.monotonic()
            if state is not None:
                state.adapter = target.label
            yield target
        finally:
            self.inflight[target.model] -= 1
            if self.inflight[target.model] <= 0:
                del self.inflight[target.model]

    async def _load_pinned(self, target: Target) -> None:
        assert target.name is not None and target.version is not None
        async with self._lock:
            if target.model in self.loaded:
                return
            try:
                await self._load(target.model)
            except NotFound as exc:
                raise APIError(404, exc.message, param="adapter", code="adapter_not_found") from exc
            except RegistryError as exc:
                self.failed[target.model] = exc.message
                raise APIError(400, f"{target.model} was refused: {exc.message}", param="adapter",
                               code=exc.code) from exc
            await self._evict_pinned()

    # ---- loading -------------------------------------------------------------------------
    async def _load(self, ref: str) -> None:
        """Validate, load and warm one version. Caller holds the lock."""
        name, version = parse_ref(ref)
        _, folder = await asyncio.to_thread(
            self.registry.verify, name, version,
            base_fingerprint=self.base.fingerprint, limits=self.limits,
        )
        await self.client.load_lora(ref, str(folder))
        try:
            # Warm: the first request pays for moving weights into the engine's LoRA cache.
            await self.client.post("/v1/completions", {"model": ref, "prompt": "Hello", "max_tokens": 1,
                                                       "temperature": 0}, timeout=120)
        except APIError:
            await self.client.unload_lora(ref)
            raise
        self.loaded.add(ref)
        self.metrics.adapter_resident.labels(adapter=ref).set(1)

    async def _unload(self, ref: str) -> None:
        # Not "loaded" from before the await: a request resolving meanwhile must load it again
        # (under the lock, after this), never lease a version that is being unloaded.
        self.loaded.discard(ref)
        try:
            await self.client.unload_lora(ref)
        except APIError:
            self.loaded.add(ref)
            raise
        self.metrics.adapter_resident.labels(adapter=ref).set(0)

    async def _evict_pinned(self) -> None:
        """Keep at most pinned_capacity versions loaded that no alias serves (least recent first)."""
        serving = set(self.routes.values())
        extra = sorted((r for r in self.loaded if r not in serving and not self.inflight.get(r)),
                       key=lambda r: self.last_used.get(r, 0.0))
        while len([r for r in self.loaded if r not in serving]) > self.pinned_capacity and extra:
            await self._unload(extra.pop(0))

    # ---- reconciliation ------------------------------------------------------------------
    async def reconcile(self) -> list[SwapEvent]:
        """Bring this replica to the registry's state. Safe to call often and concurrently."""
        async with self._lock:
            aliases, unreadable = await asyncio.to_thread(self.registry.read_aliases)
            self.desired = {alias: rec.target for alias, rec in aliases.items()}
            # A damaged alias file keeps its last good version serving (never silently base).
            for alias in unreadable:
                if alias in self.routes:
                    self.desired[alias] = self.routes[alias]
            self.unreadable = unreadable
            self.metrics.unreadable_aliases.set(len(unreadable))
            engine_has = await self.client.lora_names()
            lost = self.loaded - engine_has
            if lost:  # the engine restarted: what we had loaded is gone
                log.warning("engine lost adapters %s; reloading", sorted(lost))
                for ref in lost:
                    self.metrics.adapter_resident.labels(adapter=ref).set(0)
            self.loaded &= engine_has
            events: list[SwapEvent] = []
            for alias, ref in sorted(self.desired.items()):
                if self.routes.get(alias) == ref and ref in self.loaded:
                    continue
                if ref in self.failed:
                    continue  # already refused; the alias keeps its old version
                event = await self._swap(alias, ref)
                if event:
                    events.append(event)
            for alias in [a for a in self.routes if a not in self.desired]:
                old = self.routes.pop(alias)
                self._retire_later(old)
            self.metrics.aliases.set(len(self.routes))
            self.synced = True
            return events

    async def _swap(self, alias: str, ref: str) -> SwapEvent | None:
        old = self.routes.get(alias)
        started = time.monotonic()
        try:
            if ref not in self.loaded:
                await self._load(ref)
        except RegistryError as exc:
            self.failed[ref] = exc.message
            self.alias_errors[alias] = f"{ref} refused: {exc.message}"
            return self._record(alias, old, ref, started, exc.message)
        except APIError as exc:
            # The engine is restarting or refused the load: try again on the next pass.
            self.alias_errors[alias] = f"{ref} not loaded: {exc.message}"
            return self._record(alias, old, ref, started, exc.message)
        self.routes[alias] = ref  # the flip: requests resolving from now on get the new version
        self.alias_errors.pop(alias, None)
        if old and old != ref:
            self._retire_later(old)
        return self._record(alias, old, ref, started, None)

    def _record(self, alias, old, new, started, error) -> SwapEvent:
        seconds = time.monotonic() - started
        event = SwapEvent(alias, old, new, error is None, seconds, error=error)
        self.events.append(event)
        self.metrics.swaps.labels(alias=alias, result="ok" if error is None else "failed").inc()
        if error is None:
            self.metrics.swap_seconds.observe(seconds)
            log.info("alias %s: %s -> %s in %.3f s", alias, old, new, seconds)
        else:
            log.error("alias %s: %s refused, %s keeps serving: %s", alias, new, old, error)
        return event

    def _retire_later(self, ref: str) -> None:
        task = asyncio.create_task(self._retire(ref), name=f"retire-{ref}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def retire(self, ref: str) -> None:
        await self._retire(ref)

    async def _retire(self, ref: str) -> None:
        """Drain: wait for requests still on `ref`, then unload it unless it serves again."""
        deadline = time.monotonic() + self.drain_timeout_s
        while self.inflight.get(ref) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        async with self._lock:
            if ref in self.routes.values() or self.inflight.get(ref):
                return
            try:
                await self._unload(ref)
            except APIError as exc:
                log.warning("could not unload %s: %s", ref, exc.message)

    async def drained(self) -> None:
        """Wait for pending retirements (tests, shutdown)."""
        while self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)

    def on_engine_down(self) -> None:
        self.loaded.clear()
        self.synced = False

    # ---- status --------------------------------------------------------------------------
    def warnings(self) -> list[str]:
        """What is wrong but still served: readiness reports it without failing."""
        return [f"alias {a}: registry file {why}; serving its last good version "
                f"{self.routes.get(a) or '(none: the alias is not served)'}" for a, why in sorted(self.unreadable.items())]

    def ready(self) -> tuple[bool, list[str]]:
        if not self.synced:  # before the first pass, `desired` is not known: no alias would count
            return False, ["adapters not reconciled with the registry yet"]
        problems = []
        for alias, ref in self.desired.items():
            serving = self.routes.get(alias)
            if serving is None or serving not in self.loaded:
                problems.append(f"alias {alias} ({ref}) not loaded: {self.alias_errors.get(alias, 'loading')}")
        return not problems, problems
