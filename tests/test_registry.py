"""The adapter registry on disk: immutable versions, atomic aliases, and every refusal."""

from __future__ import annotations

import json
import os
import shutil
import struct
import uuid
from pathlib import Path

import pytest

from bioinstruct import registry as registry_mod
from bioinstruct.adapter_files import AdapterLimits
from bioinstruct.registry import (
    Conflict,
    NotFound,
    Registry,
    RegistryError,
    RegistryUnavailable,
    parse_ref,
)

FP = "f" * 32


@pytest.fixture(scope="module")
def lora(make_lora) -> Path:
    return make_lora(seed=5, rank=4)


@pytest.fixture
def reg(tmp_path) -> Registry:
    return Registry(tmp_path / "registry")


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def test_publish_versions_are_immutable_and_numbered(reg, lora):
    m1 = reg.publish(lora, name="bio-qa", category="qa", base_fingerprint=FP, training={"steps": 3})
    m2 = reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP)
    assert (m1.version, m2.version) == (1, 2) and m1.category == "QA"
    assert reg.versions("bio-qa") == [1, 2]
    manifest = json.loads(Path(reg.version_path("bio-qa", 1), "manifest.json").read_text())
    assert manifest["rank"] == 4 and manifest["training"] == {"steps": 3}
    assert set(manifest["files"]) >= {"adapter_config.json", "adapter_model.safetensors"}
    assert reg.manifest("bio-qa", 1).files == m1.files


def test_aliases_history_rollback_and_delete(reg, lora):
    reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP, alias="qa")
    reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP)
    assert reg.alias("qa").target == "bio-qa@1"
    rec = reg.set_alias("qa", "bio-qa@2")
    assert rec.target == "bio-qa@2" and rec.history == ["bio-qa@1"]
    with pytest.raises(Conflict, match="alias"):
        reg.delete_version("bio-qa", 2)
    assert reg.rollback("qa").target == "bio-qa@1"
    with pytest.raises(Conflict, match="no earlier target"):
        reg.rollback("qa")
    reg.delete_version("bio-qa", 2)
    assert reg.versions("bio-qa") == [1]
    with pytest.raises(NotFound):
        reg.set_alias("qa", "bio-qa@2")
    with pytest.raises(NotFound):
        reg.manifest("nope", 1)


def test_interrupted_alias_write_leaves_previous_state(reg, lora, monkeypatch):
    reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP, alias="qa")
    reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP)

    def crash(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(registry_mod.os, "link", crash)
    with pytest.raises(OSError):
        reg.set_alias("qa", "bio-qa@2")
    monkeypatch.undo()
    assert reg.alias("qa").target == "bio-qa@1"
    assert [p.name for p in Path(reg.root, "aliases", "qa").iterdir()] == ["0000000001.json"]  # no temp left
    # a half-written temp file from a killed writer is ignored by readers
    Path(reg.root, "aliases", "qa", ".0000000002.json.123.tmp").write_text('{"alias": "qa", "tar')
    assert list(reg.aliases()) == ["qa"] and reg.alias("qa").target == "bio-qa@1"


def test_a_registry_from_before_generations_is_read_and_moved_on(reg, lora):
    """aliases/<alias>.json (the old layout) reads as generation 0; the first move continues it."""
    reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP)
    reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP)
    Path(reg.root, "aliases").mkdir(exist_ok=True)
    Path(reg.root, "aliases", "qa.json").write_text(json.dumps(
        {"alias": "qa", "target": "bio-qa@1", "history": [], "updated_at": "2026-12-01T00:00:00Z"}))
    assert reg.alias("qa").target == "bio-qa@1" and reg.alias_generation("qa") == 0
    rec = reg.set_alias("qa", "bio-qa@2", expected_generation=0)
    assert rec.generation == 1 and rec.history == ["bio-qa@1"] and reg.alias("qa").target == "bio-qa@2"
    reg.delete_alias("qa")
    assert "qa" not in reg.aliases() and not Path(reg.root, "aliases", "qa.json").exists()


def test_weighted_aliases_promote_and_roll_back(reg, lora):
    from bioinstruct.registry import parse_split

    for _ in range(3):
        reg.publish(lora, name="bio-ie", category="IE", base_fingerprint=FP)
    reg.set_alias("ie", "bio-ie@1")
    rec = reg.set_alias("ie", "bio-ie@1=90,bio-ie@2=10")
    assert rec.weights == {"bio-ie@1": 90, "bio-ie@2": 10} and rec.target == "bio-ie@1"
    assert rec.history == ["bio-ie@1"] and rec.split == [("bio-ie@1", 90), ("bio-ie@2", 10)]
    with pytest.raises(Conflict, match="route of alias"):
        reg.delete_version("bio-ie", 2)  # in the split: not deletable
    promoted = reg.promote("ie")
    assert (promoted.target == "bio-ie@2" and promoted.weights == {}
            and promoted.history[-1] == "bio-ie@1=90,bio-ie@2=10")
    back = reg.rollback("ie")
    assert back.weights == {"bio-ie@1": 90, "bio-ie@2": 10} and back.history == ["bio-ie@1"]
    drained = reg.set_alias("ie", {"bio-ie@1": 0, "bio-ie@2": 100})
    assert drained.target == "bio-ie@2" and drained.split == [("bio-ie@1", 0), ("bio-ie@2", 100)]
    with pytest.raises(Conflict, match="not in alias"):
        reg.promote("ie", "bio-ie@3")
    for bad, match in (("bio-ie@1=x", "weight"), ("bio-ie@1=0,bio-ie@2=0", "every weight is 0"),
                       ("bio-ie@1=5,bio-ie@1=5", "twice"), ("bio-ie@1=2000,bio-ie@2=1", "between")):
        with pytest.raises(RegistryError, match=match):
            parse_split(bad)
    with pytest.raises(NotFound):
        reg.set_alias("ie", "bio-ie@1=50,bio-ie@9=50")


def test_names_and_refs_are_checked(reg, lora):
    for bad in ("Bad", "../x", "a/b", "base", "auto", "", "x" * 70):
        with pytest.raises(RegistryError):
            reg.publish(lora, name=bad, category="QA", base_fingerprint=FP)
    with pytest.raises(RegistryError, match="category"):
        reg.publish(lora, name="ok", category="POETRY", base_fingerprint=FP)
    for bad in ("qa", "qa@", "qa@x", "@1", "Q@1"):
        with pytest.raises(RegistryError, match="<name>@<version>"):
            parse_ref(bad)
    assert parse_ref("bio-qa@12") == ("bio-qa", 12)


def test_refusals_at_publish(reg, lora, tmp_path):
    pickled = _copy(lora, tmp_path / "pickled")
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(RegistryError, match="pickle"):
        reg.publish(pickled, name="x", category="QA", base_fingerprint=FP)

    missing = _copy(lora, tmp_path / "missing")
    (missing / "adapter_config.json").unlink()
    with pytest.raises(RegistryError, match="missing"):
        reg.publish(missing, name="x", category="QA", base_fingerprint=FP)

    truncated = _copy(lora, tmp_path / "truncated")
    data = (truncated / "adapter_model.safetensors").read_bytes()
    (truncated / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(RegistryError, match="truncated"):
        reg.publish(truncated, name="x", category="QA", base_fingerprint=FP)

    garbage = _copy(lora, tmp_path / "garbage")
    (garbage / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(RegistryError, match="corrupt"):
        reg.publish(garbage, name="x", category="QA", base_fingerprint=FP)

    with pytest.raises(RegistryError, match="rank 4 is above the engine's limit of 2"):
        reg.publish(lora, name="x", category="QA", base_fingerprint=FP, limits=AdapterLimits(max_rank=2))

    with pytest.raises(RegistryError, match="hidden size"):
        reg.publish(lora, name="x", category="QA", base_fingerprint=FP, limits=AdapterLimits(base_hidden_size=1024))

    linked = _copy(lora, tmp_path / "linked")
    (linked / "adapter_model.safetensors").unlink()
    os.symlink(lora / "adapter_model.safetensors", linked / "adapter_model.safetensors")
    with pytest.raises(RegistryError, match="symlink"):
        reg.publish(linked, name="x", category="QA", base_fingerprint=FP)

    config = json.loads((lora / "adapter_config.json").read_text())
    not_lora = _copy(lora, tmp_path / "ia3")
    (not_lora / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(RegistryError, match="LoRA"):
        reg.publish(not_lora, name="x", category="QA", base_fingerprint=FP)
    assert reg.versions("x") == []  # nothing half-published


def test_verify_catches_changes_after_publish(reg, lora):
    m = reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP)
    manifest, folder = reg.verify("bio-qa", m.version, base_fingerprint=FP, limits=AdapterLimits(max_rank=16))
    assert folder.is_dir() and manifest.ref == "bio-qa@1"
    with pytest.raises(RegistryError, match="base model"):
        reg.verify("bio-qa", 1, base_fingerprint="0" * 32)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x01" * 8)
    with pytest.raises(RegistryError, match="checksum"):
        reg.verify("bio-qa", 1, base_fingerprint=FP)
    # a symlink planted in a version folder that leaves the registry is refused
    (folder / "adapter_model.safetensors").unlink()
    os.symlink("/etc/hostname", folder / "adapter_model.safetensors")
    with pytest.raises(RegistryError, match="symlink"):
        reg.verify("bio-qa", 1, base_fingerprint=FP)


def test_remote_style_registry_through_fsspec(tmp_path, lora):
    # memory:// behaves like an object store: no rename, no local paths.
    reg = Registry("memory://bioinstruct-test-registry", cache_dir=tmp_path / "cache")
    m = reg.publish(lora, name="remote-qa", category="QA", base_fingerprint=FP, alias="qa")
    assert reg.alias("qa").target == m.ref and not reg.local
    manifest, folder = reg.verify("remote-qa", m.version, base_fingerprint=FP)
    assert folder.is_relative_to(tmp_path / "cache") and (folder / "adapter_model.safetensors").is_file()
    m2 = reg.publish(lora, name="remote-qa", category="QA", base_fingerprint=FP)
    assert reg.set_alias("qa", m2.ref).history == [m.ref]
    assert reg.rollback("qa").target == m.ref
    reg.delete_version("remote-qa", m2.version)
    assert reg.versions("remote-qa") == [m.version]


def test_rollback_to_a_deleted_version_is_refused_and_changes_nothing(reg, lora):
    reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP, alias="qa")
    reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP)
    reg.set_alias("qa", "bio-qa@2")
    reg.delete_version("bio-qa", 1)
    with pytest.raises(Conflict, match="deleted"):
        reg.rollback("qa")
    assert reg.alias("qa").target == "bio-qa@2"


@pytest.mark.parametrize("ref", ["qa@²", "qa@٣", "qa@", "qa@1.0", "@1"])
def test_refs_with_non_ascii_or_missing_digits_are_refused_cleanly(ref):
    with pytest.raises(RegistryError, match="pinned adapter version"):
        parse_ref(ref)


def test_version_numbers_are_never_reused_after_a_delete(reg, lora):
    reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP)
    reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP)
    reg.delete_version("bio-qa", 2)
    assert reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP).version == 3
    assert reg.versions("bio-qa") == [1, 3]


def test_remote_manifest_file_names_are_not_used_as_paths(tmp_path, lora):
    import fsspec

    url = f"memory://reg-{tmp_path.name}"
    reg = Registry(url, cache_dir=tmp_path / "cache")
    m = reg.publish(lora, name="bio-qa", category="QA", base_fingerprint=FP)
    path = f"{reg.version_path('bio-qa', m.version)}/manifest.json"
    fs = fsspec.filesystem("memory")
    data = json.loads(fs.cat_file(path))
    data["files"]["../../escape.txt"] = "0" * 64
    fs.pipe_file(path, json.dumps(data).encode())
    with pytest.raises(RegistryError, match="unexpected files"):
        reg.local_folder("bio-qa", m.version)
    assert not (tmp_path / "escape.txt").exists()


def test_a_create_racing_another_on_the_same_key_is_retried(make_lora, tmp_path, monkeypatch):
    """S3 answers a conditional write that races another on the same key with 409
    ConditionalRequestConflict: not a failure of the store, and not yet a lost race."""
    reg = Registry(f"memory://conflict-{uuid.uuid4().hex}/reg", cache_dir=tmp_path / "cache")
    real = reg.fs.pipe_file
    conflicts = []

    def pipe_file(path, data, **kwargs):
        if kwargs.get("mode") == "create" and path.endswith("manifest.json") and not conflicts:
            conflicts.append(path)
            raise OSError("An error occurred (ConditionalRequestConflict) when calling the PutObject operation")
        return real(path, data, **kwargs)

    monkeypatch.setattr(reg.fs, "pipe_file", pipe_file)
    m = reg.publish(make_lora(seed=5), name="raced", category="QA", base_fingerprint=FP)
    assert conflicts and m.ref == "raced@1" and reg.versions("raced") == [1]
    # a store that keeps failing is unavailable, and says so
    monkeypatch.setattr(reg.fs, "pipe_file",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("ConditionalRequestConflict")))
    with pytest.raises(RegistryUnavailable):
        reg.publish(make_lora(seed=5), name="raced", category="QA", base_fingerprint=FP)
