"""Compare two runs of the same task item by item: paired bootstrap of each metric's difference.

B - A is reported with its 95% CI and a two-sided p-value; both runs are resampled with the
same item draws, which is what makes the comparison paired (and much tighter than two
independent CIs). Only items present in both runs are compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bioinstruct.eval.bootstrap import paired_bootstrap
from bioinstruct.eval.metrics import is_percent
from bioinstruct.eval.report import load_items, load_report, metrics_from_context


class CompareError(ValueError):
    pass


def compare_runs(run_a: Path, run_b: Path, *, n_boot: int = 1000, seed: int = 0,
                 metrics: list[str] | None = None) -> dict[str, Any]:
    ra, rb = load_report(run_a), load_report(run_b)
    if ra["task"] != rb["task"] or ra["split"] != rb["split"]:
        raise CompareError(f"runs are of different tasks/splits: {ra['task']}/{ra['split']} vs "
                           f"{rb['task']}/{rb['split']}")
    warnings = []
    if ra.get("task_fingerprint") != rb.get("task_fingerprint"):
        warnings.append("the task definitions differ (request template or scoring changed between runs)")
    ctx = ra["metric_context"]
    if rb["metric_context"].get("labels") != ctx.get("labels"):
        warnings.append("label sets differ; using run A's")
    rows_a = {r["id"]: r for r in load_items(run_a)}
    rows_b = {r["id"]: r for r in load_items(run_b)}
    shared = [i for i in rows_a if i in rows_b]
    if not shared:
        raise CompareError("the runs share no items")
    if len(shared) != len(rows_a) or len(shared) != len(rows_b):
        warnings.append(f"only the {len(shared)} items in both runs are compared "
                        f"(A has {len(rows_a)}, B has {len(rows_b)})")
    results: dict[str, Any] = {}
    for m in metrics_from_context(ctx):
        if metrics and m.name not in metrics and (m.group or "") not in metrics:
            continue
        if any(m.name not in rows_a[i]["stats"] or m.name not in rows_b[i]["stats"] for i in shared[:1]):
            continue
        sa = np.asarray([rows_a[i]["stats"][m.name] for i in shared], dtype=float)
        sb = np.asarray([rows_b[i]["stats"][m.name] for i in shared], dtype=float)
        res = paired_bootstrap(m, sa, sb, n_boot=n_boot, seed=seed)
        res["group"] = m.group
        results[m.name] = res
    both_ok = sum(1 for i in shared if rows_a[i]["ok"] and rows_b[i]["ok"])
    return {
        "task": ra["task"], "split": ra["split"], "primary_metric": ra["primary_metric"],
        "a": {"run": str(run_a), "adapter": ra["adapter"], "served_models": ra["serving"]["served_models"],
              "error_rate": ra["serving"]["error_rate"]},
        "b": {"run": str(run_b), "adapter": rb["adapter"], "served_models": rb["serving"]["served_models"],
              "error_rate": rb["serving"]["error_rate"]},
        "n_paired": len(shared), "n_both_answered": both_ok,
        "bootstrap": {"resamples": n_boot, "seed": seed, "ci": 0.95, "paired": True},
        "metrics": results, "warnings": warnings,
    }


def compare_markdown(result: dict[str, Any]) -> str:
    a, b = result["a"], result["b"]
    lines = [
        f"# {result['task']} ({result['split']}): `{b['adapter']}` (B) vs `{a['adapter']}` (A)",
        "",
        f"- A: {a['run']}",
        f"- B: {b['run']}",
        f"- paired items: {result['n_paired']} (both answered: {result['n_both_answered']}); "
        f"paired bootstrap, {result['bootstrap']['resamples']} resamples, seed {result['bootstrap']['seed']}",
        "",
        "| metric | A | B | B − A [95% CI] | p | N |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["metrics"].items():
        pct = is_percent(name)

        def f(x, pct=pct):
            return "n/a" if x is None else (f"{x * 100:.1f}" if pct else f"{x:.2f}")

        star = " (primary)" if name == result["primary_metric"] else ""
        delta = "n/a" if r["delta"] is None else f"{f(r['delta'])} [{f(r['ci_low'])}, {f(r['ci_high'])}]"
        p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3f}"
        lines.append(f"| {name}{star} | {f(r['a'])} | {f(r['b'])} | {delta} | {p} | {r['n']} |")
    if result["warnings"]:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"


def write_compare(out_dir: Path, result: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "compare.md").write_text(compare_markdown(result), encoding="utf-8")
    _plot(out_dir / "compare.png", result)


def _plot(path: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in result["metrics"].items() if r["delta"] is not None and is_percent(n)]
    if not names:
        return
    d = np.array([result["metrics"][n]["delta"] * 100 for n in names])
    lo = np.array([result["metrics"][n]["ci_low"] * 100 for n in names])
    hi = np.array([result["metrics"][n]["ci_high"] * 100 for n in names])
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.5))
    y = np.arange(len(names))
    ax.errorbar(d, y, xerr=[d - lo, hi - d], fmt="o", capsize=4)
    ax.axvline(0, color="k", linewidth=1)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(f"B − A (points), 95% paired bootstrap CI; B={result['b']['adapter']}, A={result['a']['adapter']}")
    ax.set_title(f"{result['task']} ({result['split']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["compare_runs", "compare_markdown", "write_compare", "CompareError"]
