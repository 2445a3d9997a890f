"""`python -m bioinstruct.service.engine_guard GRACE -- CMD...`: run the engine and never let it outlive its gateway.

The gateway starts this small process (stdlib only: it is up in milliseconds) as the leader of
the engine's process group, and it starts vLLM. Why not vLLM directly: vLLM ignores a SIGTERM
that arrives while it is still starting (seen on 2026-11-25: a test run killed during engine
start-up left the API server, its EngineCore and its worker running, orphaned), and a SIGKILLed
API server leaves its EngineCore and worker behind (they do not watch their parent). This guard
gets the parent-death signal instead, always handles it, and escalates: SIGTERM to vLLM, SIGKILL
after GRACE seconds, then SIGKILL to whatever is left of the group. It exits with vLLM's code.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


# Resolved once, at import: `die_with_parent` runs in a forked child before exec (preexec_fn),
# where loading a library (dlopen takes the loader's lock, which another thread of the parent
# may have held at fork time) can hang the child and the Popen call waiting for it.
try:
    _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: nothing to arm
    _PRCTL = None


def _prctl(option: int, value: int) -> None:
    if _PRCTL is not None:
        _PRCTL(option, value)


def die_with_parent() -> None:
    """Get SIGTERM when the parent dies, even by SIGKILL (Linux). Call in a child (preexec_fn) or self."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def group_members(pgid: int) -> list[int]:
    """Processes in process group `pgid` (read from /proc), this one excluded."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _kill_group_rest() -> None:
    for pid in group_members(os.getpgrp()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # As the subreaper, this process inherited vLLM's orphans: reap them.
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m bioinstruct.service.engine_guard GRACE_S -- CMD [ARGS...]", file=sys.stderr)
        return 2
    grace = float(argv[0])
    stop_requested: list[float] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop_requested.append(time.monotonic()))
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # vLLM's children become ours if vLLM dies first
    parent = os.getppid()
    child = subprocess.Popen(argv[2:], preexec_fn=die_with_parent)
    deadline = None
    while child.poll() is None:
        if deadline is None and (stop_requested or os.getppid() != parent):
            reason = "asked to stop" if stop_requested else "the gateway died"
            print(f"engine_guard: {reason}; SIGTERM to vLLM, SIGKILL in {grace:g} s", flush=True)
            child.terminate()
            deadline = time.monotonic() + grace
        if deadline is not None and time.monotonic() > deadline:
            print("engine_guard: vLLM still running after the grace period; SIGKILL", flush=True)
            child.kill()
        time.sleep(0.1)
    _kill_group_rest()  # EngineCore and workers do not outlive the API server
    code = child.returncode
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
