"""The models a caller may name: the base model, the aliases being served, and every version in
the registry. /v1/models lists them, and the admin routes change them through here (vLLM's
OpenAIServingModels): publish, point or split an alias, promote, roll back, delete. Every change
is written to the registry first (the desired state), then this replica reconciles at once;
other replicas converge on their next poll. Routes never reach into the adapter manager."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from bioinstruct.publishing import publish_adapter
from bioinstruct.registry import AliasRecord, Manifest, Provenance, parse_ref
from bioinstruct.service.auth import Caller
from bioinstruct.service.errors import APIError
from bioinstruct.service.openai_protocol import ModelCard, ModelList
from bioinstruct.service.protocol import AdaptersOut, AdapterVersionOut, AliasOut

if TYPE_CHECKING:
    from bioinstruct.service.gateway import Gateway


class ServingModels:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.adapters = gateway.adapters
        self.base_name = gateway.engine_settings.served_name

    async def list(self, caller: Caller) -> ModelList:
        """Base, aliases (with the version each serves) and registry versions this caller may use."""
        created = int(self.gateway.started_at)
        base = self.base_name
        # The model's folder name, not its path on this machine (unauthenticated callers see it).
        cards = [ModelCard(id=base, created=created, root=Path(self.gateway.base.path).name)]
        for alias, ref in sorted(self.adapters.routes.items()):
            cards.append(ModelCard(id=alias, created=created, parent=base, target=ref))
        for m in await asyncio.to_thread(self.gateway.registry.manifests):
            cards.append(ModelCard(id=m.ref, created=created, parent=base, category=m.category))
        if caller.allowed is not None and "*" not in caller.allowed:
            allowed = set(caller.allowed)
            cards = [c for c in cards if c.id == base and "base" in allowed or c.id in allowed
                     or c.id.split("@")[0] in allowed or (c.target and c.id in allowed)]
        return ModelList(data=cards)

    # ---- what this replica serves --------------------------------------------------------
    def alias(self, alias: str, rec: AliasRecord | None = None) -> AliasOut:
        """An alias's registry record beside what this replica serves for it (blocking: a thread)."""
        rec = rec or self.gateway.registry.alias(alias)
        adapters = self.adapters
        return AliasOut(alias=alias, target=rec.target, weights=rec.weights, generation=rec.generation,
                        serving=adapters.routes.get(alias),
                        serving_split=dict(adapters.splits[alias]) if alias in adapters.splits else {},
                        history=rec.history, error=adapters.alias_errors.get(alias))

    def version(self, manifest: Manifest, aliases: dict[str, AliasRecord]) -> AdapterVersionOut:
        return AdapterVersionOut(ref=manifest.ref, loaded=manifest.ref in self.adapters.loaded,
                                 aliases=sorted(a for a, r in aliases.items() if manifest.ref in r.refs),
                                 manifest=manifest.model_dump())

    async def overview(self, swaps: int = 20) -> AdaptersOut:
        """Every version, every alias and this replica's recent swaps."""
        registry = self.gateway.registry
        manifests = await asyncio.to_thread(registry.manifests)
        aliases = await asyncio.to_thread(registry.aliases)
        return AdaptersOut(versions=[self.version(m, aliases) for m in manifests],
                           aliases=[self.alias(a, r) for a, r in sorted(aliases.items())],
                           swaps=[vars(e) for e in list(self.adapters.events)[-swaps:]])

    async def describe(self, name: str, version: int) -> AdapterVersionOut:
        manifest = await asyncio.to_thread(self.gateway.registry.manifest, name, version)
        return self.version(manifest, await asyncio.to_thread(self.gateway.registry.aliases))

    # ---- changes ----------------------------------------------------------------------------
    async def publish(self, folder: Path, provenance: Provenance, alias: str | None) -> AdapterVersionOut:
        manifest = await asyncio.to_thread(publish_adapter, folder, provenance, self.gateway.publish_target,
                                           registry=self.gateway.registry)
        if alias:
            await self.point(alias, manifest.ref)
        return AdapterVersionOut(ref=manifest.ref, loaded=manifest.ref in self.adapters.loaded,
                                 aliases=[alias] if alias else [], manifest=manifest.model_dump())

    async def point(self, alias: str, route: str | dict[str, int], expected: int | None = None) -> AliasOut:
        """Point an alias at a version or split it (compare-and-swap on `expected`)."""
        gw = self.gateway
        # Validate before the registry changes, so a bad version never becomes desired state.
        for ref in (route if isinstance(route, dict) else [route]):
            name, version = parse_ref(ref)
            await asyncio.to_thread(gw.registry.verify, name, version, base_fingerprint=gw.base.fingerprint,
                                    limits=gw.adapter_limits)
        await asyncio.to_thread(lambda: gw.registry.set_alias(alias, route, expected_generation=expected))
        return await self.reconciled(alias)

    async def promote(self, alias: str, target: str | None, expected: int | None) -> AliasOut:
        await asyncio.to_thread(lambda: self.gateway.registry.promote(alias, target, expected_generation=expected))
        return await self.reconciled(alias)

    async def rollback(self, alias: str) -> AliasOut:
        await asyncio.to_thread(self.gateway.registry.rollback, alias)
        return await self.reconciled(alias)

    async def delete_alias(self, alias: str) -> None:
        await asyncio.to_thread(self.gateway.registry.delete_alias, alias)
        if self.gateway.supervisor.ready:
            await self.adapters.reconcile()

    async def delete_version(self, name: str, version: int) -> None:
        ref = f"{name}@{version}"
        if self.adapters.inflight.get(ref):
            raise APIError(409, f"{ref} is serving requests right now; retry when they finish", code="conflict")
        await asyncio.to_thread(self.gateway.registry.delete_version, name, version)
        await self.adapters.retire(ref)  # a deleted version is never served again, pinned or not

    async def reconciled(self, alias: str) -> AliasOut:
        """Reconcile this replica now; a change it cannot serve is a 400 that says why."""
        if self.gateway.supervisor.ready:
            await self.adapters.reconcile()
        out = await asyncio.to_thread(self.alias, alias)
        if out.error:
            raise APIError(400, f"alias {alias} updated in the registry but not served here: {out.error}",
                           code="swap_failed")
        return out
