"""Benchmark (not a test): Self-Instruct's ROUGE-L dedup, fast path vs a plain rouge-score loop.

Both make the same sequential decision (keep a text when its ROUGE-L F against every text
kept before it is at most 0.7). The fast path is `generation.dedup.RougeDeduper` (token ids
+ rapidfuzz LCS in parallel); the baseline is `generation.dedup.dedup_with_rouge_score`
(rouge-score's `RougeScorer.score` in a loop, as Self-Instruct does it).

Texts: instruction-length texts (questions and sentences, clipped to 30 words) from the
shared data folder, plus 10% copies with one word changed so that some are dropped (and
only such copies once the ~15,000 unique texts run out); fixed seed.

The baseline runs in full up to --baseline-max texts (decisions compared with the fast
path's); beyond that its time is extrapolated from its measured time per pair and the
exact number of pairs the sequential loop would score (known from the decisions).

    .venv/bin/python -m bioinstruct.bench.dedup                       # sizes 1000 5000 25000
    .venv/bin/python -m bioinstruct.bench.dedup --sizes 1000 25000 --baseline-max 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

from bioinstruct.generation import datasets
from bioinstruct.generation.dedup import DEFAULT_THRESHOLD, RougeDeduper, dedup_with_rouge_score
from bioinstruct.settings import CoreSettings


def benchmark_texts(data_dir: Path, n: int, seed: int = 0) -> list[str]:
    """n instruction-length texts from the shared data, 10% of them edited near-copies."""
    pool: list[str] = []
    pool += [item["QUESTION"] for item in datasets.pubmedqa(data_dir, "trainval")]
    pool += [item["question"] for item in datasets.medmcqa(data_dir)]
    pool += [item["summary"] for item in datasets.meqsum(data_dir, "train")]
    pool += [datasets.bc5cdr_text(item) for item in datasets.bc5cdr(data_dir, "train")]
    pool += [datasets.bc5cdr_text(item) for item in datasets.bc5cdr(data_dir, "devel")]
    pool += [pair.text for pair in datasets.chemprot(data_dir, "train")]
    pool += [item["question"] for item in datasets.medqa(data_dir)]
    rng = random.Random(seed)
    unique = list(dict.fromkeys(" ".join(t.split()[:30]) for t in pool if len(t.split()) >= 4))
    rng.shuffle(unique)
    out: list[str] = []
    fresh = iter(unique)

    def edited(text: str) -> str:
        words = text.split()
        i = rng.randrange(len(words))
        words[i] = rng.choice(["the", "a", "patients", "drug", "dose", "risk", "renal", "acute"])
        return " ".join(words)

    while len(out) < n:
        source = next(fresh, None)
        if source is None or (out and rng.random() < 0.1):
            # an edited near-copy (10%, and all texts beyond the unique ones)
            source = edited(rng.choice(out) if source is None else rng.choice(out))
        out.append(source)
    return out


def _pairs_scored(decisions: list[bool], pool_size: int = 0) -> int:
    """Pairs a sequential loop scores: each text against everything kept before it."""
    kept, pairs = pool_size, 0
    for keep in decisions:
        pairs += kept
        kept += keep
    return pairs


def run_dedup_bench(sizes: tuple[int, ...] = (1000, 5000, 25000), *, baseline_max: int = 1000,
                    threshold: float = DEFAULT_THRESHOLD, out_dir: Path | None = None,
                    data_dir: Path | None = None, seed: int = 0) -> dict[str, Any]:
    core = CoreSettings()
    data_dir = data_dir or core.data_dir
    out_dir = out_dir or core.home / "reports" / "bench"
    texts_all = benchmark_texts(data_dir, max(sizes), seed)
    rows = []
    baseline_s_per_pair: float | None = None
    for n in sorted(sizes):
        texts = texts_all[:n]
        t0 = time.perf_counter()
        deduper = RougeDeduper(threshold)
        decisions = [keep for keep, _, _ in deduper.filter(texts)]
        fast_s = time.perf_counter() - t0
        pairs = _pairs_scored(decisions)
        row: dict[str, Any] = {"texts": n, "kept": sum(decisions), "pairs_scored": pairs,
                               "fast_s": round(fast_s, 3)}
        if n <= baseline_max:
            t0 = time.perf_counter()
            reference = dedup_with_rouge_score(texts, threshold)
            base_s = time.perf_counter() - t0
            assert reference == decisions, "fast dedup disagrees with rouge-score"
            row.update(baseline_s=round(base_s, 3), baseline="measured", identical_decisions=True)
            baseline_s_per_pair = base_s / max(pairs, 1)
        elif baseline_s_per_pair is not None:
            row.update(baseline_s=round(baseline_s_per_pair * pairs, 1), baseline="extrapolated",
                       identical_decisions=None)
        if "baseline_s" in row:
            row["speedup"] = round(row["baseline_s"] / fast_s, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "benchmark": f"Self-Instruct ROUGE-L dedup (threshold {threshold:.2f}), fast vs rouge-score loop",
        "command": (
            "python -m bioinstruct.bench.dedup --sizes " + " ".join(map(str, sizes)) + f" --baseline-max {baseline_max}"
        ),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "baseline_s_per_pair": baseline_s_per_pair,
        "rows": rows,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dedup.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "dedup.md").write_text(to_markdown(result))
    return result


def to_markdown(result: dict[str, Any]) -> str:
    lines = [f"# {result['benchmark']}", "", f"`{result['command']}` on {result['machine']['cpus']} CPUs "
             f"({result['machine']['platform']})", "",
             "| texts | kept | pairs scored | fast (s) | rouge-score loop (s) | speedup | decisions identical |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        base = r.get("baseline_s")
        base_txt = "-" if base is None else (
            f"{base}" + (" (extrapolated)" if r.get("baseline") == "extrapolated" else ""))
        same = {True: "yes", None: "not run", False: "NO"}[r.get("identical_decisions")]
        lines.append(f"| {r['texts']} | {r['kept']} | {r['pairs_scored']:,} | {r['fast_s']} | {base_txt} | "
                     f"{r.get('speedup', '-')}x | {same} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="ROUGE-L dedup benchmark (fast vs rouge-score loop)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 25000])
    parser.add_argument("--baseline-max", type=int, default=1000,
                        help="run the rouge-score loop in full up to this many texts; extrapolate above")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run_dedup_bench(tuple(args.sizes), baseline_max=args.baseline_max, out_dir=args.out_dir, seed=args.seed)
    print(to_markdown(result))


if __name__ == "__main__":
    main()
