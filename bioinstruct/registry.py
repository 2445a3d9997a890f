"""The adapter registry: immutable adapter versions and movable aliases, on disk or in a bucket.

Layout under the root (a local directory or any fsspec URL):

    adapters/<name>/<version>/adapter_config.json
    adapters/<name>/<version>/adapter_model.safetensors
    adapters/<name>/<version>/manifest.json      (written last: a version exists once it has one)
    aliases/<alias>.json                          ({"target": "<name>@<version>", "history": [...]})

The registry is the desired state. Training publishes here; every service replica
reconciles its engine to it. Alias files are replaced atomically, so a reader sees the
old or the new target, never half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field

from bioinstruct.adapter_files import (
    ADAPTER_FILES,
    ALLOWED_EXTRA,
    AdapterLimits,
    check_adapter_folder,
)

# Callers catch the registry's errors from here (bioinstruct/errors.py defines them for both).
from bioinstruct.errors import Conflict, NotFound, RegistryError  # noqa: F401

# The one definition of an adapter's name, version and reference (name@version), and of its
# categories: the HTTP schema, the CLIs and the gate build theirs from these.
NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,62}"
VERSION_PATTERN = r"[0-9]{1,9}"
REF_PATTERN = rf"{NAME_PATTERN}@{VERSION_PATTERN}"
NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
REF_RE = re.compile(rf"^{REF_PATTERN}$")
ALIAS_RE = NAME_RE
Category = Literal["QA", "IE", "GEN", "OTHER", "ALL"]  # the task families and ALL (every family)
CATEGORIES: tuple[str, ...] = get_args(Category)
RESERVED = {"base", "auto"}


class Manifest(BaseModel):
    """Everything known about one immutable adapter version."""

    name: str
    version: int
    category: str
    base_model_fingerprint: str
    base_model: str | None = None
    peft_type: str = "LORA"
    rank: int
    alpha: float | None = None
    target_modules: list[str] = Field(default_factory=list)
    files: dict[str, str]  # file name -> sha256
    created_at: str
    description: str | None = None
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class AliasRecord(BaseModel):
    alias: str
    target: str
    history: list[str] = Field(default_factory=list)  # earlier targets, oldest first
    updated_at: str


def parse_ref(ref: str) -> tuple[str, int]:
    """'name@3' -> ('name', 3); RegistryError with a hint otherwise."""
    name, sep, version = ref.partition("@")
    # ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
    if not sep or not NAME_RE.match(name) or not (version.isascii() and version.isdigit()):
        raise RegistryError(
            f"{ref!r} is not a pinned adapter version; write it as <name>@<version>, e.g. bioinstruct-qa@2",
            code="invalid_adapter_name",
        )
    return name, int(version)


def check_name(name: str, what: str = "adapter name") -> str:
    if not NAME_RE.match(name) or name in RESERVED:
        raise RegistryError(
            f"{what} {name!r} is not allowed: use 1-63 characters of a-z, 0-9, '.', '_' or '-', "
            f"starting with a letter or digit, and not one of {sorted(RESERVED)}",
            code="invalid_adapter_name",
        )
    return name


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the registry -------------------------------------------------------------------------

class Registry:
    def __init__(self, root: str | Path, cache_dir: Path | None = None) -> None:
        self.url = str(root)
        self.fs, path = fsspec.core.url_to_fs(self.url)
        self.root = path.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        self.cache_dir = cache_dir
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    # paths
    def _p(self, *parts: str) -> str:
        return str(PurePosixPath(self.root, *parts))

    def version_path(self, name: str, version: int) -> str:
        return self._p("adapters", name, str(version))

    # reading -------------------------------------------------------------------------------
    def _read_json(self, path: str) -> dict[str, Any] | None:
        try:
            with self.fs.open(path, "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def adapter_names(self) -> list[str]:
        base = self._p("adapters")
        if not self.fs.exists(base):
            return []
        return sorted(PurePosixPath(p).name for p in self.fs.ls(base, detail=False)
                      if NAME_RE.match(PurePosixPath(p).name))

    def versions(self, name: str) -> list[int]:
        base = self._p("adapters", name)
        if not self.fs.exists(base):
            return []
        out = []
        for p in self.fs.ls(base, detail=False):
            leaf = PurePosixPath(p).name
            if leaf.isascii() and leaf.isdigit() and self.fs.exists(self._p("adapters", name, leaf, "manifest.json")):
                out.append(int(leaf))
        return sorted(out)

    def manifest(self, name: str, version: int) -> Manifest:
        data = self._read_json(self._p("adapters", name, str(version), "manifest.json"))
        if data is None:
            raise NotFound(f"adapter version {name}@{version} is not in the registry")
        return Manifest.model_validate(data)

    def manifests(self) -> list[Manifest]:
        out = []
        for name in self.adapter_names():
            for version in self.versions(name):
                try:
                    out.append(self.manifest(name, version))
                except (RegistryError, ValueError):
                    continue
        return out

    def aliases(self) -> dict[str, AliasRecord]:
        return self.read_aliases()[0]

    def read_aliases(self) -> tuple[dict[str, AliasRecord], dict[str, str]]:
        """The readable aliases, and {alias: what is wrong} for alias files that are not: a
        reader keeps serving its last good state for those rather than guess."""
        base = self._p("aliases")
        if not self.fs.exists(base):
            return {}, {}
        out: dict[str, AliasRecord] = {}
        bad: dict[str, str] = {}
        for p in self.fs.ls(base, detail=False):
            leaf = PurePosixPath(p).name
            if not leaf.endswith(".json") or leaf.startswith("."):
                continue
            name = leaf[: -len(".json")]
            data = self._read_json(p)
            if data is None:
                bad[name] = "not readable JSON"
                continue
            try:
                rec = AliasRecord.model_validate(data)
            except ValueError as exc:
                bad[name] = f"not an alias record ({str(exc).splitlines()[0]})"
                continue
            out[rec.alias] = rec
        return out, bad

    def alias(self, alias: str) -> AliasRecord:
        rec = self.aliases().get(alias)
        if rec is None:
            raise NotFound(f"alias {alias!r} does not exist")
        return rec

    # writing -------------------------------------------------------------------------------
    def _atomic_write(self, path: str, data: bytes) -> None:
        if self.local:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)  # atomic on POSIX: readers see old or new
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            self.fs.pipe_file(path, data)  # one PUT: object stores replace objects atomically

    def publish(
        self,
        folder: Path,
        *,
        name: str,
        category: str,
        base_fingerprint: str,
        base_model: str | None = None,
        limits: AdapterLimits | None = None,
        description: str | None = None,
        training: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        alias: str | None = None,
    ) -> Manifest:
        """Copy a peft folder in as the next version of `name`; optionally point an alias at it."""
        check_name(name)
        category = category.upper()
        if category not in CATEGORIES:
            raise RegistryError(f"category {category!r} is not one of {list(CATEGORIES)}", code="invalid_category")
        folder = Path(folder)
        config = check_adapter_folder(folder, limits)
        files = {f: (folder / f).read_bytes() for f in ADAPTER_FILES}
        files.update({f: (folder / f).read_bytes() for f in ALLOWED_EXTRA if (folder / f).is_file()})
        checksums = {f: sha256_bytes(b) for f, b in files.items()}
        targets = config.get("target_modules") or []
        manifest_fields = dict(
            name=name,
            category=category,
            base_model_fingerprint=base_fingerprint,
            base_model=base_model,
            rank=int(config["r"]),
            alpha=config.get("lora_alpha"),
            target_modules=sorted(targets) if isinstance(targets, list) else [str(targets)],
            files=checksums,
            description=description,
            training=training,
            metrics=metrics or {},
        )
        manifest = self._write_new_version(name, files, manifest_fields)
        if alias:
            self.set_alias(alias, manifest.ref)
        return manifest

    def _write_new_version(self, name: str, files: dict[str, bytes], fields: dict[str, Any]) -> Manifest:
        for _attempt in range(20):
            # Never reuse a number, even of a deleted version: caches keyed by name@version
            # (failed loads, other replicas, downloads) must not mistake one adapter for another.
            version = max([*self.versions(name), *self._deleted(name)], default=0) + 1
            manifest = Manifest(version=version, created_at=now_iso(), **fields)
            body = manifest.model_dump_json(indent=2).encode()
            if self.local:
                parent = Path(self.root, "adapters", name)
                parent.mkdir(parents=True, exist_ok=True)
                staging = parent / f".staging-{uuid.uuid4().hex}"
                staging.mkdir()
                try:
                    for fname, data in files.items():
                        (staging / fname).write_bytes(data)
                    (staging / "manifest.json").write_bytes(body)
                    try:
                        os.rename(staging, parent / str(version))  # fails if a racer took it
                    except OSError:
                        continue
                finally:
                    if staging.exists():
                        shutil.rmtree(staging, ignore_errors=True)
                return manifest
            path = self.version_path(name, version)
            if self.fs.exists(self._p("adapters", name, str(version), "manifest.json")):
                continue
            for fname, data in files.items():
                self.fs.pipe_file(f"{path}/{fname}", data)
            self.fs.pipe_file(f"{path}/manifest.json", body)  # last: marks the version complete
            return manifest
        raise Conflict(f"could not allocate a new version for {name}: too many concurrent publishers")

    def set_alias(self, alias: str, target: str) -> AliasRecord:
        check_name(alias, "alias")
        name, version = parse_ref(target)
        self.manifest(name, version)  # NotFound if absent
        current = self.aliases().get(alias)
        history = list(current.history) if current else []
        if current and current.target != target:
            history.append(current.target)
        rec = AliasRecord(alias=alias, target=f"{name}@{version}", history=history[-50:], updated_at=now_iso())
        self._atomic_write(self._p("aliases", f"{alias}.json"), rec.model_dump_json(indent=2).encode())
        return rec

    def rollback(self, alias: str) -> AliasRecord:
        current = self.alias(alias)
        if not current.history:
            raise Conflict(f"alias {alias!r} has no earlier target to roll back to")
        previous = current.history[-1]
        try:
            self.manifest(*parse_ref(previous))
        except NotFound as exc:
            raise Conflict(f"alias {alias!r} cannot roll back to {previous}: that version was deleted; "
                           f"point it at an existing version instead") from exc
        rec = AliasRecord(alias=alias, target=previous, history=current.history[:-1], updated_at=now_iso())
        self._atomic_write(self._p("aliases", f"{alias}.json"), rec.model_dump_json(indent=2).encode())
        return rec

    def delete_alias(self, alias: str) -> None:
        self.alias(alias)
        self.fs.rm(self._p("aliases", f"{alias}.json"))

    def delete_version(self, name: str, version: int) -> None:
        self.manifest(name, version)
        ref = f"{name}@{version}"
        users = [a for a, rec in self.aliases().items() if rec.target == ref]
        if users:
            raise Conflict(f"{ref} is the target of alias(es) {users}; point them elsewhere first")
        path = self.version_path(name, version)
        self.fs.pipe_file(self._p("adapters", name, f"{version}.deleted"), now_iso().encode())  # tombstone
        # manifest first, so a half-deleted version is no longer a version
        self.fs.rm(f"{path}/manifest.json")
        self.fs.rm(path, recursive=True)

    def _deleted(self, name: str) -> list[int]:
        base = self._p("adapters", name)
        if not self.fs.exists(base):
            return []
        leaves = (PurePosixPath(p).name for p in self.fs.ls(base, detail=False))
        return [int(leaf[: -len(".deleted")]) for leaf in leaves
                if leaf.endswith(".deleted") and leaf[: -len(".deleted")].isascii() and leaf[: -len(".deleted")].isdigit()]

    # loading -------------------------------------------------------------------------------
    def local_folder(self, name: str, version: int) -> Path:
        """A local folder holding the version's files (the registry itself, or a verified copy)."""
        if self.local:
            root = Path(self.root).resolve()
            folder = Path(self.version_path(name, version))
            real = folder.resolve()
            if not real.is_relative_to(root):
                raise RegistryError(f"{name}@{version} resolves outside the registry root", code="unsafe_path")
            return real
        assert self.cache_dir is not None, "a remote registry needs a local cache_dir"
        dest = self.cache_dir / name / str(version)
        if not (dest / "manifest.json").is_file():
            tmp = self.cache_dir / name / f".dl-{uuid.uuid4().hex}"
            tmp.mkdir(parents=True)
            files = list(self.manifest(name, version).files)
            unexpected = [f for f in files if f not in (*ADAPTER_FILES, *ALLOWED_EXTRA)]
            if unexpected:  # names from a remote manifest become local paths: only known ones
                raise RegistryError(f"{name}@{version}: manifest lists unexpected files {unexpected}",
                                    code="unsafe_path")
            for fname in [*files, "manifest.json"]:
                self.fs.get(f"{self.version_path(name, version)}/{fname}", str(tmp / fname))
            try:
                os.rename(tmp, dest)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # another download won
        return dest

    def verify(
        self,
        name: str,
        version: int,
        *,
        base_fingerprint: str,
        limits: AdapterLimits | None = None,
    ) -> tuple[Manifest, Path]:
        """Everything checked before a version may be loaded into the engine."""
        manifest = self.manifest(name, version)
        if manifest.base_model_fingerprint != base_fingerprint:
            raise RegistryError(
                f"{manifest.ref} was trained on base model {manifest.base_model_fingerprint} "
                f"({manifest.base_model}), not on the served base model {base_fingerprint}",
                code="base_model_mismatch",
            )
        folder = self.local_folder(name, version)
        root = Path(self.root).resolve() if self.local else self.cache_dir.resolve()  # type: ignore[union-attr]
        for entry in folder.iterdir():
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise RegistryError(f"{manifest.ref}: {entry.name} is a symlink leaving the registry", code="unsafe_path")
        check_adapter_folder(folder, limits)
        for fname, digest in manifest.files.items():
            path = folder / fname
            if not path.is_file():
                raise RegistryError(f"{manifest.ref}: {fname} is missing", code="corrupt_adapter")
            actual = _sha256_path(path)
            if actual != digest:
                raise RegistryError(f"{manifest.ref}: {fname} checksum mismatch (file changed or corrupt)", code="corrupt_adapter")
        return manifest, folder


def _sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
