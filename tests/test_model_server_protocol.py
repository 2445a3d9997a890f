"""The model-server protocol on the gateway's /metrics: what llm-d's Endpoint Picker reads.

Checked against the live gateway on the real engine (each family present once, with vLLM's
names, types and labels), and the picker's LoRA-affinity rule replayed on scrapes that our
own collector renders for two replicas.
"""

from __future__ import annotations

import re
import time

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bioinstruct.service.model_server_protocol import (
    REQUIRED_FAMILIES,
    LoraState,
    ModelServerCollector,
)
from tests.service_helpers import publish


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_live_metrics_carry_each_protocol_family_once(live_service, make_lora):
    pub = publish(live_service, make_lora(seed=61, rank=8), name="msp-ie", category="IE", alias="msp")
    ref = pub["ref"]
    r = httpx.post(f"{live_service.base_url}/v1/completions", json={"model": "msp", "prompt": "Hello",
                                                                    "max_tokens": 2}, timeout=120)
    assert r.status_code == 200, r.text
    text = httpx.get(f"{live_service.base_url}/metrics", timeout=30).text
    for name in REQUIRED_FAMILIES:
        # A second TYPE line for one family makes a real scrape (and the picker's) fail whole.
        assert len(re.findall(rf"^# TYPE {re.escape(name)} ", text, re.M)) == 1, name
        assert re.search(rf"^# TYPE {re.escape(name)} gauge$", text, re.M), name
    families = _families(text)
    waiting = families["vllm:num_requests_waiting"].samples
    running = families["vllm:num_requests_running"].samples
    kv = families["vllm:kv_cache_usage_perc"].samples
    assert waiting and running and kv
    assert all(s.value >= 0 for s in waiting + running) and all(0 <= s.value <= 1 for s in kv)
    assert {"block_size", "num_gpu_blocks"} <= set(families["vllm:cache_config_info"].samples[0].labels)
    (lora,) = families["vllm:lora_requests_info"].samples
    resident = lora.labels["running_lora_adapters"].split(",")
    assert ref in resident and "msp" in resident  # the names a request uses: the version and its alias
    waiting_names = [n for n in lora.labels["waiting_lora_adapters"].split(",") if n]
    versions = [n for n in resident + waiting_names if "@" in n]
    # one slot per version: the alias names listed beside their versions raise max_lora as much
    assert int(lora.labels["max_lora"]) == (live_service.gateway.adapters.capacity
                                            + len(resident) + len(waiting_names) - len(versions))
    assert abs(lora.value - time.time()) < 60  # a timestamp: the newest series wins


def test_waiting_includes_the_gateways_own_queue():
    collector = ModelServerCollector()
    collector.snapshot.series["vllm:num_requests_waiting"] = [({"model_name": "base", "engine": "0"}, 2.0)]
    collector.gateway_queued = lambda: 5
    registry = CollectorRegistry()
    registry.register(collector)
    (sample,) = _families(generate_latest(registry).decode())["vllm:num_requests_waiting"].samples
    assert sample.value == 7.0 and sample.labels == {"model_name": "base", "engine": "0"}


def _scrape(resident: dict[str, list[str]], loading: dict[str, list[str]], max_lora: int) -> str:
    collector = ModelServerCollector()
    collector.lora_state = LoraState(resident=resident, loading=loading, max_lora=max_lora)
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def picker_lora_affinity(scrape: str, model: str) -> float:
    """llm-d's LoRA-affinity scorer as documented (loraaffinity/lora_affinity.go at the commit in
    shared/crds/SOURCE.md): the adapter active 1.0, a free slot 0.8, the adapter waiting 0.6, else 0."""
    (sample,) = _families(scrape)["vllm:lora_requests_info"].samples
    running = [a.strip() for a in sample.labels["running_lora_adapters"].split(",") if a.strip()]
    waiting = [a.strip() for a in sample.labels["waiting_lora_adapters"].split(",") if a.strip()]
    if model in running:
        return 1.0
    if len(running) + len(waiting) < int(sample.labels["max_lora"]):
        return 0.8
    if model in waiting:
        return 0.6
    return 0.0


def test_the_replica_holding_the_adapter_wins_the_pickers_affinity():
    holds = _scrape({"bioinstruct-ie@2": ["ie"], "bioinstruct-qa@1": ["qa"]}, {}, max_lora=8)
    full = _scrape({f"team-{i}@1": [] for i in range(4)}, {}, max_lora=4)
    loading = _scrape({f"team-{i}@1": [] for i in range(3)}, {"bioinstruct-ie@2": ["ie"]}, max_lora=4)
    for name in ("ie", "bioinstruct-ie@2"):  # the alias a caller sends, or the version a rewrite names
        scores = {"holds": picker_lora_affinity(holds, name), "full": picker_lora_affinity(full, name),
                  "loading": picker_lora_affinity(loading, name)}
        assert scores == {"holds": 1.0, "full": 0.0, "loading": 0.6}, (name, scores)
        assert max(scores, key=scores.get) == "holds"
    free = _scrape({"team-0@1": []}, {}, max_lora=4)
    assert picker_lora_affinity(free, "ie") == 0.8
    # versions listed under their aliases too take one slot each: 3 of 4 slots used is a free slot,
    # 4 of 4 is full, however many names each carries
    aliased = _scrape({f"team-{i}@1": [f"t{i}", f"u{i}"] for i in range(3)}, {}, max_lora=4)
    assert picker_lora_affinity(aliased, "ie") == 0.8 and picker_lora_affinity(aliased, "u1") == 1.0
    aliased_full = _scrape({f"team-{i}@1": [f"t{i}"] for i in range(4)}, {}, max_lora=4)
    assert picker_lora_affinity(aliased_full, "ie") == 0
