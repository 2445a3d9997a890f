"""Score a run's records and write its report: report.json, report.md, items.jsonl and PNG plots.

Every score comes with N and a 95% percentile bootstrap CI (1,000 resamples of the items,
fixed seed). A failed request scores as a wrong answer and is counted in N and in the error
rate, so errors never make a model look better.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bioinstruct.eval.bootstrap import resample_counts, score_with_ci
from bioinstruct.eval.client import Record
from bioinstruct.eval.latency import percentiles
from bioinstruct.eval.metrics import Metric, build_metrics, is_percent
from bioinstruct.instruct.benchmark import Doc, TaskSpec

N_BOOT = 1000
SEED = 0


# --- scoring ----------------------------------------------------------------------------------

def metric_context(task: TaskSpec, docs: Sequence[Doc]) -> dict[str, Any]:
    """What is needed to rebuild the metric objects (kept in report.json for compare)."""
    ctx: dict[str, Any] = {"kind": task.scoring.kind, "names": list(task.scoring.metrics),
                           "labels": [], "entity_types": []}
    if task.scoring.kind == "choice":
        ctx["labels"] = task.all_labels(docs)
    elif task.scoring.kind == "spans":
        ctx["entity_types"] = task.entity_types()
    return ctx


def metrics_from_context(ctx: dict[str, Any]) -> list[Metric]:
    return build_metrics(ctx["kind"], ctx["names"], labels=ctx.get("labels") or [],
                         entity_types=ctx.get("entity_types") or [])


def score_items(task: TaskSpec, docs: Sequence[Doc], records: dict[str, Record], metrics: Sequence[Metric],
                judge: dict[str, int | None] | None = None) -> list[dict[str, Any]]:
    """One row per item: gold, prediction, and each metric's statistics."""
    rows = []
    for doc in docs:
        rec = records.get(doc.id)
        gold = task.gold(doc)
        pred = task.prediction(doc, rec.response if rec is not None and rec.ok else None)
        extra = {"judge": (judge or {}).get(doc.id)}
        stats = {m.name: m.item(pred, gold, extra) for m in metrics}
        row: dict[str, Any] = {"id": doc.id, "ok": bool(rec is not None and rec.ok), "gold": gold, "pred": pred,
                               "stats": stats}
        if extra["judge"] is not None:
            row["judge"] = extra["judge"]
        if rec is not None and not rec.ok:
            row["error"] = rec.error
        rows.append(row)
    return rows


def stats_matrix(rows: Sequence[dict[str, Any]], metric: Metric) -> np.ndarray:
    if not rows:
        return np.zeros((0, metric.width))
    return np.asarray([r["stats"][metric.name] for r in rows], dtype=float).reshape(len(rows), metric.width)


def score_table(metrics: Sequence[Metric], rows: Sequence[dict[str, Any]], *, n_boot: int = N_BOOT,
                seed: int = SEED) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(headline scores, breakdowns) with bootstrap CIs; all metrics share the same resamples."""
    counts = resample_counts(len(rows), n_boot, seed)
    scores: dict[str, Any] = {}
    breakdown: dict[str, dict[str, Any]] = {}
    for m in metrics:
        result = score_with_ci(m, stats_matrix(rows, m), counts)
        if m.group:
            breakdown.setdefault(m.group, {})[m.name] = result
        else:
            scores[m.name] = result
    return scores, breakdown


# --- serving figures --------------------------------------------------------------------------

def serving_summary(records: Sequence[Record]) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    ends = [r.ended_at for r in records]
    duration = (max(ends) - min(r.started_at for r in records)) if records else 0.0
    completion = sum(r.completion_tokens or 0 for r in ok)
    prompt = sum(r.prompt_tokens or 0 for r in ok)
    errors = Counter((r.error or f"HTTP {r.status}")[:160] for r in records if not r.ok)
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "error_rate": round((len(records) - len(ok)) / len(records), 6) if records else 0.0,
        "top_errors": dict(errors.most_common(5)),
        "status_counts": dict(Counter(str(r.status) for r in records)),
        "retried": sum(1 for r in records if r.attempts > 1),
        "latency_ms": {
            "e2e": percentiles([r.latency_ms for r in ok]),
            "ttft": percentiles([r.ttft_ms for r in ok if r.ttft_ms is not None]),
            "server": percentiles([r.server_latency_ms for r in ok if r.server_latency_ms is not None]),
        },
        "throughput": {
            "duration_s": round(duration, 3),
            "requests_per_s": round(len(ok) / duration, 4) if duration > 0 else None,
            "output_tokens_per_s": round(completion / duration, 3) if duration > 0 else None,
            "total_tokens_per_s": round((completion + prompt) / duration, 3) if duration > 0 else None,
        },
        "tokens": {"prompt": prompt, "completion": completion},
        "served_models": dict(Counter(r.served_model or "?" for r in ok)),
    }


# --- the report -------------------------------------------------------------------------------

def build_report(task: TaskSpec, split: str, config: dict[str, Any], docs: Sequence[Doc],
                 records: dict[str, Record], rows: Sequence[dict[str, Any]], ctx: dict[str, Any],
                 *, n_boot: int = N_BOOT, seed: int = SEED) -> dict[str, Any]:
    metrics = metrics_from_context(ctx)
    scores, breakdown = score_table(metrics, rows, n_boot=n_boot, seed=seed)
    recs = [records[d.id] for d in docs if d.id in records]
    report: dict[str, Any] = {
        "task": task.name,
        "family": task.family.value,
        "route": task.route,
        "split": split,
        "split_file": task.split_spec(split).path,
        "adapter": config.get("adapter") or "default",
        "n_items": len(docs),
        "n_answered": sum(1 for r in rows if r["ok"]),
        "primary_metric": task.primary_metric,
        "scores": scores,
        "breakdown": breakdown,
        "serving": serving_summary(recs),
        "bootstrap": {"resamples": n_boot, "seed": seed, "ci": 0.95, "method": "percentile"},
        "metric_context": ctx,
        "task_fingerprint": task.fingerprint(),
        "task_file": task.source,
        "config": config,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if task.scoring.kind == "choice":
        report["confusion"] = confusion(rows, ctx["labels"])
    return report


def confusion(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    names = list(labels) + ["(none)"]
    index = {lab: i for i, lab in enumerate(names)}
    mat = np.zeros((len(labels), len(names)), dtype=int)
    for r in rows:
        gold, pred = r["gold"], r["pred"]
        if gold in index and gold != "(none)":
            col = index[pred] if pred is not None and pred in index else len(names) - 1
            mat[index[gold], col] += 1
    return {"gold": list(labels), "pred": names, "matrix": mat.tolist()}


def write_run(run_dir: Path, report: dict[str, Any], rows: Sequence[dict[str, Any]], *, plots: bool = True) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "items.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=_jsonable) + "\n")
    if plots:
        report["plots"] = write_plots(run_dir, report, rows)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    (run_dir / "report.md").write_text(markdown(report), encoding="utf-8")


def items_file(run_dir: Path) -> Path | None:
    """A run's per-item file: items.jsonl as written, or items.jsonl.gz as kept in the repository."""
    for name in ("items.jsonl", "items.jsonl.gz"):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def load_items(run_dir: Path) -> list[dict[str, Any]]:
    path = items_file(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir} has no items.jsonl (or items.jsonl.gz): `bioinstruct eval report` "
                                f"writes it again from records.jsonl")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_report(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no report.json (not a finished run? `bioinstruct eval report` "
                                f"writes it again from records.jsonl)")
    return json.loads(path.read_text(encoding="utf-8"))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


# --- Markdown -------------------------------------------------------------------------------

def fmt_score(s: dict[str, Any] | None, *, percent: bool = True) -> str:
    if not s or s.get("value") is None:
        return "n/a"
    k = 100 if percent else 1
    value = f"{s['value'] * k:.1f}" if percent else f"{s['value']:.2f}"
    if s.get("ci_low") is None:
        return value
    lo = f"{s['ci_low'] * k:.1f}" if percent else f"{s['ci_low']:.2f}"
    hi = f"{s['ci_high'] * k:.1f}" if percent else f"{s['ci_high']:.2f}"
    return f"{value} [{lo}, {hi}]"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def markdown(report: dict[str, Any]) -> str:
    sv = report["serving"]
    lines = [
        f"# {report['task']} ({report['split']}) — adapter `{report['adapter']}`",
        "",
        f"- route `/{report['route']}`, family {report['family']}, data `{report['split_file']}`",
        f"- items: {report['n_items']} (answered {report['n_answered']}, errors {sv['errors']}, "
        f"error rate {sv['error_rate']:.2%}); served by "
        f"{', '.join(f'{k} ×{v}' for k, v in sv['served_models'].items()) or 'n/a'}",
        f"- scores in % (LLM judge 1–10), 95% bootstrap CI over items ({report['bootstrap']['resamples']} "
        f"resamples, seed {report['bootstrap']['seed']}); failed requests count as wrong",
        "",
        "| metric | score [95% CI] | N |",
        "|---|---|---|",
    ]
    for name, s in report["scores"].items():
        star = " (primary)" if name == report["primary_metric"] else ""
        lines.append(f"| {name}{star} | {fmt_score(s, percent=is_percent(name))} | {s['n']} |")
    for group, items in report.get("breakdown", {}).items():
        lines += ["", f"**{group}**", "", "| | F1 [95% CI] | N |", "|---|---|---|"]
        for name, s in items.items():
            lines.append(f"| {name} | {fmt_score(s)} | {s['n']} |")
    lat = sv["latency_ms"]
    tp = sv["throughput"]
    lines += [
        "",
        "## Serving",
        "",
        "| | p50 | p90 | p99 | mean |",
        "|---|---|---|---|---|",
    ]
    for key, label in (("e2e", "end-to-end latency (ms)"), ("ttft", "time to first token (ms)"),
                       ("server", "server-side latency (ms)")):
        p = lat[key]
        if p.get("p50") is not None:
            lines.append(f"| {label} | {_ms(p['p50'])} | {_ms(p['p90'])} | {_ms(p['p99'])} | {_ms(p['mean'])} |")
    lines += [
        "",
        f"- duration {tp['duration_s']:.1f} s; {tp['requests_per_s'] or 0:.3f} requests/s; "
        f"{tp['output_tokens_per_s'] or 0:.1f} output tokens/s; retried requests {sv['retried']}",
        f"- concurrency {report['config'].get('concurrency')}, rate {report['config'].get('rate') or 'closed loop'}",
    ]
    if sv["top_errors"]:
        lines += ["", "Errors (most frequent):", ""]
        lines += [f"- {n} × {msg}" for msg, n in sv["top_errors"].items()]
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    command = report["config"].get("command")
    if command:
        lines += ["", "## Command", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


# --- plots ------------------------------------------------------------------------------------

def write_plots(run_dir: Path, report: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    title = f"{report['task']} ({report['split']}), adapter {report['adapter']}"

    def bars(name: str, items: dict[str, dict[str, Any]], ylabel: str, scale: float) -> None:
        keys = [k for k, s in items.items() if s.get("value") is not None]
        if not keys:
            return
        vals = np.array([items[k]["value"] * scale for k in keys])
        lo = np.array([(items[k]["ci_low"] if items[k]["ci_low"] is not None else items[k]["value"]) * scale
                       for k in keys])
        hi = np.array([(items[k]["ci_high"] if items[k]["ci_high"] is not None else items[k]["value"]) * scale
                       for k in keys])
        fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(keys) + 2), 3.6))
        ax.bar(range(len(keys)), vals, yerr=[vals - lo, hi - vals], capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(keys)), keys, rotation=30 if len(keys) > 4 else 0,
                      ha="right" if len(keys) > 4 else "center")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)

    percent = {k: v for k, v in report["scores"].items() if is_percent(k)}
    bars("scores.png", percent, "score (%) with 95% CI", 100)
    for group, items in report.get("breakdown", {}).items():
        bars(f"{group}.png", items, "F1 (%) with 95% CI", 100)

    records_path = run_dir / "records.jsonl"
    if records_path.is_file():
        from bioinstruct.eval.client import read_records

        recs = [r for r in read_records(records_path).values() if r.ok]
        if recs:
            fig, ax = plt.subplots(figsize=(5.5, 3.6))
            e2e = [r.latency_ms / 1000 for r in recs]
            ax.hist(e2e, bins=min(40, max(5, len(e2e) // 5)), alpha=0.7, label="end-to-end")
            ttft = [r.ttft_ms / 1000 for r in recs if r.ttft_ms is not None]
            if ttft:
                ax.hist(ttft, bins=min(40, max(5, len(ttft) // 5)), alpha=0.7, label="time to first token")
            for q, style in ((50, "--"), (99, ":")):
                ax.axvline(float(np.percentile(e2e, q)), color="k", linestyle=style, linewidth=1, label=f"p{q}")
            ax.set_xlabel("seconds")
            ax.set_ylabel("requests")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(run_dir / "latency.png", dpi=110)
            plt.close(fig)
            written.append("latency.png")

    conf = report.get("confusion")
    if conf and len(conf["gold"]) <= 20:
        mat = np.asarray(conf["matrix"])
        fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(conf["pred"]) + 2, 1.0 + 0.45 * len(conf["gold"]) + 1))
        ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(len(conf["pred"])), conf["pred"], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(conf["gold"])), conf["gold"], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        for (i, j), v in np.ndenumerate(mat):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                        color="white" if v > mat.max() / 2 else "black")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(run_dir / "confusion.png", dpi=110)
        plt.close(fig)
        written.append("confusion.png")
    return written

