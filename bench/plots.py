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


def bar_panels(rows: dict[str, dict[str, Any]], panels: Sequence[tuple[str, str, float]], out: Path,
               name: str) -> list[str]:
    """One bar chart per (key, y label, scale): each row's median with its min-max range."""
    fig, axes = pyplot().subplots(1, len(panels), figsize=(1 + 3.4 * len(panels), 3.5), squeeze=False)
    names = list(rows)
    for ax, (key, label, scale) in zip(axes[0], panels, strict=True):
        med, err = errorbars([rows[n][key] for n in names], scale)
        ax.bar(names, med, yerr=err, capsize=4)
        ax.set_ylabel(label)
    return save_figure(fig, out, name)


def errorbars(rows: Sequence[dict[str, Any]], scale: float = 1.0) -> tuple[list[float], list[list[float]]]:
    """Medians of summaries (bench/stats.py) and [below, above] distances to their min and max,
    for matplotlib's yerr / xerr."""
    med = [r["median"] * scale for r in rows]
    lo = [(r["median"] - r["min"]) * scale for r in rows]
    hi = [(r["max"] - r["median"]) * scale for r in rows]
    return med, [lo, hi]
