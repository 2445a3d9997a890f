"""The processes a comparison measures: the vLLM engine (service/engine.py's own process code),
the gateway (`bioinstruct serve`) and the transformers+peft server (bench/hf_server.py), each
started in its own process group and stopped as a group in a `finally`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bioinstruct.settings import CoreSettings, offline_env

PY = sys.executable
ADMIN_TOKEN = "bench-admin-token"  # only ever on loopback, for processes this harness starts


def free_port() -> int:
    from bioinstruct.service.engine import free_port as _free

    return _free()


def _tail(path: Path | None, n: int = 30) -> str:
    if path is None or not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, what: str = "server",
              log_path: Path | None = None, interval: float = 0.05) -> float:
    """Poll url until 200; return seconds waited. Raise if proc exits or time runs out."""
    t0 = time.monotonic()
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() - t0 < timeout:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what} exited with code {proc.returncode} before {url} answered 200\n"
                                   f"{_tail(log_path)}")
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(interval)
    raise RuntimeError(f"{what}: {url} did not answer 200 within {timeout:.0f} s\n{_tail(log_path)}")


def stop_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the process group, SIGKILL after grace (the engine's own way of stopping)."""
    from bioinstruct.service.engine import stop_process_group

    stop_process_group(proc, grace)


def spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """cmd in a new process group (killed with us: parent-death signal), output to log_path."""
    from bioinstruct.service.engine_guard import die_with_parent

    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **offline_env(), **(env or {})}
    full_env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with log_path.open("ab") as fh:
        return subprocess.Popen(cmd, env=full_env, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
                                cwd=CoreSettings().home)


@contextlib.contextmanager
def running(cmd: list[str], ready_path: str, what: str, log_dir: Path, *, port: int,
            env: dict[str, str] | None = None, timeout: float = 300.0) -> Iterator[str]:
    """A server process listening on `port`, up once GET ready_path answers 200; yields its URL."""
    log_path = log_dir / f"{what.replace(' ', '-')}-{port}.log"
    proc = spawn(cmd, log_path, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}{ready_path}", timeout, proc, what, log_path, interval=0.2)
        yield url
    finally:
        stop_group(proc)


def engine_process(model_dir: Path | None = None, *, lora: bool = True, log_dir: Path | None = None,
                   **settings: Any):
    from bioinstruct.service.engine import EngineProcess, EngineSettings

    es = EngineSettings(log_dir=log_dir, enable_lora=lora, **settings)
    return EngineProcess(model_dir or CoreSettings().base_model_dir, es)


@contextlib.contextmanager
def running_engine(model_dir: Path | None = None, *, lora: bool = True, log_dir: Path | None = None,
                   **settings) -> Iterator[Any]:
    proc = engine_process(model_dir, lora=lora, log_dir=log_dir, **settings)
    proc.start()
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


def gateway_env(engine_url: str | None, registry: Path, publish_root: Path | None = None,
                **extra: str) -> dict[str, str]:
    env = {
        "BIOINSTRUCT_REGISTRY": str(registry),
        "BIOINSTRUCT_ADMIN_TOKEN": ADMIN_TOKEN,
        "BIOINSTRUCT_PUBLISH_ROOT": str(publish_root or registry.parent / "publish"),
    }
    if engine_url:
        env["BIOINSTRUCT_ENGINE_URL"] = engine_url
    env.update(extra)
    return env


def running_gateway(engine_url: str, registry: Path, log_dir: Path, *, publish_root: Path | None = None,
                    timeout: float = 300.0, **extra_env: str):
    """`bioinstruct serve` in its own process, attached to `engine_url`; yields its URL."""
    port = free_port()
    return running([PY, "-m", "bioinstruct.cli", "serve", "--port", str(port)], "/health/ready", "gateway",
                   log_dir, port=port, env=gateway_env(engine_url, registry, publish_root, **extra_env),
                   timeout=timeout)


def running_hf_server(adapters: dict[str, Path], log_dir: Path, timeout: float = 300.0,
                      threads: int | None = None):
    """bench/hf_server.py (transformers + peft, one request at a time) in its own process."""
    port = free_port()
    cmd = [PY, "-m", "bioinstruct.bench.hf_server", "--port", str(port),
           "--threads", str(threads or os.cpu_count() or 2)]
    for name, folder in adapters.items():
        cmd += ["--adapter", f"{name}={folder}"]
    return running(cmd, "/health", "hf server", log_dir, port=port, timeout=timeout)
