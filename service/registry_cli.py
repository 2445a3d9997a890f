"""`bioinstruct adapters ...`: the registry from the command line, with the admin API's checks.

For a team bringing its own peft folder: publish it, point or roll back an alias, delete a
version, without curl. The checks are the ones the gateway applies (base model fingerprint,
the engine's rank limit and LoRA layers, safetensors only); a running gateway picks the
change up on its next registry poll.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from bioinstruct.registry import (
    CATEGORIES,
    Provenance,
    Registry,
    RegistryError,
    open_registry,
    parse_ref,
    parse_split,
)

adapters_app = typer.Typer(no_args_is_help=True, help="List, publish, alias, roll back and delete adapter versions.")
REGISTRY = typer.Option(None, "--registry", help=(
    "Registry root or fsspec URL (default BIOINSTRUCT_REGISTRY or <home>/registry)"))


def _registry(url: str | None) -> Registry:
    return open_registry(url)


def _target():
    """The configured base model and engine every adapter here is checked against."""
    from bioinstruct.model import BaseModelError
    from bioinstruct.publishing import PublishTarget

    try:
        return PublishTarget.from_settings()
    except BaseModelError as exc:
        raise _fail(exc) from exc


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg="red", err=True)
    return typer.Exit(2)


@adapters_app.command("list")
def list_cmd(registry: str = REGISTRY,
             as_json: bool = typer.Option(False, "--json", help="Machine-readable output")) -> None:
    """Versions (with their aliases) and aliases."""
    reg = _registry(registry)
    aliases = reg.aliases()
    by_target: dict[str, list[str]] = {}
    for alias, rec in aliases.items():
        for ref in rec.refs:
            by_target.setdefault(ref, []).append(alias)
    rows = [{"ref": m.ref, "category": m.category, "rank": m.rank, "aliases": sorted(by_target.get(m.ref, [])),
             "created_at": m.created_at, "description": m.description} for m in reg.manifests()]
    if as_json:
        typer.echo(json.dumps({"versions": rows, "aliases": {a: r.target for a, r in sorted(aliases.items())},
                               "splits": {a: r.weights for a, r in sorted(aliases.items()) if r.weights},
                               "generations": {a: r.generation for a, r in sorted(aliases.items())}}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"adapters in {reg.root}")
    for col in ("version", "category", "rank", "aliases", "created", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["ref"], r["category"], str(r["rank"]), ", ".join(r["aliases"]), r["created_at"],
                      (r["description"] or "")[:60])
    Console().print(table)


@adapters_app.command("publish")
def publish_cmd(
    folder: Path = typer.Argument(..., help="A peft LoRA folder (adapter_config.json + adapter_model.safetensors)"),
    name: str = typer.Option(..., "--name", help="Adapter name, e.g. team-ner"),
    category: str = typer.Option(..., "--category", help=f"One of {', '.join(CATEGORIES)}"),
    alias: str = typer.Option(None, "--alias", help="Point this alias at the new version"),
    description: str = typer.Option(None, "--description"),
    registry: str = REGISTRY,
) -> None:
    """Publish a folder as the next immutable version of NAME (checked as the admin API checks)."""
    if not folder.is_dir():
        raise _fail(ValueError(f"{folder} is not a folder"))
    from bioinstruct.publishing import publish_adapter

    if category.upper() not in CATEGORIES:
        raise _fail(ValueError(f"--category {category!r} is not one of {', '.join(CATEGORIES)}"))
    provenance = Provenance(name=name, category=category, description=description)
    try:
        manifest = publish_adapter(folder, provenance, _target(), registry=_registry(registry), alias=alias)
    except RegistryError as exc:
        raise _fail(exc) from exc
    typer.echo(f"published {manifest.ref}" + (f"; alias {alias} -> {manifest.ref}" if alias else ""))


@adapters_app.command("alias")
def alias_cmd(
    alias: str = typer.Argument(...),
    targets: list[str] = typer.Argument(..., help="name@version, or a split: name@1=90 name@2=10 (weight 0 drains)"),
    expect_generation: int = typer.Option(None, "--expect-generation",
                                          help="Compare-and-swap: refuse unless the alias is at this generation"),
    registry: str = REGISTRY,
) -> None:
    """Point ALIAS at a version, or split its traffic between versions by weight (a canary)."""
    target = _target()
    reg = _registry(registry)
    try:
        weights = parse_split(targets)
        for ref in (weights or targets):
            reg.verify(*parse_ref(ref), base_fingerprint=target.base_fingerprint, limits=target.limits)
        rec = reg.set_alias(alias, weights or targets[0], expected_generation=expect_generation)
    except RegistryError as exc:
        raise _fail(exc) from exc
    typer.echo(f"alias {alias} -> {rec.spec} (generation {rec.generation})")


@adapters_app.command("promote")
def promote_cmd(alias: str = typer.Argument(...),
                target: str = typer.Argument(None, help="name@version (default: the newest in the split)"),
                registry: str = REGISTRY) -> None:
    """Send all of a split alias's traffic to one version."""
    try:
        rec = _registry(registry).promote(alias, target)
    except RegistryError as exc:
        raise _fail(exc) from exc
    typer.echo(f"alias {alias} -> {rec.spec} (generation {rec.generation})")


@adapters_app.command("rollback")
def rollback_cmd(alias: str = typer.Argument(...), registry: str = REGISTRY) -> None:
    """Point ALIAS back at its previous route (a version or a split)."""
    try:
        rec = _registry(registry).rollback(alias)
    except RegistryError as exc:
        raise _fail(exc) from exc
    typer.echo(f"alias {alias} -> {rec.spec} (generation {rec.generation})")


@adapters_app.command("delete")
def delete_cmd(target: str = typer.Argument(..., help="name@version"), registry: str = REGISTRY) -> None:
    """Delete a version that no alias points at."""
    try:
        name, version = parse_ref(target)
        _registry(registry).delete_version(name, version)
    except RegistryError as exc:
        raise _fail(exc) from exc
    typer.echo(f"deleted {target}")


@adapters_app.command("export")
def export_cmd(
    fmt: str = typer.Option("inference-model-rewrite", "--format",
                            help="inference-model-rewrite (llm-d InferenceModelRewrite objects, YAML)"),
    pool: str = typer.Option("bioinstruct", "--pool", help="The InferencePool the rewrites refer to"),
    namespace: str = typer.Option(None, "--namespace"),
    registry: str = REGISTRY,
) -> None:
    """The registry's aliases (with their canary weights) as objects for the routing layer:
    `... | kubectl apply -f -` keeps llm-d's picker routing each alias to its versions."""
    import yaml

    from bioinstruct.inference_rewrite import RewriteError, rewrites_from_aliases

    if fmt != "inference-model-rewrite":
        raise _fail(ValueError(f"--format {fmt!r} is not known; use inference-model-rewrite"))
    try:
        aliases = {a: r.model_dump() for a, r in _registry(registry).aliases().items()}
        objects = rewrites_from_aliases(aliases, pool, namespace)
    except (RegistryError, RewriteError) as exc:
        raise _fail(exc) from exc
    typer.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)


@adapters_app.command("publish-shipped")
def publish_shipped_cmd(registry: str = REGISTRY) -> None:
    """Publish the adapters shipped in adapters/ (what `bioinstruct serve` does on start)."""
    from bioinstruct.shipped import ShippedError, publish_shipped

    try:
        publish_shipped(_registry(registry), _target(), say=typer.echo)
    except (RegistryError, ShippedError) as exc:
        raise _fail(exc) from exc


def register(app: typer.Typer) -> None:
    app.add_typer(adapters_app, name="adapters")
