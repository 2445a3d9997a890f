"""The adapter x task matrix from finished evaluation runs: JSON + Markdown + a heatmap PNG.

    python scripts/results_matrix.py reports/shipped        # reads <task>-<adapter>/report.json

Each cell: the task's primary metric with its 95% CI and N; paired difference to base where
both runs keep their per-item files (items both answered, paired bootstrap: eval/compare.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from bioinstruct.eval.compare import compare_runs
from bioinstruct.eval.report import items_file

ADAPTERS = ["base", "qa", "ie", "gen", "all"]
# The paper's comparison: on each task, the adapter trained on its data (for MedQA and MedMCQA,
# which no adapter saw, their family's) against the one trained on every family.
MATCHED = {"bc5cdr": "ie", "chemprot": "qa", "pubmedqa": "qa", "medqa": "qa", "medmcqa": "qa",
           "mediqa_qs": "gen", "meqsum_heldout": "gen"}


def main(folder: Path, out: Path = typer.Option(None, help="Default: FOLDER/matrix")) -> None:
    out = out or folder / "matrix"
    out.mkdir(parents=True, exist_ok=True)
    cells: dict[tuple[str, str], dict] = {}
    for report in sorted(folder.glob("*/report.json")):
        rep = json.loads(report.read_text())
        task, adapter = rep["task"], rep["adapter"]
        score = rep["scores"][rep["primary_metric"]]
        cell = {"task": task, "adapter": adapter, "metric": rep["primary_metric"], "run": report.parent.name, **score}
        base = folder / f"{task}-base"
        if adapter != "base" and (base / "report.json").is_file():
            if items_file(base) and items_file(report.parent):
                primary = compare_runs(base, report.parent)["metrics"][rep["primary_metric"]]
                cell["vs_base"] = {k: primary.get(k) for k in ("delta", "ci_low", "ci_high", "p_value", "n")}
        cells[(task, adapter)] = cell
    tasks = sorted({t for t, _ in cells})
    adapters = [a for a in ADAPTERS if any((t, a) in cells for t in tasks)]
    (out / "matrix.json").write_text(json.dumps(list(cells.values()), indent=2) + "\n")

    def fmt(c: dict | None) -> str:
        if c is None:
            return "–"
        text = f"{100 * c['value']:.1f} [{100 * c['ci_low']:.1f}, {100 * c['ci_high']:.1f}] (N={c['n']})"
        if "vs_base" in c:
            d = c["vs_base"]
            text += f"; Δ {100 * d['delta']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
        return text

    lines = ["| task (metric) | " + " | ".join(adapters) + " |", "|---|" + "---|" * len(adapters)]
    for t in tasks:
        metric = next(c["metric"] for (tt, _), c in cells.items() if tt == t)
        lines.append(f"| {t} ({metric}) | " + " | ".join(fmt(cells.get((t, a))) for a in adapters) + " |")
    (out / "matrix.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.array([[100 * cells[(t, a)]["value"] if (t, a) in cells else np.nan for a in adapters] for t in tasks])
    fig, ax = plt.subplots(figsize=(1.6 * len(adapters) + 2, 0.7 * len(tasks) + 1.5))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100)
    ax.set_xticks(range(len(adapters)), adapters)
    ax.set_yticks(range(len(tasks)), [f"{t}\n({cells[(t, next(a for a in adapters if (t, a) in cells))]['metric']})"
                                      for t in tasks])
    for i in range(len(tasks)):
        for j in range(len(adapters)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center",
                        color="white" if grid[i, j] < 60 else "black")
    ax.set_title("adapter x task, test splits (primary metric, %)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(out / "matrix.png", dpi=110)
    print((out / "matrix.md").read_text())
    _matched_vs_all(folder, out, cells)


def _matched_vs_all(folder: Path, out: Path, cells: dict[tuple[str, str], dict]) -> None:
    """all minus matched, paired on the items both answered: matched_vs_all.{json,md}."""
    rows = []
    for task, matched in MATCHED.items():
        if (task, matched) not in cells or (task, "all") not in cells:
            continue
        runs = [folder / f"{task}-{matched}", folder / f"{task}-all"]
        metric = cells[(task, "all")]["metric"]
        row = {"task": task, "matched": matched, "metric": metric,
               "matched_score": cells[(task, matched)]["value"], "all_score": cells[(task, "all")]["value"]}
        if all(items_file(r) for r in runs):
            diff = compare_runs(*runs)["metrics"][metric]
            row.update({k: diff.get(k) for k in ("delta", "ci_low", "ci_high", "p_value", "n")})
        rows.append(row)
    (out / "matched_vs_all.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| task (metric) | matched adapter | matched | all | all − matched, paired [95% CI] | p | N |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = (f"{100 * r['delta']:+.1f} [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"
                if "delta" in r else "–")
        p = f"{r['p_value']:.3f}" if r.get("p_value") is not None else "–"
        lines.append(f"| {r['task']} ({r['metric']}) | {r['matched']} | {100 * r['matched_score']:.1f} | "
                     f"{100 * r['all_score']:.1f} | {diff} | {p} | {r.get('n', '–')} |")
    (out / "matched_vs_all.md").write_text("\n".join(lines) + "\n")
    print((out / "matched_vs_all.md").read_text())


if __name__ == "__main__":
    typer.run(main)
