"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder `checkpoints/step-000123/` written as `.tmp-step-000123/` and
renamed when complete (a kill mid-write leaves a tmp folder that is ignored and removed).
It holds the trainable (LoRA) weights as safetensors, the optimizer and LR-scheduler
states, every process's RNG states, and `state.json` (step, counters, config hash),
written last. Only rank 0 reads and writes it: the other processes' RNG states are gathered to
it, and on resume it sends them the checkpoint, so every node may have its own disk (its own
run folder). Under FSDP the model and optimizer shards go through accelerate's `save_state`
instead, since no single process holds them: that needs one folder every process sees.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STEP_RE = re.compile(r"^step-(\d{6,})$")
WEIGHTS = "adapter_weights.safetensors"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, path: Path | dict[str, torch.Tensor]) -> None:
    """From a checkpoint's weights file, or the tensors read from one (sent by rank 0)."""
    saved = path if isinstance(path, dict) else load_file(str(path))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        missing = sorted(set(params) - set(saved))[:3]
        extra = sorted(set(saved) - set(params))[:3]
        raise RuntimeError(f"checkpoint {path} does not match the model (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def save_weights(model: torch.nn.Module, path: Path) -> None:
    save_file(trainable_state(model), str(path))


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    out = []
    for entry in root.iterdir():
        m = STEP_RE.match(entry.name)
        if m and (entry / "state.json").is_file():
            out.append((int(m.group(1)), entry))
    return sorted(out)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "state.json").read_text())


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def tmp_dir(root: Path, step: int) -> Path:
    return root / f".tmp-step-{step:06d}"


def final_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:06d}"


def finalize(root: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write state.json last, rename the tmp folder into place, drop old checkpoints."""
    tmp = tmp_dir(root, step)
    write_json_atomic(tmp / "state.json", state)
    final = final_dir(root, step)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    for _step, old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def clean_partial(root: Path) -> None:
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(".tmp-step-"):
                shutil.rmtree(entry, ignore_errors=True)


def read_checkpoint(folder: Path, world: int) -> dict[str, Any]:
    """Everything a run continues from (rank 0 reads it; the non-FSDP path)."""
    return {"name": folder.name, "state": read_state(folder), "weights": load_file(str(folder / WEIGHTS)),
            "optimizer": torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True),
            "scheduler": torch.load(folder / "scheduler.pt", weights_only=True),
            "rng": [torch.load(folder / f"rng-{r}.pt", weights_only=True) for r in range(world)]}
