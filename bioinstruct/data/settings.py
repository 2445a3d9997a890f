"""Settings of `bioinstruct data fetch`, from the environment (prefix BIOINSTRUCT_DATA_).

Where the data goes is CoreSettings.data_dir (BIOINSTRUCT_DATA_DIR); these say where it comes from.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DataSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIOINSTRUCT_DATA_", extra="ignore")

    # A copy laid out as ../shared/data (same folder and file names): a folder or an http(s)
    # URL. Tried before the project's ../shared/data and the pinned upstream repositories.
    mirror: str | None = None
    # Seconds without a byte before a download attempt is abandoned (and resumed).
    timeout_s: float = Field(60.0, gt=0)
    # Further attempts after an interrupted download, each continuing from the .part file.
    retries: int = Field(5, ge=0)
