"""Reliability and security, fast parts (the long runs are in tests/soak, `make soak`)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import httpx
import pytest

from tests.service_helpers import ExtraGateway, publish

pytestmark = pytest.mark.engine


def _engine_running(live) -> float:
    text = httpx.get(f"{live.gateway.client.base_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# --- bad adapters through the admin API -------------------------------------------------------

@pytest.fixture(scope="module")
def serving(live_service, make_lora):
    ref = publish(live_service, make_lora(seed=41), "rel-gen", "GEN", alias="rel")["ref"]
    return ref


def _admin_publish(live, path: str) -> httpx.Response:
    return httpx.post(f"{live.base_url}/admin/adapters", headers=live.admin_headers, timeout=60,
                      json={"path": path, "name": "rel-gen", "category": "GEN", "alias": "rel"})


def _make_folder(live, name: str, src, mutate) -> str:
    dest = live.publish_root / name
    dest.mkdir()
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (dest / f).write_bytes((src / f).read_bytes())
    mutate(dest)
    return name


def test_bad_adapter_publishes_are_refused_and_change_nothing(live_service, serving, make_lora, tmp_path):
    import json
    import os

    src = make_lora(seed=42)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "adapter_model.safetensors").write_bytes((src / "adapter_model.safetensors").read_bytes())

    def pickle_bin(d):
        (d / "adapter_model.bin").write_bytes(b"\x80\x04\x95pickle")

    def truncated(d):
        data = (d / "adapter_model.safetensors").read_bytes()
        (d / "adapter_model.safetensors").write_bytes(data[:200])

    def no_config(d):
        (d / "adapter_config.json").unlink()

    def rank_64(d):
        cfg = json.loads((d / "adapter_config.json").read_text())
        (d / "adapter_config.json").write_text(json.dumps({**cfg, "r": 64}))

    def symlink_out(d):
        (d / "adapter_model.safetensors").unlink()
        os.symlink(outside / "adapter_model.safetensors", d / "adapter_model.safetensors")

    cases = {
        "../" + live_service.publish_root.name: ("'..'", "unsafe_path"),
        str(tmp_path): ("absolute", "unsafe_path"),
        "/etc": ("absolute", "unsafe_path"),
        "does-not-exist": ("no folder", "not_found"),
        _make_folder(live_service, "pickle", src, pickle_bin): ("pickle", "unsafe_weights"),
        _make_folder(live_service, "truncated", src, truncated): ("truncated", "corrupt_adapter"),
        _make_folder(live_service, "noconfig", src, no_config): ("missing", "incomplete_adapter"),
        _make_folder(live_service, "rank64", src, rank_64): ("rank 64", "rank_too_high"),
        _make_folder(live_service, "symlinked", src, symlink_out): ("symlink", "unsafe_path"),
        # The engine has LoRA on attention only: MLP weights would be silently ignored.
        _make_folder(live_service, "mlp", make_lora(seed=43, targets=("q_proj", "down_proj")), lambda d: None):
            ("LoRA weights on ['down_proj']", "target_modules_unsupported"),
    }
    (live_service.publish_root / "linkdir").symlink_to(outside)
    cases["linkdir"] = ("outside the publish root", "unsafe_path")
    before = httpx.get(f"{live_service.base_url}/admin/adapters", headers=live_service.admin_headers).json()
    for path, (fragment, code) in cases.items():
        r = _admin_publish(live_service, path)
        assert r.status_code == (404 if code == "not_found" else 400), (path, r.text)
        error = r.json()["error"]
        assert fragment in error["message"], (path, error)
        assert error["code"] == code, (path, error)
    after = httpx.get(f"{live_service.base_url}/admin/adapters", headers=live_service.admin_headers).json()
    assert [v["ref"] for v in after["versions"]] == [v["ref"] for v in before["versions"]]
    r = httpx.post(f"{live_service.base_url}/generate", json={"instruction": "ok", "adapter": "rel", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["model"] == serving


# --- disconnects free their slot ---------------------------------------------------------------

def test_client_disconnect_mid_stream_frees_its_slot(live_service):
    gw = live_service.gateway
    assert _wait(lambda: gw.admission.inflight == 0 and _engine_running(live_service) == 0, 60)
    with httpx.Client(base_url=live_service.base_url, timeout=60) as client:
        with client.stream("POST", "/generate", json={"instruction": "Write a long essay about the kidney.",
                                                       "max_tokens": 900, "stream": True, "adapter": "base"}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            assert gw.admission.inflight == 1
        # leaving the block closed the connection mid-stream
    assert _wait(lambda: gw.admission.inflight == 0, 5), "slot not freed"
    assert _wait(lambda: _engine_running(live_service) == 0, 5), "engine still generating for a gone client"


def test_client_disconnect_non_streaming_cancels_engine_work(live_service):
    gw = live_service.gateway
    assert _wait(lambda: gw.admission.inflight == 0 and _engine_running(live_service) == 0, 60)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{live_service.base_url}/generate", timeout=1.5,
                   json={"instruction": "Write a long essay about the liver.", "max_tokens": 900, "adapter": "base"})
    assert _wait(lambda: gw.admission.inflight == 0, 5)
    assert _wait(lambda: _engine_running(live_service) == 0, 5)


# --- overload ----------------------------------------------------------------------------------

def test_overload_is_refused_fast_and_recovers(engine, core, tmp_path):
    with ExtraGateway(engine, core, tmp_path / "reg", max_inflight=4, max_queue=4, retry_after_s=2) as gw:
        body = {"instruction": "List three antibiotics.", "max_tokens": 24, "adapter": "base"}

        async def one(client):
            started = time.perf_counter()
            r = await client.post("/generate", json=body)
            return r.status_code, time.perf_counter() - started, r.headers.get("retry-after")

        async def burst(n):
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=120) as client:
                return await asyncio.gather(*[one(client) for _ in range(n)])

        baseline = asyncio.run(burst(1))[0][1]
        results = asyncio.run(burst(32))  # 4x the admission limit (4 running + 4 queued)
        refused = [r for r in results if r[0] == 429]
        served = [r for r in results if r[0] == 200]
        assert len(served) + len(refused) == 32
        assert len(served) >= 8 and len(refused) >= 16
        assert all(r[2] == "2" for r in refused)
        # Immediate, not timeouts (a queue timeout takes its BIOINSTRUCT_QUEUE_TIMEOUT_S): the typical
        # refusal well under 0.5 s; the slowest shares 2 cores with the engine and 32 connects
        # from this one client (0.79 s seen once in a full suite), still far from any timeout.
        waits = sorted(r[1] for r in refused)
        assert waits[len(waits) // 2] < 0.5 and waits[-1] < 2.0, waits
        after = asyncio.run(burst(1))[0]
        assert after[0] == 200 and after[1] < max(3 * baseline, baseline + 2)  # back to normal
        metrics = httpx.get(f"{gw.base_url}/metrics").text
        assert 'bioinstruct_rejected_total{reason="queue_full"}' in metrics


# --- security ----------------------------------------------------------------------------------

def _outside_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
            addr = sock.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_engine_port_is_not_reachable_beyond_loopback(live_service):
    port = int(live_service.gateway.client.base_url.rsplit(":", 1)[1])
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    addr = _outside_address()
    assert addr, "this machine has no non-loopback address to test from"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{addr}:{port}/v1/models", timeout=5)


def test_no_key_or_token_in_logs(engine, core, tmp_path, caplog):
    secret_key, admin = "sk-very-secret-key-123", "admin-secret-token-456"
    caplog.set_level(logging.DEBUG)
    with ExtraGateway(engine, core, tmp_path / "reg", api_keys={secret_key: ["*"]}, admin_token=admin) as gw:
        headers = {"Authorization": f"Bearer {secret_key}"}
        httpx.post(f"{gw.base_url}/generate", json={"instruction": "hi", "max_tokens": 2}, headers=headers)
        httpx.post(f"{gw.base_url}/generate", json={"instruction": "hi"},
                   headers={"Authorization": "Bearer wrong-guess-789"})
        httpx.get(f"{gw.base_url}/admin/adapters", headers={"Authorization": f"Bearer {admin}"})
        httpx.get(f"{gw.base_url}/admin/adapters", headers={"Authorization": "Bearer nope-admin-000"})
        httpx.post(f"{gw.base_url}/qa", json={"question": 1}, headers=headers)
    logged = caplog.text + (engine.log_path.read_text(errors="replace") if engine.log_path else "")
    for secret in (secret_key, admin, "wrong-guess-789", "nope-admin-000"):
        assert secret not in logged


# --- the engine dies under load ----------------------------------------------------------------

def test_engine_killed_under_load_fails_fast_then_recovers(live_service, serving):
    gw = live_service.gateway
    aliases_before = dict(gw.adapters.routes)
    assert aliases_before.get("rel") == serving

    async def one(client, i):
        started = time.perf_counter()
        try:
            r = await client.post("/generate", json={"instruction": f"Describe organ {i}.", "max_tokens": 200,
                                                     "adapter": "rel" if i % 2 else "base"})
            return r.status_code, time.perf_counter() - started
        except httpx.HTTPError as exc:
            return type(exc).__name__, time.perf_counter() - started

    async def run():
        async with httpx.AsyncClient(base_url=live_service.base_url, timeout=120) as client:
            tasks = [asyncio.create_task(one(client, i)) for i in range(16)]
            deadline = time.monotonic() + 60
            while gw.admission.inflight < 16 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # mid-generation
            killed_at = time.perf_counter()
            gw.supervisor.process.kill()
            results = await asyncio.gather(*tasks)
            return results, time.perf_counter() - killed_at

    results, took = asyncio.run(run())
    statuses = [s for s, _ in results]
    assert all(s == 503 for s in statuses), statuses  # none hung, none a 500
    assert took < 10, f"in-flight requests took {took:.1f} s to fail after the kill"
    r = httpx.post(f"{live_service.base_url}/generate", json={"instruction": "x", "max_tokens": 2})
    assert r.status_code == 503 and r.headers.get("retry-after")
    assert _wait(lambda: httpx.get(f"{live_service.base_url}/health/ready").status_code == 200, 300, 0.5)
    assert gw.supervisor.restarts >= 1
    assert gw.adapters.routes == aliases_before
    # What this replica was serving from (warm: `rel` took requests) is loaded again before it is
    # ready; an alias no request used here loads on its first request.
    assert serving in gw.adapters.warm
    assert {ref for ref in aliases_before.values() if ref in gw.adapters.warm} <= gw.adapters.loaded
    r = httpx.post(f"{live_service.base_url}/generate", json={"instruction": "ok", "adapter": "rel", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["model"] == serving
    assert "bioinstruct_engine_restarts_total" in httpx.get(f"{live_service.base_url}/metrics").text


# --- stalled uploads -----------------------------------------------------------------------------

def test_stalled_uploads_do_not_lock_out_valid_callers(engine, core, tmp_path):
    """Hundreds of unauthenticated connections send the headers of POST /qa with a large
    Content-Length and 3 bytes of body, then stall. Admission used to count them on arrival,
    so every valid caller got 429 'server busy'. Now they hold only their connection and are
    dropped with 408 after the body timeout."""
    with ExtraGateway(engine, core, tmp_path / "reg", max_inflight=4, max_queue=4, body_timeout_s=3,
                      api_keys={"good-key": ["*"]}) as gw:
        socks = []
        try:
            for _ in range(300):
                s = socket.create_connection(("127.0.0.1", gw.port))
                s.sendall(b"POST /qa HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100000\r\n\r\n{\"q")
                socks.append(s)
            time.sleep(0.5)
            r = httpx.post(f"{gw.base_url}/generate", json={"instruction": "Say ok.", "max_tokens": 2},
                           headers={"Authorization": "Bearer good-key"}, timeout=60)
            assert r.status_code == 200, r.text
            assert gw.app.state.gateway.admission.arrived == 0
            socks[0].settimeout(10)
            answer = socks[0].recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        finally:
            for s in socks:
                s.close()
