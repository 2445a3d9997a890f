"""Admin routes (admin token): list, publish, alias, roll back, delete. HTTP only: what each
does is ServingModels' (bioinstruct.service.serving.models)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam

from bioinstruct.registry import NAME_PATTERN, Provenance, RegistryError
from bioinstruct.service.deps import get_admin, get_admin_models
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
from bioinstruct.service.serving import ServingModels

router = APIRouter(prefix="/admin", tags=["admin"])
# Path parameters say in the schema what the registry accepts (an invalid one is a 400 either way).
AliasName = Annotated[str, PathParam(pattern=rf"^{NAME_PATTERN}$", description="An alias (not 'base' or 'auto')")]
AdapterName = Annotated[str, PathParam(pattern=rf"^{NAME_PATTERN}$")]
Version = Annotated[int, PathParam(ge=1, le=999_999_999)]
ERRORS = responses(400, 401, 403, 404, 409, 503)


@router.get("/adapters", response_model=AdaptersOut, responses=ERRORS,
            summary="Adapter versions, aliases and recent swaps")
async def list_adapters(models: ServingModels = Depends(get_admin_models)) -> AdaptersOut:
    return await models.overview()


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
    return await gw.servings.models.publish(folder, provenance, body.alias)


@router.get("/adapters/{name}/{version}", response_model=AdapterVersionOut, responses=ERRORS)
async def get_version(name: AdapterName, version: Version,
                      models: ServingModels = Depends(get_admin_models)) -> AdapterVersionOut:
    return await models.describe(name, version)


@router.delete("/adapters/{name}/{version}", status_code=204, responses=ERRORS,
               summary="Delete a version no alias points at")
async def delete_version(name: AdapterName, version: Version,
                         models: ServingModels = Depends(get_admin_models)) -> None:
    await models.delete_version(name, version)


@router.put("/aliases/{alias}", response_model=AliasOut, responses=ERRORS,
            summary="Point an alias at a version, or split it between versions by weight (zero-downtime swap; "
                    "compare-and-swap with expected_generation)")
async def set_alias(alias: AliasName, body: AliasRequest,
                    models: ServingModels = Depends(get_admin_models)) -> AliasOut:
    return await models.point(alias, body.route, body.expected_generation)


@router.get("/aliases/{alias}", response_model=AliasOut, responses=ERRORS,
            summary="An alias's record (target, split, generation, history) and what this replica serves")
async def get_alias(alias: AliasName, models: ServingModels = Depends(get_admin_models)) -> AliasOut:
    return await asyncio.to_thread(models.alias, alias)


@router.post("/aliases/{alias}/promote", response_model=AliasOut, responses=ERRORS,
             summary="Send all of a split alias's traffic to one version (default: the newest in the split)")
async def promote(alias: AliasName, body: PromoteRequest | None = None,
                  models: ServingModels = Depends(get_admin_models)) -> AliasOut:
    body = body or PromoteRequest()
    return await models.promote(alias, body.target, body.expected_generation)


@router.post("/aliases/{alias}/rollback", response_model=AliasOut, responses=ERRORS,
             summary="Point an alias back at its previous route (version or split)")
async def rollback(alias: AliasName, models: ServingModels = Depends(get_admin_models)) -> AliasOut:
    return await models.rollback(alias)


@router.delete("/aliases/{alias}", status_code=204, responses=ERRORS)
async def delete_alias(alias: AliasName, models: ServingModels = Depends(get_admin_models)) -> None:
    await models.delete_alias(alias)


__all__ = ["router", "RegistryError"]
