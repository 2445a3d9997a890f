"""What a comparison prints while it runs (stderr, so that its Markdown can go to stdout)."""

from __future__ import annotations

import time


def log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")


def progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True)
