"""`bioinstruct bench <comparison>`: the side-by-side benchmarks (docs/BENCHMARKS.md).

The load test over the task routes is `bioinstruct load` (eval/load.py); each comparison here
is also `python -m bioinstruct.bench.<module>`. Reports: JSON + Markdown +
PNG in reports/bench/<name>-<time>/.
"""

from __future__ import annotations

import time
import traceback

import typer

from bioinstruct.bench import adapters, coldstart, dedup_repeats, serving, swap, trainers, training

COMMANDS = {
    "serving": serving.command,
    "adapters": adapters.command,
    "swap": swap.command,
    "dedup": dedup_repeats.command,
    "training": training.command,
    "coldstart": coldstart.command,
    "trl": trainers.command,
}


def run_all(
    only: str = typer.Option("", help="Comma-separated subset, in this order: " + ", ".join(COMMANDS)),
) -> None:
    """Run every comparison with its defaults (what `make bench` does); about an hour on 2 cores."""
    from bioinstruct.bench.console import log
    from bioinstruct.bench.machine import loadavg

    chosen = [c.strip() for c in only.split(",") if c.strip()] or list(COMMANDS)
    runners = {
        "serving": lambda: serving.run([1, 8, 32]),
        "adapters": lambda: adapters.run(),
        "swap": lambda: swap.run(),
        "dedup": lambda: dedup_repeats.run([1000, 5000, 25000]),
        "training": lambda: training.run(),
        "coldstart": lambda: coldstart.run(),
        "trl": lambda: trainers.run(),
    }
    done, failed = {}, []
    for name in chosen:
        if name not in runners:
            raise typer.BadParameter(f"unknown comparison {name!r}; choose from {', '.join(runners)}")
        t0 = time.monotonic()
        log(f"[bold]bench {name}[/bold] (load {loadavg()})")
        try:
            done[name] = runners[name]()
        except Exception:  # noqa: BLE001 - one failed comparison must not stop the others
            failed.append(name)
            traceback.print_exc()
        log(f"bench {name}: {time.monotonic() - t0:.0f} s")
    for name, path in done.items():
        typer.echo(f"{name}: {path / (name + '.md')}")
    if failed:
        typer.secho(f"failed: {', '.join(failed)}", fg="red", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Side-by-side benchmarks (docs/BENCHMARKS.md).", no_args_is_help=True)
    app.add_typer(group, name="bench")
    for name, fn in COMMANDS.items():
        group.command(name)(fn)
    group.command("all")(run_all)
