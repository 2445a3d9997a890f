"""Admin routes (admin token): list, publish, alias, roll back, delete.

Every change is written to the registry first (the desired state) and then this replica
reconciles at once; other replicas converge on their next poll.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from bioinstruct.service.deps import get_admin
from bioinstruct.service.errors import APIError, responses
from bioinstruct.service.gateway import Gateway
from bioinstruct.service.protocol import (
    AdaptersOut,
    AdapterVersionOut,
    AliasOut,
    AliasRequest,
    PromoteRequest,
    PublishRequest,
)
from fastapi import APIRouter, Depends
from fastapi import Path as PathParam

from bioinstruct.publishing import publish_adapter
from bioinstruct.registry import NAME_PATTERN, AliasRecord, Provenance, RegistryError, parse_ref

router = APIRouter(prefix="/admin", tags=["admin"])
# Path parameters say in the schema what the registry accepts (an invalid one is a 400 either way).
AliasName = Annotated[str, PathParam(pattern=rf"^{NAME_PATTERN}$", description="An alias (not 'base' or 'auto')")]
AdapterName = Annotated[str, PathParam(pattern=rf"^{NAME_PATTERN}$")]
Version = Annotated[int, PathParam(ge=1, le=999_999_999)]
ERRORS = responses(400, 401, 403, 404, 409, 503)


def _alias_out(gw: Gateway, alias: str, rec: AliasRecord | None = None) -> AliasOut:
    rec = rec or gw.registry.alias(alias)
    return AliasOut(alias=alias, target=rec.target, weights=rec.weights, generation=rec.generation,
                    serving=gw.adapters.routes.get(alias),
                    serving_split=dict(gw.adapters.splits.get(alias, ())) if alias in gw.adapters.splits else {},
                    history=rec.history, error=gw.adapters.alias_errors.get(alias))


@router.get("/adapters", response_model=AdaptersOut, responses=ERRORS, summary="Adapter versions, aliases and recent swaps")
async def list_adapters(gw: Gateway = Depends(get_admin)) -> AdaptersOut:
    manifests = await asyncio.to_thread(gw.registry.manifests)
    aliases = await asyncio.to_thread(gw.registry.aliases)
    by_target: dict[str, list[str]] = {}
    for alias, rec in aliases.items():
        for ref in rec.refs:
            by_target.setdefault(ref, []).append(alias)
    versions = [AdapterVersionOut(ref=m.ref, loaded=m.ref in gw.adapters.loaded, aliases=sorted(by_target.get(m.ref, [])),
                                  manifest=m.model_dump()) for m in manifests]
    alias_out = [_alias_out(gw, a, r) for a, r in sorted(aliases.items())]
    swaps = [vars(e) for e in list(gw.adapters.events)[-20:]]
    return AdaptersOut(versions=versions, aliases=alias_out, swaps=swaps)


def _publish_folder(gw: Gateway, relative: str) -> Path:
    """A folder under the publish root; '..', absolute paths and symlinks leaving it are refused."""
    root = gw.settings_publish_root
    if not relative or relative.startswith(("/", "~")) or Path(relative).is_absolute():
        raise APIError(400, f"'path' must be relative to the publish root ({root}); absolute paths are refused",
                       param="path", code="unsafe_path")
    if ".." in Path(relative).parts:
        raise APIError(400, "'path' may not contain '..'", param="path", code="unsafe_path")
    folder = (root / relative)
    real = folder.resolve()
    if not real.is_relative_to(root.resolve()):
        raise APIError(400, "'path' resolves outside the publish root (a symlink?)", param="path", code="unsafe_path")
    if not real.is_dir():
        raise APIError(404, f"no folder {relative!r} under the publish root", param="path", code="not_found")
    return real


@router.post("/adapters", response_model=AdapterVersionOut, status_code=201, responses=ERRORS,
             summary="Publish a peft LoRA folder (under the publish root) as a new immutable version")
async def publish(body: PublishRequest, gw: Gateway = Depends(get_admin)) -> AdapterVersionOut:
    folder = _publish_folder(gw, body.path)
    provenance = Provenance(name=body.name, category=body.category, description=body.description)
    manifest = await asyncio.to_thread(publish_adapter, folder, provenance, gw.publish_target, registry=gw.registry)
    if body.alias:
        await _point(gw, body.alias, manifest.ref)
    return AdapterVersionOut(ref=manifest.ref, loaded=manifest.ref in gw.adapters.loaded,
                             aliases=[body.alias] if body.alias else [], manifest=manifest.model_dump())


@router.get("/adapters/{name}/{version}", response_model=AdapterVersionOut, responses=ERRORS)
async def get_version(name: AdapterName, version: Version, gw: Gateway = Depends(get_admin)) -> AdapterVersionOut:
    manifest = await asyncio.to_thread(gw.registry.manifest, name, version)
    aliases = await asyncio.to_thread(gw.registry.aliases)
    return AdapterVersionOut(ref=manifest.ref, loaded=manifest.ref in gw.adapters.loaded,
                             aliases=sorted(a for a, r in aliases.items() if manifest.ref in r.refs),
                             manifest=manifest.model_dump())


@router.delete("/adapters/{name}/{version}", status_code=204, responses=ERRORS,
               summary="Delete a version no alias points at")
async def delete_version(name: AdapterName, version: Version, gw: Gateway = Depends(get_admin)) -> None:
    ref = f"{name}@{version}"
    if gw.adapters.inflight.get(ref):
        raise APIError(409, f"{ref} is serving requests right now; retry when they finish", code="conflict")
    await asyncio.to_thread(gw.registry.delete_version, name, version)
    await gw.adapters.retire(ref)  # a deleted version is never served again, pinned or not


async def _point(gw: Gateway, alias: str, route: str | dict[str, int], expected: int | None = None) -> AliasOut:
    # Validate before the registry changes, so a bad version never becomes desired state.
    for ref in (route if isinstance(route, dict) else [route]):
        name, version = parse_ref(ref)
        await asyncio.to_thread(gw.registry.verify, name, version, base_fingerprint=gw.base.fingerprint,
                                limits=gw.adapter_limits)
    await asyncio.to_thread(lambda: gw.registry.set_alias(alias, route, expected_generation=expected))
    return await _reconciled(gw, alias)


async def _reconciled(gw: Gateway, alias: str) -> AliasOut:
    if gw.supervisor.ready:
        await gw.adapters.reconcile()
    out = await asyncio.to_thread(_alias_out, gw, alias)
    if out.error:
        raise APIError(400, f"alias {alias} updated in the registry but not served here: {out.error}",
                       code="swap_failed")
    return out


@router.put("/aliases/{alias}", response_model=AliasOut, responses=ERRORS,
            summary="Point an alias at a version, or split it between versions by weight (zero-downtime swap; "
                    "compare-and-swap with expected_generation)")
async def set_alias(alias: AliasName, body: AliasRequest, gw: Gateway = Depends(get_admin)) -> AliasOut:
    return await _point(gw, alias, body.route, body.expected_generation)


@router.get("/aliases/{alias}", response_model=AliasOut, responses=ERRORS,
            summary="An alias's record (target, split, generation, history) and what this replica serves")
async def get_alias(alias: AliasName, gw: Gateway = Depends(get_admin)) -> AliasOut:
    return await asyncio.to_thread(_alias_out, gw, alias)


@router.post("/aliases/{alias}/promote", response_model=AliasOut, responses=ERRORS,
             summary="Send all of a split alias's traffic to one version (default: the newest in the split)")
async def promote(alias: AliasName, body: PromoteRequest | None = None, gw: Gateway = Depends(get_admin)) -> AliasOut:
    body = body or PromoteRequest()
    await asyncio.to_thread(lambda: gw.registry.promote(alias, body.target, expected_generation=body.expected_generation))
    return await _reconciled(gw, alias)


@router.post("/aliases/{alias}/rollback", response_model=AliasOut, responses=ERRORS,
             summary="Point an alias back at its previous route (version or split)")
async def rollback(alias: AliasName, gw: Gateway = Depends(get_admin)) -> AliasOut:
    await asyncio.to_thread(gw.registry.rollback, alias)
    return await _reconciled(gw, alias)


@router.delete("/aliases/{alias}", status_code=204, responses=ERRORS)
async def delete_alias(alias: AliasName, gw: Gateway = Depends(get_admin)) -> None:
    await asyncio.to_thread(gw.registry.delete_alias, alias)
    if gw.supervisor.ready:
        await gw.adapters.reconcile()


__all__ = ["router", "RegistryError"]
