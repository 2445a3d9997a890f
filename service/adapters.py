"""The adapter lifecycle in one replica: reconcile the engine to the registry, route, drain.

The registry says which version(s) each alias should serve (one, or a weighted split for a
canary). For every change this replica validates the new versions; if the alias is warm
here (preloaded, or serving traffic) it also loads and warms them in vLLM as
`<name>@<version>` before the flip, so a busy alias never pays a cold start. Then the alias
flips (new requests resolve to the new route from that instant), requests still running on
a version that left the route finish, and that version is unloaded. A version that fails
any step never becomes visible: the old route keeps serving and the failure is reported.

Adapters are loaded where they are asked for: an alias that no request has used on this
replica is only validated, and its first request loads it. At most `capacity` versions are
resident (the engine's LoRA cache); beyond it the least recently used one that no request
holds is unloaded. Readiness depends on the engine, one good read of the registry, and the
preloaded aliases (the route defaults), not on how many aliases exist.

Changes by other processes (a training run publishing, another replica's admin call) are
picked up by polling the registry every `poll_interval_s`. A registry that cannot be read
is reported (readiness warning, a metric); past `stale_after_s` the replica stops claiming
to serve the registry's current state (readiness fails) while it keeps answering.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from bioinstruct.adapter_files import AdapterLimits
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.model import BaseModelInfo
from bioinstruct.registry import NotFound, Registry, RegistryError, RegistryUnavailable, parse_ref
from bioinstruct.service.engine_client import EngineClient
from bioinstruct.service.errors import APIError
from bioinstruct.service.metrics import Metrics
from bioinstruct.service.model_server_protocol import LoraState

log = logging.getLogger("bioinstruct.adapters")

BASE = "base"
AUTO = "auto"
Split = tuple[tuple[str, int], ...]  # ((ref, weight), ...) with weight > 0


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


def pick(split: Split, sticky: str | None, alias: str) -> str:
    """One version of a weighted split: by the caller's sticky key when given (the same key
    gets the same version while the split stands), else at random by weight."""
    if len(split) == 1:
        return split[0][0]
    total = sum(w for _, w in split)
    if sticky:
        digest = hashlib.sha256(f"{alias}\0{sticky}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") % total
    else:
        point = random.randrange(total)
    for ref, weight in split:
        if point < weight:
            return ref
        point -= weight
    return split[-1][0]


class AdapterManager:
    def __init__(
        self,
        registry: Registry,
        client: EngineClient,
        base: BaseModelInfo,
        *,
        limits: AdapterLimits,
        capacity: int,
        metrics: Metrics,
        preload: list[str] | None = None,
        drain_timeout_s: float = 300.0,
        stale_after_s: float = 60.0,
        base_name: str = BASE,
        engine_resolves: bool = False,
    ) -> None:
        self.registry = registry
        self.client = client
        self.base = base
        self.limits = limits
        self.capacity = max(capacity, 1)
        self.metrics = metrics
        self.preload = set(preload or [])
        self.drain_timeout_s = drain_timeout_s
        self.stale_after_s = stale_after_s
        self.base_name = base_name
        # The engine resolves `name@version` from this same registry (our vLLM plugin's LoRA
        # resolver): the first request for a version loads it there, no load call needed.
        self.engine_resolves = engine_resolves
        self.splits: dict[str, Split] = {}  # alias -> route now serving it
        self.desired: dict[str, Split] = {}  # alias -> route the registry asks for
        self.loaded: set[str] = set()  # refs resident in the engine
        self.warm: set[str] = set()  # refs this replica keeps resident (preloaded or used)
        self.verified: set[str] = set()  # refs whose files passed every check
        self.synced = False  # a reconcile pass completed since the engine (re)started
        self.unreadable: dict[str, str] = {}  # alias -> what is wrong with its registry record
        self.registry_error: str | None = None
        self.registry_ok_at: float | None = None  # monotonic time of the last good read
        self.registry_failing_since: float | None = None
        self.inflight: collections.Counter[str] = collections.Counter()
        self.last_used: dict[str, float] = {}
        self.failed: dict[str, str] = {}  # ref -> why it was refused (validation: permanent)
        self.alias_errors: dict[str, str] = {}
        self.loading: collections.Counter[str] = collections.Counter()  # ref -> requests waiting for its load
        self.events: collections.deque[SwapEvent] = collections.deque(maxlen=100)
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        metrics.registry_stale.set_function(self.registry_stale_s)

    @property
    def routes(self) -> dict[str, str]:
        """alias -> the version with the most weight in its route (what listings show)."""
        return {alias: max(split, key=lambda rw: rw[1])[0] for alias, split in self.splits.items()}

    # ---- resolution ----------------------------------------------------------------------
    def resolve(self, spec: str, family: TaskFamily | None = None, *, base_if_unpublished: bool = False,
                sticky: str | None = None) -> Target:
        """Map an adapter spec to an engine model. Sync: no await between this and lease().

        base_if_unpublished: an alias never published answers from base instead of 404 (only for a
        route's default, when the caller named no adapter)."""
        if spec == AUTO:
            alias = (family or TaskFamily.GEN).default_alias
            if alias in self.splits:
                return self._alias_target(alias, AUTO, sticky)
            return Target(self.base_name, AUTO)
        if spec in (BASE, self.base_name):
            return Target(self.base_name, spec)
        if "@" in spec:
            name, version = parse_ref(spec)
            if f"{name}@{version}" in self.failed:
                raise APIError(400, f"{spec} was refused: {self.failed[f'{name}@{version}']}",
                               param="adapter", code="invalid_adapter")
            return Target(f"{name}@{version}", spec, name, version)
        if spec in self.splits:
            return self._alias_target(spec, spec, sticky)
        if spec in self.desired:
            why = self.alias_errors.get(spec, "it is still loading")
            raise APIError(503, f"alias {spec!r} is not serving yet: {why}", param="adapter",
                           code="adapter_not_ready", headers={"Retry-After": "2"})
        if base_if_unpublished:
            return Target(self.base_name, spec)
        known = ", ".join(["base", "auto", *sorted(self.splits)])
        raise APIError(404, f"unknown adapter {spec!r}; use one of: {known}, or a pinned version "
                       "<name>@<version> (GET /v1/models lists them)", param="adapter", code="adapter_not_found")

    def _alias_target(self, alias: str, requested: str, sticky: str | None) -> Target:
        ref = pick(self.splits[alias], sticky, alias)
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
                await self._load_on_demand(target)
            self.last_used[target.model] = time.monotonic()
            if state is not None:
                state.adapter = target.label
            if target.alias is not None:
                self.metrics.alias_requests.labels(alias=target.alias, version=str(target.version)).inc()
            yield target
        finally:
            self.inflight[target.model] -= 1
            if self.inflight[target.model] <= 0:
                del self.inflight[target.model]

    async def _load_on_demand(self, target: Target) -> None:
        """The first request for a version on this replica loads it (the lease already holds it,
        so making room never evicts it)."""
        self.loading[target.model] += 1
        try:
            await self._load_locked(target)
        finally:
            self.loading[target.model] -= 1
            if self.loading[target.model] <= 0:
                del self.loading[target.model]

    async def _load_locked(self, target: Target) -> None:
        async with self._lock:
            if target.model in self.loaded:
                return
            try:
                await self._load(target.model)
            except NotFound as exc:
                raise APIError(404, exc.message, param="adapter", code="adapter_not_found") from exc
            except RegistryUnavailable as exc:
                raise APIError(503, f"{target.model} could not be loaded: {exc.message}", param="adapter",
                               code=exc.code, headers={"Retry-After": "2"}) from exc
            except RegistryError as exc:
                self.failed[target.model] = exc.message
                raise APIError(400, f"{target.model} was refused: {exc.message}", param="adapter",
                               code=exc.code) from exc
            self.warm.add(target.model)
            await self._make_room()

    # ---- loading -------------------------------------------------------------------------
    async def _verify(self, ref: str) -> str:
        """Checksums, base model, rank and layers; returns the local folder."""
        name, version = parse_ref(ref)
        _, folder = await asyncio.to_thread(
            self.registry.verify, name, version,
            base_fingerprint=self.base.fingerprint, limits=self.limits,
        )
        self.verified.add(ref)
        return str(folder)

    async def _load(self, ref: str) -> None:
        """Validate, load and warm one version. Caller holds the lock."""
        started = time.monotonic()
        folder = await self._verify(ref)
        warm = {"model": ref, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
        if not self.engine_resolves:
            await self.client.load_lora(ref, folder)
        try:
            # Warm: the first request pays for moving weights into the engine's LoRA cache (and,
            # with the engine's resolver, for loading the version at all).
            try:
                await self.client.post("/v1/completions", warm, timeout=120)
            except APIError as exc:
                if not (self.engine_resolves and exc.status == 404):
                    raise
                log.warning("the engine's resolver did not load %s (%s); loading it directly", ref, exc.message)
                await self.client.load_lora(ref, folder)
                await self.client.post("/v1/completions", warm, timeout=120)
        except APIError:
            await self.client.unload_lora(ref)
            raise
        self.loaded.add(ref)
        self.metrics.adapter_resident.labels(adapter=ref).set(1)
        self.metrics.adapter_load_seconds.observe(time.monotonic() - started)

    async def _unload(self, ref: str) -> None:
        # Not "loaded" from before the await: a request resolving meanwhile must load it again
        # (under the lock, after this), never lease a version that is being unloaded.
        self.loaded.discard(ref)
        self.warm.discard(ref)
        try:
            await self.client.unload_lora(ref)
        except APIError:
            self.loaded.add(ref)
            raise
        self.metrics.adapter_resident.labels(adapter=ref).set(0)

    async def _make_room(self) -> None:
        """At most `capacity` versions resident: unload the least recently used that no request
        holds, versions outside every route and not preloaded first. Caller holds the lock."""
        while len(self.loaded) > self.capacity:
            # Chosen afresh before each unload: a request may lease a version while one awaits.
            routed = {ref for split in self.splits.values() for ref, _ in split}
            keep = {ref for alias in self.preload for ref, _ in self.splits.get(alias, ())}
            candidates = sorted((r for r in self.loaded if not self.inflight.get(r) and r not in keep),
                                key=lambda r: (r in routed, self.last_used.get(r, 0.0)))
            if not candidates:
                return
            ref = candidates[0]
            try:
                await self._unload(ref)
            except APIError as exc:
                log.warning("could not unload %s to make room: %s", ref, exc.message)
                return

    # ---- reconciliation ------------------------------------------------------------------
    def registry_stale_s(self) -> float:
        """Seconds since the registry was last read successfully (0 while it reads fine)."""
        if self.registry_failing_since is None:
            return 0.0
        return time.monotonic() - (self.registry_ok_at or self.registry_failing_since)

    def _registry_failed(self, exc: Exception) -> None:
        message = exc.message if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {exc}"
        if self.registry_failing_since is None:
            self.registry_failing_since = time.monotonic()
            log.error("registry unreadable; serving the last good state: %s", message)
        self.registry_error = message
        self.metrics.reconcile_failures.inc()

    async def reconcile(self) -> list[SwapEvent]:
        """Bring this replica to the registry's state. Safe to call often and concurrently.
        A registry that cannot be read changes nothing here (it is recorded, not raised)."""
        async with self._lock:
            try:
                aliases, unreadable = await asyncio.to_thread(self.registry.read_aliases)
            except (RegistryUnavailable, OSError) as exc:
                self._registry_failed(exc)
                return []
            self.registry_ok_at = time.monotonic()
            self.registry_failing_since = None
            self.registry_error = None
            self.desired = {alias: tuple((ref, w) for ref, w in rec.split if w > 0)
                            for alias, rec in aliases.items()}
            # A damaged alias record keeps its last good route serving (never silently base).
            for alias in unreadable:
                if alias in self.splits:
                    self.desired[alias] = self.splits[alias]
            self.unreadable = unreadable
            self.metrics.unreadable_aliases.set(len(unreadable))
            engine_has = await self.client.lora_names()
            lost = self.loaded - engine_has
            if lost:  # the engine restarted: what we had loaded is gone (and stays warm: reloaded below)
                log.warning("engine lost adapters %s; reloading", sorted(lost))
                for ref in lost:
                    self.metrics.adapter_resident.labels(adapter=ref).set(0)
            self.loaded &= engine_has
            events: list[SwapEvent] = []
            for alias, split in sorted(self.desired.items()):
                hot = self._hot(alias, split)
                if self.splits.get(alias) == split and not (hot - self.loaded):
                    continue
                if any(ref in self.failed for ref, _ in split):
                    continue  # already refused; the alias keeps its old route
                event = await self._swap(alias, split, hot)
                if event:
                    events.append(event)
            for alias in [a for a in self.splits if a not in self.desired]:
                old = self.splits.pop(alias)
                for ref, _ in old:
                    self._retire_later(ref)
            self.metrics.aliases.set(len(self.splits))
            self.synced = True
            return events

    def _hot(self, alias: str, split: Split) -> set[str]:
        """The refs of `split` to have resident before the flip: all of them for a preloaded
        alias or one this replica is serving from a resident version, none otherwise."""
        current = {ref for ref, _ in self.splits.get(alias, ())}
        if alias in self.preload or current & self.warm or {ref for ref, _ in split} & self.warm:
            return {ref for ref, _ in split}
        return set()

    async def _swap(self, alias: str, split: Split, hot: set[str]) -> SwapEvent | None:
        old_split = self.splits.get(alias, ())
        old = ",".join(ref for ref, _ in old_split) or None
        new = ",".join(f"{ref}={w}" if len(split) > 1 else ref for ref, w in split)
        started = time.monotonic()
        try:
            for ref, _ in split:
                if ref in hot and ref not in self.loaded:
                    await self._load(ref)
                    self.warm.add(ref)
                elif ref not in self.verified:
                    await self._verify(ref)
        except RegistryUnavailable as exc:
            self.alias_errors[alias] = f"{new} not checked: {exc.message}"
            return self._record(alias, old, new, started, exc.message)
        except RegistryError as exc:
            bad = next((ref for ref, _ in split if ref not in self.verified), new)
            self.failed[bad] = exc.message
            self.alias_errors[alias] = f"{bad} refused: {exc.message}"
            return self._record(alias, old, new, started, exc.message)
        except APIError as exc:
            # The engine is restarting or refused the load: try again on the next pass.
            self.alias_errors[alias] = f"{new} not loaded: {exc.message}"
            return self._record(alias, old, new, started, exc.message)
        self.splits[alias] = split  # the flip: requests resolving from now on get the new route
        self.alias_errors.pop(alias, None)
        for ref, _ in old_split:
            if ref not in {r for r, _ in split}:
                self._retire_later(ref)
        await self._make_room()
        if old == new:
            return None  # reloaded after an engine restart: not a swap
        return self._record(alias, old, new, started, None)

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
            if any(ref == r for split in self.splits.values() for r, _ in split) or self.inflight.get(ref):
                return
            self.warm.discard(ref)
            if ref not in self.loaded:
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
    def lora_state(self) -> LoraState:
        """Resident and loading versions with the aliases routed to each (the names requests use)."""
        by_ref: dict[str, list[str]] = collections.defaultdict(list)
        for alias, split in self.splits.items():
            for ref, _ in split:
                by_ref[ref].append(alias)
        return LoraState(resident={ref: by_ref.get(ref, []) for ref in self.loaded},
                         loading={ref: by_ref.get(ref, []) for ref in self.loading if ref not in self.loaded},
                         max_lora=self.capacity)

    def warnings(self) -> list[str]:
        """What is wrong but still served: readiness reports it without failing."""
        out = [f"alias {a}: registry record {why}; serving its last good version "
               f"{self.routes.get(a) or '(none: the alias is not served)'}"
               for a, why in sorted(self.unreadable.items())]
        out += [f"alias {a} not served here: {why}" for a, why in sorted(self.alias_errors.items())
                if a not in self.preload]
        if self.registry_error is not None:
            out.append(f"registry unreadable for {self.registry_stale_s():.0f} s (degraded; serving the last "
                       f"good alias state): {self.registry_error}")
        return out

    def ready(self) -> tuple[bool, list[str]]:
        if not self.synced:  # before the first pass, `desired` is not known: no alias would count
            why = f": {self.registry_error}" if self.registry_error else ""
            return False, [f"adapters not reconciled with the registry yet{why}"]
        problems = []
        stale = self.registry_stale_s()
        if self.registry_error is not None and stale > self.stale_after_s:
            problems.append(f"registry unreadable for {stale:.0f} s (more than {self.stale_after_s:g} s): this "
                            f"replica no longer claims to serve the current alias state: {self.registry_error}")
        for alias in sorted(self.preload & set(self.desired)):
            split = self.splits.get(alias)
            if split is None or any(ref not in self.loaded for ref, _ in split):
                why = self.alias_errors.get(alias, "loading")
                problems.append(f"alias {alias} ({','.join(r for r, _ in self.desired[alias])}) not loaded: {why}")
        return not problems, problems
