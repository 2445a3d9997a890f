"""ROUGE-L F exactly as `rouge-score` computes it (its tokenizer, no stemmer), but in bulk.

`rouge_score.rouge_scorer.RougeScorer(["rougeL"]).score(a, b)` tokenizes both texts (lower
case, every run of characters outside [a-z0-9] becomes a space), takes the longest common
subsequence of the two token lists, and returns F = 2PR/(P+R) with P = lcs/len(b),
R = lcs/len(a) (0 when either side has no token).

Here each distinct token gets an integer id and each text becomes a string with one
character per token, so rapidfuzz's bit-parallel `LCSseq` (C++, many threads via
`process.cdist`) returns the token LCS length. The F-score is then computed from the same
three integers with the same float operations in the same order, so every score is
bit-identical to rouge-score's and so is every keep/drop decision at a threshold.

`RougeDeduper` makes Self-Instruct's sequential decisions (a candidate is kept when its
score against every text kept before it is at most the threshold) block by block: one
parallel `cdist` of a block against the pool, one of the block against itself, then a
cheap sequential pass over the block.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq
from rouge_score.tokenize import tokenize as _rouge_tokenize

DEFAULT_THRESHOLD = 0.7
_SURROGATES = 0xDFFF - 0xD800 + 1
_FIRST_CODE = 0x100


_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's tokenizer without stemming (what `RougeScorer(["rougeL"])` uses), faster:
    it lower-cases, turns runs outside [a-z0-9] into spaces, splits and keeps [a-z0-9]+
    tokens, which is exactly the [a-z0-9]+ runs of the lower-cased text (a test checks
    equality with `rouge_score.tokenize.tokenize` on edge cases)."""
    return _TOKEN.findall(text.lower())


def rouge_tokens_reference(text: str) -> list[str]:
    return _rouge_tokenize(text, None)


def _code(token_id: int) -> str:
    code = token_id + _FIRST_CODE
    if code >= 0xD800:  # surrogate code points cannot stand alone in a str
        code += _SURROGATES
    return chr(code)


class TokenEncoder:
    """Texts -> one character per rouge token, so that LCS over characters is LCS over tokens."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def encode(self, text: str) -> str:
        ids = self._ids
        out = []
        for token in rouge_tokens(text):
            token_id = ids.get(token)
            if token_id is None:
                token_id = ids[token] = len(ids)
            out.append(_code(token_id))
        return "".join(out)

    def encode_many(self, texts: Iterable[str]) -> list[str]:
        return [self.encode(t) for t in texts]


def f_from_lcs(lcs: np.ndarray, target_len: np.ndarray, prediction_len: np.ndarray) -> np.ndarray:
    """rouge-score's `_score_lcs` + `scoring.fmeasure`, vectorised; same float64 operations."""
    lcs = np.asarray(lcs, dtype=np.float64)
    tl = np.asarray(target_len, dtype=np.float64)
    pl = np.asarray(prediction_len, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / pl
        recall = lcs / tl
        total = precision + recall
        f = 2 * precision * recall / total
    empty = (tl == 0) | (pl == 0)
    return np.where(empty | ~(total > 0), 0.0, f)


def rouge_l_f(target: str, prediction: str) -> float:
    """One ROUGE-L F-score, equal to rouge-score's `score(target, prediction)["rougeL"].fmeasure`."""
    enc = TokenEncoder()
    a, b = enc.encode(target), enc.encode(prediction)
    if not a or not b:
        return 0.0
    lcs = LCSseq.similarity(a, b)
    precision = lcs / len(b)
    recall = lcs / len(a)
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def rouge_l_matrix(
    targets: Sequence[str], predictions: Sequence[str], *, workers: int = -1,
    encoder: TokenEncoder | None = None,
) -> np.ndarray:
    """F-scores of every (target, prediction) pair: shape (len(targets), len(predictions))."""
    enc = encoder or TokenEncoder()
    return _f_matrix(enc.encode_many(targets), enc.encode_many(predictions), workers)


def _f_matrix(a: Sequence[str], b: Sequence[str], workers: int) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    lcs = process.cdist(a, b, scorer=LCSseq.similarity, dtype=np.int32, workers=workers)
    la = np.fromiter((len(x) for x in a), dtype=np.int64, count=len(a))[:, None]
    lb = np.fromiter((len(x) for x in b), dtype=np.int64, count=len(b))[None, :]
    return f_from_lcs(lcs, la, lb)


class RougeDeduper:
    """A growing pool of texts; `filter` keeps candidates whose max ROUGE-L F against the
    pool (and against candidates kept before them) is at most `threshold`."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, *, workers: int = -1,
                 block_size: int = 512) -> None:
        self.threshold = threshold
        self.workers = workers
        self.block_size = block_size
        self._encoder = TokenEncoder()
        self._pool: list[str] = []
        self.texts: list[str] = []

    def __len__(self) -> int:
        return len(self._pool)

    def add(self, texts: Iterable[str]) -> None:
        """Put texts in the pool without checking them (seeds, records already accepted)."""
        for text in texts:
            self.texts.append(text)
            self._pool.append(self._encoder.encode(text))

    def max_scores(self, candidates: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(max F, index of the most similar pool text or -1) of each candidate vs the pool."""
        encoded = self._encoder.encode_many(candidates)
        return self._max_vs_pool(encoded)

    def _max_vs_pool(self, encoded: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        n = len(encoded)
        if not self._pool or n == 0:
            return np.zeros(n), np.full(n, -1)
        f = _f_matrix(encoded, self._pool, self.workers)
        idx = f.argmax(axis=1)
        return f[np.arange(n), idx], idx

    def filter(self, candidates: Sequence[str], *, add: bool = True) -> list[tuple[bool, float, int]]:
        """For each candidate in order: (kept, max F against what came before, index of the
        most similar earlier text in `self.texts` order or -1). Kept ones join the pool when
        `add` is true (the sequential Self-Instruct rule, computed block by block)."""
        results: list[tuple[bool, float, int]] = []
        for start in range(0, len(candidates), self.block_size):
            block = list(candidates[start:start + self.block_size])
            encoded = self._encoder.encode_many(block)
            pool_size = len(self._pool)
            best, best_idx = self._max_vs_pool(encoded)
            inner = _f_matrix(encoded, encoded, self.workers) if len(block) > 1 else None
            kept_local: list[int] = []
            for i in range(len(block)):
                score, where = float(best[i]), int(best_idx[i])
                if inner is not None and kept_local:
                    row = inner[i, kept_local]
                    j = int(row.argmax())
                    if row[j] > score:
                        score, where = float(row[j]), pool_size + j
                keep = not score > self.threshold
                if keep:
                    kept_local.append(i)
                results.append((keep, score, where))
            if add:
                for i in kept_local:
                    self.texts.append(block[i])
                    self._pool.append(encoded[i])
            elif start + self.block_size < len(candidates):
                raise ValueError("filter(add=False) takes at most block_size candidates")
        return results


def dedup_with_rouge_score(texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD,
                           pool: Sequence[str] = ()) -> list[bool]:
    """The plain reference: a rouge-score loop, kept if no earlier kept text scores > threshold."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    kept_texts = list(pool)
    decisions = []
    for text in texts:
        keep = all(scorer.score(text, other)["rougeL"].fmeasure <= threshold for other in kept_texts)
        decisions.append(keep)
        if keep:
            kept_texts.append(text)
    return decisions


def dedup_fast(texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD,
               pool: Sequence[str] = (), workers: int = -1) -> list[bool]:
    deduper = RougeDeduper(threshold, workers=workers)
    deduper.add(pool)
    return [keep for keep, _, _ in deduper.filter(texts)]
