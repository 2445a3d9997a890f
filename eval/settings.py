"""Evaluation settings (environment prefix BIOINSTRUCT_EVAL_); every one has a CLI flag too."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bioinstruct.settings import CoreSettings


class EvalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIOINSTRUCT_EVAL_", extra="ignore")

    # The gateway to evaluate (the service's default bind address).
    base_url: str = "http://127.0.0.1:8000"
    # Bearer key for inference routes, when the gateway has api_keys set.
    api_key: SecretStr | None = None
    # Where runs are written; default <home>/reports.
    reports_dir: Path | None = None
    # Optional LLM judge: any OpenAI-compatible endpoint (base URL ending in /v1).
    judge_url: str | None = None
    judge_model: str | None = None
    judge_api_key: SecretStr | None = None

    def reports_root(self, core: CoreSettings | None = None) -> Path:
        if self.reports_dir is not None:
            return self.reports_dir.expanduser().resolve()
        return (core or CoreSettings()).home / "reports"


def admin_token_from_env() -> str | None:
    """The gateway's admin token, read from the same variable the service uses."""
    return os.environ.get("BIOINSTRUCT_EVAL_ADMIN_TOKEN") or os.environ.get("BIOINSTRUCT_ADMIN_TOKEN")
