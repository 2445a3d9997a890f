"""Two real replicas (each `bioinstruct serve` with its own vLLM engine) sharing one registry on
a real S3 API (moto's server on loopback): start-to-ready time, the first request of a cold
adapter, an alias moved through one replica and served by the other, a 90/10 canary, all under
steady traffic to both. Writes reports/replicas/two-real-engines.{json,md}.

    .venv/bin/python scripts/two_replicas.py

Needs the machine to itself (two engines on two cores): stop any service or test suite first.
The test suite checks the same with stand-in engines (tests/test_replicas.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "replicas"
POLL_S = 1.0
ADMIN = {"Authorization": "Bearer replicas-admin"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name: str, registry: str, env: dict[str, str], logs: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    environment = {**os.environ, **env, "BIOINSTRUCT_REGISTRY": registry, "BIOINSTRUCT_PORT": str(port),
                   "BIOINSTRUCT_ADMIN_TOKEN": "replicas-admin", "BIOINSTRUCT_POLL_INTERVAL_S": str(POLL_S),
                   "BIOINSTRUCT_HOME": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.Popen([str(ROOT / ".venv/bin/bioinstruct"), "serve", "--log-level", "warning"], cwd=ROOT,
                            env=environment, stdout=(logs / f"{name}.log").open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited: see {logs / (name + '.log')}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return proc, url, time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > 900:
            raise SystemExit(f"{name} not ready after 900 s")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    from bioinstruct.service.engine import stop_process_group

    stop_process_group(proc, grace=60)


def complete(url: str, model: str, session: str | None = None) -> tuple[int, str | None, float]:
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v1/completions", json={"model": model, "prompt": "Aspirin is", "max_tokens": 2},
                   headers={"x-session-id": session} if session else {}, timeout=300)
    model_used = r.json().get("model") if r.status_code == 200 else None
    return r.status_code, model_used, time.perf_counter() - t0


class Load(threading.Thread):
    def __init__(self, urls: list[str], model: str) -> None:
        super().__init__(daemon=True)
        self.urls, self.model = urls, model
        self.statuses: Counter[int] = Counter()
        self.models: Counter[str] = Counter()
        self.halt = threading.Event()

    def run(self) -> None:
        for i in range(100_000):
            if self.halt.is_set():
                return
            status, model, _ = complete(self.urls[i % len(self.urls)], self.model)
            self.statuses[status] += 1
            if model:
                self.models[model] += 1


def main() -> None:
    from moto.server import ThreadedMotoServer

    OUT.mkdir(parents=True, exist_ok=True)
    logs = ROOT / ".cache" / "two-replicas"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True).mkdir("replicas")
    registry = "s3://replicas/prod"
    result: dict = {"command": "python scripts/two_replicas.py", "date": time.strftime("%Y-%m-%d"),
                    "poll_interval_s": POLL_S}
    a = b = None
    try:
        a, url_a, ready_a = start("a", registry, env, logs)  # publishes the shipped adapters first
        b, url_b, ready_b = start("b", registry, env, logs)
        result["start_to_ready_s"] = {"a (publishes shipped adapters)": round(ready_a, 1), "b": round(ready_b, 1)}
        print("ready", result["start_to_ready_s"], flush=True)

        # A new version of ie (the shipped `all` adapter's files under another name), published by an operator.
        from bioinstruct.publishing import PublishTarget, publish_adapter
        from bioinstruct.registry import Provenance, Registry

        reg = Registry(registry, cache_dir=logs / "cache")
        canary = publish_adapter(ROOT / "adapters" / "all", Provenance(name="ie-canary", category="IE"),
                                 PublishTarget.from_settings(), registry=reg)
        first = [complete(url_b, canary.ref)[2] for _ in range(1)]
        warm = [complete(url_b, canary.ref)[2] for _ in range(5)]
        result["cold_adapter_first_request_s"] = round(first[0], 3)
        result["warm_adapter_request_s_median"] = round(statistics.median(warm), 3)
        print("cold", first, "warm", warm, flush=True)

        load = Load([url_a, url_b], "ie")
        load.start()
        time.sleep(5)
        before = reg.alias("ie").target
        r = httpx.put(f"{url_a}/admin/aliases/ie", json={"target": canary.ref}, headers=ADMIN, timeout=300)
        assert r.status_code == 200, r.text
        moved = time.monotonic()
        while complete(url_b, "ie")[1] != canary.ref:
            time.sleep(0.05)
        result["alias_move_propagation_s"] = round(time.monotonic() - moved, 2)
        print("propagation", result["alias_move_propagation_s"], flush=True)
        time.sleep(5)
        r = httpx.put(f"{url_b}/admin/aliases/ie", json={"weights": {before: 90, canary.ref: 10}},
                      headers=ADMIN, timeout=300)
        assert r.status_code == 200, r.text
        time.sleep(2 * POLL_S + 1)
        split = Counter(complete((url_a, url_b)[i % 2], "ie", session=f"user-{i}")[1] for i in range(200))
        result["canary_90_10_over_200_sticky_callers"] = dict(split)
        r = httpx.post(f"{url_a}/admin/aliases/ie/rollback", headers=ADMIN, timeout=300)
        r = httpx.post(f"{url_a}/admin/aliases/ie/rollback", headers=ADMIN, timeout=300)
        assert r.status_code == 200 and r.json()["target"] == before, r.text
        time.sleep(3)
        load.halt.set()
        load.join(timeout=300)
        result["steady_load_during_move_canary_rollback"] = {"requests": sum(load.statuses.values()),
                                                             "statuses": dict(load.statuses),
                                                             "served_by": dict(load.models)}
    finally:
        for proc in (a, b):
            if proc is not None:
                stop(proc)
        moto.stop()
    (OUT / "two-real-engines.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Two real replicas sharing a registry on S3 (moto, loopback)", "",
             f"`{result['command']}`, {result['date']}, poll interval {POLL_S} s, 2 cores shared by both engines.", "",
             "| what | value |", "|---|---|"]
    for key, value in result.items():
        if key not in ("command", "date"):
            lines.append(f"| {key.replace('_', ' ')} | {json.dumps(value)} |")
    (OUT / "two-real-engines.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
