"""Keeps an engine up: starts it (or attaches to one), watches it, restarts it when it dies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bioinstruct.service.engine import EngineProcess, EngineSettings, EngineStartError
from bioinstruct.service.engine_client import EngineClient

log = logging.getLogger("bioinstruct.engine")


class EngineSupervisor:
    """State: starting -> ready -> (down -> restarting -> ready)* -> stopped; or failed."""

    def __init__(
        self,
        model_dir: Path | None,
        settings: EngineSettings | None = None,
        *,
        external_url: str | None = None,
        process: EngineProcess | None = None,
        restart: bool = True,
        request_timeout_s: float = 600.0,
        connect_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings or EngineSettings()
        self.external_url = external_url
        self._owns_process = process is None and external_url is None
        if process is None and external_url is None:
            assert model_dir is not None
            process = EngineProcess(model_dir, self.settings)
        self.process = process
        self.restart_enabled = restart
        self.state = "starting"
        self.last_error: str | None = None
        self.restarts = 0
        self.on_down: list[Callable[[], None]] = []
        self.on_up: list[Callable[[], Awaitable[None]]] = []
        self._monitor: asyncio.Task | None = None
        self._stopping = False
        self._generation = -1  # the process generation this supervisor brought up
        self._failures = self._refused = self._silent = 0  # consecutive bad health answers
        base_url = external_url or process.base_url  # type: ignore[union-attr]
        self.client = EngineClient(base_url, timeout_s=request_timeout_s, connect_timeout_s=connect_timeout_s)

    @property
    def base_url(self) -> str:
        return self.client.base_url

    @property
    def current_state(self) -> str:
        """`state`, except that an engine that died since the last watch tick (≤ 0.5 s ago)
        already counts as down: readiness must never report a dead engine as ready."""
        if self.state == "ready" and self.process is not None and not self._alive():
            return "down"
        return self.state

    def _alive(self) -> bool:
        """The process this supervisor brought up still runs. A process restarted by another
        watcher is a new engine: what was loaded into the old one (adapters) is gone."""
        assert self.process is not None
        return (self.process.running and self.process.generation == self._generation
                and not self.process.server_exited())

    @property
    def public_error(self) -> str | None:
        """last_error for unauthenticated callers (health routes): its first sentence, without
        the engine's log path or log lines (those go to the gateway's log)."""
        if not self.last_error:
            return None
        return self.last_error.split(" Last log lines", 1)[0].split("\n", 1)[0][:300]

    @property
    def ready(self) -> bool:
        return self.current_state == "ready"

    async def start(self) -> None:
        """Start (or attach) and wait until healthy; then watch in the background."""
        try:
            await self._bring_up()
        except EngineStartError as exc:
            self.state, self.last_error = "failed", str(exc)
            raise
        self._monitor = asyncio.create_task(self._watch(), name="engine-watch")

    async def _bring_up(self) -> None:
        if self.process is not None:
            if not self.process.running:
                self.process.start()
            generation = self.process.generation
            if not await self.client.healthy():
                await asyncio.to_thread(self.process.wait_healthy)
            self._generation = generation
        else:
            deadline = time.monotonic() + self.settings.startup_timeout_s
            while not await self.client.healthy():
                if time.monotonic() > deadline:
                    raise EngineStartError(f"external engine {self.external_url} not healthy in time")
                await asyncio.sleep(1.0)
        for callback in self.on_up:
            try:
                await callback()
            except Exception:  # noqa: BLE001 - a failing callback must not stop the watchdog
                log.exception("engine start-up callback failed; the registry poll retries it")
        # Ready only once the callbacks (adapter reload) ran: readiness must not report an
        # engine whose aliases are not back yet.
        self.state = "ready"
        self.last_error = None

    async def _watch(self) -> None:
        self._failures = self._refused = self._silent = 0
        ticks = 0
        while not self._stopping:
            await asyncio.sleep(0.5)
            if self._stopping:
                break
            ticks += 1
            try:
                reason = await self._check(health_probe=ticks % 4 == 0)
                if reason is not None:
                    await self._handle_down(reason)
                    if self.state == "failed":
                        return
            except Exception:  # noqa: BLE001 - the watchdog must outlive any one tick
                # A watchdog that died silently once left a killed engine unnoticed for good.
                log.exception("engine watchdog tick failed; watching on")

    async def _check(self, health_probe: bool) -> str | None:
        """Why the engine counts as down now, or None."""
        if self.process is None:
            self._failures = 0 if await self.client.healthy() else self._failures + 1
            # An external engine gets a few chances before it counts as down.
            return "external engine unhealthy" if self._failures >= 3 else None
        if not self.process.running:
            return f"engine exited (code {self.process.returncode})"
        if self.process.generation != self._generation:
            return "engine was restarted by another watcher of the same process"
        if self.process.server_exited():
            return "vLLM's API server exited"
        if not health_probe:
            return None
        # vLLM's API server outlives a dead EngineCore and answers /health with 5xx: the
        # process runs, the engine does not. A slow answer under load is not a failure
        # until it has lasted a long while.
        status = await self.client.health_status()
        self._refused = self._refused + 1 if status is not None and status != 200 else 0
        self._silent = self._silent + 1 if status is None else 0
        if self._refused >= 2 or self._silent >= 15:
            return f"engine process runs but is unhealthy (/health: {status or 'no answer'})"
        return None

    async def _handle_down(self, reason: str) -> None:
        self._failures = self._refused = self._silent = 0
        self.state = "down"
        self.last_error = reason
        log.error("%s; %s", reason, "restarting" if self.restart_enabled else "not restarting")
        for callback in self.on_down:
            try:
                callback()
            except Exception:  # noqa: BLE001 - a failing callback must not stop the restart
                log.exception("engine-down callback failed")
        if self.process is not None and not self.restart_enabled:
            self.state = "failed"
            return
        await self._restart()

    async def _restart(self) -> None:
        delay = 1.0
        while not self._stopping:
            self.state = "restarting"
            try:
                if self.process is not None:
                    if await asyncio.to_thread(self.process.stop_for_restart, self._generation, 5):
                        self.process.start()  # here, in the event loop's thread (see stop_for_restart)
                await self._bring_up()
                self.restarts += 1
                log.warning("engine back after restart #%d", self.restarts)
                return
            except EngineStartError as exc:
                self.last_error = str(exc)
                log.error("engine restart failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as exc:  # noqa: BLE001 - the watchdog must outlive any one failed try
                self.last_error = f"engine restart failed: {exc!r}"
                log.exception("engine restart failed unexpectedly; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        self._stopping = True
        if self._monitor:
            self._monitor.cancel()
            try:
                await self._monitor
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        await self.client.aclose()
        if self.process is not None and self._owns_process:
            await asyncio.to_thread(self.process.stop)
        self.state = "stopped"
