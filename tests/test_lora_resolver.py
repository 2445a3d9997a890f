"""The engine's LoRA resolver (our vLLM plugin, registry_resolver.py) on the real engine: a
request straight to vLLM for a pinned version it has not loaded is resolved from the registry,
with the registry's checks; an alias, an unknown version or a damaged one is not."""

from __future__ import annotations

import httpx

from bioinstruct.model import inspect_base_model
from bioinstruct.registry import Registry


def _engine_complete(engine, model: str) -> httpx.Response:
    return httpx.post(f"{engine.base_url}/v1/completions",
                      json={"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}, timeout=120)


def test_the_engine_loads_a_requested_version_from_the_registry(live_service, engine, make_lora, base_model_dir):
    reg = Registry(engine.settings.registry)
    fingerprint = inspect_base_model(base_model_dir).fingerprint
    manifest = reg.publish(make_lora(seed=71, rank=8), name="resolved", category="IE", base_fingerprint=fingerprint)
    models = httpx.get(f"{engine.base_url}/v1/models", timeout=30).json()["data"]
    assert manifest.ref not in {m["id"] for m in models}  # nobody loaded it
    r = _engine_complete(engine, manifest.ref)
    assert r.status_code == 200, r.text
    assert manifest.ref in {m["id"] for m in httpx.get(f"{engine.base_url}/v1/models", timeout=30).json()["data"]}
    assert _engine_complete(engine, "resolved@99").status_code == 404  # not in the registry
    assert _engine_complete(engine, "resolved").status_code == 404  # aliases are the gateway's to route
    # A version whose files no longer match its manifest is refused, as at publish.
    damaged = reg.publish(make_lora(seed=72, rank=8), name="resolved", category="IE", base_fingerprint=fingerprint)
    weights = reg.local_folder("resolved", damaged.version) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    assert _engine_complete(engine, damaged.ref).status_code == 404
    httpx.post(f"{engine.base_url}/v1/unload_lora_adapter", json={"lora_name": manifest.ref}, timeout=30)
