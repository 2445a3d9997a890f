"""The one way an adapter enters a registry. Training, shipping, the CLI, the admin API and
the benchmarks all call `publish_adapter` with what they know about the adapter (its
`Provenance`) and what it must fit (a `PublishTarget`: the served base model and the engine's
LoRA limits), so every publisher runs the same checks against the same limits.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from bioinstruct.adapter_files import AdapterLimits, EngineLimits
from bioinstruct.registry import Manifest, Provenance, Registry, open_registry


class PublishTarget(BaseModel):
    """The base model and engine an adapter is published for."""

    model_config = ConfigDict(frozen=True)

    base_fingerprint: str
    base_model: str | None = None  # recorded when the provenance does not name one
    limits: AdapterLimits = AdapterLimits()

    @classmethod
    def of(cls, base, engine: EngineLimits | None = None) -> PublishTarget:
        """For a base model (bioinstruct.model.BaseModelInfo) served by an engine with these
        limits (default: the engine's settings from the environment)."""
        limits = (engine or EngineLimits()).adapter_limits(base.hidden_size)
        return cls(base_fingerprint=base.fingerprint, base_model=base.path, limits=limits)

    @classmethod
    def from_settings(cls) -> PublishTarget:
        """The configured base model (BIOINSTRUCT_BASE_MODEL, else the embedded one) and engine
        (BIOINSTRUCT_ENGINE_*); BaseModelError says what is missing."""
        from bioinstruct.model import inspect_base_model
        from bioinstruct.settings import core_settings

        return cls.of(inspect_base_model(core_settings().base_model_dir))


def publish_adapter(folder: Path, provenance: Provenance, target: PublishTarget, *,
                    registry: Registry | str | Path | None = None, alias: str | None = None) -> Manifest:
    """Check a peft folder against the target and publish it as the next immutable version of
    provenance.name (optionally pointing `alias` at it). RegistryError says what is wrong."""
    reg = registry if isinstance(registry, Registry) else open_registry(registry)
    return reg.publish(
        Path(folder), name=provenance.name, category=provenance.category,
        base_fingerprint=target.base_fingerprint, base_model=provenance.base_model or target.base_model,
        limits=target.limits, description=provenance.description, training=provenance.training,
        metrics=provenance.metrics, alias=alias,
    )
