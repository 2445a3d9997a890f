"""Shipped adapters (adapters/ in the checkout) published into a registry: checked, idempotent,
never against another base model, never over an operator's alias."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bioinstruct.adapter_files import AdapterLimits
from bioinstruct.publishing import PublishTarget
from bioinstruct.registry import Registry
from bioinstruct.shipped import ShippedError, load_shipped, publish_shipped, write_shipped

FP = "a" * 32


@pytest.fixture
def shipped_root(make_lora, tmp_path) -> Path:
    root = tmp_path / "adapters"
    for alias, seed in (("ie", 7), ("gen", 8)):
        folder = root / alias
        shutil.copytree(make_lora(seed=seed, targets=("q_proj", "v_proj")), folder)
        write_shipped(folder, name=f"bioinstruct-{alias}", alias=alias, category=alias.upper(),
                      base_model="SmolLM2-135M-Instruct", base_model_fingerprint=FP, description=f"test {alias}",
                      metrics={"dev": {"score": 0.5}})
    return root


def test_publishes_once_and_points_missing_aliases(shipped_root, tmp_path):
    reg = Registry(tmp_path / "registry")
    lines = publish_shipped(reg, PublishTarget(base_fingerprint=FP, limits=AdapterLimits(max_rank=16)),
                            root=shipped_root, say=lambda _: None)
    assert sorted(reg.aliases()) == ["gen", "ie"] and reg.alias("ie").target == "bioinstruct-ie@1"
    assert all("published" in line for line in lines)
    assert reg.manifest("bioinstruct-ie", 1).metrics["dev"] == {"score": 0.5}
    # second start: nothing new
    again = publish_shipped(reg, PublishTarget(base_fingerprint=FP), root=shipped_root, say=lambda _: None)
    assert all("already published" in line for line in again)
    assert reg.versions("bioinstruct-ie") == [1]
    # an operator's alias choice survives restarts
    reg.publish(shipped_root / "gen", name="team-ie", category="IE", base_fingerprint=FP, alias="ie")
    publish_shipped(reg, PublishTarget(base_fingerprint=FP), root=shipped_root, say=lambda _: None)
    assert reg.alias("ie").target == "team-ie@1"


def test_another_base_model_skips_them_with_one_line_each(shipped_root, tmp_path):
    reg = Registry(tmp_path / "registry")
    lines = publish_shipped(reg, PublishTarget(base_fingerprint="b" * 32), root=shipped_root, say=lambda _: None)
    assert len(lines) == 2 and all("skipped" in line and "not on this base model" in line for line in lines)
    assert reg.manifests() == [] and reg.aliases() == {}


def test_a_damaged_shipped_file_is_refused(shipped_root, tmp_path):
    weights = shipped_root / "ie" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ShippedError, match="checksum"):
        load_shipped(shipped_root)


def test_the_repositorys_shipped_adapters_are_intact_and_for_the_embedded_model(base_model_dir):
    from bioinstruct.model import inspect_base_model
    from bioinstruct.shipped import default_root

    items = load_shipped(default_root())
    assert {i.alias for i in items} >= {"ie"}
    fingerprint = inspect_base_model(base_model_dir).fingerprint
    for item in items:
        assert item.base_model_fingerprint == fingerprint
        config = json.loads((item.folder / "adapter_config.json").read_text())
        assert config["r"] <= 16 and item.metrics, item.name


def test_adapters_cli_publishes_points_rolls_back_and_deletes(make_lora, tmp_path, base_model_dir):
    from bioinstruct.cli import _register_subcommands, app

    _register_subcommands()
    runner = CliRunner()
    reg = str(tmp_path / "registry")
    folder = make_lora(seed=9, targets=("q_proj", "v_proj"))

    def run(*args):
        return runner.invoke(app, ["adapters", *args, "--registry", reg])

    published = run("publish", str(folder), "--name", "team-ner", "--category", "IE", "--alias", "ner")
    assert published.exit_code == 0, published.output
    assert run("publish", str(folder), "--name", "team-ner", "--category", "IE").exit_code == 0
    r = run("alias", "ner", "team-ner@2")
    assert r.exit_code == 0 and "team-ner@2" in r.output
    listed = json.loads(run("list", "--json").output)
    assert listed["aliases"] == {"ner": "team-ner@2"} and len(listed["versions"]) == 2
    assert run("rollback", "ner").exit_code == 0
    assert Registry(reg).alias("ner").target == "team-ner@1"
    assert run("delete", "team-ner@2").exit_code == 0
    # the admin API's checks: a version the engine cannot serve is refused with a clear error
    bad = make_lora(seed=10, targets=("q_proj", "down_proj"))
    r = run("publish", str(bad), "--name", "team-ner", "--category", "IE")
    assert r.exit_code == 2 and "down_proj" in r.output
    r = run("alias", "ner", "team-ner@9")
    assert r.exit_code == 2 and "error" in r.output
