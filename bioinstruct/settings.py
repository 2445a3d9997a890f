"""Settings shared by every package, read from the environment (prefix BIOINSTRUCT_).

Paths default to places under the project home so that a fresh clone works with no
configuration; each can be pointed elsewhere with one variable.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_MODEL_DIRNAME = "SmolLM2-135M-Instruct"


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

    home: Path = _default_home()
    # A local Hugging Face folder of a causal LM. Default: the embedded SmolLM2,
    # fetched and converted by `bioinstruct model fetch` into model_cache.
    base_model: Path | None = None
    model_cache: Path | None = None
    # Labeled datasets: ../shared/data in the project layout when it exists, else <home>/data/datasets
    # (filled by `bioinstruct data fetch`, docs/DATA.md).
    data_dir: Path | None = None
    # Adapter registry: a local directory or an fsspec URL (s3://bucket/prefix, ...).
    registry: str | None = None
    # An extra folder of benchmark task files (beside the packaged instruct/benchmarks/):
    # `bioinstruct eval` runs them and `bioinstruct convert` keeps their items out of training.
    eval_tasks_dir: Path | None = None

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
    def base_model_dir(self) -> Path:
        return (self.base_model or self.embedded_model_dir).expanduser().resolve()

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
