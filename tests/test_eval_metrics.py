"""eval.metrics against hand-computed cases, and the bootstrap's basic guarantees."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bioinstruct.eval.bootstrap import paired_bootstrap, resample_counts, score_with_ci
from bioinstruct.eval.judge import parse_score
from bioinstruct.eval.latency import percentile, percentiles
from bioinstruct.eval.metrics import build_metrics, rouge_scores
from bioinstruct.instruct.benchmark import bio_entities, step_token_spans


def scores(kind, names, preds, golds, **ctx):
    metrics = build_metrics(kind, names, **ctx)
    return {m.name: m.score(np.array([m.item(p, g) for p, g in zip(preds, golds, strict=True)]))
            for m in metrics}


# --- classification -------------------------------------------------------------------------

def test_accuracy_counts_missing_prediction_as_wrong():
    s = scores("choice", ["accuracy"], ["a", "b", None, "a"], ["a", "a", "b", "a"])
    assert s["accuracy"] == pytest.approx(0.5)


def test_macro_f1_with_a_class_never_predicted():
    # yes: tp1 fp1 fn1 -> 0.5; no: tp1 fp1 fn0 -> 2/3; maybe: never predicted, fn1 -> 0.
    # "other" is in the label list but in neither gold nor predictions: not averaged.
    golds = ["yes", "yes", "no", "maybe"]
    preds = ["yes", "no", "no", "yes"]
    labels = ["yes", "no", "maybe", "other"]
    s = scores("choice", ["accuracy", "micro_f1", "macro_f1", "f1_by_label"], preds, golds, labels=labels)
    assert s["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert s["micro_f1"] == pytest.approx(0.5)  # = accuracy: single label, no negative class
    assert s["accuracy"] == pytest.approx(0.5)
    assert s["f1[yes]"] == pytest.approx(0.5)
    assert s["f1[no]"] == pytest.approx(2 / 3)
    assert s["f1[maybe]"] == 0.0
    assert s["f1[other]"] == 0.0


def test_micro_f1_with_failed_requests():
    # A failed request (None) is a false negative only: tp 1, fp 1, fn 2 -> 2/(2+1+2).
    s = scores("choice", ["micro_f1"], ["A", "B", None], ["A", "A", "C"], labels=["A", "B", "C"])
    assert s["micro_f1"] == pytest.approx(2 / 5)


def test_macro_f1_all_empty_is_zero():
    s = scores("choice", ["macro_f1", "accuracy"], [], [], labels=["a", "b"])
    assert s == {"macro_f1": 0.0, "accuracy": 0.0}


# --- entities ---------------------------------------------------------------------------------

GOLD = [
    [(0, 5, "Chemical"), (10, 20, "Disease")],
    [(0, 3, "Chemical")],
    [],
    [],
]
PRED = [
    [(0, 5, "Chemical"), (10, 15, "Disease")],  # one exact, one partial span (wrong)
    [],  # empty prediction
    [(2, 4, "Chemical")],  # spurious
    [],  # nothing and nothing
]


def test_entity_scores_partial_spans_and_empty_predictions():
    # tp 1, fp 2 (partial Disease, spurious Chemical), fn 2 (Disease 10-20, Chemical 0-3).
    s = scores("spans", ["entity_f1", "entity_precision", "entity_recall", "entity_f1_by_type"], PRED, GOLD,
               entity_types=["Chemical", "Disease"])
    assert s["entity_precision"] == pytest.approx(1 / 3)
    assert s["entity_recall"] == pytest.approx(1 / 3)
    assert s["entity_f1"] == pytest.approx(1 / 3)
    assert s["f1[Chemical]"] == pytest.approx(0.5)  # tp1 fp1 fn1
    assert s["f1[Disease]"] == 0.0  # tp0 fp1 fn1


def test_entity_wrong_type_is_not_a_match():
    s = scores("spans", ["entity_f1"], [[(0, 5, "Disease")]], [[(0, 5, "Chemical")]])
    assert s["entity_f1"] == 0.0


def test_entity_all_empty_and_none_predictions():
    s = scores("spans", ["entity_f1", "entity_precision", "entity_recall"], [[], None], [[(0, 1, "Chemical")], []])
    assert s == {"entity_f1": 0.0, "entity_precision": 0.0, "entity_recall": 0.0}
    assert scores("spans", ["entity_f1"], [[]], [[]])["entity_f1"] == 0.0


def test_entity_f1_matches_seqeval_on_bio_sequences():
    from seqeval.metrics import f1_score

    rng = random.Random(3)
    labels = ["O", "O", "O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    y_true, y_pred, golds, preds = [], [], [], []
    for _ in range(200):
        n = rng.randint(1, 12)
        tokens = [f"t{i}" for i in range(n)]
        t = [rng.choice(labels) for _ in range(n)]
        p = [x if rng.random() < 0.7 else rng.choice(labels) for x in t]
        y_true.append(t)
        y_pred.append(p)
        for tags, out in ((t, golds), (p, preds)):
            rec = step_token_spans({"tokens": tokens, "entities": bio_entities(tokens, tags)})
            out.append([tuple(s) for s in rec["gold_spans"]])
    ours = scores("spans", ["entity_f1"], preds, golds)["entity_f1"]
    assert ours == pytest.approx(f1_score(y_true, y_pred), abs=1e-9)


# --- ROUGE ------------------------------------------------------------------------------------

def test_rouge_hand_computed():
    # ref: how do i treat a cold (6); pred: how to treat a cold (5); unigram overlap 4,
    # bigram overlap 2 (treat a, a cold), LCS 4.
    r = rouge_scores("how do i treat a cold", "how to treat a cold")
    assert r["rouge1"] == pytest.approx(8 / 11)
    assert r["rouge2"] == pytest.approx(4 / 9)
    assert r["rougeL"] == pytest.approx(8 / 11)
    # The Porter stemmer makes "treatments" match "treatments"/"treatment" and "diabetes"/"diabetes".
    r = rouge_scores("What are the treatments for diabetes?", "what treatments exist for diabetes")
    assert r["rouge1"] == pytest.approx(8 / 11)
    assert r["rouge2"] == pytest.approx(2 / 9)


def test_rouge_empty_prediction_scores_zero_and_counts():
    s = scores("text", ["rouge1", "rougeL"], ["how to treat a cold", None, ""],
               ["how do i treat a cold", "x y", "x y"])
    assert s["rouge1"] == pytest.approx((8 / 11) / 3)
    assert s["rougeL"] == pytest.approx((8 / 11) / 3)


def test_judge_score_only_over_judged_items():
    m = build_metrics("text", ["llm_judge"])[0]
    stats = np.array([m.item("a", "b", {"judge": 8}), m.item("a", "b", {"judge": None}),
                      m.item("a", "b", {"judge": 5})])
    assert m.score(stats) == pytest.approx(6.5)
    ci = score_with_ci(m, stats, resample_counts(3, 200, 0))
    assert ci["n"] == 2


@pytest.mark.parametrize("text,expected", [("8", 8), ("Score: 7/10", 7), ("10", 10), (" 3.", 3), ("none", None),
                                           ("", None)])
def test_parse_judge_score(text, expected):
    assert parse_score(text) == expected


def test_unknown_metric_for_kind_is_refused():
    with pytest.raises(ValueError, match="do not apply"):
        build_metrics("choice", ["rougeL"])


# --- bootstrap --------------------------------------------------------------------------------

def test_bootstrap_ci_contains_point_and_is_deterministic():
    rng = np.random.default_rng(1)
    m = build_metrics("choice", ["accuracy"])[0]
    stats = np.array([[float(x), 1.0] for x in rng.random(300) < 0.62])
    counts = resample_counts(300, 1000, seed=0)
    a = score_with_ci(m, stats, counts)
    b = score_with_ci(m, stats, resample_counts(300, 1000, seed=0))
    assert a == b
    assert a["ci_low"] <= a["value"] <= a["ci_high"]
    assert a["n"] == 300
    # Normal approximation: half-width about 1.96 * sqrt(p(1-p)/n) = 0.055.
    assert 0.04 < (a["ci_high"] - a["ci_low"]) / 2 < 0.07


def test_bootstrap_macro_f1_ci_contains_point():
    rng = random.Random(0)
    labels = ["yes", "no", "maybe"]
    golds = [rng.choice(labels) for _ in range(200)]
    preds = [g if rng.random() < 0.6 else rng.choice(labels[:2]) for g in golds]  # never predicts maybe wrongly
    m = build_metrics("choice", ["macro_f1"], labels=labels)[0]
    stats = np.array([m.item(p, g) for p, g in zip(preds, golds, strict=True)])
    r = score_with_ci(m, stats, resample_counts(200, 500, 0))
    assert r["ci_low"] <= r["value"] <= r["ci_high"]


def test_paired_bootstrap():
    m = build_metrics("choice", ["accuracy"])[0]
    rng = np.random.default_rng(2)
    a_correct = rng.random(400) < 0.5
    b_correct = a_correct | (rng.random(400) < 0.3)  # B is right wherever A is, and more
    sa = np.array([[float(x), 1.0] for x in a_correct])
    sb = np.array([[float(x), 1.0] for x in b_correct])
    r = paired_bootstrap(m, sa, sb, n_boot=1000, seed=0)
    assert r["delta"] == pytest.approx(b_correct.mean() - a_correct.mean(), abs=1e-6)
    assert 0 < r["ci_low"] <= r["delta"] <= r["ci_high"]
    assert r["p_value"] < 0.01
    same = paired_bootstrap(m, sa, sa, n_boot=200, seed=0)
    assert same["delta"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
    with pytest.raises(ValueError):
        paired_bootstrap(m, sa, sb[:10])


def test_percentiles():
    p = percentiles(list(range(1, 101)))
    assert p["p50"] == pytest.approx(50.5)
    assert p["p99"] == pytest.approx(99.01)
    assert percentiles([])["p50"] is None


def test_percentile_interpolates_between_order_statistics():
    # k = (n - 1) q / 100 = 2.25 for q 75 over 10, 20, 30, 40: 30 + 0.25 x 10 (bench's hand-written rule)
    assert percentile([40, 10, None, 30, 20], 75) == pytest.approx(32.5)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None and percentile([None], 50) is None
