"""The one adapter contract: every publisher goes through bioinstruct.publishing.publish_adapter,
checked against one set of engine limits (EngineLimits, from BIOINSTRUCT_ENGINE_*), and what a
publisher knows about an adapter (Provenance) lands in its manifest unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bioinstruct.adapter_files import EngineLimits
from bioinstruct.errors import RegistryError
from bioinstruct.model import inspect_base_model
from bioinstruct.publishing import PublishTarget, publish_adapter
from bioinstruct.registry import Provenance, Registry
from bioinstruct.shipped import ShippedAdapter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def base(base_model_dir):
    return inspect_base_model(base_model_dir)


def test_provenance_lands_in_the_manifest_and_the_base_model_is_recorded(make_lora, base, tmp_path):
    target = PublishTarget.of(base, EngineLimits())
    prov = Provenance(name="team-ie", category="ie", description="ours", training={"steps": 7},
                      metrics={"dev": {"f1": 0.5}})
    manifest = publish_adapter(make_lora(seed=81, rank=8), prov, target, registry=tmp_path / "reg", alias="ie")
    assert (manifest.ref, manifest.category) == ("team-ie@1", "IE")
    assert manifest.base_model == base.path and manifest.base_model_fingerprint == base.fingerprint
    assert (manifest.description, manifest.training, manifest.metrics) == ("ours", {"steps": 7}, {"dev": {"f1": 0.5}})
    reg = Registry(tmp_path / "reg")
    assert reg.alias("ie").target == "team-ie@1"
    # what the manifest carries is the provenance, field for field
    assert Provenance(**manifest.model_dump(include=set(Provenance.model_fields))) == prov.model_copy(
        update={"category": "IE", "base_model": base.path})


def test_engine_limits_from_the_environment_reach_every_check(make_lora, base, tmp_path, monkeypatch):
    monkeypatch.setenv("BIOINSTRUCT_ENGINE_MAX_LORA_RANK", "4")
    target = PublishTarget.of(base)
    assert target.limits.max_rank == 4 and target.limits.base_hidden_size == base.hidden_size
    with pytest.raises(RegistryError, match="rank 8"):
        publish_adapter(make_lora(seed=82, rank=8), Provenance(name="x", category="QA"), target,
                        registry=tmp_path / "reg")
    # training's early check reads the same settings (an adapter that trains is one that serves)
    from bioinstruct.training.config import TrainConfig

    assert TrainConfig(rank=4).engine_max_rank == 4
    monkeypatch.setenv("BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES", '["qkv_proj"]')
    assert TrainConfig(rank=4, target_modules=["q_proj"]).engine_lora_modules == ["qkv_proj"]
    with pytest.raises(RegistryError, match="o_proj"):
        publish_adapter(make_lora(seed=83, rank=4, targets=("q_proj", "o_proj")),
                        Provenance(name="x", category="QA"), PublishTarget.of(base), registry=tmp_path / "reg")
    assert Registry(tmp_path / "reg").manifests() == []


def test_a_category_outside_the_families_is_refused():
    with pytest.raises(ValueError, match="QA"):
        Provenance(name="x", category="POETRY")


def test_shipped_json_is_provenance_too():
    assert set(Provenance.model_fields) <= set(ShippedAdapter.model_fields)


def test_no_publisher_calls_the_registry_directly():
    """Training, shipping, the CLI, the admin API, bench and scripts publish through
    publish_adapter; only it calls Registry.publish (tests may, to set up a registry)."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in {"tests", ".venv", "build"} or rel.as_posix() == "bioinstruct/publishing.py":
            continue
        if re.search(r"(reg|registry|_registry\([^)]*\))\.publish\(", path.read_text()):
            offenders.append(rel.as_posix())
    assert offenders == [], f"call bioinstruct.publishing.publish_adapter instead: {offenders}"
