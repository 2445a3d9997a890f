"""The adapters that ship with the product: `adapters/<alias>/` in the repository.

Each folder holds a peft LoRA (`adapter_config.json`, `adapter_model.safetensors`) and a
`shipped.json` (what it is, the base model it was trained on, file checksums, how it was
trained and what it scored). `bioinstruct serve` publishes them into the registry on start
(`publish_shipped`), through the same checks as any other publish, and points their alias at
them unless that alias already exists (an operator's choice is never overwritten).
Publishing is idempotent: a version with the same checksums is reused, not published again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from bioinstruct.adapter_files import ADAPTER_FILES
from bioinstruct.checksums import sha256_file
from bioinstruct.publishing import PublishTarget, publish_adapter
from bioinstruct.registry import Conflict, Manifest, Provenance, Registry

SHIPPED_FILE = "shipped.json"


class ShippedAdapter(Provenance):
    """shipped.json: one shipped adapter, its provenance as the registry's manifest carries it."""

    alias: str  # ie
    base_model: str
    base_model_fingerprint: str
    files: dict[str, str]  # file name -> sha256
    description: str
    training: dict[str, Any] = Field(default_factory=dict)
    gate: dict[str, Any] | None = None  # `bioinstruct eval gate` decision on the dev split

    folder: Path | None = Field(default=None, exclude=True)


class ShippedError(RuntimeError):
    pass


def default_root() -> Path:
    from bioinstruct.settings import core_settings

    return core_settings().home / "adapters"


def load_shipped(root: Path) -> list[ShippedAdapter]:
    """Every adapters/<alias>/shipped.json, checked against its files (a damaged clone is refused)."""
    out = []
    for spec in sorted(Path(root).glob(f"*/{SHIPPED_FILE}")):
        item = ShippedAdapter.model_validate_json(spec.read_text())
        item.folder = spec.parent
        for name in ADAPTER_FILES:
            if name not in item.files:
                raise ShippedError(f"{spec}: no checksum for {name}")
        for name, digest in item.files.items():
            if sha256_file(spec.parent / name) != digest:
                raise ShippedError(f"{spec.parent / name}: checksum differs from {SHIPPED_FILE} (damaged checkout?)")
        out.append(item)
    return out


def _existing(registry: Registry, item: ShippedAdapter) -> Manifest | None:
    for manifest in registry.manifests():
        if manifest.name == item.name and all(manifest.files.get(f) == d for f, d in item.files.items()):
            return manifest
    return None


def publish_shipped(registry: Registry, target: PublishTarget, root: Path | None = None, say=print) -> list[str]:
    """Publish the shipped adapters made for the target's base model; returns what each did, one line each."""
    lines = []
    for item in load_shipped(root or default_root()):
        if item.base_model_fingerprint != target.base_fingerprint:
            lines.append(f"shipped adapter {item.name} skipped: trained on {item.base_model}, "
                         "not on this base model (BIOINSTRUCT_BASE_MODEL)")
            continue
        manifest = _existing(registry, item)
        action = "already published"
        if manifest is None:
            assert item.folder is not None
            fields = item.model_dump(include=set(Provenance.model_fields))
            fields["metrics"] = {**item.metrics, **({"gate": item.gate} if item.gate else {})}
            manifest = publish_adapter(item.folder, Provenance(**fields), target, registry=registry)
            action = "published"
        alias = ""
        if item.alias not in registry.aliases():
            try:  # only if nobody has made it meanwhile (another replica starting beside us)
                registry.set_alias(item.alias, manifest.ref, expected_generation=registry.alias_generation(item.alias))
                alias = f", alias {item.alias} -> {manifest.ref}"
            except Conflict:
                alias = f", alias {item.alias} set by another process meanwhile"
        lines.append(f"shipped adapter {manifest.ref}: {action}{alias}")
    for line in lines:
        say(line)
    return lines


def write_shipped(folder: Path, **fields: Any) -> ShippedAdapter:
    """Write shipped.json for a peft folder (checksums computed here)."""
    files = {name: sha256_file(folder / name) for name in ADAPTER_FILES}
    item = ShippedAdapter(files=files, **fields)
    (folder / SHIPPED_FILE).write_text(json.dumps(item.model_dump(mode="json"), indent=2) + "\n")
    return item
