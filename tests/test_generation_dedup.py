"""The fast ROUGE-L equals rouge-score's, score for score and decision for decision."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from bioinstruct.generation.dedup import (
    RougeDeduper,
    TokenEncoder,
    dedup_fast,
    dedup_with_rouge_score,
    rouge_l_f,
    rouge_l_matrix,
    rouge_tokens,
)

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
VOCAB = ("the a of in and to patient patients dose doses drug aspirin heparin renal kidney failure acute "
         "chronic blood pressure what is are how explain summarize list extract 5mg 10 mg x-ray COVID-19 "
         "İstanbul naïve café β-blocker").split()
EDGE_CASES = [
    "", " ", "...", "!!!", "a", "A", "the the the the", "the", "x-ray", "X RAY", "5 mg", "5mg",
    "İ", "naïve café", "β-blocker", "drug drug drug aspirin", "aspirin drug drug drug",
    "What is the dose?", "what IS the DOSE", "\n\t", "a b c d e f g h", "h g f e d c b a",
]


def _random_text(rng: random.Random) -> str:
    n = rng.choice([0, 1, 2, 3, 5, 8, 12, 20, 35])
    words = [rng.choice(VOCAB[: rng.randint(3, len(VOCAB))]) for _ in range(n)]
    sep = rng.choice([" ", "  ", ", ", "-", "\n"])
    return sep.join(words)


def _pairs(n: int, seed: int = 1234) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = [(a, b) for a in EDGE_CASES for b in EDGE_CASES]
    while len(pairs) < n:
        a = _random_text(rng)
        # near-duplicates too, so that scores land on both sides of 0.7
        b = a if rng.random() < 0.1 else (" ".join(a.split()[:-1] + [rng.choice(VOCAB)]) if rng.random() < 0.3
                                         else _random_text(rng))
        pairs.append((a, b))
    return pairs


def test_tokenizer_is_rouge_scores():
    tokenizer = SCORER._tokenizer
    for text in EDGE_CASES + [t for p in _pairs(300) for t in p]:
        assert rouge_tokens(text) == tokenizer.tokenize(text)


def test_scores_identical_to_rouge_score_on_thousands_of_pairs():
    pairs = _pairs(4000)
    expected = [SCORER.score(a, b)["rougeL"].fmeasure for a, b in pairs]
    single = [rouge_l_f(a, b) for a, b in pairs]
    assert single == expected  # bit-identical floats
    enc = TokenEncoder()
    matrix = rouge_l_matrix([a for a, _ in pairs[:300]], [b for _, b in pairs[:300]], encoder=enc)
    for i in range(300):
        for j in range(0, 300, 7):
            a, b = pairs[i][0], pairs[j][1]
            assert matrix[i, j] == SCORER.score(a, b)["rougeL"].fmeasure
    # the keep/drop decision at 0.7 is therefore the same for every pair
    assert [s > 0.7 for s in single] == [s > 0.7 for s in expected]
    assert 0 < sum(s > 0.7 for s in expected) < len(pairs)


def test_sequential_decisions_identical_to_a_rouge_score_loop():
    rng = random.Random(7)
    base = [_random_text(rng) for _ in range(150)]
    texts = base + [" ".join(t.split()[:-1]) for t in base[:60]] + EDGE_CASES
    rng.shuffle(texts)
    pool = ["explain the dose of aspirin in renal failure", "what is the blood pressure"]
    expected = dedup_with_rouge_score(texts, 0.7, pool=pool)
    assert dedup_fast(texts, 0.7, pool=pool) == expected
    assert 0 < sum(expected) < len(texts)
    # block boundaries do not change decisions
    small = RougeDeduper(0.7, block_size=7)
    small.add(pool)
    assert [k for k, _, _ in small.filter(texts)] == expected
    assert len(small) == len(pool) + sum(expected)


def test_filter_reports_the_best_match():
    d = RougeDeduper(0.7)
    d.add(["summarize the discharge note of the patient", "list the drugs in the note"])
    res = d.filter(["summarize the discharge note of this patient", "list the drugs in the note please",
                    "name a loop diuretic", "name a loop diuretic now"])
    kept = [k for k, _, _ in res]
    assert kept == [False, False, True, False]
    assert res[0][2] == 0 and res[1][2] == 1
    assert res[3][2] == 2 + 0  # matched the candidate kept just before it (pool index 2)
    assert np.isclose(res[0][1], SCORER.score("summarize the discharge note of this patient",
                                              "summarize the discharge note of the patient")["rougeL"].fmeasure)
    assert d.texts[-1] == "name a loop diuretic"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60),
       st.text(alphabet="ab c-İK\u212aé5", max_size=30))
def test_tokenizer_and_score_match_rouge_score_on_arbitrary_text(a, b):
    assert rouge_tokens(a) == SCORER._tokenizer.tokenize(a)
    assert rouge_l_f(a, b) == SCORER.score(a, b)["rougeL"].fmeasure
