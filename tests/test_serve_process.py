"""`bioinstruct serve` (what `make serve` runs): ready on its port, clean stop, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bioinstruct.service.engine import free_port
from tests.server_process import wait_ready

pytestmark = pytest.mark.engine


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        children = {p for p, pp in parents.items() if pp in frontier} - found
        found |= children
        frontier = children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def _start(tmp_path: Path, **extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "BIOINSTRUCT_REGISTRY": str(tmp_path / "registry"),
           "BIOINSTRUCT_ENGINE_LOG_DIR": str(tmp_path), **extra}
    proc = subprocess.Popen([sys.executable, "-m", "bioinstruct.cli", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        # The pipe is read only once the server has exited (reading a live one would block).
        output = lambda: proc.stdout.read().decode() if proc.poll() is not None else "(still running)"  # noqa: E731
        wait_ready(url, 420, proc=proc, log=output, interval=0.5)
    except AssertionError:
        proc.kill()
        raise
    return proc, url


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = {p for p in pids if _alive(p)}
        if not alive:
            return set()
        time.sleep(0.2)
    return {p for p in pids if _alive(p)}


def test_serve_answers_with_the_shipped_adapters_then_stops_cleanly_on_sigterm(tmp_path):
    from bioinstruct.shipped import default_root, load_shipped

    shipped = {item.alias: item for item in load_shipped(default_root())}
    proc, url = _start(tmp_path)
    try:
        assert httpx.get(f"{url}/health/live").status_code == 200
        # A fresh registry: serve published the shipped adapters and pointed their aliases.
        ids = {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
        assert set(shipped) <= ids and {f"{i.name}@1" for i in shipped.values()} <= ids
        r = httpx.post(f"{url}/generate", json={"instruction": "Name one vitamin.", "max_tokens": 4}, timeout=60)
        assert r.status_code == 200
        if "gen" in shipped:
            assert r.json()["adapter"] == "gen"
        # A guard against shipping a broken adapter (quality is measured by eval, not here).
        r = httpx.post(f"{url}/extract", timeout=120, json={
            "text": "Cisplatin-induced nephrotoxicity was reduced by magnesium supplementation."})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["adapter"] == "ie"
        found = {(e["type"], e["text"].lower()) for e in body["entities"]}
        assert ("Chemical", "cisplatin") in found and ("Disease", "nephrotoxicity") in found, body
        children = _descendants(proc.pid)
        assert children, "the engine runs as a child of the gateway"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        assert _wait_gone(children, 30) == set(), "orphaned engine processes"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_engine_does_not_outlive_a_killed_gateway(tmp_path):
    proc, _ = _start(tmp_path)
    children = _descendants(proc.pid)
    assert children
    proc.kill()  # no chance to clean up: the engine must still go (parent-death signal)
    proc.wait(timeout=10)
    assert _wait_gone(children, 60) == set(), "engine survived its gateway"


def test_an_all_linear_adapter_is_refused_by_the_default_engine_and_served_by_one_with_lora_everywhere(
        tmp_path, make_lora):
    """TRL's common `target_modules="all-linear"` (peft's own spelling, resolved by peft) and an
    MLP-only adapter: the default engine (LoRA on attention) refuses both at publish, naming the
    way out; `bioinstruct serve` with BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES='[]' (LoRA on every
    layer) serves both, and each answers differently from base, so the MLP weights are applied
    (an engine that ignored them would give base's answer for the MLP-only one)."""
    all_linear = make_lora(seed=7, rank=4, scale=2.0, targets=("all-linear",))
    mlp_only = make_lora(seed=8, rank=4, scale=2.0, targets=("gate_proj", "up_proj", "down_proj"))
    registry = tmp_path / "registry"
    env = {k: v for k, v in os.environ.items() if k != "BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES"}
    publish = [sys.executable, "-m", "bioinstruct.cli", "adapters", "publish", "--registry", str(registry)]
    refused = subprocess.run([*publish, str(all_linear), "--name", "trl-style", "--category", "QA"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES='[]'" in refused.stderr, refused.stderr
    every_layer = {**env, "BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES": "[]"}
    for folder, name in ((all_linear, "trl-style"), (mlp_only, "mlp-only")):
        out = subprocess.run([*publish, str(folder), "--name", name, "--category", "QA", "--alias", name],
                             env=every_layer, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    proc, url = _start(tmp_path, BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES="[]", BIOINSTRUCT_SHIPPED_ADAPTERS="off",
                       BIOINSTRUCT_PRELOAD_ADAPTERS="")
    try:
        def answer(model: str) -> dict:
            r = httpx.post(f"{url}/v1/completions", timeout=120, json={
                "model": model, "prompt": "The liver is an organ that", "max_tokens": 8, "temperature": 0})
            assert r.status_code == 200, r.text
            return r.json()

        base = answer("base")["choices"][0]["text"]
        for name in ("trl-style", "mlp-only"):
            body = answer(name)
            assert body["model"] == f"{name}@1"
            assert body["choices"][0]["text"] != base, (name, base)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
