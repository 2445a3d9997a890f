"""Zero-downtime alias swaps under load, rollback, refusal of bad versions, external changes."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path

import httpx
import pytest

from bioinstruct.registry import Registry
from tests.service_helpers import ExtraGateway, publish, set_alias

pytestmark = pytest.mark.engine

ALIAS = "swapper"
NAME = "swap-gen"


@pytest.fixture(scope="module")
def versions(live_service, make_lora):
    v1 = publish(live_service, make_lora(seed=31), NAME, "GEN", alias=ALIAS)["manifest"]["version"]
    v2 = publish(live_service, make_lora(seed=32), NAME, "GEN")["manifest"]["version"]
    return v1, v2


async def _one(client: httpx.AsyncClient, i: int) -> dict:
    r = await client.post("/generate", json={"instruction": f"Describe symptom number {i} of influenza.",
                                             "adapter": ALIAS, "max_tokens": 32})
    return {"status": r.status_code, "body": r.json(), "i": i}


async def _swap_under_load(live, do_swap) -> tuple[list[dict], list[dict]]:
    gw = live.gateway
    async with httpx.AsyncClient(base_url=live.base_url, timeout=300) as client:
        before = [asyncio.create_task(_one(client, i)) for i in range(60)]
        deadline = time.monotonic() + 120
        while gw.admission.inflight < 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert gw.admission.inflight >= 50, "could not get 50 requests in flight"
        in_flight_at_swap = gw.admission.inflight
        swap = await do_swap(client)
        assert swap.status_code == 200, swap.text
        still_running = sum(not t.done() for t in before)
        after = await asyncio.gather(*[_one(client, 100 + i) for i in range(10)])
        done_before = await asyncio.gather(*before)
    assert in_flight_at_swap >= 50 and still_running > 0  # the swap really happened mid-flight
    return list(done_before), list(after)


def _versions(results: list[dict]) -> set[int]:
    return {r["body"]["version"] for r in results}


def test_swap_and_rollback_under_load_lose_nothing(live_service, versions):
    v1, v2 = versions

    async def swap(client):
        return await client.put(f"/admin/aliases/{ALIAS}", json={"target": f"{NAME}@{v2}"},
                                headers=live_service.admin_headers)

    before, after = asyncio.run(_swap_under_load(live_service, swap))
    assert all(r["status"] == 200 for r in before + after), [r for r in before + after if r["status"] != 200]
    assert _versions(before) == {v1}  # admitted before the flip: finished on the old version
    assert _versions(after) == {v2}  # started after the swap: the new version
    assert all(r["body"]["model"] == f"{NAME}@{r['body']['version']}" for r in before + after)
    _wait_unloaded(live_service, f"{NAME}@{v1}")  # drained, then unloaded

    async def rollback(client):
        return await client.post(f"/admin/aliases/{ALIAS}/rollback", headers=live_service.admin_headers)

    before, after = asyncio.run(_swap_under_load(live_service, rollback))
    assert all(r["status"] == 200 for r in before + after), [r for r in before + after if r["status"] != 200]
    assert _versions(before) == {v2} and _versions(after) == {v1}
    _wait_unloaded(live_service, f"{NAME}@{v2}")
    swaps = live_service.gateway.metrics.swaps.labels(alias=ALIAS, result="ok")._value.get()
    assert swaps >= 3


def _wait_unloaded(live, ref: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while ref in live.gateway.adapters.loaded and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ref not in live.gateway.adapters.loaded
    models = httpx.get(f"{live.gateway.client.base_url}/v1/models", timeout=10).json()["data"]
    assert ref not in {m["id"] for m in models}  # gone from the engine too


def _serving_version(live) -> int:
    r = httpx.post(f"{live.base_url}/generate", json={"instruction": "Say ok.", "adapter": ALIAS, "max_tokens": 2},
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["version"]


def test_corrupt_version_is_refused_and_old_keeps_serving(live_service, versions, make_lora):
    serving = _serving_version(live_service)
    bad = publish(live_service, make_lora(seed=33), NAME, "GEN")["manifest"]["version"]
    weights = Path(live_service.registry, "adapters", NAME, str(bad), "adapter_model.safetensors")
    data = bytearray(weights.read_bytes())
    data[-100:] = b"\x00" * 100  # bit rot after publishing
    weights.write_bytes(bytes(data))
    r = set_alias(live_service, ALIAS, f"{NAME}@{bad}")
    assert r.status_code == 400 and "checksum" in r.json()["error"]["message"]
    assert Registry(live_service.registry).alias(ALIAS).target == f"{NAME}@{serving}"  # registry unchanged
    assert _serving_version(live_service) == serving
    # truncated weights are caught even with a matching manifest
    weights.write_bytes(bytes(data[:1000]))
    r = set_alias(live_service, ALIAS, f"{NAME}@{bad}")
    assert r.status_code == 400
    assert _serving_version(live_service) == serving


def test_wrong_base_model_is_refused(live_service, versions, make_lora, tmp_path):
    serving = _serving_version(live_service)
    reg = Registry(live_service.registry)
    foreign = reg.publish(make_lora(seed=34), name=NAME, category="GEN", base_fingerprint="0" * 32,
                          base_model="some-other-model")
    r = set_alias(live_service, ALIAS, foreign.ref)
    assert r.status_code == 400 and "base model" in r.json()["error"]["message"]
    # An adapter shaped for a wider model (hidden 1024) is refused at publish time.
    folder = tmp_path / "wide"
    folder.mkdir()
    src = make_lora(seed=35)
    (folder / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    header = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":
              {"dtype": "F32", "shape": [8, 1024], "data_offsets": [0, 8 * 1024 * 4]}}
    raw = json.dumps(header).encode()
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * (8 * 1024 * 4))
    dest = live_service.publish_root / "wide"
    dest.mkdir(exist_ok=True)
    for f in folder.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    r = httpx.post(f"{live_service.base_url}/admin/adapters", headers=live_service.admin_headers,
                   json={"path": "wide", "name": NAME, "category": "GEN"}, timeout=60)
    assert r.status_code == 400 and "hidden size 1024" in r.json()["error"]["message"]
    assert _serving_version(live_service) == serving


def test_change_by_another_process_is_picked_up_without_restart(live_service, versions):
    v1, v2 = versions
    reg = Registry(live_service.registry)  # e.g. a training run publishing from elsewhere
    current = _serving_version(live_service)
    target = v2 if current == v1 else v1
    started = time.monotonic()
    reg.set_alias(ALIAS, f"{NAME}@{target}")
    while _serving_version(live_service) != target:
        assert time.monotonic() - started < 10, "alias change not picked up"
        time.sleep(0.2)
    assert time.monotonic() - started < 5  # poll interval 0.5 s + load


def test_corrupt_alias_file_keeps_the_last_good_version_serving(live_service, versions):
    serving = _serving_version(live_service)
    folder = Path(live_service.registry) / "aliases" / ALIAS
    path = max(folder.glob("*.json"))  # the alias's current generation
    good = path.read_bytes()
    try:
        path.write_bytes(b'{"alias": "' + ALIAS.encode() + b'", "tar')  # a half-written or damaged file
        time.sleep(2)  # several registry polls (0.5 s)
        assert _serving_version(live_service) == serving  # not silently base
        ready = httpx.get(f"{live_service.base_url}/health/ready", timeout=10)
        assert ready.status_code == 200
        assert any(ALIAS in w and "last good version" in w for w in ready.json()["warnings"])
        assert "bioinstruct_registry_unreadable_aliases 1.0" in httpx.get(f"{live_service.base_url}/metrics").text
    finally:
        path.write_bytes(good)
    time.sleep(1.5)
    assert httpx.get(f"{live_service.base_url}/health/ready", timeout=10).json()["warnings"] == []


def test_restarted_gateway_comes_back_in_the_same_state(live_service, engine, core, versions):
    expected = dict(live_service.gateway.adapters.routes)
    assert ALIAS in expected
    with ExtraGateway(engine, core, Path(live_service.registry), admin_token="x") as gw:
        ready = httpx.get(f"{gw.base_url}/health/ready", timeout=10).json()
        assert ready["aliases"] == expected
        r = httpx.post(f"{gw.base_url}/generate", json={"instruction": "Say ok.", "adapter": ALIAS, "max_tokens": 2},
                       timeout=60)
        assert r.status_code == 200 and r.json()["model"] == expected[ALIAS]


def test_pinned_versions_and_delete(live_service, versions):
    v1, v2 = versions
    for v in (v1, v2):
        r = httpx.post(f"{live_service.base_url}/generate",
                       json={"instruction": "Say ok.", "adapter": f"{NAME}@{v}", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200 and r.json()["version"] == v and r.json()["adapter"] == f"{NAME}@{v}"
    serving = Registry(live_service.registry).alias(ALIAS).target
    name, version = serving.split("@")
    r = httpx.delete(f"{live_service.base_url}/admin/adapters/{name}/{version}", headers=live_service.admin_headers)
    assert r.status_code == 409 and ALIAS in r.json()["error"]["message"]
    other = v1 if int(version) == v2 else v2
    r = httpx.delete(f"{live_service.base_url}/admin/adapters/{NAME}/{other}", headers=live_service.admin_headers)
    assert r.status_code == 204
    r = httpx.post(f"{live_service.base_url}/generate",
                   json={"instruction": "Say ok.", "adapter": f"{NAME}@{other}", "max_tokens": 2}, timeout=60)
    assert r.status_code == 404


def test_admin_needs_the_admin_token(live_service):
    url = f"{live_service.base_url}/admin/adapters"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers=live_service.admin_headers).status_code == 200
