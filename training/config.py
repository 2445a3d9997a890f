"""Training configuration: one validated model, read from YAML and overridden from the CLI.

Every field that can change the trained weights goes into `config_hash`; a run folder
holds one config hash, so re-running the same command finds its own checkpoints and a
changed setting never silently resumes someone else's run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bioinstruct.adapter_files import EngineLimits, engine_layer
from bioinstruct.training.formats import DataFormat

DEFAULT_CONFIG = "cpu-smollm2"
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

# Fields that do not change the trained weights: changing them keeps a run resumable.
RESUME_NEUTRAL = frozenset(
    {"save_every", "eval_every", "log_every", "keep_checkpoints", "num_threads", "engine_max_rank",
     "engine_lora_modules"}
)
# Fields whose effect is in the data fingerprint instead (training.data: each file's detected format),
# so that "auto" and the format it detects name the same run.
DATA_FINGERPRINTED = frozenset({"data_format"})


class ConfigError(ValueError):
    """A config file or an override is invalid; the message says what to change."""


class TrainConfig(BaseModel):
    """Hyperparameters and run settings of one LoRA fine-tuning run."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Base model: a local Hugging Face folder; None = BIOINSTRUCT_BASE_MODEL or the embedded SmolLM2.
    base_model: Path | None = None

    # LoRA
    rank: int = Field(8, ge=1, le=256, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (scale = alpha / rank)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    # The serving engine refuses adapters above its max LoRA rank and with weights outside its LoRA
    # layers (empty = every layer): checked here so that no run ends in an unservable adapter.
    # Both default to the engine's own settings (EngineLimits: BIOINSTRUCT_ENGINE_MAX_LORA_RANK,
    # BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES); set them to train for another engine.
    engine_max_rank: int = Field(default_factory=lambda: EngineLimits().max_lora_rank, ge=1)
    engine_lora_modules: list[str] = Field(default_factory=lambda: EngineLimits().lora_layers())

    def engine_limits(self) -> EngineLimits:
        return EngineLimits(max_lora_rank=self.engine_max_rank, lora_target_modules=self.engine_lora_modules)

    # Optimisation
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, le=0.5)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    epochs: float = Field(1.0, gt=0, le=1000)
    max_steps: int | None = Field(None, ge=1, description="if set, overrides epochs")
    batch_size: int = Field(4, ge=1, description="sequences per micro-batch per process")
    grad_accum: int = Field(4, ge=1, description="micro-batches per optimizer step")
    max_length: int = Field(1024, ge=32, le=131072, description="tokens per sequence")
    batching: Literal["bucket", "pack", "naive"] = "bucket"
    overlong: Literal["truncate_input", "drop"] = "truncate_input"
    seed: int = Field(42, ge=0)

    # Precision and memory
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    gradient_checkpointing: bool = False
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    # Deterministic kernels (torch.use_deterministic_algorithms): bitwise-reproducible runs on GPU.
    deterministic: bool = True

    # Validation split (held out from the training records, chosen by id and seed)
    eval_fraction: float = Field(0.05, ge=0, lt=0.9)
    eval_max_examples: int = Field(200, ge=0)
    # Ids (one per line, or a JSON list) never used for training or validation, e.g. the
    # evaluation harness's dev part. Matched against the record id and provenance item_id.
    exclude_ids_file: Path | None = None
    # How the data files are read (training.formats): auto-detected per file, or forced for all.
    data_format: DataFormat = "auto"

    # Bookkeeping (do not change the result)
    save_every: int = Field(50, ge=0, description="checkpoint every N optimizer steps (0 = only at the end)")
    eval_every: int = Field(50, ge=0, description="eval loss every N steps (0 = only at the end)")
    log_every: int = Field(1, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (None = torch default)")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list):
            value = [v.strip() for v in value if v.strip()]
            if not value:
                raise ValueError("name at least one module, e.g. q_proj,v_proj, or 'all-linear'")
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.rank > self.engine_max_rank:
            raise ValueError(
                f"rank {self.rank} is above the serving engine's max LoRA rank {self.engine_max_rank}: "
                f"use rank <= {self.engine_max_rank} or raise engine_max_rank together with "
                "BIOINSTRUCT_ENGINE_MAX_LORA_RANK"
            )
        if self.engine_lora_modules:
            targets = self.target_modules
            outside = ["all-linear"] if targets == "all-linear" else sorted(
                {t for t in targets if engine_layer(t) not in self.engine_lora_modules})
            if outside:
                raise ValueError(
                    f"target_modules {outside} are outside the serving engine's LoRA layers "
                    f"{self.engine_lora_modules}: the engine would ignore those weights. "
                    "Use q_proj,k_proj,v_proj,o_proj (or a subset), or set engine_lora_modules=[] "
                    "together with BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES='[]'"
                )
        return self

    @property
    def lora_scale(self) -> float:
        return self.alpha / self.rank

    def hash_payload(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        return {k: v for k, v in sorted(data.items()) if k not in RESUME_NEUTRAL | DATA_FINGERPRINTED}


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml") if not p.name.startswith("accelerate"))


def resolve_config_path(name_or_path: str | Path | None) -> Path:
    """A YAML path, or the name of a packaged config (cpu-smollm2, gpu-llama2-7b)."""
    if name_or_path is None:
        name_or_path = DEFAULT_CONFIG
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    packaged = CONFIGS_DIR / f"{str(name_or_path).removesuffix('.yaml')}.yaml"
    if packaged.is_file():
        return packaged
    raise ConfigError(
        f"config {str(name_or_path)!r} is neither a file nor a packaged config; "
        f"packaged configs: {', '.join(builtin_configs())}"
    )


def _format_validation(exc: ValidationError, source: str) -> str:
    lines = [f"invalid training config ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown setting; valid settings: {', '.join(TrainConfig.model_fields)}"
        lines.append(f"  {loc}: {msg} (got {err.get('input')!r})" if err["type"] != "extra_forbidden"
                     else f"  {loc}: {msg}")
    return "\n".join(lines)


def load_config(name_or_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (file or packaged name), apply non-None overrides, validate."""
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            _format_validation(exc, str(path) + (" + command-line overrides" if overrides else ""))) from exc


def stable_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
