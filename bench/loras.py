"""The adapters the comparisons serve: real peft LoRA folders with random non-zero weights (the
recipe of the tests), cached by seed, rank and target modules; merged copies; publishing them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bioinstruct.settings import CoreSettings

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # what training/ trains by default
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _cache() -> Path:
    return CoreSettings().home / ".cache" / "bench" / "adapters"


def make_lora(seed: int, rank: int = 8, targets: Sequence[str] = DEFAULT_TARGETS, scale: float = 0.5) -> Path:
    """A real peft LoRA folder with random non-zero weights (cached; same recipe as the tests)."""
    key = f"s{seed}-r{rank}-{'-'.join(t.replace('_proj', '') for t in targets)}"
    out = _cache() / key
    if (out / "adapter_model.safetensors").is_file():
        return out
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(CoreSettings().base_model_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), init_lora_weights=False,
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(scale)
    tmp = out.with_name(out.name + ".tmp")
    peft_model.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(out)
    return out


def merge_lora(adapter: Path) -> Path:
    """The base model with one adapter merged in (peft merge_and_unload), as a model folder."""
    out = _cache() / f"merged-{adapter.name}"
    if (out / "config.json").is_file():
        return out
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = CoreSettings().base_model_dir
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tmp = out.with_name(out.name + ".tmp")
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp)
    tmp.rename(out)
    return out


def next_version(registry: Path, name: str) -> int:
    from bioinstruct.registry import open_registry

    return len(open_registry(registry).versions(name)) + 1


def publish(registry: Path, folder: Path, name: str, alias: str) -> str:
    """Publish a folder into the registry as the next version of `name`, `alias` pointing at it
    (the registry's own checks, as a training run would); returns the engine name name@version."""
    from bioinstruct.adapter_files import AdapterLimits
    from bioinstruct.model import inspect_base_model
    from bioinstruct.publishing import PublishTarget, publish_adapter
    from bioinstruct.registry import Provenance

    base = inspect_base_model(CoreSettings().base_model_dir)
    # Rank and layers unchecked: the benchmarks start engines with their own LoRA limits.
    target = PublishTarget(base_fingerprint=base.fingerprint, base_model=base.path,
                           limits=AdapterLimits(base_hidden_size=base.hidden_size))
    return publish_adapter(folder, Provenance(name=name, category="GEN"), target, registry=registry, alias=alias).ref


def publish_adapters(registry: Path, adapters: dict[str, Path]) -> dict[str, str]:
    """Publish each folder as bench-<alias> with alias <alias>; return alias -> engine name."""
    return {alias: publish(registry, folder, f"bench-{alias}", alias) for alias, folder in adapters.items()}
