"""The adapter registry: immutable adapter versions and movable aliases, on disk or in a bucket.

Layout under the root (a local directory or any fsspec URL):

    adapters/<name>/<version>/adapter_config.json
    adapters/<name>/<version>/adapter_model.safetensors
    adapters/<name>/<version>/manifest.json      (written last: a version exists once it has one)
    adapters/<name>/<version>/.claim             (object stores: who took the number, created first)
    adapters/<name>/<version>.deleted            (tombstone: a number is never reused)
    aliases/<alias>/<generation>.json             (one record per move; the highest is current)

The registry is the desired state. Training publishes here; every service replica
reconciles its engine to it. Several replicas and operators share it, so:

- every read goes to the store (no cached listing, no cached object: another process may
  have changed anything since);
- nothing is ever overwritten: a new version takes its number with an exclusive create
  (If-None-Match on object stores, O_EXCL-like link/rename on disk), and an alias move
  creates the next generation of the alias with an exclusive create, which is a
  compare-and-swap on the generation: of two concurrent moves one wins and the other gets
  a Conflict, and each record keeps the history, so nothing is lost silently;
- a store that cannot be read raises RegistryUnavailable (never "absent"), so a replica
  keeps its last good state and says so rather than unloading what it serves.

Only an exclusive create is asked of the store (fsspec's `pipe_file(mode="create")`), the
most widely supported conditional write (S3, GCS, Azure, local disk).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, get_args

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field, field_validator

from bioinstruct.adapter_files import (
    ADAPTER_FILES,
    ALLOWED_EXTRA,
    AdapterLimits,
    check_adapter_folder,
)

# Callers catch the registry's errors from here (bioinstruct/errors.py defines them for both).
from bioinstruct.checksums import sha256_bytes, sha256_file  # noqa: F401 - re-exported
from bioinstruct.errors import Conflict, NotFound, RegistryError, RegistryUnavailable  # noqa: F401
from bioinstruct.instruct.families import Category

log = logging.getLogger("bioinstruct.registry")

# The one definition of an adapter's name, version and reference (name@version), and of its
# categories: the HTTP schema, the CLIs and the gate build theirs from these.
NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,62}"
VERSION_PATTERN = r"[0-9]{1,9}"
REF_PATTERN = rf"{NAME_PATTERN}@{VERSION_PATTERN}"
NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
REF_RE = re.compile(rf"^{REF_PATTERN}$")
ALIAS_RE = NAME_RE
CATEGORIES: tuple[str, ...] = get_args(Category)
RESERVED = {"base", "auto"}
GENERATIONS_KEPT = 20  # alias records kept per alias (each also carries the last 50 targets)
MAX_WEIGHT = 1000
CREATE_ATTEMPTS = 4  # a conditional create that meets a concurrent one (S3's 409) is retried


def _is_conflict(exc: BaseException) -> bool:
    """A store's answer that a concurrent conditional write on the same key is in progress."""
    text = f"{type(exc).__name__} {exc}"
    return "ConditionalRequestConflict" in text or "409" in text.split()


class Provenance(BaseModel):
    """What a publisher says about an adapter; the registry's manifest and shipped.json both
    carry it (bioinstruct.publishing.publish_adapter is how every publisher hands it in)."""

    name: str
    category: Category
    description: str | None = None
    base_model: str | None = None  # human-readable: which model it was trained on
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)  # scores, with N and CI

    @field_validator("category", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class Manifest(Provenance):
    """Everything known about one immutable adapter version: its provenance and what the
    registry checked and recorded."""

    version: int
    base_model_fingerprint: str
    peft_type: str = "LORA"
    rank: int
    alpha: float | None = None
    target_modules: list[str] = Field(default_factory=list)
    files: dict[str, str]  # file name -> sha256
    created_at: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class AliasRecord(BaseModel):
    """One generation of an alias. `weights` (ref -> weight) splits traffic between versions
    (a canary); empty means all of it goes to `target`, the version with the most weight."""

    alias: str
    target: str
    weights: dict[str, int] = Field(default_factory=dict)
    history: list[str] = Field(default_factory=list)  # earlier routes (split specs), oldest first
    updated_at: str
    generation: int = 0
    deleted: bool = False

    @property
    def split(self) -> list[tuple[str, int]]:
        """[(ref, weight)] in the record's order; weight 0 = draining (no new requests)."""
        return list(self.weights.items()) if self.weights else [(self.target, 1)]

    @property
    def refs(self) -> list[str]:
        return [ref for ref, _ in self.split]

    @property
    def spec(self) -> str:
        return format_split(self.weights) if self.weights else self.target


def format_split(weights: dict[str, int]) -> str:
    """{'a@1': 90, 'a@2': 10} -> 'a@1=90,a@2=10' (how history and the CLI write a split)."""
    return ",".join(f"{ref}={w}" for ref, w in weights.items())


def parse_split(spec: str | list[str]) -> dict[str, int]:
    """'a@1' -> {} (one target); 'a@1=90,a@2=10' or ['a@1=90', 'a@2=10'] -> weights.
    RegistryError naming what is wrong otherwise."""
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    if len(parts) == 1 and "=" not in parts[0]:
        parse_ref(parts[0])
        return {}
    weights: dict[str, int] = {}
    for part in parts:
        ref, sep, weight = part.partition("=")
        if not sep or not (weight.isascii() and weight.isdigit()):
            raise RegistryError(f"{part!r}: write each version of a split as <name>@<version>=<weight>, "
                                "e.g. bioinstruct-ie@1=90 bioinstruct-ie@2=10", code="invalid_split")
        name, version = parse_ref(ref)
        ref = f"{name}@{version}"
        if ref in weights:
            raise RegistryError(f"{ref} appears twice in the split", code="invalid_split")
        weights[ref] = int(weight)
    check_weights(weights)
    return weights


def check_weights(weights: dict[str, int]) -> None:
    if not weights:
        raise RegistryError("a split needs at least one version", code="invalid_split")
    for ref, weight in weights.items():
        parse_ref(ref)
        if not 0 <= weight <= MAX_WEIGHT:
            raise RegistryError(f"weight {weight} of {ref} is not between 0 and {MAX_WEIGHT}", code="invalid_split")
    if sum(weights.values()) <= 0:
        raise RegistryError("every weight is 0: give at least one version a positive weight", code="invalid_split")


def primary(weights: dict[str, int]) -> str:
    """The version with the most weight (the first of equals): what `target` names."""
    return max(weights, key=lambda ref: weights[ref])


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


def open_registry(url: str | Path | None = None, core: Any = None) -> Registry:
    """The registry every component uses: `url`, else BIOINSTRUCT_REGISTRY (`core`'s), with
    remote versions downloaded to the project's cache. The one place a Registry is built."""
    from bioinstruct.settings import core_settings

    core = core or core_settings()
    return Registry(url or core.registry or core.home / "registry", cache_dir=core.home / ".cache" / "registry")


# --- the registry -------------------------------------------------------------------------

class Registry:
    def __init__(self, root: str | Path, cache_dir: Path | None = None) -> None:
        self.url = str(root)
        protocol = fsspec.core.split_protocol(self.url)[0]
        if protocol in (None, "file", "local"):
            self.fs, path = fsspec.core.url_to_fs(self.url)
        else:
            # A filesystem of our own, with no listing cache: every read sees the store as it is
            # now. (A shared, cached instance kept a replica on a listing and on ETags from
            # before another replica's write: FileExpired forever, new aliases never seen.)
            self.fs, path = fsspec.core.url_to_fs(self.url, skip_instance_cache=True,
                                                  use_listings_cache=False)
        self.root = path.rstrip("/") or "/"
        self.local = isinstance(self.fs, LocalFileSystem)
        self.cache_dir = cache_dir
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    # paths
    def _p(self, *parts: str) -> str:
        return str(PurePosixPath(self.root, *parts))

    def version_path(self, name: str, version: int) -> str:
        return self._p("adapters", name, str(version))

    def _alias_path(self, alias: str, generation: int) -> str:
        return self._p("aliases", alias, f"{generation:010d}.json")

    # the store: fresh reads, exclusive creates ----------------------------------------------
    def _unavailable(self, what: str, exc: Exception) -> RegistryUnavailable:
        return RegistryUnavailable(f"the registry at {self.url} could not be read or written ({what}: "
                                   f"{type(exc).__name__}: {str(exc)[:200]})")

    def _cat(self, path: str) -> bytes | None:
        """The object's bytes now, or None when it does not exist."""
        try:
            if self.local:
                return Path(path).read_bytes()
            # cat_file: a plain GET; never a cached size or ETag (open() sends If-Match).
            return self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except Exception as exc:  # noqa: BLE001 - any store client's failure (botocore's are not OSErrors)
            raise self._unavailable(f"reading {path}", exc) from exc

    def _files(self, prefix: str) -> list[str]:
        """Every file under prefix (recursively), paths relative to it; [] if there is none."""
        if self.local:
            base = Path(prefix)
            if not base.is_dir():
                return []
            out = []
            for dirpath, _dirs, files in os.walk(base):
                rel = Path(dirpath).relative_to(base)
                out.extend(str(PurePosixPath(*rel.parts, f)) for f in files)
            return out
        try:
            self.fs.invalidate_cache()
            found = self.fs.find(prefix)
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001 - any store client's failure
            raise self._unavailable(f"listing {prefix}", exc) from exc
        strip = prefix.rstrip("/") + "/"
        return [p[len(strip):] for p in found if p.startswith(strip)]

    def _create(self, path: str, data: bytes) -> None:
        """Write a new object, refusing (FileExistsError) if it exists: never an overwrite."""
        if self.local:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.link(tmp, target)  # atomic and exclusive: readers see nothing or all of it
                except FileExistsError:
                    raise
                except OSError as exc:  # a filesystem without hard links: exclusive, if not atomic
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                        raise
                    with open(target, "xb") as out:
                        out.write(data)
            finally:
                os.unlink(tmp)
            return
        for attempt in range(CREATE_ATTEMPTS):
            try:
                self.fs.pipe_file(path, data, mode="create")
                return
            except FileExistsError:
                raise
            except TypeError:  # an fsspec filesystem without conditional writes (old releases)
                log.warning("%s cannot write conditionally: creating %s is check-then-write, not exclusive",
                            type(self.fs).__name__, path)
                if self.fs.exists(path):
                    raise FileExistsError(path) from None
                self.fs.pipe_file(path, data)
                return
            except Exception as exc:  # noqa: BLE001
                # Some stores report a failed precondition as a generic error: look again.
                if self._cat(path) is not None:
                    raise FileExistsError(path) from exc
                # S3 answers 409 ConditionalRequestConflict to a conditional write racing another
                # on the same key: neither has won yet, so try again (then 412, or success).
                if _is_conflict(exc) and attempt + 1 < CREATE_ATTEMPTS:
                    time.sleep(0.05 * 2 ** attempt)
                    continue
                raise self._unavailable(f"writing {path}", exc) from exc

    def _read_json(self, path: str) -> dict[str, Any] | None:
        data = self._cat(path)
        if data is None:
            return None
        try:
            out = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return out if isinstance(out, dict) else None

    # versions ------------------------------------------------------------------------------
    def _version_entries(self, name: str) -> tuple[list[int], list[int]]:
        """(complete versions, every number taken: claimed, complete or deleted)."""
        complete, taken = set(), set()
        for rel in self._files(self._p("adapters", name)):
            head, _, leaf = rel.partition("/")
            if head.endswith(".deleted") and not leaf:
                number = head[: -len(".deleted")]
                if number.isascii() and number.isdigit():
                    taken.add(int(number))
            elif head.isascii() and head.isdigit():
                taken.add(int(head))
                if leaf == "manifest.json":
                    complete.add(int(head))
        if self.local:  # a version folder renamed into place is taken even before it is listed whole
            parent = Path(self._p("adapters", name))
            if parent.is_dir():
                taken |= {int(e.name) for e in parent.iterdir() if e.name.isascii() and e.name.isdigit()}
        return sorted(complete), sorted(taken)

    def adapter_names(self) -> list[str]:
        names = {rel.split("/", 1)[0] for rel in self._files(self._p("adapters"))}
        return sorted(n for n in names if NAME_RE.match(n))

    def versions(self, name: str) -> list[int]:
        return self._version_entries(name)[0]

    def manifest(self, name: str, version: int) -> Manifest:
        data = self._read_json(self._p("adapters", name, str(version), "manifest.json"))
        if data is None:
            raise NotFound(f"adapter version {name}@{version} is not in the registry")
        return Manifest.model_validate(data)

    def manifests(self) -> list[Manifest]:
        out = []
        for rel in sorted(self._files(self._p("adapters"))):
            parts = rel.split("/")
            if len(parts) != 3 or parts[2] != "manifest.json" or not NAME_RE.match(parts[0]):
                continue
            if not (parts[1].isascii() and parts[1].isdigit()):
                continue
            try:
                out.append(self.manifest(parts[0], int(parts[1])))
            except (NotFound, ValueError):
                continue
        return sorted(out, key=lambda m: (m.name, m.version))

    # aliases -------------------------------------------------------------------------------
    def _alias_index(self) -> dict[str, list[int]]:
        """alias -> its generations, ascending. A file aliases/<alias>.json from before
        generations existed counts as generation 0."""
        index: dict[str, list[int]] = {}
        for rel in self._files(self._p("aliases")):
            parts = rel.split("/")
            if len(parts) == 1 and parts[0].endswith(".json") and not parts[0].startswith("."):
                index.setdefault(parts[0][: -len(".json")], []).append(0)
            elif len(parts) == 2 and parts[1].endswith(".json") and parts[1][:-5].isdigit() and parts[1][:-5].isascii():
                index.setdefault(parts[0], []).append(int(parts[1][:-5]))
        return {alias: sorted(gens) for alias, gens in index.items()}

    def _generation_path(self, alias: str, generation: int) -> str:
        return self._p("aliases", f"{alias}.json") if generation == 0 else self._alias_path(alias, generation)

    def _current(self, alias: str, generations: list[int]) -> tuple[int, AliasRecord | None, str | None]:
        """(generation, record or None when deleted, what is wrong with it or None)."""
        generation = generations[-1]
        data = self._read_json(self._generation_path(alias, generation))
        if data is None:
            return generation, None, "not readable JSON"
        try:
            rec = AliasRecord.model_validate(data)
        except ValueError as exc:
            return generation, None, f"not an alias record ({str(exc).splitlines()[0]})"
        rec.generation = generation
        return generation, (None if rec.deleted else rec), None

    def aliases(self) -> dict[str, AliasRecord]:
        return self.read_aliases()[0]

    def read_aliases(self) -> tuple[dict[str, AliasRecord], dict[str, str]]:
        """The live aliases, and {alias: what is wrong} for alias records that are not readable:
        a reader keeps serving its last good state for those rather than guess."""
        out: dict[str, AliasRecord] = {}
        bad: dict[str, str] = {}
        for alias, generations in sorted(self._alias_index().items()):
            if not NAME_RE.match(alias):
                continue
            _, rec, problem = self._current(alias, generations)
            if problem is not None:
                # Pruned between the listing and the read? Look once more before calling it bad.
                fresh = self._alias_index().get(alias)
                if fresh and fresh != generations:
                    _, rec, problem = self._current(alias, fresh)
            if problem is not None:
                bad[alias] = problem
            elif rec is not None:
                out[alias] = rec
        return out, bad

    def alias(self, alias: str) -> AliasRecord:
        rec = self.aliases().get(alias)
        if rec is None:
            raise NotFound(f"alias {alias!r} does not exist")
        return rec

    def alias_generation(self, alias: str) -> int:
        """The alias's current generation (0: never written); the value a compare-and-swap expects."""
        return (self._alias_index().get(alias) or [0])[-1]

    def _write_alias(self, alias: str, make: Any, expected_generation: int | None) -> AliasRecord:
        """Create the alias's next generation from make(current record or None); a Conflict if
        another writer got there first or the caller expected another generation."""
        check_name(alias, "alias")
        generations = self._alias_index().get(alias) or []
        generation, current, problem = self._current(alias, generations) if generations else (0, None, None)
        if problem is not None:
            current = None  # a damaged record is replaced; its history is gone with it
        if expected_generation is not None and expected_generation != generation:
            raise Conflict(f"alias {alias!r} is at generation {generation}, not {expected_generation}: "
                           "someone else changed it; read it again and retry")
        rec: AliasRecord = make(current)
        rec.generation = generation + 1
        rec.updated_at = now_iso()
        try:
            self._create(self._alias_path(alias, rec.generation), rec.model_dump_json(indent=2).encode())
        except FileExistsError:
            latest = self._alias_index().get(alias, [generation])[-1]
            raise Conflict(f"alias {alias!r} was changed by another writer at the same moment (now at "
                           f"generation {latest}); your change was not applied: read it again and retry") from None
        self._prune(alias, rec.generation)
        return rec

    def _prune(self, alias: str, newest: int) -> None:
        """Drop old generation files (their history lives on in the newest record). Best effort."""
        old = [g for g in self._alias_index().get(alias, []) if g <= newest - GENERATIONS_KEPT]
        for generation in old:
            try:
                self.fs.rm(self._generation_path(alias, generation))
            except (OSError, RegistryError):
                pass

    def _route(self, spec: str | dict[str, int]) -> tuple[str, dict[str, int]]:
        """(target, weights) for a ref or a split, every version checked to exist."""
        if isinstance(spec, dict):
            weights = dict(spec)
            check_weights(weights)
        else:
            weights = parse_split(spec)
        if not weights:  # one ref
            name, version = parse_ref(str(spec).strip())
            self.manifest(name, version)  # NotFound if absent
            return f"{name}@{version}", {}
        for ref in weights:
            self.manifest(*parse_ref(ref))
        if len(weights) == 1:  # a split of one is just a target
            return next(iter(weights)), {}
        return primary(weights), weights

    def set_alias(self, alias: str, target: str | dict[str, int], *,
                  expected_generation: int | None = None) -> AliasRecord:
        """Point an alias at one version ('name@3'), or split it between versions
        ({'name@1': 90, 'name@2': 10} or 'name@1=90,name@2=10'). Compare-and-swap."""
        check_name(alias, "alias")
        new_target, weights = self._route(target)

        def make(current: AliasRecord | None) -> AliasRecord:
            history = list(current.history) if current else []
            new_spec = format_split(weights) if weights else new_target
            if current and current.spec != new_spec:
                history.append(current.spec)
            return AliasRecord(alias=alias, target=new_target, weights=weights, history=history[-50:],
                               updated_at=now_iso())

        return self._write_alias(alias, make, expected_generation)

    def promote(self, alias: str, ref: str | None = None, *, expected_generation: int | None = None) -> AliasRecord:
        """All of the alias's traffic to `ref` (default: the newest version in its split)."""
        current = self.alias(alias)
        if ref is None:
            others = [r for r in current.refs if r != current.target] or current.refs
            ref = max(others, key=lambda r: parse_ref(r)[1])
        elif ref not in current.refs:
            raise Conflict(f"{ref} is not in alias {alias!r}'s split ({current.spec}); "
                           f"use `alias {alias} {ref}` to point it there")
        return self.set_alias(alias, ref, expected_generation=expected_generation or current.generation)

    def rollback(self, alias: str, *, expected_generation: int | None = None) -> AliasRecord:
        current = self.alias(alias)
        if not current.history:
            raise Conflict(f"alias {alias!r} has no earlier target to roll back to")
        previous = current.history[-1]
        weights = parse_split(previous)
        for ref in (weights or [previous]):
            try:
                self.manifest(*parse_ref(ref))
            except NotFound as exc:
                raise Conflict(f"alias {alias!r} cannot roll back to {previous}: {ref} was deleted; "
                               f"point it at an existing version instead") from exc
        target = primary(weights) if weights else previous

        def make(now: AliasRecord | None) -> AliasRecord:
            if now is None or now.generation != current.generation:
                raise Conflict(f"alias {alias!r} changed while rolling back; read it again and retry")
            return AliasRecord(alias=alias, target=target, weights=weights, history=now.history[:-1],
                               updated_at=now_iso())

        return self._write_alias(alias, make, expected_generation or current.generation)

    def delete_alias(self, alias: str, *, expected_generation: int | None = None) -> None:
        current = self.alias(alias)

        def make(now: AliasRecord | None) -> AliasRecord:
            history = [*(now.history if now else []), *([now.spec] if now else [])]
            return AliasRecord(alias=alias, target="", history=history[-50:], updated_at=now_iso(), deleted=True)

        self._write_alias(alias, make, expected_generation or current.generation)
        legacy = self._p("aliases", f"{alias}.json")
        if self._cat(legacy) is not None:
            self.fs.rm(legacy)

    # writing versions ------------------------------------------------------------------------
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
        if alias:
            check_name(alias, "alias")
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
        for _attempt in range(50):
            # Never reuse a number, even of a deleted or abandoned one: caches keyed by
            # name@version (failed loads, other replicas, downloads) must not mistake one adapter
            # for another.
            version = max(self._version_entries(name)[1], default=0) + 1
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
                        # A whole folder appears at once; it fails if a racer took the number
                        # (mkdir first: rename onto an existing empty folder would succeed).
                        os.mkdir(parent / str(version))
                    except FileExistsError:
                        continue
                    os.rename(staging, parent / str(version))
                finally:
                    if staging.exists():
                        shutil.rmtree(staging, ignore_errors=True)
                return manifest
            path = self.version_path(name, version)
            try:  # take the number first: two publishers never write into one version's folder
                self._create(f"{path}/.claim", f"{uuid.uuid4().hex} {now_iso()}".encode())
            except FileExistsError:
                continue
            try:
                for fname, data in files.items():
                    self.fs.pipe_file(f"{path}/{fname}", data)
                self._create(f"{path}/manifest.json", body)  # last: marks the version complete
            except FileExistsError as exc:  # our own claim makes this impossible unless the store lies
                raise Conflict(f"{name}@{version} was written by someone else meanwhile; retry") from exc
            except Exception as exc:  # noqa: BLE001
                raise self._unavailable(f"publishing {name}@{version}", exc) from exc
            return manifest
        raise Conflict(f"could not allocate a new version for {name}: too many concurrent publishers; retry")

    def delete_version(self, name: str, version: int) -> None:
        self.manifest(name, version)
        ref = f"{name}@{version}"
        users = [a for a, rec in self.aliases().items() if ref in rec.refs]
        if users:
            raise Conflict(f"{ref} is in the route of alias(es) {users}; point them elsewhere first")
        path = self.version_path(name, version)
        try:
            self._create(self._p("adapters", name, f"{version}.deleted"), now_iso().encode())  # tombstone
        except FileExistsError:
            pass
        # manifest first, so a half-deleted version is no longer a version
        self.fs.rm(f"{path}/manifest.json")
        self.fs.rm(path, recursive=True)

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
        # Keyed by the registry too: two registries (staging, prod, another bucket) may each
        # have a `name@version` of their own.
        dest = self.cache_dir / sha256_bytes(self.url.encode())[:16] / name / str(version)
        if not (dest / "manifest.json").is_file():
            files = list(self.manifest(name, version).files)
            unexpected = [f for f in files if f not in (*ADAPTER_FILES, *ALLOWED_EXTRA)]
            if unexpected:  # names from a remote manifest become local paths: only known ones
                raise RegistryError(f"{name}@{version}: manifest lists unexpected files {unexpected}",
                                    code="unsafe_path")
            tmp = dest.parent / f".dl-{uuid.uuid4().hex}"
            tmp.mkdir(parents=True)
            try:
                for fname in [*files, "manifest.json"]:
                    data = self._cat(f"{self.version_path(name, version)}/{fname}")
                    if data is None:
                        raise RegistryError(f"{name}@{version}: {fname} is missing", code="corrupt_adapter")
                    (tmp / fname).write_bytes(data)
                os.rename(tmp, dest)
            except OSError:
                pass  # another download won the rename
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
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
                raise RegistryError(f"{manifest.ref}: {entry.name} is a symlink leaving the registry",
                                    code="unsafe_path")
        check_adapter_folder(folder, limits)
        for fname, digest in manifest.files.items():
            path = folder / fname
            if not path.is_file():
                raise RegistryError(f"{manifest.ref}: {fname} is missing", code="corrupt_adapter")
            if sha256_file(path) != digest:
                raise RegistryError(f"{manifest.ref}: {fname} checksum mismatch (file changed or corrupt)",
                                    code="corrupt_adapter")
        return manifest, folder
