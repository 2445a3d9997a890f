"""What a servable adapter folder is: a peft LoRA folder in safetensors, of a rank and on layers
the engine can load, for the served base model. Checked at publish time and again before every
load; vLLM's names for the layers it fuses live here too.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bioinstruct.errors import RegistryError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
ALLOWED_EXTRA = ("README.md",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def read_safetensors_header(data_or_path: bytes | Path) -> dict[str, Any]:
    """Parse and bound-check a safetensors header; RegistryError if truncated or malformed."""
    if isinstance(data_or_path, Path):
        size_total = data_or_path.stat().st_size
        with data_or_path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise RegistryError("adapter_model.safetensors is truncated (no header)", code="corrupt_adapter")
            (hlen,) = struct.unpack("<Q", head)
            if hlen > 100 << 20 or 8 + hlen > size_total:
                raise RegistryError("adapter_model.safetensors is truncated or corrupt (bad header length)",
                                    code="corrupt_adapter")
            raw = fh.read(hlen)
    else:
        data = data_or_path
        size_total = len(data)
        if size_total < 8:
            raise RegistryError("adapter_model.safetensors is truncated (no header)", code="corrupt_adapter")
        (hlen,) = struct.unpack("<Q", data[:8])
        if hlen > 100 << 20 or 8 + hlen > size_total:
            raise RegistryError("adapter_model.safetensors is truncated or corrupt (bad header length)",
                                code="corrupt_adapter")
        raw = data[8 : 8 + hlen]
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"adapter_model.safetensors has a corrupt header: {exc}", code="corrupt_adapter") from exc
    data_len = size_total - 8 - hlen
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        start, end = meta.get("data_offsets", (0, -1))
        if not (0 <= start <= end <= data_len):
            raise RegistryError(
                f"adapter_model.safetensors is truncated: tensor {key} ends at byte {end} of {data_len}",
                code="corrupt_adapter",
            )
    return header


# vLLM fuses these peft modules into one layer, and names the fused one in its target modules.
_FUSED = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
          "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}


def engine_layer(module: str) -> str:
    """vLLM's name for the layer that holds a peft target module (q_proj -> qkv_proj)."""
    return _FUSED.get(module, module)


def adapter_layers(header: dict[str, Any]) -> set[str]:
    """The engine layers an adapter has LoRA weights for, from its tensor names."""
    return {engine_layer(key.split(".lora_")[0].rsplit(".", 1)[-1])
            for key in header if ".lora_A" in key or ".lora_B" in key}


class AdapterLimits(BaseModel):
    """What the serving base model and engine can load; every adapter check reads this one object.

    None means "not checked" (e.g. a registry tool with no engine in sight).
    """

    model_config = ConfigDict(frozen=True)

    base_hidden_size: int | None = None
    max_rank: int | None = None  # the engine's --max-lora-rank
    lora_modules: tuple[str, ...] | None = None  # the engine's --lora-target-modules; None: every layer

    @field_validator("lora_modules", mode="before")
    @classmethod
    def _empty_is_every_layer(cls, value: Any) -> Any:
        return tuple(value) if value else None  # settings write every layer as "[]"


class EngineLimits(BaseSettings):
    """What the serving engine can load, from the environment (BIOINSTRUCT_ENGINE_*): the one
    source the engine's flags (EngineSettings extends it), training's early check and every
    publish read, so an adapter that trains is one the engine serves."""

    model_config = SettingsConfigDict(env_prefix="BIOINSTRUCT_ENGINE_", extra="ignore")

    max_lora_rank: int = Field(16, ge=1)  # vLLM --max-lora-rank
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda where torch sees a GPU
    # Layers that get LoRA in the engine, in vLLM's fused names; unset: by device. On CPU every
    # LoRA layer costs time even where an adapter has no weights: restricting it to where our
    # adapters train (q/k/v/o) measured 2.3x one adapter and 2.6x three (docs/BENCHMARKS.md §2).
    # On GPU the default is every layer, so that adapters trained on every linear layer (TRL's
    # common all-linear) serve as they are. Adapters with weights outside these layers are
    # refused at publish (the engine would silently drop those deltas).
    lora_target_modules: list[str] | None = Field(None, description=(
        "Layers that get LoRA, in vLLM's fused names; [] = every layer. Unset: qkv_proj, o_proj on "
        "cpu (measured 2.3x the throughput of every layer), every layer on cuda."))

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if cuda_available() else "cpu"

    def lora_layers(self, device: str | None = None) -> list[str]:
        """The layers that get LoRA (empty: every layer): the setting, else the device's default."""
        if self.lora_target_modules is not None:
            return list(self.lora_target_modules)
        return [] if (device or self.resolved_device()) == "cuda" else list(CPU_LORA_LAYERS)

    def adapter_limits(self, base_hidden_size: int | None) -> AdapterLimits:
        """What this engine can load, for the checks of every adapter before it is served."""
        return AdapterLimits(base_hidden_size=base_hidden_size, max_rank=self.max_lora_rank,
                             lora_modules=self.lora_layers())


CPU_LORA_LAYERS = ("qkv_proj", "o_proj")


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch (a light install) or a broken one: no CUDA for us
        return False


def check_adapter_folder(folder: Path, limits: AdapterLimits | None = None) -> dict[str, Any]:
    """Check a local peft LoRA folder; return its adapter_config. RegistryError says what is wrong."""
    limits = limits or AdapterLimits()
    if not folder.is_dir():
        raise RegistryError(f"adapter folder {folder} does not exist or is not a directory")
    names = {p.name for p in folder.iterdir()}
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise RegistryError(
            f"refusing pickle weights {pickles}: only safetensors are ever loaded; save the adapter "
            "with save_pretrained(..., safe_serialization=True)",
            code="unsafe_weights",
        )
    missing = [f for f in ADAPTER_FILES if f not in names]
    if missing:
        raise RegistryError(f"adapter folder is missing {missing}: a peft LoRA folder holds {list(ADAPTER_FILES)}",
                            code="incomplete_adapter")
    for entry in folder.iterdir():
        if entry.is_symlink():
            raise RegistryError(f"{entry.name} is a symlink; adapter files must be regular files", code="unsafe_path")
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"adapter_config.json is not valid JSON: {exc}", code="corrupt_adapter") from exc
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise RegistryError(f"peft_type is {config.get('peft_type')!r}; only LoRA adapters are served",
                            code="unsupported_adapter")
    rank = int(config.get("r", 0))
    if rank <= 0:
        raise RegistryError("adapter_config.json has no positive rank 'r'", code="corrupt_adapter")
    if limits.max_rank is not None and rank > limits.max_rank:
        raise RegistryError(
            f"adapter rank {rank} is above the engine's limit of {limits.max_rank}; "
            f"retrain with r <= {limits.max_rank} "
            "or start the engine with a higher BIOINSTRUCT_ENGINE_MAX_LORA_RANK",
            code="rank_too_high",
        )
    header = read_safetensors_header(folder / "adapter_model.safetensors")
    if limits.base_hidden_size:
        _check_shapes(header, limits.base_hidden_size)
    layers = limits.lora_modules
    outside = sorted(adapter_layers(header) - set(layers)) if layers else []
    if outside:
        raise RegistryError(
            f"adapter has LoRA weights on {outside}, but the engine applies LoRA only to {sorted(layers)} "
            "and would silently ignore the rest; retrain with target_modules inside those (training/'s "
            "default q_proj,k_proj,v_proj,o_proj is) or start the engine with "
            "BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES='[]' (LoRA on every layer; on a 2-core CPU that measured "
            "2.3x the time per token with one adapter and 2.6x with three: docs/BENCHMARKS.md section 2)",
            code="target_modules_unsupported",
        )
    return config


def _check_shapes(header: dict[str, Any], hidden: int) -> None:
    # q_proj's lora_A is [r, hidden]: a LoRA trained on another base has another width.
    for key, meta in header.items():
        if key.endswith("q_proj.lora_A.weight") or key.endswith("q_proj.lora_A.default.weight"):
            shape = meta.get("shape", [])
            if len(shape) == 2 and shape[1] != hidden:
                raise RegistryError(
                    f"adapter was trained on a base model with hidden size {shape[1]}, but the served "
                    f"base model has {hidden}; train it on the served base model",
                    code="base_model_mismatch",
                )
            return
