"""Gateway settings (environment prefix BIOINSTRUCT_)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bioinstruct.instruct.prompts import TypeStrategy


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIOINSTRUCT_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # Attach to an engine someone else runs (two-Deployment Kubernetes mode) instead of
    # starting one. Empty: the gateway starts and supervises its own engine.
    engine_url: str | None = None
    engine_restart: bool = True

    # Auth. api_keys maps a bearer key to the adapters it may use ("*" = all). No keys:
    # inference is open. No admin token: admin routes are disabled.
    api_keys: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)
    admin_token: SecretStr | None = None

    # Admission control: requests running against the engine, and waiting for a slot.
    max_inflight: int = 64
    max_queue: int = 256
    queue_timeout_s: float = 30.0
    retry_after_s: int = 1

    # Limits on what a caller may ask.
    # (The fixed request limits, e.g. 32 options and 100,000 characters, are part of the API
    # schema: service/protocol.py.)
    max_tokens_limit: int = 1024

    # Route defaults: an alias, "base" or "auto". A missing alias falls back to base.
    qa_adapter: str = "qa"
    extract_adapter: str = "ie"
    # How /extract asks the adapter for the requested entity types (instruct.prompts.entity_asks).
    extract_type_strategy: TypeStrategy = "grouped"
    generate_adapter: str = "gen"
    qa_method: Literal["logprob", "constrained", "generate"] = "logprob"
    # Next-token alternatives read per scoring step; an external engine must be started
    # with --max-logprobs at least this (the gateway's own engine uses 64).
    qa_top_logprobs: int = 64

    # Adapters shipped with the product (adapters/ in the checkout), published into the
    # registry by `bioinstruct serve` on start; "" or "off": none.
    shipped_adapters: str | None = None

    # Admin publish takes folders under this root only (default: <home>/runs, where
    # training writes its runs).
    publish_root: Path | None = None
    max_body_bytes: int = 2 * 1024 * 1024
    # An inference request's body must arrive within this time (else 408): a stalled upload
    # holds its connection only, never an admission place.
    body_timeout_s: float = 10.0

    # Registry reconciliation: how often to look for alias changes by other processes.
    poll_interval_s: float = 1.0
    # A registry unreadable for longer than this fails readiness (the replica keeps answering
    # from its last good state, but no longer claims it is the registry's current one).
    registry_stale_after_s: float = 60.0
    # Aliases loaded at start and kept resident (readiness waits for them). None: the route
    # defaults (qa_adapter, extract_adapter, generate_adapter); "" : none, every alias is loaded
    # by its first request. JSON list or comma-separated.
    preload_adapters: Annotated[list[str] | None, NoDecode] = None
    # A request header whose value pins a caller to one version of a weighted alias (canary).
    sticky_header: str = "x-session-id"
    drain_timeout_s: float = 300.0
    # On SIGTERM: how long requests already running may take to finish before the
    # gateway stops (keep terminationGracePeriodSeconds above it in Kubernetes).
    shutdown_grace_s: float = 30.0
    engine_request_timeout_s: float = 600.0
    engine_connect_timeout_s: float = 30.0

    @field_validator("preload_adapters", mode="before")
    @classmethod
    def _preload_list(cls, value):
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @property
    def preload(self) -> list[str]:
        if self.preload_adapters is None:
            return [a for a in (self.qa_adapter, self.extract_adapter, self.generate_adapter)
                    if a not in ("base", "auto")]
        return list(self.preload_adapters)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_from_list(cls, value):
        # Also accept a comma-separated list of keys, each allowed every adapter.
        if isinstance(value, str):
            if value.strip().startswith("{"):
                return json.loads(value)
            return {k.strip(): ["*"] for k in value.split(",") if k.strip()}
        return value


@lru_cache(maxsize=1)
def service_settings() -> ServiceSettings:
    return ServiceSettings()
