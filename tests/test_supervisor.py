"""The engine supervisor's state machine, on a real child process that is not vLLM.

The supervisor does not serve; what it must get right is processes, restarts and readiness.
A stand-in HTTP server (started through the real engine guard, as vLLM is) lets these tests
crash and restart an "engine" in a second instead of a minute.
"""

from __future__ import annotations

import asyncio
import sys
import time

from bioinstruct.service.engine import EngineProcess, EngineSettings
from bioinstruct.service.supervisor import EngineSupervisor

# /health answers 200, or 503 once the file named by argv[2] exists (as vLLM's API server
# does after its EngineCore died).
HEALTH_SERVER = """
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503 if os.path.exists(sys.argv[2]) else 200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


class StandInProcess(EngineProcess):
    def command(self) -> list[str]:
        # The marker keeps `kill()` (which looks for vLLM's server among the guard's children) working.
        return [sys.executable, "-c", HEALTH_SERVER, str(self.port), str(self.model_dir / "dead"),
                "vllm.entrypoints.openai.api_server"]


def _process(tmp_path) -> StandInProcess:
    proc = StandInProcess(tmp_path,
                          EngineSettings(device="cpu", log_dir=tmp_path, startup_timeout_s=30, stop_grace_s=2))
    proc.start()
    proc.wait_healthy()
    return proc


async def _until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def test_two_watchers_of_one_process_both_see_a_crash_and_restart_it_once(tmp_path):
    proc = _process(tmp_path)
    first, second = (EngineSupervisor(None, proc.settings, process=proc) for _ in range(2))
    ups = {first: 0, second: 0}
    for sup in (first, second):
        async def up(sup=sup):
            ups[sup] += 1
        sup.on_up.append(up)
    try:
        await first.start()
        await second.start()
        assert first.ready and second.ready and ups == {first: 1, second: 1}
        generation = proc.generation
        proc.kill()
        assert await _until(lambda: first.restarts >= 1 and second.restarts >= 1 and first.ready and second.ready)
        # One crash, one new process; each watcher brought its own state back (on_up) on it.
        assert proc.generation == generation + 1
        assert ups == {first: 2, second: 2}
    finally:
        await first.stop()
        await second.stop()
        proc.stop()


async def test_an_engine_restarted_by_another_watcher_is_not_ready_until_this_one_reloads(tmp_path):
    proc = _process(tmp_path)
    sup = EngineSupervisor(None, proc.settings, process=proc)
    reloaded = asyncio.Event()
    release = asyncio.Event()

    async def up():
        if sup.restarts == 0 and not reloaded.is_set() and proc.generation > 1:
            reloaded.set()
            await release.wait()  # an adapter reload that takes a while

    sup.on_up.append(up)
    try:
        await sup.start()
        if await asyncio.to_thread(proc.stop_for_restart, proc.generation, 2):  # someone else restarts it
            proc.start()
        await asyncio.to_thread(proc.wait_healthy)
        assert not sup.ready, "a new engine process without this gateway's adapters reported ready"
        await asyncio.wait_for(reloaded.wait(), 20)
        assert not sup.ready, "ready before the start-up callbacks finished"
        release.set()
        assert await _until(lambda: sup.ready)
        assert sup.restarts == 1
    finally:
        release.set()
        await sup.stop()
        proc.stop()


async def test_a_failing_start_up_callback_does_not_stop_the_watchdog(tmp_path):
    proc = _process(tmp_path)
    sup = EngineSupervisor(None, proc.settings, process=proc)

    async def broken():
        raise PermissionError("aliases/ not readable")

    sup.on_up.append(broken)
    try:
        await sup.start()
        assert sup.ready
        proc.kill()
        assert await _until(lambda: sup.restarts == 1 and sup.ready), (sup.state, sup.last_error)
    finally:
        await sup.stop()
        proc.stop()


async def test_a_running_server_whose_engine_died_is_restarted(tmp_path):
    proc = _process(tmp_path)
    sup = EngineSupervisor(None, proc.settings, process=proc)
    try:
        await sup.start()
        generation = proc.generation
        (tmp_path / "dead").touch()  # the server keeps running, /health says 503
        assert await _until(lambda: not sup.ready, 10), "a dead engine behind a live server reported ready"
        assert "unhealthy" in (sup.last_error or "")
        (tmp_path / "dead").unlink()
        assert await _until(lambda: sup.ready and sup.restarts == 1, 20)
        assert proc.generation == generation + 1
    finally:
        await sup.stop()
        proc.stop()


async def test_a_health_probe_that_raises_does_not_end_the_watchdog(tmp_path):
    """Seen in make test: an exception that is not an httpx error (respx's "not mocked" from
    another test) escaped one health probe and ended the watchdog task silently; the next
    crash was never noticed and every later test met a dead engine."""
    proc = _process(tmp_path)
    sup = EngineSupervisor(None, proc.settings, process=proc)
    probes = 0

    async def broken_probe(timeout: float = 2.0):
        nonlocal probes
        probes += 1
        if probes == 2:  # the watchdog lived on to probe again: the probe works from now on
            del sup.client.health_status
        raise AssertionError("not mocked")

    try:
        await sup.start()
        sup.client.health_status = broken_probe
        assert await _until(lambda: probes >= 2, 10)
        proc.kill()
        assert await _until(lambda: sup.restarts == 1 and sup.ready, 20), (sup.state, sup.last_error)
    finally:
        await sup.stop()
        proc.stop()


def test_health_routes_get_the_error_without_log_path_or_lines(tmp_path):
    sup = EngineSupervisor(None, EngineSettings(device="cpu"),
                           process=StandInProcess(tmp_path, EngineSettings(device="cpu")))
    sup.last_error = ("vLLM exited with code 1 before becoming healthy. Last log lines "
                      "(/srv/secret/engine-1.log):\nTraceback ...\nKeyError: 'api-key-123'")
    assert sup.public_error == "vLLM exited with code 1 before becoming healthy."


async def test_restarts_start_the_engine_from_the_event_loops_thread(tmp_path):
    """The engine guard gets SIGTERM when the *thread* that started it ends (PR_SET_PDEATHSIG):
    a restart from a worker thread let the engine die with that thread (seen in make test: the
    session engine stopped 1 s after its restart became healthy, every later test failed)."""
    import threading

    proc = _process(tmp_path)
    sup = EngineSupervisor(None, proc.settings, process=proc)
    starters: list[int] = []
    original = proc.start

    def recording_start():
        starters.append(threading.get_ident())
        original()

    proc.start = recording_start
    try:
        await sup.start()
        proc.kill()
        assert await _until(lambda: sup.restarts == 1 and sup.ready, 20)
        assert starters and set(starters) == {threading.get_ident()}  # the loop's own thread
    finally:
        await sup.stop()
        proc.stop()


def test_a_child_started_from_a_thread_that_ends_gets_the_parent_death_signal(tmp_path):
    """Why the above matters: the guard's parent-death signal follows the starting thread."""
    import subprocess
    import threading

    from bioinstruct.service.engine_guard import die_with_parent

    procs = []
    t = threading.Thread(target=lambda: procs.append(subprocess.Popen(["sleep", "30"], preexec_fn=die_with_parent)))
    t.start()
    t.join()
    try:
        procs[0].wait(timeout=5)
    finally:
        procs[0].kill()
    assert procs[0].returncode == -15  # SIGTERM when its thread ended


async def test_readiness_drops_the_moment_the_server_dies_not_when_its_guard_exits(tmp_path):
    """Seen in CI: right after vLLM's API server was killed, /health/ready answered 200 with no
    restart made. The guard (whose liveness readiness read) exits only after it notices, and the
    watchdog ticks every 0.5 s. Here the guard is held stopped so that window stays open."""
    import os
    import signal

    proc = _process(tmp_path)
    sup = EngineSupervisor(None, proc.settings, process=proc)
    try:
        await sup.start()
        assert sup.ready
        server = proc.server_pid
        os.kill(proc.pid, signal.SIGSTOP)  # the guard can neither reap nor exit
        try:
            proc.kill()
            assert await _until(lambda: open(f"/proc/{server}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", 5)
            assert proc.running  # the guard lives on ...
            assert not sup.ready  # ... and readiness still knows the engine is dead
            assert sup.current_state == "down"
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert await _until(lambda: sup.restarts == 1 and sup.ready, 30), (sup.state, sup.last_error)
    finally:
        await sup.stop()
        proc.stop()
