"""Two gateway processes sharing one registry on a real S3 API (moto's server on loopback).

The point here is the registry and the routing between replicas, so each gateway fronts a
stand-in engine (tests/fake_engine.py): two real CPU engines do not fit beside each other on
this machine. What is checked: an alias moved through one replica is served by the other
within two poll intervals; a weighted alias splits traffic as asked (deterministically per
sticky key, and within its binomial interval at random); promote and rollback; concurrent
moves through both replicas are compare-and-swap; no request fails during any of it; and a
replica whose store becomes unreachable says so and, past the limit, stops claiming to be current.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bioinstruct.registry import Registry
from tests.fake_engine import FakeEngine, serve
from tests.s3_server import free_port, start_s3
from tests.server_process import stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
ADMIN = {"Authorization": "Bearer replica-admin"}
POLL_S = 1.0


class Replica:
    def __init__(self, registry_url: str, log: Path, env: dict[str, str], **extra: str) -> None:
        self.engine = FakeEngine()
        self.engine_server = serve(self.engine, free_port())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        environment = {
            **os.environ, **env,
            "BIOINSTRUCT_ENGINE_URL": f"http://127.0.0.1:{self.engine_server.server_address[1]}",
            "BIOINSTRUCT_REGISTRY": registry_url,
            "BIOINSTRUCT_SHIPPED_ADAPTERS": "off",
            "BIOINSTRUCT_ADMIN_TOKEN": "replica-admin",
            "BIOINSTRUCT_POLL_INTERVAL_S": str(POLL_S),
            "BIOINSTRUCT_PRELOAD_ADAPTERS": "",
            "BIOINSTRUCT_PORT": str(self.port),
            **extra,
        }
        self.proc = subprocess.Popen([sys.executable, "-m", "bioinstruct.cli", "serve", "--log-level", "warning"],
                                     cwd=ROOT, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> None:
        wait_ready(self.url, timeout, proc=self.proc, log=self.log)

    def complete(self, model: str, session: str | None = None) -> httpx.Response:
        headers = {"x-session-id": session} if session else {}
        return httpx.post(f"{self.url}/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 1},
                          headers=headers, timeout=30)

    def stop(self) -> None:
        stop(self.proc)
        self.engine_server.shutdown()


def served_by(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"].split("served-by ")[1].strip()


class Load:
    """Steady traffic to both replicas until stopped (bounded in count and time)."""

    def __init__(self, replicas: list[Replica], model: str, max_requests: int = 20_000, max_s: float = 240) -> None:
        self.replicas, self.model = replicas, model
        self.max_requests, self.max_s = max_requests, max_s
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            for i in range(self.max_requests):
                if self.stop_event.is_set() or time.monotonic() - started > self.max_s:
                    return
                replica = self.replicas[i % len(self.replicas)]
                try:
                    r = client.post(f"{replica.url}/v1/completions",
                                    json={"model": self.model, "prompt": "Hi", "max_tokens": 1})
                    self.statuses[r.status_code] += 1
                    if r.status_code != 200:
                        self.errors.append(r.text[:300])
                except httpx.HTTPError as exc:
                    self.statuses[0] += 1
                    self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)


@pytest.fixture(scope="module")
def replicas(s3, make_lora, base_model_dir, tmp_path_factory):
    from bioinstruct.model import inspect_base_model

    url = s3.bucket()
    fingerprint = inspect_base_model(base_model_dir).fingerprint
    reg = Registry(url)
    for seed in (41, 42, 43):
        reg.publish(make_lora(seed=seed, rank=4), name="canary", category="IE", base_fingerprint=fingerprint)
    reg.set_alias("team", "canary@1")
    logs = tmp_path_factory.mktemp("replica-logs")
    pair = [Replica(url, logs / f"replica-{i}.log", s3.env) for i in range(2)]
    try:
        for replica in pair:
            replica.wait_ready()
        yield url, pair
    finally:
        for replica in pair:
            replica.stop()


def test_an_alias_moved_through_one_replica_is_served_by_the_other_within_two_polls(replicas):
    url, (a, b) = replicas
    assert served_by(a.complete("team")) == served_by(b.complete("team")) == "canary@1"
    with Load([a, b], "team") as load:
        time.sleep(1.0)
        r = httpx.put(f"{a.url}/admin/aliases/team", json={"target": "canary@2"}, headers=ADMIN, timeout=60)
        assert r.status_code == 200, r.text
        moved = time.monotonic()
        assert served_by(a.complete("team")) == "canary@2"  # the replica that wrote it: at once
        while served_by(b.complete("team")) != "canary@2":
            assert time.monotonic() - moved < 10, "replica b never saw the move"
            time.sleep(0.05)
        propagation = time.monotonic() - moved
        time.sleep(1.0)
    assert propagation <= 2 * POLL_S, f"replica b switched after {propagation:.2f} s (poll interval {POLL_S} s)"
    assert set(load.statuses) == {200} and sum(load.statuses.values()) > 20, (load.statuses, load.errors[:3])


def test_a_weighted_alias_splits_traffic_as_asked_and_promote_moves_it_all(replicas):
    url, (a, b) = replicas
    r = httpx.put(f"{b.url}/admin/aliases/team", json={"weights": {"canary@2": 90, "canary@3": 10}},
                  headers=ADMIN, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["weights"] == {"canary@2": 90, "canary@3": 10} and r.json()["target"] == "canary@2"
    time.sleep(2 * POLL_S + 0.5)  # replica a converges too
    with Load([a, b], "team") as load:
        # Sticky: a key sees one version, the same on both replicas.
        for key in ("alice", "bob", "carol"):
            seen = {served_by(rep.complete("team", session=key)) for rep in (a, b) for _ in range(3)}
            assert len(seen) == 1, (key, seen)
        # 1,000 sticky callers: deterministic, inside the binomial 95% interval of 10%.
        n = 1000
        counts = Counter(served_by((a, b)[i % 2].complete("team", session=f"user-{i}")) for i in range(n))
        low, high = n * 0.1 - 1.96 * math.sqrt(n * 0.09), n * 0.1 + 1.96 * math.sqrt(n * 0.09)
        assert low <= counts["canary@3"] <= high and counts["canary@2"] + counts["canary@3"] == n, counts
        # 1,000 requests without a key: random by weight (inside a 99.99% interval: never flaky).
        counts = Counter(served_by((a, b)[i % 2].complete("team")) for i in range(n))
        z = 3.89
        assert n * 0.1 - z * math.sqrt(n * 0.09) <= counts["canary@3"] <= n * 0.1 + z * math.sqrt(n * 0.09), counts
        # The version that served is in the response and in the per-version metric.
        metrics = httpx.get(f"{a.url}/metrics").text
        assert 'bioinstruct_alias_requests_total{alias="team",version="3"}' in metrics
        # Promote through the CLI, as an operator on another machine would.
        env = {**os.environ, "BIOINSTRUCT_REGISTRY": url}
        out = subprocess.run([sys.executable, "-m", "bioinstruct.cli", "adapters", "promote", "team"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "team -> canary@3" in out.stdout
        deadline = time.monotonic() + 2 * POLL_S + 1
        while {served_by(rep.complete("team")) for rep in (a, b) for _ in range(5)} != {"canary@3"}:
            assert time.monotonic() < deadline, "promote did not reach both replicas"
            time.sleep(0.1)
        # Rollback restores the previous record: the 90/10 split.
        r = httpx.post(f"{a.url}/admin/aliases/team/rollback", headers=ADMIN, timeout=60)
        assert r.status_code == 200 and r.json()["weights"] == {"canary@2": 90, "canary@3": 10}, r.text
    assert set(load.statuses) == {200}, (load.statuses, load.errors[:3])


def test_concurrent_moves_through_both_replicas_are_compare_and_swap(replicas):
    url, (a, b) = replicas
    rec = httpx.get(f"{a.url}/admin/aliases/team", headers=ADMIN, timeout=30).json()
    generation = rec["generation"]
    results: dict[str, httpx.Response] = {}

    def move(name: str, replica: Replica, target: str) -> None:
        results[name] = httpx.put(f"{replica.url}/admin/aliases/team",
                                  json={"target": target, "expected_generation": generation},
                                  headers=ADMIN, timeout=60)

    threads = [threading.Thread(target=move, args=("a", a, "canary@1")),
               threading.Thread(target=move, args=("b", b, "canary@2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [200, 409], {k: (r.status_code, r.text) for k, r in results.items()}
    loser = next(r for r in results.values() if r.status_code == 409)
    assert "generation" in loser.json()["error"]["message"]
    winner = next(r for r in results.values() if r.status_code == 200).json()
    final = Registry(url).alias("team")
    assert final.generation == generation + 1 and final.target == winner["target"]


def test_weight_zero_drains_a_version_on_both_replicas_without_failing_its_requests(replicas):
    """Weight 0 takes a version out of the split on every replica: no new request reaches it
    (sticky callers that had it included), a request already running on it finishes, and only
    then is it unloaded from each engine."""
    from bioinstruct.service.adapters import pick

    url, (a, b) = replicas
    split = {"canary@2": 50, "canary@3": 50}
    r = httpx.put(f"{a.url}/admin/aliases/team", json={"weights": split}, headers=ADMIN, timeout=60)
    assert r.status_code == 200, r.text
    # A sticky caller that the 50/50 split sends to canary@3 (the choice is a hash; see pick()).
    key = next(f"user-{i}" for i in range(100)
               if pick((("canary@2", 50), ("canary@3", 50)), f"user-{i}", "team") == "canary@3")
    deadline = time.monotonic() + 2 * POLL_S + 2
    while {served_by(rep.complete("team", session=key)) for rep in (a, b)} != {"canary@3"}:
        assert time.monotonic() < deadline, "the 50/50 split did not reach both replicas"
        time.sleep(0.1)
    assert "canary@3" in a.engine.loras and "canary@3" in b.engine.loras  # resident where it served

    running: dict[str, httpx.Response] = {}
    with Load([a, b], "team") as load:
        a.engine.delay_s = 8.0  # the next requests on replica a stay inside the engine for 8 s
        slow = threading.Thread(target=lambda: running.setdefault("r", a.complete("team", session=key)))
        slow.start()
        time.sleep(0.5)
        r = httpx.put(f"{b.url}/admin/aliases/team", json={"weights": {"canary@2": 100, "canary@3": 0}},
                      headers=ADMIN, timeout=60)
        assert r.status_code == 200 and r.json()["weights"] == {"canary@2": 100, "canary@3": 0}, r.text
        assert r.json()["target"] == "canary@2"
        time.sleep(2 * POLL_S + 0.5)  # replica a has read the drain by now ...
        assert slow.is_alive() and "canary@3" in a.engine.loras  # ... and keeps canary@3 for its request
        a.engine.delay_s = 0.0
        slow.join(timeout=30)
        assert served_by(running["r"]) == "canary@3"  # the request that was running finished on it
        counts = Counter(served_by((a, b)[i % 2].complete("team", session=key if i % 3 == 0 else None))
                         for i in range(300))
        assert counts == {"canary@2": 300}, counts  # the key that had canary@3 included
        deadline = time.monotonic() + 10
        while "canary@3" in a.engine.loras or "canary@3" in b.engine.loras:
            assert time.monotonic() < deadline, (sorted(a.engine.loras), sorted(b.engine.loras))
            time.sleep(0.1)
    assert set(load.statuses) == {200} and sum(load.statuses.values()) > 20, (load.statuses, load.errors[:3])
    record = Registry(url).alias("team")
    assert dict(record.split) == {"canary@2": 100, "canary@3": 0}


def test_a_replica_whose_store_goes_away_says_so_and_keeps_serving(make_lora, base_model_dir, tmp_path):
    """Its own S3 server, stopped mid-way: the replica keeps serving its last good state, reports
    the registry as unreadable (readiness warning, metric), and past the limit fails readiness."""
    from bioinstruct.model import inspect_base_model

    server, s3 = start_s3()
    replica = None
    try:
        url = s3.bucket()
        Registry(url).publish(make_lora(seed=41, rank=4), name="canary", category="IE",
                              base_fingerprint=inspect_base_model(base_model_dir).fingerprint, alias="team")
        replica = Replica(url, tmp_path / "replica.log", s3.env, BIOINSTRUCT_REGISTRY_STALE_AFTER_S="3",
                          AWS_MAX_ATTEMPTS="1")
        replica.wait_ready()
        assert served_by(replica.complete("team")) == "canary@1"
        server.stop()
        deadline = time.monotonic() + 30
        while True:
            ready = httpx.get(f"{replica.url}/health/ready", timeout=5)
            body = ready.json()
            if any("registry unreadable" in w for w in body.get("warnings", [])):
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.3)
        assert body["registry"]["ok"] is False
        assert served_by(replica.complete("team")) == "canary@1"  # still serving its last good state
        metrics = httpx.get(f"{replica.url}/metrics").text
        failures = [line for line in metrics.splitlines()
                    if line.startswith("bioinstruct_registry_reconcile_failures_total")]
        assert failures and float(failures[0].split()[-1]) >= 1
        deadline = time.monotonic() + 30
        while httpx.get(f"{replica.url}/health/ready", timeout=5).status_code == 200:
            assert time.monotonic() < deadline, "readiness never failed on a stale registry"
            time.sleep(0.3)
        problems = httpx.get(f"{replica.url}/health/ready", timeout=5).json()["problems"]
        assert any("no longer claims" in p for p in problems), problems
        assert served_by(replica.complete("team")) == "canary@1"
    finally:
        if replica is not None:
            replica.stop()
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - already stopped above
            pass
