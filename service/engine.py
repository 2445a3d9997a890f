"""The vLLM engine process: the one place that starts, watches and stops it.

vLLM runs as its own OpenAI-compatible server in a child process (isolation, vLLM's own
batching and LoRA cache). It listens on loopback only: its runtime LoRA load/unload
routes are an admin capability that only the gateway may reach.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from bioinstruct.adapter_files import EngineLimits
from bioinstruct.service.engine_guard import die_with_parent
from bioinstruct.settings import offline_env
from bioinstruct.vllm_plugin import FAST_CPU_LORA_ENV, registry_resolver

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class EngineSettings(EngineLimits):
    """How the engine is started (its LoRA limits from EngineLimits). CPU defaults come from
    measurements on a 2-core AVX2 box."""

    model_config = SettingsConfigDict(env_prefix="BIOINSTRUCT_ENGINE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free loopback port
    served_name: str = "base"
    dtype: str | None = None  # default: float32 on CPU (bf16 is ~6x slower on AVX2), auto on GPU
    max_model_len: int = 4096
    max_num_seqs: int | None = None
    max_loras: int = 4  # adapters in one batch: the shipped four (qa, ie, gen, all); one more swaps in by LRU eviction
    max_cpu_loras: int = 8
    enable_lora: bool = True  # False: plain vLLM, base model only (benchmarks' ceiling)
    # CPU only: grouped LoRA kernels from our vLLM plugin (bioinstruct/vllm_plugin/cpu_lora.py)
    # instead of vLLM's per-token weight gather; False runs vLLM's own (docs/BENCHMARKS.md).
    fast_cpu_lora: bool = True
    kv_cache_gib: float = 1.0  # CPU only (VLLM_CPU_KVCACHE_SPACE)
    gpu_memory_utilization: float | None = None  # default: 0.3 on CPU (NUMA free-memory check), 0.9 on GPU
    cpu_threads_bind: str | None = None  # default: every core ("0-N"); vLLM would reserve one
    enable_prefix_caching: bool = True
    seed: int = 0
    # CPU only: the engine's compute threads spin on every core; a lower priority keeps the
    # gateway beside it (429s, health, metrics, streaming) answering within milliseconds,
    # and costs the engine nothing when the gateway is idle.
    cpu_nice: int = Field(10, ge=0, le=19)
    extra_args: list[str] = Field(default_factory=list)
    # The registry the engine's LoRA resolver loads requested versions from (our vLLM plugin);
    # the gateway sets it to its own. None: no resolver (the gateway loads every version itself).
    registry: str | None = None
    registry_cache: Path | None = None
    startup_timeout_s: float = 600.0
    stop_grace_s: float = 20.0
    log_dir: Path | None = None

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if value not in LOOPBACK:
            raise ValueError(
                f"engine host {value!r} is not loopback: vLLM's adapter load/unload routes must "
                "never be reachable from outside the gateway; use 127.0.0.1"
            )
        return value


class EngineStartError(RuntimeError):
    """The engine exited or never became healthy; the message carries its last log lines."""



def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process_group(proc: subprocess.Popen[bytes], grace: float) -> int | None:
    """SIGTERM the group `proc` leads, SIGKILL it after `grace` seconds. Idempotent. The one
    process-group stop: the engine's, and bench's for the servers it starts."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Workers may outlive the server for a moment: make sure the group is gone.
    _signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    return proc.returncode


class EngineProcess:
    """One vLLM OpenAI server child process."""

    def __init__(self, model_dir: Path, settings: EngineSettings | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.settings = settings or EngineSettings()
        self.port = self.settings.port or free_port(self.settings.host)
        self.device = self._device()
        self._proc: subprocess.Popen[bytes] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=80)
        self._reader: threading.Thread | None = None
        self.log_path: Path | None = None
        self.started_at: float | None = None
        self.healthy_after_s: float | None = None
        # Bumped by every start(): several gateways may watch one process (tests attach extra
        # gateways to the session engine), and each must see a restart that another one made.
        self.generation = 0
        self._restart_lock = threading.Lock()
        self._server: tuple[int, int] | None = None  # (generation, pid) of vLLM's API server

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The engine guard's pid (service/engine_guard.py): the leader of the engine's process group."""
        return self._proc.pid if self._proc else None

    @property
    def server_pid(self) -> int | None:
        """vLLM's API server, the guard's one child (None before it is spawned or after it is gone)."""
        if not self.running:
            return None
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return None
        # The guard is a subreaper: processes orphaned below it (a dead server's EngineCore)
        # are its children too. The server is the one running our command line.
        for child in children:
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"vllm.entrypoints.openai.api_server" in a or a.startswith(b"VLLM::APIServer") for a in argv):
                return int(child)
        return int(children[0]) if children else None  # a renamed process title: the first child

    def server_exited(self) -> bool:
        """vLLM's API server is gone while its guard still runs. The guard notices within 0.1 s
        and exits, but in that window `running` is still True (seen in CI: /health/ready right
        after a kill answered 200 for a dead engine). A dead child the guard has not reaped yet
        is a zombie; a reaped one has no /proc entry."""
        if not self.running:
            return True
        if self._server is None or self._server[0] != self.generation:
            pid = self.server_pid
            if pid is None:
                return False  # not spawned yet: starting, not exited
            self._server = (self.generation, pid)
        try:
            stat = Path(f"/proc/{self._server[1]}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")

    def _device(self) -> str:
        return self.settings.resolved_device()

    def command(self) -> list[str]:
        s = self.settings
        cpu = self.device == "cpu"
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", s.served_name,
            "--host", s.host,
            "--port", str(self.port),
            "--dtype", s.dtype or ("float32" if cpu else "auto"),
            "--max-model-len", str(s.max_model_len),
            "--gpu-memory-utilization", str(s.gpu_memory_utilization or (0.3 if cpu else 0.9)),
            "--seed", str(s.seed),
            "--disable-uvicorn-access-log",
            # The gateway scores QA options from the top next-token logprobs (service/scoring.py).
            "--max-logprobs", "64",
        ]
        if s.enable_lora:
            cmd += ["--enable-lora", "--max-loras", str(s.max_loras),
                    "--max-cpu-loras", str(max(s.max_cpu_loras, s.max_loras)), "--max-lora-rank", str(s.max_lora_rank)]
            layers = s.lora_layers(self.device)
            if layers:
                cmd += ["--lora-target-modules", *layers]
        if s.max_num_seqs:
            cmd += ["--max-num-seqs", str(s.max_num_seqs)]
        if s.enable_prefix_caching:
            cmd.append("--enable-prefix-caching")
        return cmd + list(s.extra_args)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(offline_env())
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        env[FAST_CPU_LORA_ENV] = "1" if self.settings.fast_cpu_lora else "0"
        if self.settings.registry and self.settings.enable_lora:
            env[registry_resolver.REGISTRY_ENV] = self.settings.registry
            env[registry_resolver.LIMITS_ENV] = self.settings.adapter_limits(None).model_dump_json()
            if self.settings.registry_cache:
                env[registry_resolver.CACHE_ENV] = str(self.settings.registry_cache)
        if self.device == "cpu":
            cores = os.cpu_count() or 1
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.settings.kv_cache_gib:g}")
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", self.settings.cpu_threads_bind or f"0-{cores - 1}")
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        return env

    def start(self) -> None:
        if self.running:
            return
        log_dir = self.settings.log_dir or Path.cwd() / ".cache" / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"engine-{self.port}.log"
        self._tail.clear()
        self.started_at = time.monotonic()
        self.healthy_after_s = None
        self.generation += 1
        guard = [sys.executable, "-m", "bioinstruct.service.engine_guard", f"{self.settings.stop_grace_s:g}", "--"]
        self._proc = subprocess.Popen(
            guard + self.command(),
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches vLLM's workers too
            preexec_fn=self._preexec,
        )
        self._reader = threading.Thread(target=self._pump, args=(self._proc,), daemon=True)
        self._reader.start()

    def _preexec(self) -> None:
        die_with_parent()
        if self.device == "cpu" and self.settings.cpu_nice:
            os.nice(self.settings.cpu_nice)

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and self.log_path is not None
        with self.log_path.open("ab") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                self._tail.append(line.decode("utf-8", "replace").rstrip())

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def last_lines(self, n: int = 30) -> str:
        return "\n".join(list(self._tail)[-n:])

    def health(self, timeout: float = 2.0) -> bool:
        try:
            return httpx.get(f"{self.base_url}/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float | None = None) -> float:
        """Block until /health answers 200; return seconds since start. Raise EngineStartError."""
        timeout = timeout or self.settings.startup_timeout_s
        assert self.started_at is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise EngineStartError(
                    f"vLLM exited with code {self.returncode} before becoming healthy. "
                    f"Last log lines ({self.log_path}):\n{self.last_lines()}"
                )
            if self.health():
                self.healthy_after_s = time.monotonic() - self.started_at
                return self.healthy_after_s
            time.sleep(0.5)
        tail = self.last_lines()
        self.stop()
        raise EngineStartError(
            f"vLLM was not healthy within {timeout:.0f} s (raise BIOINSTRUCT_ENGINE_STARTUP_TIMEOUT_S "
            f"if the machine is slow). Last log lines ({self.log_path}):\n{tail}"
        )

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM the whole process group, SIGKILL after the grace period. Idempotent."""
        proc = self._proc
        if proc is None:
            return None
        stop_process_group(proc, self.settings.stop_grace_s if grace is None else grace)
        if self._reader:
            self._reader.join(timeout=2)
        return proc.returncode

    def stop_for_restart(self, seen_generation: int, grace: float | None = None) -> bool:
        """Stop the process for a restart, unless it was already restarted since `seen_generation`
        (by another watcher of the same process): one crash, one restart. True: the caller starts
        it again — from its own long-lived thread: the guard's parent-death signal follows the
        thread that started it, so a worker thread that ends would take the engine with it."""
        with self._restart_lock:
            if self.generation != seen_generation and self.running:
                return False
            self.stop(grace)
            return True

    def kill(self) -> None:
        """Hard-kill vLLM's API server only, as a crash would (fault injection: the gateway must notice)."""
        pid = self.server_pid
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
