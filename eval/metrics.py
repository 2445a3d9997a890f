"""Metrics as sums of per-item statistics, so that bootstrap resampling is one matrix product.

Every metric turns one (prediction, gold) pair into a short vector of numbers (correct/1,
tp/fp/fn, a ROUGE F-measure/1, ...) and a score from the column sums of those vectors. A
resample of the items is a vector of counts; its score is the metric of (counts @ stats).
The same counts applied to two runs over the same items give the paired bootstrap.

Conventions (hand-checked in tests): F1 = 2·tp / (2·tp + fp + fn), and 0 when there is
nothing to count (an empty prediction against an empty gold scores 0, as in seqeval);
macro-F1 averages over the labels that occur in the gold or the predictions of the items
scored (scikit-learn's rule), so a class never predicted counts with F1 = 0; a prediction
of None (a failed request) is wrong: it adds a false negative and no false positive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from bioinstruct.instruct.benchmark import check_metric_names

# Expanding names (one metric per label / entity type): reported as a breakdown.
EXPANDING = {"f1_by_label", "entity_f1_by_type"}


def _f1(tp, fp, fn):
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def _ratio(num, den):
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(den), where=den > 0)


@dataclass
class Metric:
    """One score. `item` gives an item's statistics; `value` the score of their column sums."""

    name: str
    width: int
    group: str | None = None  # a breakdown's name (f1_by_label), or None for a headline score

    def item(self, pred: Any, gold: Any, extra: dict[str, Any] | None = None) -> list[float]:
        raise NotImplementedError

    def value(self, sums: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(self, stats: np.ndarray) -> float:
        stats = np.asarray(stats, dtype=float).reshape(-1, self.width)
        return float(self.value(stats.sum(axis=0)))


class Accuracy(Metric):
    def __init__(self) -> None:
        super().__init__("accuracy", 2)

    def item(self, pred, gold, extra=None):
        return [float(pred is not None and pred == gold), 1.0]

    def value(self, sums):
        return _ratio(sums[..., 0], sums[..., 1])


def _label_counts(pred, gold, label) -> tuple[float, float, float]:
    tp = float(pred == label and gold == label)
    fp = float(pred == label and gold != label)
    fn = float(gold == label and pred != label)
    return tp, fp, fn


@dataclass
class LabelF1(Metric):
    """F1 of one label (one-vs-rest), for the per-label breakdown."""

    label: str = ""

    def item(self, pred, gold, extra=None):
        return list(_label_counts(pred, gold, self.label))

    def value(self, sums):
        return _f1(sums[..., 0], sums[..., 1], sums[..., 2])


@dataclass
class MicroF1(Metric):
    """Micro-F1 over labels. For single-label items with no negative class it equals accuracy,
    except that a missing prediction costs a false negative only."""

    labels: Sequence[str] = field(default_factory=list)

    def item(self, pred, gold, extra=None):
        tp = float(pred is not None and pred == gold)
        fp = float(pred is not None and pred != gold)
        fn = float(pred != gold)
        return [tp, fp, fn]

    def value(self, sums):
        return _f1(sums[..., 0], sums[..., 1], sums[..., 2])


@dataclass
class MacroF1(Metric):
    labels: Sequence[str] = field(default_factory=list)

    def item(self, pred, gold, extra=None):
        out: list[float] = []
        for label in self.labels:
            out.extend(_label_counts(pred, gold, label))
        return out

    def value(self, sums):
        k = len(self.labels)
        per = np.asarray(sums, dtype=float).reshape(*np.shape(sums)[:-1], k, 3)
        tp, fp, fn = per[..., 0], per[..., 1], per[..., 2]
        present = (tp + fp + fn) > 0
        f1 = _f1(tp, fp, fn)
        return _ratio((f1 * present).sum(axis=-1), present.sum(axis=-1))


def _span_counts(pred, gold, etype: str | None) -> tuple[float, float, float]:
    gold_set = {tuple(g) for g in (gold or []) if etype is None or g[2] == etype}
    pred_set = {tuple(p) for p in (pred or []) if etype is None or p[2] == etype}
    tp = len(gold_set & pred_set)
    return float(tp), float(len(pred_set) - tp), float(len(gold_set) - tp)


@dataclass
class EntityScore(Metric):
    """Exact-match entity scores: a predicted (start, end, type) counts only if the gold has it."""

    etype: str | None = None
    which: str = "f1"  # f1 | precision | recall

    def item(self, pred, gold, extra=None):
        return list(_span_counts(pred, gold, self.etype))

    def value(self, sums):
        tp, fp, fn = sums[..., 0], sums[..., 1], sums[..., 2]
        if self.which == "precision":
            return _ratio(tp, tp + fp)
        if self.which == "recall":
            return _ratio(tp, tp + fn)
        return _f1(tp, fp, fn)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


@lru_cache(maxsize=4096)
def rouge_scores(reference: str, prediction: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures (rouge-score, Porter stemmer), 0 for an empty prediction."""
    if not prediction.strip() or not reference.strip():
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    scores = _rouge_scorer().score(reference, prediction)
    return {k: float(v.fmeasure) for k, v in scores.items()}


@dataclass
class Rouge(Metric):
    key: str = "rougeL"

    def item(self, pred, gold, extra=None):
        return [rouge_scores(gold or "", pred or "")[self.key], 1.0]

    def value(self, sums):
        return _ratio(sums[..., 0], sums[..., 1])


class JudgeScore(Metric):
    """Mean LLM-judge score (1-10) over the items the judge scored (extra['judge'])."""

    def __init__(self) -> None:
        super().__init__("llm_judge", 2)

    def item(self, pred, gold, extra=None):
        score = (extra or {}).get("judge")
        if score is None:
            return [0.0, 0.0]
        return [float(score), 1.0]

    def value(self, sums):
        num, den = np.asarray(sums[..., 0], dtype=float), np.asarray(sums[..., 1], dtype=float)
        return np.divide(num, den, out=np.full_like(den, np.nan), where=den > 0)


def build_metrics(kind: str, names: Sequence[str], *, labels: Sequence[str] = (),
                  entity_types: Sequence[str] = ()) -> list[Metric]:
    """The metric objects a task asks for, with breakdowns expanded to one metric per label/type."""
    check_metric_names(kind, names)
    out: list[Metric] = []
    for name in names:
        if name == "accuracy":
            out.append(Accuracy())
        elif name == "micro_f1":
            out.append(MicroF1("micro_f1", 3, labels=list(labels)))
        elif name == "macro_f1":
            out.append(MacroF1("macro_f1", 3 * len(labels), labels=list(labels)))
        elif name == "f1_by_label":
            out.extend(LabelF1(f"f1[{lab}]", 3, group=name, label=lab) for lab in labels)
        elif name in ("entity_f1", "entity_precision", "entity_recall"):
            out.append(EntityScore(name, 3, which=name.removeprefix("entity_")))
        elif name == "entity_f1_by_type":
            out.extend(EntityScore(f"f1[{t}]", 3, group=name, etype=t) for t in entity_types)
        elif name in ("rouge1", "rouge2", "rougeL"):
            out.append(Rouge(name, 2, key=name))
        elif name == "llm_judge":
            out.append(JudgeScore())
    return out


# --- bootstrap --------------------------------------------------------------------------------

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


def score_with_ci(metric: Metric, stats: np.ndarray, counts: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """Point estimate and percentile bootstrap CI of one metric."""
    stats = np.asarray(stats, dtype=float).reshape(-1, metric.width)
    n = stats.shape[0]
    point = metric.value(stats.sum(axis=0)) if n else float("nan")
    if n == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    boot = metric.value(counts @ stats)
    boot = boot[~np.isnan(boot)]
    low, high = (np.quantile(boot, [alpha / 2, 1 - alpha / 2]) if boot.size else (np.nan, np.nan))
    n_scored = n
    if isinstance(metric, JudgeScore):
        n_scored = int(stats[:, 1].sum())
    return {"value": _nan_to_none(float(point)), "ci_low": _nan_to_none(float(low)),
            "ci_high": _nan_to_none(float(high)), "n": n_scored}


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


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float | None]:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{q:g}"] = round(float(np.percentile(arr, q)), 3) if arr.size else None
    out["mean"] = round(float(arr.mean()), 3) if arr.size else None
    return out
