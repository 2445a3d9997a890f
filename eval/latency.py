"""Latency percentiles: the one percentile function of eval/ and bench/ (linear interpolation
between order statistics, numpy's default), and the two summaries their reports print."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile(values: Sequence[float | None], q: float) -> float | None:
    """The q-th percentile (0-100) of the values given (None ignored); None when there are none."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return float(np.percentile(arr, q)) if arr.size else None


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def percentiles(values: Sequence[float | None],
                qs: Sequence[float] = (50, 90, 99)) -> dict[str, float | None]:
    """{"p50", "p90", "p99", "mean"} (eval reports' serving section)."""
    xs = [v for v in values if v is not None]
    out = {f"p{q:g}": _rounded(percentile(xs, q)) for q in qs}
    out["mean"] = _rounded(float(np.mean(xs))) if xs else None
    return out


def latency_summary(values: Sequence[float]) -> dict[str, float | None]:
    """{"mean", "median", "p90", "p99"} (the load test's levels, named as vLLM's benchmark names them)."""
    p = percentiles(values, (50, 90, 99))
    return {"mean": p["mean"], "median": p["p50"], "p90": p["p90"], "p99": p["p99"]}
