"""Settings shared by every package, read from the environment (prefix BIOINSTRUCT_).

Paths default to places under the project home so that a fresh clone works with no
configuration; each can be pointed elsewhere with one variable.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_MODEL_DIRNAME = "SmolLM2-135M-Instruct"
# A Hugging Face Hub model id: owner/name (letters, digits, '.', '_', '-').
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
HUB_PINS_FILE = "pins.json"


def hub_model_id(value: str | None) -> str | None:
    """`value` as a Hub model id, or None when it is a local path. A folder that exists wins, so a
    local path keeps working exactly as before; an absolute, home or dotted path is never an id."""
    if not value or not HUB_ID.match(value) or ".." in value or "--" in value:
        return None
    if Path(value).expanduser().exists():
        return None
    return value


def hub_pin_key(repo_id: str, revision: str | None) -> str:
    return f"{repo_id}@{revision or ''}"


def _default_home() -> Path:
    # An editable install (the README's way) keeps the package inside the checkout:
    # use the checkout, so commands work from any directory. Otherwise the cwd.
    here = Path(__file__).resolve().parents[1]
    if (here / "pyproject.toml").is_file():
        return here
    return Path.cwd()


class CoreSettings(BaseSettings):
    """Where things live. Every component reads these and nothing else for paths."""

    model_config = SettingsConfigDict(env_prefix="BIOINSTRUCT_", extra="ignore")

    home: Path = Field(_default_home(), description="Project home: the default root of every path below.")
    base_model: str | None = Field(None, description=(
        "The base model: a local Hugging Face causal-LM folder, or a Hub model id (owner/name) fetched "
        "once into model_cache when online. Default: the embedded SmolLM2 (`bioinstruct model fetch`)."))
    base_model_revision: str | None = Field(None, description=(
        "Hub models only: a commit sha, branch or tag. A branch, a tag or none is resolved to its commit "
        "once and recorded in model_cache, so the same files are served until you pass another."))
    model_cache: Path | None = Field(None, description=(
        "Where base models are kept: the converted embedded model and Hub downloads "
        "(unset: <home>/.cache/models)."))
    data_dir: Path | None = Field(None, description=(
        "Labeled datasets (unset: ../shared/data when it exists, else <home>/data/datasets; "
        "`bioinstruct data fetch` fills it)."))
    registry: str | None = Field(None, description=(
        "Adapter registry: a local directory or an fsspec URL such as s3://bucket/prefix "
        "(unset: <home>/registry)."))
    eval_tasks_dir: Path | None = Field(None, description=(
        "An extra folder of benchmark task files beside the packaged ones (eval runs them, convert "
        "keeps their items out of training)."))

    @field_validator("base_model", mode="before")
    @classmethod
    def _path_as_text(cls, value):
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _fill_defaults(self) -> CoreSettings:
        self.home = self.home.expanduser().resolve()
        if self.model_cache is None:
            self.model_cache = self.home / ".cache" / "models"
        if self.data_dir is None:
            shared = (self.home.parent / "shared" / "data").resolve()
            self.data_dir = shared if shared.is_dir() else self.home / "data" / "datasets"
        if self.registry is None:
            self.registry = str(self.home / "registry")
        return self

    @property
    def embedded_model_dir(self) -> Path:
        assert self.model_cache is not None
        return self.model_cache / EMBEDDED_MODEL_DIRNAME

    @property
    def base_model_hub_id(self) -> str | None:
        """The Hub model id when base_model names one (and no local folder of that name exists)."""
        return hub_model_id(self.base_model)

    @property
    def hub_cache(self) -> Path:
        assert self.model_cache is not None
        return self.model_cache / "hub"

    def hub_pinned_revision(self) -> str | None:
        """The commit a Hub base model is served from: base_model_revision when it is a commit sha,
        else the one recorded when the id (at that branch or tag) was first resolved."""
        repo_id = self.base_model_hub_id
        if repo_id is None:
            return None
        if self.base_model_revision and COMMIT_SHA.match(self.base_model_revision):
            return self.base_model_revision
        try:
            pins = json.loads((self.hub_cache / HUB_PINS_FILE).read_text())
        except (OSError, ValueError):
            return None
        pin = pins.get(hub_pin_key(repo_id, self.base_model_revision)) if isinstance(pins, dict) else None
        return pin if isinstance(pin, str) and COMMIT_SHA.match(pin) else None

    def hub_model_dir(self, revision: str | None) -> Path:
        """The folder of a Hub model at a commit: `<owner>--<name>@<sha>` (`@unpinned` before the
        first fetch has pinned one)."""
        repo_id = self.base_model_hub_id
        assert repo_id is not None
        return self.hub_cache / f"{repo_id.replace('/', '--')}@{revision or 'unpinned'}"

    @property
    def base_model_dir(self) -> Path:
        if self.base_model is None:
            return self.embedded_model_dir.expanduser().resolve()
        if self.base_model_hub_id is not None:
            return self.hub_model_dir(self.hub_pinned_revision()).expanduser().resolve()
        return Path(self.base_model).expanduser().resolve()

    @property
    def uses_embedded_model(self) -> bool:
        return self.base_model is None or self.base_model_dir == self.embedded_model_dir.resolve()


@lru_cache(maxsize=1)
def core_settings() -> CoreSettings:
    return CoreSettings()


def offline_env() -> dict[str, str]:
    """Environment that keeps transformers/vLLM from ever reaching a model hub."""
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def apply_offline_env() -> None:
    for key, value in offline_env().items():
        os.environ.setdefault(key, value)
