"""A vLLM LoRA resolver backed by the BioInstruct registry.

vLLM asks its registered resolvers when a request names a model it has not loaded (runtime
LoRA updating on). This one answers for pinned versions, `name@version`: it runs the same
checks as publishing and the gateway (checksums, base-model fingerprint, rank, LoRA layers,
safetensors only), downloads a remote version into the local cache, and hands vLLM the folder.
So a version is loaded on the replica where a request for it arrives, by the engine's own
extension point. Aliases are not resolved here: which version an alias means (and how a
canary splits) is the gateway's decision, made per request.

The engine process is told where the registry is by the gateway (service/engine.py sets
the three variables below); without them the resolver is not registered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("bioinstruct.vllm_plugin.registry_resolver")

REGISTRY_ENV = "BIOINSTRUCT_LORA_RESOLVER_REGISTRY"
CACHE_ENV = "BIOINSTRUCT_LORA_RESOLVER_CACHE"
LIMITS_ENV = "BIOINSTRUCT_LORA_RESOLVER_LIMITS"
NAME = "bioinstruct-registry"


def make_resolver(registry_url: str, cache_dir: str | None, limits_json: str | None):
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver

    from bioinstruct.adapter_files import AdapterLimits
    from bioinstruct.model import inspect_base_model
    from bioinstruct.registry import REF_RE, Registry, RegistryError, parse_ref

    registry = Registry(registry_url, cache_dir=Path(cache_dir) if cache_dir else None)
    limits = AdapterLimits.model_validate(json.loads(limits_json)) if limits_json else None
    fingerprints: dict[str, str] = {}

    class RegistryResolver(LoRAResolver):
        async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
            if not REF_RE.match(lora_name):
                return None
            if base_model_name not in fingerprints:
                info = await asyncio.to_thread(inspect_base_model, Path(base_model_name))
                fingerprints[base_model_name] = info.fingerprint
            name, version = parse_ref(lora_name)
            try:
                _, folder = await asyncio.to_thread(registry.verify, name, version,
                                                    base_fingerprint=fingerprints[base_model_name], limits=limits)
            except RegistryError as exc:
                log.warning("LoRA %s not resolved from %s: %s", lora_name, registry_url, exc.message)
                return None
            # lora_int_id is replaced by vLLM with a unique one.
            return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(folder))

    return RegistryResolver()


def install() -> bool:
    url = os.environ.get(REGISTRY_ENV)
    if not url:
        return False
    from vllm.lora.resolver import LoRAResolverRegistry

    if NAME not in LoRAResolverRegistry.get_supported_resolvers():
        LoRAResolverRegistry.register_resolver(NAME, make_resolver(url, os.environ.get(CACHE_ENV),
                                                                   os.environ.get(LIMITS_ENV)))
    return True
