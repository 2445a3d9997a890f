"""Bootstrap confidence intervals of metrics (eval/metrics.py), by resampling items.

A metric's score is a function of the column sums of its per-item statistics, so a resample of
the items is a vector of counts and its score is the metric of (counts @ stats): 1,000 resamples
are one matrix product. The same counts applied to two runs over the same items give the paired
bootstrap.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bioinstruct.eval.metrics import Metric


def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) matrix: how many times each item is drawn in each resample (with replacement)."""
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.zeros((n_boot, 0))
    idx = rng.integers(0, n, size=(n_boot, n))
    out = np.empty((n_boot, n), dtype=np.float64)
    for b in range(n_boot):
        out[b] = np.bincount(idx[b], minlength=n)
    return out


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def score_with_ci(metric: Metric, stats: np.ndarray, counts: np.ndarray,
                  alpha: float = 0.05) -> dict[str, Any]:
    """Point estimate and percentile bootstrap CI of one metric."""
    stats = np.asarray(stats, dtype=float).reshape(-1, metric.width)
    n = stats.shape[0]
    if n == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    point = metric.value(stats.sum(axis=0))
    boot = metric.value(counts @ stats)
    boot = boot[~np.isnan(boot)]
    low, high = (np.quantile(boot, [alpha / 2, 1 - alpha / 2]) if boot.size else (np.nan, np.nan))
    return {"value": _nan_to_none(float(point)), "ci_low": _nan_to_none(float(low)),
            "ci_high": _nan_to_none(float(high)), "n": metric.n_scored(stats)}


def paired_bootstrap(metric: Metric, stats_a: np.ndarray, stats_b: np.ndarray, *, n_boot: int = 1000,
                     seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Difference B - A of one metric over the same items (rows aligned), with a paired
    bootstrap CI and a two-sided p-value (how often the resampled difference crosses 0)."""
    a = np.asarray(stats_a, dtype=float).reshape(-1, metric.width)
    b = np.asarray(stats_b, dtype=float).reshape(-1, metric.width)
    if a.shape != b.shape:
        raise ValueError("paired bootstrap needs the same items in both runs")
    n = a.shape[0]
    if n == 0:
        return {"a": None, "b": None, "delta": None, "ci_low": None, "ci_high": None, "p_value": None, "n": 0}
    va, vb = float(metric.value(a.sum(axis=0))), float(metric.value(b.sum(axis=0)))
    counts = resample_counts(n, n_boot, seed)
    deltas = metric.value(counts @ b) - metric.value(counts @ a)
    deltas = deltas[~np.isnan(deltas)]
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2]) if deltas.size else (np.nan, np.nan)
    if deltas.size:
        p = min(1.0, 2 * min(float(np.mean(deltas <= 0)), float(np.mean(deltas >= 0))))
    else:
        p = float("nan")
    return {"a": _nan_to_none(va), "b": _nan_to_none(vb), "delta": _nan_to_none(vb - va),
            "ci_low": _nan_to_none(float(low)), "ci_high": _nan_to_none(float(high)),
            "p_value": _nan_to_none(p), "n": n}
