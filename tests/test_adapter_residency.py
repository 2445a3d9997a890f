"""Which versions stay resident when there are more than the replica's capacity: least recently
used first, never one a request holds, routed and preloaded ones last; and a request that leases a
version while another is being unloaded keeps it. A fake engine client (no engine is needed to
show the order of load and unload calls; the served swap is tested in test_service_swap.py)."""

from __future__ import annotations

import asyncio

import pytest

from bioinstruct.adapter_files import AdapterLimits
from bioinstruct.model import inspect_base_model
from bioinstruct.registry import Registry
from bioinstruct.service.adapters import AdapterManager
from bioinstruct.service.metrics import Metrics


class FakeEngineClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.unload_gate: asyncio.Event | None = None

    async def load_lora(self, name: str, path: str) -> None:
        self.calls.append(("load", name))

    async def unload_lora(self, name: str) -> None:
        self.calls.append(("unload", name))
        if self.unload_gate is not None:
            await self.unload_gate.wait()

    async def post(self, path, body, timeout=None):
        return {"choices": [{"text": ""}]}


@pytest.fixture
def manager(make_lora, base_model_dir, tmp_path):
    base = inspect_base_model(base_model_dir)
    reg = Registry(tmp_path / "reg")
    for i in range(5):
        reg.publish(make_lora(seed=90 + i, rank=4), name=f"team{i}", category="IE", base_fingerprint=base.fingerprint)
    client = FakeEngineClient()
    mgr = AdapterManager(reg, client, base, limits=AdapterLimits(base_hidden_size=base.hidden_size),
                         capacity=2, metrics=Metrics())
    return mgr, client


async def _use(mgr, i):
    target = mgr.resolve(f"team{i}@1")
    async with mgr.lease(target):
        await asyncio.sleep(0)


async def test_least_recently_used_goes_first_and_capacity_holds(manager):
    mgr, client = manager
    for i in (0, 1, 0, 2):  # team1 is now the least recently used
        await _use(mgr, i)
    assert mgr.loaded == {"team0@1", "team2@1"}
    assert [c for c in client.calls if c[0] == "unload"] == [("unload", "team1@1")]


async def test_a_leased_version_is_never_evicted(manager):
    mgr, client = manager
    await _use(mgr, 0)
    await _use(mgr, 1)
    held = mgr.resolve("team0@1")
    async with mgr.lease(held):  # team0 is the LRU but a request holds it
        await _use(mgr, 2)
        assert "team0@1" in mgr.loaded and "team1@1" not in mgr.loaded


async def test_a_version_leased_while_another_unloads_is_kept(manager):
    mgr, client = manager
    mgr.capacity = 3
    for i in range(3):
        await _use(mgr, i)
    mgr.capacity = 1  # two to evict, least recently used first: team0, then team1
    client.unload_gate = asyncio.Event()
    room = asyncio.create_task(mgr._make_room())
    await asyncio.sleep(0.05)  # team0's unload is awaiting
    assert client.calls[-1] == ("unload", "team0@1")
    # a request leases team1 now; the eviction, resumed, must not take it
    lease = mgr.lease(mgr.resolve("team1@1"))
    await lease.__aenter__()
    client.unload_gate.set()
    await room
    assert "team1@1" in mgr.loaded and ("unload", "team1@1") not in client.calls
    assert mgr.loaded == {"team1@1"}  # team2 went instead
    await lease.__aexit__(None, None, None)
