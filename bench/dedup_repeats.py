"""Comparison 4 with repeats: `bench/dedup.py` (bulk ROUGE-L dedup vs a rouge-score loop, by
the generation engineer) run several times, with medians and spreads, a plot, and one more
check of identical decisions at the sizes where the loop is extrapolated.

`bench/dedup.py` runs the rouge-score loop in full up to --baseline-max texts (1k) and
compares every decision; above that it extrapolates the loop's time from its measured time
per scored pair. Since a decision is a function of ROUGE-L scores against earlier texts,
here the bulk scores (`generation.dedup.rouge_l_matrix`, the rapidfuzz path the deduper
uses) are also compared bit for bit with rouge-score's on random pairs drawn from the
texts at every size.

    bioinstruct bench dedup             # single run without repeats: python -m bioinstruct.bench.dedup
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import typer

from bioinstruct.bench.console import log
from bioinstruct.bench.machine import loadavg
from bioinstruct.bench.plots import pyplot, save_figure
from bioinstruct.bench.report import Comparison, document, fmt, fmt_summary, table, target
from bioinstruct.bench.stats import summary
from bioinstruct.settings import CoreSettings


def score_check(texts: list[str], rows: int = 200, cols: int = 100, seed: int = 0) -> dict[str, Any]:
    from rouge_score import rouge_scorer

    from bioinstruct.generation.dedup import rouge_l_matrix

    rng = random.Random(seed)
    a = rng.sample(texts, min(rows, len(texts)))
    b = rng.sample(texts, min(cols, len(texts)))
    bulk = rouge_l_matrix(a, b)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    same = 0
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            # rouge_l_matrix(targets, predictions)[i, j] == score(target=x, prediction=y)
            same += bulk[i, j] == scorer.score(x, y)["rougeL"].fmeasure
    return {"pairs": len(a) * len(b), "bit_identical": same}


def run(sizes: list[int], repeats: int = 3, baseline_max: int = 1000, out: Path | None = None) -> Path:
    from bioinstruct.bench.dedup import benchmark_texts, run_dedup_bench

    bench = Comparison("dedup", out, f"dedup comparison (bench/dedup.py x {repeats})")
    results = []
    for rep in range(repeats):
        results.append(run_dedup_bench(tuple(sizes), baseline_max=baseline_max,
                                       out_dir=bench.out / f"rep-{rep + 1}"))
        log(f"repeat {rep + 1} done; load {loadavg()}")
    texts = benchmark_texts(CoreSettings().data_dir, max(sizes))
    checks = {n: score_check(texts[:n], seed=n) for n in sizes}
    rows = []
    for n in sorted(sizes):
        rs = [next(r for r in res["rows"] if r["texts"] == n) for res in results]
        rows.append({
            "texts": n, "kept": rs[0]["kept"], "pairs_scored": rs[0]["pairs_scored"],
            "fast_s": summary(r["fast_s"] for r in rs),
            "baseline_s": summary(r.get("baseline_s") for r in rs),
            "baseline": rs[0].get("baseline"), "speedup": summary(r.get("speedup") for r in rs),
            "identical_decisions": [r.get("identical_decisions") for r in rs],
            "score_check": checks[n],
        })
    slowest = min((r["speedup"]["median"] or 0) for r in rows)
    identical = all(all(x is not False for x in r["identical_decisions"]) for r in rows) and all(
        r["score_check"]["bit_identical"] == r["score_check"]["pairs"] for r in rows)
    report = {
        "rows": rows,
        "per_pair_us": summary((res["baseline_s_per_pair"] or 0) * 1e6 for res in results),
        "config": {"sizes": sizes, "repeats": repeats, "baseline_max": baseline_max,
                   "seconds": bench.seconds()},
        "targets": [target("dedup >= 100x rouge-score with identical decisions", slowest,
                           met=slowest >= 100 and identical,
                           measured=f"{fmt(slowest, 0)}x (smallest median speedup)")],
    }
    return bench.finish(report, markdown, plot)


def markdown(rep: dict[str, Any]) -> str:
    cfg = rep["config"]
    details = [
        f"runs `bench/dedup.py` {cfg['repeats']} times",
        "texts: instruction-length questions and sentences from the shared data (10% edited near-copies), "
        "threshold 0.7, Self-Instruct's sequential rule; bulk path: `RougeDeduper` (rapidfuzz, 2 threads)",
        f"rouge-score loop measured in full up to {cfg['baseline_max']:,} texts (every decision compared); "
        f"above, its time = pairs it scores x its measured time per pair "
        f"({fmt_summary(rep['per_pair_us'], 1)} µs)",
        f"median (min–max) of {cfg['repeats']} repeats; {cfg['seconds']:.0f} s",
    ]
    rows = []
    for r in rep["rows"]:
        ident = r["identical_decisions"]
        ident_s = (("yes (all compared)" if all(ident) else "NO") if None not in ident
                   else "not run (extrapolated)")
        extrapolated = " (extrapolated)" if r["baseline"] == "extrapolated" else ""
        sc = r["score_check"]
        rows.append([f"{r['texts']:,}", f"{r['kept']:,}", f"{r['pairs_scored']:,}",
                     fmt_summary(r["fast_s"], 3), fmt_summary(r["baseline_s"], 1) + extrapolated,
                     fmt_summary(r["speedup"], 0) + "x", ident_s, f"{sc['bit_identical']:,}/{sc['pairs']:,}"])
    header = ["texts", "kept", "pairs scored", "bulk (s)", "rouge-score loop (s)", "speedup",
              "decisions identical", "bulk scores = rouge-score (random pairs)"]
    return document("ROUGE-L dedup: bulk (generation/dedup.py) vs a rouge-score loop", rep, details,
                    table(header, rows))


def plot(out: Path, rep: dict[str, Any]) -> list[str]:
    rows = rep["rows"]
    fig, ax = pyplot().subplots(figsize=(6, 4))
    n = [r["texts"] for r in rows]
    ax.plot(n, [r["fast_s"]["median"] for r in rows], "o-", label="bulk (generation/dedup.py)")
    ax.plot(n, [r["baseline_s"]["median"] for r in rows], "s--",
            label="rouge-score loop (measured, then extrapolated)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("texts")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    return save_figure(fig, out, "dedup.png")


def command(
    sizes: str = typer.Option("1000,5000,25000", help="Numbers of texts"),
    repeats: int = typer.Option(3, min=1),
    baseline_max: int = typer.Option(1000, help="Run the rouge-score loop in full up to this many texts"),
    out: Path = typer.Option(None, help="Report folder (default reports/bench/dedup-<time>)"),
) -> None:
    """Bulk ROUGE-L dedup vs a rouge-score loop at 1k/5k/25k texts (bench/dedup.py, repeated)."""
    path = run([int(x) for x in sizes.split(",") if x.strip()], repeats, baseline_max, out)
    print((path / "dedup.md").read_text())


if __name__ == "__main__":
    typer.run(command)
