"""service/engine_guard.py: the engine never outlives its gateway, even when the gateway dies
while vLLM is still starting (when vLLM ignores SIGTERM) or when vLLM's API server crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bioinstruct.service.engine_guard import group_members

# A stand-in for vLLM mid-start-up: ignores SIGTERM and has a child of its own (its EngineCore).
STUBBORN = textwrap.dedent("""
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    core = subprocess.Popen([sys.executable, "-c",
                             "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    print("up", core.pid, flush=True)
    time.sleep(600)
""")


def _group_gone(pgid: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = group_members(pgid)
        if not left:
            return []
        time.sleep(0.1)
    return group_members(pgid)


def _start_guard_under_a_parent(grace: float, *cmd: str) -> tuple[subprocess.Popen, int]:
    """A throwaway 'gateway' process that starts the guard as the engine does, then waits."""
    gateway = textwrap.dedent(f"""
        import subprocess, sys, time
        from bioinstruct.service.engine_guard import die_with_parent
        guard = subprocess.Popen([sys.executable, "-m", "bioinstruct.service.engine_guard", "{grace}", "--", *{list(cmd)!r}],
                                 start_new_session=True, preexec_fn=die_with_parent, stdout=sys.stdout)
        print("guard", guard.pid, flush=True)
        time.sleep(600)
    """)  # noqa: E501
    proc = subprocess.Popen([sys.executable, "-c", gateway], stdout=subprocess.PIPE, text=True)
    guard_pid = int(proc.stdout.readline().split()[1])
    assert proc.stdout.readline().startswith("up")  # the stubborn engine and its child run
    return proc, guard_pid


def test_a_killed_gateway_takes_a_stubborn_engine_and_its_children_down():
    gateway, guard = _start_guard_under_a_parent(1.0, sys.executable, "-c", STUBBORN)
    members = group_members(guard)
    assert len(members) == 3 and guard in members  # the guard, the engine, its child
    gateway.kill()  # SIGKILL: the gateway cleans nothing up
    gateway.wait()
    assert _group_gone(guard, 15) == []  # the guard too (a zombie at most: init reaps it)


def test_a_crashed_engine_server_leaves_no_children_and_its_exit_code():
    proc = subprocess.Popen([sys.executable, "-m", "bioinstruct.service.engine_guard", "5", "--",
                             sys.executable, "-c", STUBBORN],
                            start_new_session=True, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("up")
    engine_server = int(open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()[0])
    os.kill(engine_server, signal.SIGKILL)  # the crash: its child would be orphaned without the guard
    assert proc.wait(timeout=10) == 128 + signal.SIGKILL
    assert _group_gone(proc.pid, 5) == []


def test_stop_by_sigterm_escalates_after_the_grace_period():
    proc = subprocess.Popen([sys.executable, "-m", "bioinstruct.service.engine_guard", "1", "--",
                             sys.executable, "-c", STUBBORN],
                            start_new_session=True, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("up")
    started = time.monotonic()
    proc.terminate()
    assert proc.wait(timeout=10) == 128 + signal.SIGKILL
    assert 0.9 < time.monotonic() - started < 8
    assert _group_gone(proc.pid, 5) == []
    assert "SIGKILL" in proc.stdout.read()


def test_the_guard_refuses_a_bad_command_line():
    proc = subprocess.run([sys.executable, "-m", "bioinstruct.service.engine_guard", "5", "echo"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


@pytest.mark.engine
def test_real_engine_killed_gateway_during_vllm_start_up_leaves_nothing(base_model_dir, tmp_path):
    """The case that orphaned a real engine: the gateway dies while vLLM is still starting."""
    gateway = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from bioinstruct.service.engine import EngineProcess, EngineSettings
        engine = EngineProcess(Path({str(base_model_dir)!r}),
                               EngineSettings(stop_grace_s=3, log_dir=Path({str(tmp_path)!r})))
        engine.start()
        print(engine.pid, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", gateway], stdout=subprocess.PIPE, text=True)
    guard = int(proc.stdout.readline())
    deadline = time.monotonic() + 60
    while len(group_members(guard)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3)  # vLLM is importing, far from healthy
    assert len(group_members(guard)) >= 2, "vLLM did not start"
    proc.kill()
    proc.wait()
    assert _group_gone(guard, 30) == [], "the engine outlived its gateway"
