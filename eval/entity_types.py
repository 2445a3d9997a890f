"""Entity types honoured: per type, precision and recall with each subset of types requested,
through the live /extract route (`bioinstruct eval entity-types`).

Each corpus is scored only on the types it annotates (BC5CDR: Chemical, Disease; BC2GM: Gene): a
Gene returned on a BC5CDR sentence is neither right nor wrong there. On BC2GM, `genes as other`
is the share of gold gene mentions returned under another requested type (a gene called a
Chemical when chemicals were asked for), what a caller sees as a wrong answer.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

from bioinstruct.client import AsyncBioInstructClient
from bioinstruct.eval.bootstrap import resample_counts, score_with_ci
from bioinstruct.eval.metrics import EntityScore

# The matrix: for each corpus, the types it annotates and the subsets requested.
MATRIX: dict[str, dict[str, Any]] = {
    "bc5cdr": {"annotated": ("Chemical", "Disease"),
               "subsets": [("Chemical",), ("Disease",), ("Chemical", "Disease"), ("Chemical", "Disease", "Gene")]},
    "bc2gm": {"annotated": ("Gene",),
              "subsets": [("Gene",), ("Chemical",), ("Chemical", "Disease"), ("Chemical", "Disease", "Gene")]},
}


def _stats(pred: list[list], gold: list[list], etype: str) -> list[float]:
    return EntityScore("x", 3, etype=etype).item(pred, gold)


async def _ask(client: AsyncBioInstructClient, sem: asyncio.Semaphore, text: str, types: tuple[str, ...],
               adapter: str | None, strategy: str | None) -> list[list] | None:
    async with sem:
        try:
            res = await client.extract(text, entity_types=list(types), adapter=adapter, type_strategy=strategy)
        except Exception:  # noqa: BLE001 - a failed request scores as predicting nothing, and is counted
            return None
    return [[e.start, e.end, e.type] for e in res.entities]


async def run_matrix(base_url: str, *, split: str = "dev", limit: int = 150, adapter: str | None = None,
                     concurrency: int = 4, data_dir: Path | None = None, resamples: int = 1000,
                     api_key: str | None = None, strategy: str | None = None, progress=None) -> dict[str, Any]:
    """Every (corpus, subset) of MATRIX on `limit` items of the split (the task files' fixed sample)."""
    from bioinstruct.instruct.benchmark import load_task

    sem = asyncio.Semaphore(concurrency)
    rows, errors = [], 0
    async with AsyncBioInstructClient(base_url, api_key=api_key, timeout_s=600, max_retries=6) as client:
        for corpus, spec in MATRIX.items():
            docs = load_task(corpus).load(split, data_dir, limit=limit)
            counts = resample_counts(len(docs), resamples, seed=0)
            for subset in spec["subsets"]:
                preds = await asyncio.gather(*(_ask(client, sem, d.fields["text"], subset, adapter, strategy)
                                             for d in docs))
                errors += sum(p is None for p in preds)
                golds = [d.fields["gold_spans"] for d in docs]
                for etype in (t for t in spec["annotated"] if t in subset):
                    stats = np.array([_stats(p or [], g, etype) for p, g in zip(preds, golds, strict=True)])
                    row = {"corpus": corpus, "requested": list(subset), "type": etype, "n": len(docs)}
                    for which in ("precision", "recall", "f1"):
                        row[which] = score_with_ci(EntityScore(which, 3, etype=etype, which=which), stats, counts)
                    rows.append(row)
                if corpus == "bc2gm":
                    gold_spans = [{(s, e) for s, e, _ in g} for g in golds]
                    wrong = sum(len({(s, e) for s, e, t in (p or []) if t != "Gene"} & gs)
                                for p, gs in zip(preds, gold_spans, strict=True))
                    rows.append({"corpus": corpus, "requested": list(subset), "type": "genes as other",
                                 "n": len(docs), "share": round(wrong / max(1, sum(map(len, gold_spans))), 4)})
                if progress:
                    progress(f"{corpus} {'+'.join(subset)}")
    return {"split": split, "limit": limit, "adapter": adapter, "strategy": strategy, "errors": errors, "rows": rows}


def _pct(score: dict[str, Any]) -> str:
    if score.get("value") is None:
        return "n/a"
    return f"{100 * score['value']:.1f} [{100 * score['ci_low']:.1f}, {100 * score['ci_high']:.1f}]"


def markdown(result: dict[str, Any], title: str = "Entity types requested") -> str:
    lines = [f"# {title}", "",
             f"Split {result['split']}, {result['limit']} items per corpus, adapter "
             f"{result['adapter'] or 'the route default'}, type strategy "
             f"{result.get('strategy') or 'the gateway default'}; {result['errors']} failed requests. Precision, "
             "recall and F1 in % with 95% bootstrap CIs.", "",
             "| corpus | requested | type | precision | recall | F1 |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        req = ", ".join(row["requested"])
        if "share" in row:
            lines.append(f"| {row['corpus']} | {req} | gold genes returned as another type | "
                         f"{100 * row['share']:.1f}% | | |")
        else:
            lines.append(f"| {row['corpus']} | {req} | {row['type']} | {_pct(row['precision'])} | "
                         f"{_pct(row['recall'])} | {_pct(row['f1'])} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "share" not in r]
    labels = [f"{r['corpus']}:{r['type']}\n[{'+'.join(t[0] for t in r['requested'])}]" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(rows)), 4))
    for offset, which in ((-0.2, "precision"), (0.2, "recall")):
        ax.bar(x + offset, [100 * (r[which]["value"] or 0) for r in rows], 0.4, label=which)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("%")
    ax.set_title("Per type, by requested subset (C=Chemical, D=Disease, G=Gene)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict[str, Any], out_dir: Path, title: str = "Entity types requested") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "entity_types.json", out_dir / "entity_types.md", out_dir / "entity_types.png"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    paths[1].write_text(markdown(result, title))
    plot(result, paths[2])
    return paths
