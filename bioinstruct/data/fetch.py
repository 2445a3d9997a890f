"""Lay out the manifest's datasets in a data folder, every file verified by its SHA-256.

For each file, in order: keep it if it is already there with the right checksum; else take it
from the first mirror that has it (BIOINSTRUCT_DATA_MIRROR, then the project's ../shared/data);
else from its pinned upstream repository (downloaded, or derived from files fetched before it).
Bytes land in `<name>.part` and become `<name>` only after their checksum matched, so a reader
never sees a half-written or unverified file; a download cut off midway resumes from the .part.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from bioinstruct.checksums import sha256_file  # noqa: F401 - callers import it from here
from bioinstruct.data.derive import DeriveError, derive
from bioinstruct.data.download import (
    SourceMissing,
    SourceUnavailable,
    SourceUnreachable,
    fetch_http,
    fetch_local,
)
from bioinstruct.data.manifest import Dataset, FileEntry, Manifest, load_manifest
from bioinstruct.data.settings import DataSettings
from bioinstruct.settings import CoreSettings

MIRROR_HINT = ("set BIOINSTRUCT_DATA_MIRROR (or --mirror) to a copy laid out as ../shared/data "
               "(a folder or an http(s) URL), or check that GitHub is reachable")


class DataFetchError(RuntimeError):
    """The data could not be laid out; the message names the file and what to change."""


class ChecksumMismatch(DataFetchError):
    pass


@dataclass(frozen=True)
class Mirror:
    """A copy laid out as ../shared/data: <location>/<dataset>/<file>."""

    location: str

    @property
    def is_http(self) -> bool:
        return urlsplit(self.location).scheme in ("http", "https")

    def locate(self, relpath: str) -> str:
        if self.is_http:
            return f"{self.location.rstrip('/')}/{quote(relpath)}"
        root = self.location.removeprefix("file://")
        return str(Path(root).expanduser() / relpath)


class Reporter:
    """What fetch says as it works. This one prints lines; the CLI's adds progress bars."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log

    def dataset(self, name: str, dataset: Dataset, sources: list[str]) -> None:
        self.log(f"{name}: {dataset.title}")
        self.log(f"  licence: {dataset.license}")
        for source in sources:
            self.log(f"  source: {source}")

    def transfer(self, relpath: str, size: int) -> Callable[[int], None] | None:
        """Called before bytes move; returns a callback taking each block's size, or None."""
        return None

    def file(self, relpath: str, outcome: str) -> None:
        self.log(f"  {relpath}: {outcome}")

    def note(self, text: str) -> None:
        self.log(f"  {text}")



def default_mirrors(core: CoreSettings, settings: DataSettings) -> list[Mirror]:
    """BIOINSTRUCT_DATA_MIRROR if set, then the project's own copy (../shared/data) if present."""
    mirrors = [Mirror(settings.mirror)] if settings.mirror else []
    shared = core.home.parent / "shared" / "data"
    if shared.is_dir():
        mirrors.append(Mirror(str(shared)))
    return mirrors


def missing_files(data_dir: Path, manifest: Manifest | None = None) -> list[str]:
    """The manifest's files not in `data_dir` (by name only: fetch is what verifies them)."""
    manifest = manifest or load_manifest()
    return [rel for rel in manifest.relpaths() if not (data_dir / rel).is_file()]


def fetch(dest: Path, *, only: Iterable[str] | None = None, mirrors: Sequence[Mirror] = (),
          upstream: bool = True, settings: DataSettings | None = None, manifest: Manifest | None = None,
          reporter: Reporter | None = None) -> dict[str, str]:
    """Fetch the datasets named in `only` (default all) into `dest`. Returns {relpath: outcome}."""
    manifest = manifest or load_manifest()
    settings = settings or DataSettings()
    reporter = reporter or Reporter()
    names = list(only) if only else list(manifest.datasets)
    unknown = [n for n in names if n not in manifest.datasets]
    if unknown:
        raise DataFetchError(f"unknown dataset(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(manifest.datasets)}")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataFetchError(f"cannot create the data folder {dest}: {exc}; point BIOINSTRUCT_DATA_DIR "
                             "(or --dest) at a writable folder") from None
    job = _Job(dest, manifest, list(mirrors), upstream, settings, reporter)
    outcomes: dict[str, str] = {}
    for name in names:
        try:
            outcomes.update(job.dataset(name))
        except OSError as exc:
            raise DataFetchError(f"{name}: cannot write or read {exc.filename or dest}: "
                                 f"{exc.strerror or exc}; point BIOINSTRUCT_DATA_DIR (or --dest) "
                                 "at a writable folder") from None
    return outcomes


class _Job:
    def __init__(self, dest: Path, manifest: Manifest, mirrors: list[Mirror], upstream: bool,
                 settings: DataSettings, reporter: Reporter) -> None:
        self.dest = dest
        self.manifest = manifest
        self.mirrors = mirrors
        self.upstream = upstream
        self.settings = settings
        self.reporter = reporter
        self.unreachable: dict[str, str] = {}  # host -> why: its other files are not tried again

    def dataset(self, name: str) -> dict[str, str]:
        dataset = self.manifest.datasets[name]
        self.reporter.dataset(name, dataset, self._sources(dataset))
        outcomes = {}
        present = 0
        for file_name, entry in dataset.files.items():
            rel = f"{name}/{file_name}"
            outcome = self._file(name, file_name, entry)
            outcomes[rel] = outcome
            if outcome == "present":
                present += 1
            else:
                self.reporter.file(rel, outcome)
        if present:
            self.reporter.note(f"{present} of {len(dataset.files)} files already there, checksums verified")
        return outcomes

    def _sources(self, dataset: Dataset) -> list[str]:
        used = []
        for entry in dataset.files.values():
            for up in (entry.upstream, entry.derive.upstream if entry.derive else None):
                if up is not None and up.repo not in used:
                    used.append(up.repo)
        pins = [self.manifest.repositories[r] for r in used]
        return [f"{pin.url} at {pin.commit}" for pin in pins]

    def _file(self, ds: str, name: str, entry: FileEntry) -> str:
        rel = f"{ds}/{name}"
        target = self.dest / ds / name
        if target.is_file():
            got = sha256_file(target)
            if got == entry.sha256:
                return "present"
            self.reporter.note(f"{rel}: SHA-256 {got}, expected {entry.sha256}: fetching it again")
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(name + ".part")
        tried: list[str] = []
        for mirror in self.mirrors:
            location = mirror.locate(rel)
            if not mirror.is_http and Path(location).resolve() == target.resolve():
                continue  # the data folder is this mirror: nothing else to copy from
            try:
                return f"{self._get(location, part, entry, rel, http=mirror.is_http)} from {location}"
            except (SourceMissing, SourceUnavailable) as exc:
                tried.append(str(exc))
        if self.upstream:
            try:
                return self._from_upstream(ds, name, entry, part)
            except (SourceMissing, SourceUnavailable) as exc:
                tried.append(str(exc))
        raise DataFetchError(f"{rel}: no source had it; tried:\n" + "\n".join(f"  - {t}" for t in tried)
                             + f"\nTo fix: {MIRROR_HINT}.")

    def _get(self, location: str, part: Path, entry: FileEntry, rel: str, *, http: bool) -> str:
        """Bring the file from `location` into place, verified. Returns how it came."""
        resumed = http and part.is_file() and part.stat().st_nlink == 1 and part.stat().st_size > 0
        how = self._transfer(location, part, entry.size, rel, http=http)
        try:
            self._place(part, entry, rel, location)
        except ChecksumMismatch:
            if not resumed:
                raise
            # The .part left by an earlier run may have been a prefix of other bytes: once more, whole.
            self.reporter.note(f"{rel}: the resumed download did not verify; downloading it whole")
            part.unlink(missing_ok=True)
            how = self._transfer(location, part, entry.size, rel, http=http)
            self._place(part, entry, rel, location)
        return how

    def _transfer(self, location: str, part: Path, size: int | None, rel: str, *, http: bool) -> str:
        host = urlsplit(location).netloc if http else ""
        if host in self.unreachable:
            raise SourceUnreachable(self.unreachable[host])
        progress = self.reporter.transfer(rel, size or 0)
        if http:
            try:
                fetch_http(location, part, size=size, timeout_s=self.settings.timeout_s,
                           retries=self.settings.retries, progress=progress)
            except SourceUnreachable as exc:
                self.unreachable[host] = str(exc)
                raise
            return "downloaded"
        return fetch_local(Path(location), part, progress)

    def _from_upstream(self, ds: str, name: str, entry: FileEntry, part: Path) -> str:
        rel = f"{ds}/{name}"
        if entry.upstream is not None:
            url = self.manifest.raw_url(entry.upstream)
            return f"{self._get(url, part, entry, rel, http=True)} from {url}"
        step = entry.derive
        assert step is not None
        inputs = [self.dest / ds / inp for inp in step.inputs]
        scratch: Path | None = None
        url = ""
        if step.upstream is not None:
            url = self.manifest.raw_url(step.upstream)
            # Kept only while deriving: the data folder holds what the code reads, not the .xlsx.
            scratch = self.dest / ds / f".{Path(step.upstream.path).name}.part"
            self._transfer(url, scratch, None, f"{ds}/{Path(step.upstream.path).name}", http=True)
            inputs.append(scratch)
        try:
            derive(step, inputs, part)
        except (DeriveError, OSError, ValueError, KeyError) as exc:
            part.unlink(missing_ok=True)
            raise DataFetchError(f"{rel}: could not derive it ({step.how}): {exc}. "
                                 f"To fix: {MIRROR_HINT}.") from None
        finally:
            if scratch is not None:
                scratch.unlink(missing_ok=True)
        source = ", ".join(step.inputs) if step.inputs else url
        self._place(part, entry, rel, f"{step.how} of {source}",
                    why=f"the {step.how} step did not reproduce the pinned file; {MIRROR_HINT}")
        return f"derived ({step.how}) from {source}"

    def _place(self, part: Path, entry: FileEntry, rel: str, origin: str, why: str = "") -> None:
        got = sha256_file(part)
        if got != entry.sha256:
            part.unlink(missing_ok=True)
            why = why or ("the source holds other bytes than the pinned file (a damaged or different "
                          f"copy): fix or drop that source, or {MIRROR_HINT}")
            raise ChecksumMismatch(f"{rel} from {origin} has SHA-256 {got}, expected {entry.sha256}: "
                                   f"refused, nothing was kept. {why[0].upper()}{why[1:]}.")
        if part.stat().st_nlink == 1:
            with part.open("rb") as fh:
                os.fsync(fh.fileno())  # on disk before its name says it is whole
        os.replace(part, self.dest / rel)
