"""The manifest of pinned data sources (sources.yaml beside this module), as typed models."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

MANIFEST_PATH = Path(__file__).with_name("sources.yaml")
RAW_BASE = "https://raw.githubusercontent.com"
_GITHUB = re.compile(r"^https://github\.com/(?P<owner>[\w.-]+)/(?P<name>[\w.-]+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Repository(_Strict):
    url: str = Field(pattern=_GITHUB.pattern)
    # A full commit hash: a branch or tag could move, a commit cannot.
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")


class Upstream(_Strict):
    repo: str    # a key of Manifest.repositories
    path: str    # the file's path inside that repository


class Derivation(_Strict):
    """A file made from other files by a named step of bioinstruct/data/derive.py."""

    how: Literal["pubmedqa_split", "conll_entities", "xlsx_rows"]
    # Files of the same dataset the step reads (fetched and verified first).
    inputs: list[str] = []
    # Or one upstream file the step reads that the data folder does not keep (an .xlsx).
    upstream: Upstream | None = None
    part: Literal["test", "trainval"] | None = None   # pubmedqa_split
    split: str | None = None                           # conll_entities: the ids' prefix
    fields: list[str] = []                             # xlsx_rows: the columns' names, in order
    index_field: str | None = None                     # xlsx_rows: 0-based row number field

    @model_validator(mode="after")
    def _complete(self) -> Derivation:
        needs = {"pubmedqa_split": ("part", "inputs"), "conll_entities": ("split", "inputs"),
                 "xlsx_rows": ("fields", "upstream")}[self.how]
        missing = [name for name in needs if not getattr(self, name)]
        if missing:
            raise ValueError(f"derive {self.how} needs {', '.join(missing)}")
        return self


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    upstream: Upstream | None = None
    derive: Derivation | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> FileEntry:
        if (self.upstream is None) == (self.derive is None):
            raise ValueError("a file needs exactly one of upstream or derive")
        return self


class Dataset(_Strict):
    title: str
    license: str
    files: dict[str, FileEntry]


class Manifest(_Strict):
    repositories: dict[str, Repository]
    datasets: dict[str, Dataset]

    @model_validator(mode="after")
    def _references_resolve(self) -> Manifest:
        for ds_name, dataset in self.datasets.items():
            seen: set[str] = set()
            for name, entry in dataset.files.items():
                ups = [entry.upstream, entry.derive.upstream if entry.derive else None]
                for up in (u for u in ups if u is not None):
                    if up.repo not in self.repositories:
                        raise ValueError(f"{ds_name}/{name}: unknown repository {up.repo!r}")
                # Inputs come first in the file order, so one pass fetches them before their use.
                for inp in entry.derive.inputs if entry.derive else []:
                    if inp not in seen:
                        raise ValueError(f"{ds_name}/{name}: input {inp!r} must be listed before it")
                seen.add(name)
        return self

    def raw_url(self, upstream: Upstream) -> str:
        """The file's URL at the pinned commit."""
        repo = self.repositories[upstream.repo]
        match = _GITHUB.match(repo.url)
        assert match is not None  # the model's pattern
        return f"{RAW_BASE}/{match['owner']}/{match['name']}/{repo.commit}/{upstream.path}"

    def relpaths(self) -> list[str]:
        """Every file as <dataset>/<name>, the layout of the data folder."""
        return [f"{ds}/{name}" for ds, dataset in self.datasets.items() for name in dataset.files]


@lru_cache(maxsize=4)
def load_manifest(path: Path = MANIFEST_PATH) -> Manifest:
    return Manifest.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
