"""A comparison's PNG figures: matplotlib without a display, one file per figure in its run folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out: Path, name: str) -> list[str]:
    """Lay out, write <out>/<name> and close the figure; the list of plots written."""
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    pyplot().close(fig)
    return [name]


def errorbars(rows: Sequence[dict[str, Any]], scale: float = 1.0) -> tuple[list[float], list[list[float]]]:
    """Medians of summaries (bench/stats.py) and [below, above] distances to their min and max,
    for matplotlib's yerr / xerr."""
    med = [r["median"] * scale for r in rows]
    lo = [(r["median"] - r["min"]) * scale for r in rows]
    hi = [(r["max"] - r["median"]) * scale for r in rows]
    return med, [lo, hi]
