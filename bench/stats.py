"""Figures over repeats: each comparison interleaves its variants repeat by repeat and reports the
median of the repeats with their spread (min-max), and ratios paired within a repeat."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def summary(values: Iterable[float | None]) -> dict[str, Any]:
    """Median of repeats and their spread."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
            "values": [round(x, 6) for x in xs]}


def summaries(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """summary() of each key over the rows."""
    return {k: summary(r[k] for r in rows) for k in keys}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b in (None, 0):
        return None
    return a / b


def paired_ratio(runs: Sequence[dict[str, Any]], value: str, field: str, a: str, b: str) -> dict[str, Any]:
    """summary() over repeats of value(a) / value(b), both measured in the same repeat (runs whose
    `field` is a, and b)."""
    ra = {r["repeat"]: r[value] for r in runs if r[field] == a}
    rb = {r["repeat"]: r[value] for r in runs if r[field] == b}
    return summary(ratio(ra[i], rb[i]) for i in ra if i in rb)
