"""Publishing a finished run: a new immutable registry version with its manifest, and an alias.

The running service polls the registry and hot-swaps when an alias moves, so pointing
an alias (e.g. `qa`) at the new version is all it takes to serve it — no restart.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from bioinstruct.publishing import PublishTarget, publish_adapter
from bioinstruct.registry import Manifest, NotFound, Provenance, open_registry
from bioinstruct.training.checkpoint import write_json_atomic
from bioinstruct.training.config import TrainConfig

PUBLISHED = "published.json"


def software_versions() -> dict[str, str]:
    import accelerate
    import peft
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__}


def training_record(run_dir: Path, summary: dict[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    """What the manifest says about how the adapter was made."""
    run = json.loads((run_dir / "run.json").read_text())
    keys = ("steps", "epochs", "train_loss", "train_loss_first", "eval_loss", "eval_loss_initial", "tokens",
            "target_tokens", "padding_fraction", "train_time_s", "wall_time_s", "tokens_per_s",
            "trainable_parameters", "world_size", "device", "torch_threads", "finished_at")
    return {
        "run": run_dir.name,
        "run_hash": run["run_hash"],
        "category": run["category"],
        "base_model": run["base_model"],
        "base_model_fingerprint": run["base_model_fingerprint"],
        "data": {"files": run["data_files"], **run["data_stats"]},
        "hyperparameters": cfg.model_dump(mode="json"),
        **{k: summary.get(k) for k in keys},
        "software": software_versions(),
    }


def publish_run(job, run_dir: Path, summary: dict[str, Any], base, registry_url: str, cfg: TrainConfig,
                say=print) -> Manifest:
    """Publish run_dir/adapter as the next version of job.name (once), then point job.alias at it."""
    registry = open_registry(registry_url)
    marker = run_dir / PUBLISHED
    if marker.is_file():
        rec = json.loads(marker.read_text())
        if rec.get("registry") == registry_url and rec.get("name") == job.name:
            try:
                manifest = registry.manifest(rec["name"], int(rec["version"]))
            except NotFound:
                manifest = None  # the registry lost it: publish again
            if manifest is not None:
                say(f"already published as {manifest.ref}")
                if job.alias:
                    current = registry.aliases().get(job.alias)
                    if current is None or current.target != manifest.ref:
                        registry.set_alias(job.alias, manifest.ref)
                        say(f"alias {job.alias} -> {manifest.ref}")
                return manifest
    metrics = {k: summary.get(k) for k in ("train_loss", "eval_loss", "eval_loss_initial", "tokens_per_s",
                                           "wall_time_s", "train_time_s")}
    provenance = Provenance(
        name=job.name, category=job.category, training=training_record(run_dir, summary, cfg), metrics=metrics,
        description=job.description or f"LoRA r={cfg.rank} on {job.category} instructions ({run_dir.name})",
    )
    # Checked against the engine the run was configured for (TrainConfig.engine_*).
    target = PublishTarget.of(base, cfg.engine_limits())
    manifest = publish_adapter(run_dir / "adapter", provenance, target, registry=registry, alias=job.alias)
    write_json_atomic(marker, {"registry": registry_url, "name": manifest.name, "version": manifest.version,
                               "ref": manifest.ref, "alias": job.alias})
    say(f"published {manifest.ref} to {registry_url}" + (f"; alias {job.alias} -> {manifest.ref}" if job.alias else ""))
    return manifest
