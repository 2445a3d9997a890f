"""A gateway started by a test: waiting until it is ready, stopping it (and its children)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def wait_ready(url: str, timeout: float, *, proc: subprocess.Popen | None = None,
               log: Path | Callable[[], str] | None = None, interval: float = 0.3) -> float:
    """Poll `url`/health/ready until it answers 200; returns the seconds it took. Fails, with
    the end of the server's log, when `proc` exits first or `timeout` passes."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}: {_tail(log)}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise AssertionError(f"{url} not ready after {timeout:.0f} s: {_tail(log)}")


def _tail(log: Path | Callable[[], str] | None) -> str:
    if log is None:
        return "(no log)"
    text = log.read_text(errors="replace") if isinstance(log, Path) else log()
    return text[-3000:]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (started with start_new_session=True); SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
