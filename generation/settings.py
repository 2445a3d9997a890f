"""Generation settings, from the environment (prefix BIOINSTRUCT_GEN_); every one has a CLI flag."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bioinstruct.settings import CoreSettings

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


class GenerationSettings(BaseSettings):
    """Where to ask for tasks, how, and what to keep.

    Defaults target the running service on the embedded model (model "base"). For a
    GPT-4-class API set base_url, model and api_key (e.g. BIOINSTRUCT_GEN_BASE_URL=
    https://api.openai.com/v1, BIOINSTRUCT_GEN_MODEL=gpt-4o, BIOINSTRUCT_GEN_API_KEY=...).
    """

    model_config = SettingsConfigDict(env_prefix="BIOINSTRUCT_GEN_", extra="ignore")

    # The endpoint (OpenAI-compatible, ending in /v1) and model.
    base_url: str = DEFAULT_BASE_URL
    model: str = "base"
    # The openai client insists on a non-empty key; the service accepts any without auth.
    api_key: SecretStr = SecretStr("EMPTY")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(1024, ge=16)
    request_timeout_s: float = Field(180.0, gt=0)
    max_retries: int = Field(6, ge=0)
    # Requests in flight at once.
    concurrency: int = Field(4, ge=1, le=256)
    # New tasks asked for in one request.
    batch_size: int = Field(5, ge=1, le=20)
    # In-context examples per prompt: this many seeds, of which up to `mix_generated`
    # are replaced by tasks already accepted (Self-Instruct mixes in its own output).
    num_examples: int = Field(3, ge=1, le=10)
    mix_generated: int = Field(0, ge=0, le=10)
    seed: int = 0
    # Filters.
    min_instruction_words: int = Field(3, ge=1)
    max_instruction_words: int = Field(150, ge=2)
    max_output_words: int = Field(600, ge=1)
    rouge_threshold: float = Field(0.7, gt=0.0, le=1.0)
    # Ask the model for each task's category (QA/IE/GEN/OTHER); the rule-based classifier
    # labels a task whose label is missing or unusable, or every task when False.
    label_with_model: bool = True
    # Stop after this many requests even if fewer than n records were accepted
    # (default: 20 requests per requested record, at least 100).
    max_requests: int | None = Field(None, ge=1)
    # fsync after each record (a power cut, not only a killed process, keeps them).
    fsync: bool = True
    # Output file; default <home>/data/generated/selfinstruct.jsonl.
    out: Path | None = None

    def out_path(self, core: CoreSettings | None = None) -> Path:
        if self.out is not None:
            return self.out.expanduser().resolve()
        return (core or CoreSettings()).home / "data" / "generated" / "selfinstruct.jsonl"

    def request_budget(self, n: int) -> int:
        return self.max_requests if self.max_requests is not None else max(100, 20 * n)


def data_root(core: CoreSettings | None = None) -> Path:
    """<home>/data: generated, converted and training files, and their reports (gitignored)."""
    return (core or CoreSettings()).home / "data"
