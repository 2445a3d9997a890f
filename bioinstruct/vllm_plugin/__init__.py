"""BioInstruct's vLLM plugin: engine fixes loaded by vLLM itself in every one of its processes.

Registered under the entry-point group `vllm.general_plugins` (pyproject.toml), so the API
server, EngineCore and workers each call `register()` at start-up; it must be idempotent.
Nothing here runs in the gateway. Each fix is switched by its own environment setting, which
the gateway sets from EngineSettings (service/engine.py) when it starts the engine:

- `BIOINSTRUCT_ENGINE_FAST_CPU_LORA` (default on): grouped LoRA shrink/expand for the CPU
  engine (cpu_lora.py); the GPU engine keeps vLLM's Triton kernels.
- Always on the CPU engine: seeded sampling that survives chunked prefill (cpu_seed.py);
  without it one request with `seed` can crash the engine.
- On any engine the gateway points at a registry (`BIOINSTRUCT_LORA_RESOLVER_REGISTRY`): a
  LoRA resolver that loads a requested `name@version` from it (registry_resolver.py).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("bioinstruct.vllm_plugin")

FAST_CPU_LORA_ENV = "BIOINSTRUCT_ENGINE_FAST_CPU_LORA"


def _enabled(name: str, default: bool = True) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def register() -> None:
    from vllm.platforms import current_platform

    from bioinstruct.vllm_plugin import registry_resolver

    if registry_resolver.install():
        log.info("bioinstruct: LoRA resolver on registry %s", os.environ[registry_resolver.REGISTRY_ENV])
    if not current_platform.is_cpu():
        return
    from bioinstruct.vllm_plugin import cpu_lora, cpu_seed

    cpu_seed.install()
    if _enabled(FAST_CPU_LORA_ENV):
        cpu_lora.install()
        log.info("bioinstruct: grouped CPU LoRA kernels installed (%s=0 turns them off)", FAST_CPU_LORA_ENV)
