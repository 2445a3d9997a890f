"""The metrics a task file can name. Each registers itself here, with what it reads and how it is
reported (lm-evaluation-harness's `register_metric`): a new metric is one decorated function in this
file, and task files, reports, compare and the gate pick it up from the registry.

Metrics are sums of per-item statistics, so that bootstrap resampling is one matrix product
(eval/bootstrap.py): every metric turns one (prediction, gold) pair into a short vector of numbers
(correct/1, tp/fp/fn, a ROUGE F-measure/1, ...) and a score from the column sums of those vectors.

Conventions (hand-checked in tests): F1 = 2·tp / (2·tp + fp + fn), and 0 when there is
nothing to count (an empty prediction against an empty gold scores 0, as in seqeval);
macro-F1 averages over the labels that occur in the gold or the predictions of the items
scored (scikit-learn's rule), so a class never predicted counts with F1 = 0; a prediction
of None (a failed request) is wrong: it adds a false negative and no false positive.

Task files are validated against this registry when eval loads them (`check_task_metrics`):
instruct/ defines the task files but must not import eval/, since data flows one way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from bioinstruct.instruct.benchmark import TaskError, TaskSpec


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

    def n_scored(self, stats: np.ndarray) -> int:
        """Items the score is over (N in reports)."""
        return int(np.asarray(stats).reshape(-1, self.width).shape[0])


# --- the registry ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricContext:
    """What a metric may need besides the items: the task's labels (choice) or entity types (spans)."""

    labels: Sequence[str] = ()
    entity_types: Sequence[str] = ()


@dataclass(frozen=True)
class MetricSpec:
    name: str
    output_type: str  # the scoring kind whose (prediction, gold) it reads: choice, spans or text
    build: Callable[[MetricContext], list[Metric]]
    higher_is_better: bool = True
    percent: bool = True  # reported x100 with one decimal; otherwise as is, with two
    breakdown: bool = False  # one score per label / entity type, reported as a table of its own
    needs_judge: bool = False  # scored from an LLM judge's answers (dropped when no judge is set)


METRICS: dict[str, MetricSpec] = {}


def register_metric(name: str, *, output_type: str, higher_is_better: bool = True, percent: bool = True,
                    breakdown: bool = False, needs_judge: bool = False):
    """Decorator: `build(ctx)` returns the metric objects of `name` (one, or one per label/type)."""
    def decorate(build: Callable[[MetricContext], list[Metric]]):
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = MetricSpec(name, output_type, build, higher_is_better, percent, breakdown,
                                   needs_judge)
        return build
    return decorate


def metric_spec(name: str) -> MetricSpec | None:
    return METRICS.get(name)


def is_percent(name: str) -> bool:
    """Reported in percent: a registered metric says; a breakdown's entries (f1[yes]) are F1s."""
    spec = METRICS.get(name)
    return spec.percent if spec is not None else True


def check_metric_names(kind: str, names: Sequence[str]) -> None:
    """Every name is registered and reads `kind`'s predictions; the message lists what would do."""
    usable = sorted(n for n, s in METRICS.items() if s.output_type == kind)
    if not names:
        raise TaskError(f"give at least one metric; for scoring kind {kind!r}: {usable}")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise TaskError(f"unknown metrics {unknown}; for scoring kind {kind!r} use {usable} "
                        f"(registered in eval/metrics.py)")
    wrong = [n for n in names if METRICS[n].output_type != kind]
    if wrong:
        raise TaskError(f"metrics {wrong} do not apply to scoring kind {kind!r}; use {usable}")


def check_task_metrics(task: TaskSpec) -> TaskSpec:
    """The check instruct/ cannot make on a task file: its metrics are registered here."""
    try:
        check_metric_names(task.scoring.kind, task.scoring.metrics)
    except TaskError as exc:
        raise TaskError(f"{task.source or 'task ' + task.name}: {exc}") from None
    return task


def build_metrics(kind: str, names: Sequence[str], *, labels: Sequence[str] = (),
                  entity_types: Sequence[str] = ()) -> list[Metric]:
    """The metric objects a task asks for, with breakdowns expanded to one metric per label/type."""
    check_metric_names(kind, names)
    ctx = MetricContext(labels=list(labels), entity_types=list(entity_types))
    return [m for name in names for m in METRICS[name].build(ctx)]


# --- choice ---------------------------------------------------------------------------------------

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


@register_metric("accuracy", output_type="choice")
def _accuracy(ctx: MetricContext) -> list[Metric]:
    return [Accuracy()]


@register_metric("micro_f1", output_type="choice")
def _micro_f1(ctx: MetricContext) -> list[Metric]:
    return [MicroF1("micro_f1", 3, labels=list(ctx.labels))]


@register_metric("macro_f1", output_type="choice")
def _macro_f1(ctx: MetricContext) -> list[Metric]:
    return [MacroF1("macro_f1", 3 * len(ctx.labels), labels=list(ctx.labels))]


@register_metric("f1_by_label", output_type="choice", breakdown=True)
def _f1_by_label(ctx: MetricContext) -> list[Metric]:
    return [LabelF1(f"f1[{lab}]", 3, group="f1_by_label", label=lab) for lab in ctx.labels]


# --- spans ----------------------------------------------------------------------------------------

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


# entity_f1, entity_precision, entity_recall
for _which in ("f1", "precision", "recall"):
    register_metric(f"entity_{_which}", output_type="spans")(
        lambda ctx, which=_which: [EntityScore(f"entity_{which}", 3, which=which)])


@register_metric("entity_f1_by_type", output_type="spans", breakdown=True)
def _entity_f1_by_type(ctx: MetricContext) -> list[Metric]:
    return [EntityScore(f"f1[{t}]", 3, group="entity_f1_by_type", etype=t) for t in ctx.entity_types]


# --- text -----------------------------------------------------------------------------------------

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


# rouge1, rouge2, rougeL
for _key in ("rouge1", "rouge2", "rougeL"):
    register_metric(_key, output_type="text")(lambda ctx, key=_key: [Rouge(key, 2, key=key)])


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

    def n_scored(self, stats):
        return int(np.asarray(stats, dtype=float).reshape(-1, self.width)[:, 1].sum())


@register_metric("llm_judge", output_type="text", percent=False, needs_judge=True)
def _llm_judge(ctx: MetricContext) -> list[Metric]:
    return [JudgeScore()]
