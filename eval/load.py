"""Load test (`bioinstruct load`): sweep concurrency or Poisson arrival rate over the task routes, like vLLM's
serving benchmark, with one adapter, several adapters mixed request by request, or the base.

Per level: request and token throughput, end-to-end latency, time to first token (TTFT),
time per output token (TPOT, streamed requests: (e2e - TTFT) / (output tokens - 1)),
inter-token latency (ITL, gaps between streamed chunks), error rate, and goodput: the
requests per second that met every latency target given. A non-streamed response reaches
the caller all at once, so its TTFT for the targets is its end-to-end latency and it has
no TPOT (those figures are reported over streamed requests only).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioinstruct.eval.client import EvalClient, Record, RequestItem
from bioinstruct.eval.latency import latency_summary
from bioinstruct.eval.runner import ApiOptions, run_dir_name
from bioinstruct.instruct.benchmark import TaskSpec

DEFAULT_TASKS = ["pubmedqa", "bc5cdr", "mediqa_qs"]  # one per route: /qa, /extract, /generate


@dataclass(kw_only=True)
class BenchOptions(ApiOptions):
    tasks: list[TaskSpec]
    adapters: list[str | None] = field(default_factory=lambda: [None])
    concurrencies: list[int] | None = None
    rates: list[float] | None = None
    max_concurrency: int = 256
    num_requests: int = 32
    stream: bool | None = None  # None: as each task file says
    max_tokens: int | None = None
    slo_e2e_ms: float | None = None
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    warmup: bool = True


def build_requests(opts: BenchOptions, n: int, prefix: str) -> list[RequestItem]:
    """n requests: tasks and adapters taken in turn, items drawn from each task (shuffled, fixed seed)."""
    rng = random.Random(opts.seed)
    pools = []
    for task in opts.tasks:
        docs = task.load(None, opts.data_dir)
        rng.shuffle(docs)
        pools.append(docs)
    out = []
    for i in range(n):
        t = i % len(opts.tasks)
        task, docs = opts.tasks[t], pools[t]
        doc = docs[(i // len(opts.tasks)) % len(docs)]
        adapter = opts.adapters[i % len(opts.adapters)]
        body = task.body(doc, adapter)
        if opts.stream is not None and task.route == "generate":
            body["stream"] = opts.stream
        if opts.max_tokens is not None and task.route != "qa":
            body["max_tokens"] = opts.max_tokens
        out.append(RequestItem(id=f"{prefix}-{i}", path=task.path, body=body,
                               meta={"task": task.name, "route": task.route, "adapter": adapter or "default"}))
    return out


def tpot_ms(rec: Record) -> float | None:
    if rec.ttft_ms is None or not rec.completion_tokens or rec.completion_tokens < 2:
        return None
    return (rec.latency_ms - rec.ttft_ms) / (rec.completion_tokens - 1)


def good(rec: Record, opts: BenchOptions) -> bool:
    if not rec.ok:
        return False
    if opts.slo_e2e_ms is not None and rec.latency_ms > opts.slo_e2e_ms:
        return False
    ttft = rec.ttft_ms if rec.ttft_ms is not None else rec.latency_ms
    if opts.slo_ttft_ms is not None and ttft > opts.slo_ttft_ms:
        return False
    tpot = tpot_ms(rec)
    return not (opts.slo_tpot_ms is not None and tpot is not None and tpot > opts.slo_tpot_ms)


def summarize_level(records: list[Record], duration_s: float, opts: BenchOptions) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    out_tok = sum(r.completion_tokens or 0 for r in ok)
    in_tok = sum(r.prompt_tokens or 0 for r in ok)
    itl = [x for r in ok for x in (r.itl_ms or [])]
    n_good = sum(1 for r in records if good(r, opts))
    by_route: dict[str, Any] = {}
    for route in sorted({r.meta.get("route", "?") for r in records}):
        rs = [r for r in ok if r.meta.get("route") == route]
        by_route[route] = {"completed": len(rs), "e2e_ms": latency_summary([r.latency_ms for r in rs]),
                           "output_tokens": sum(r.completion_tokens or 0 for r in rs)}
    return {
        "requests": len(records),
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "error_rate": round((len(records) - len(ok)) / len(records), 4) if records else 0.0,
        "errors": dict(Counter((r.error or "")[:120] for r in records if not r.ok).most_common(3)),
        "retried": sum(1 for r in records if r.attempts > 1),
        "duration_s": round(duration_s, 3),
        "request_throughput": round(len(ok) / duration_s, 4) if duration_s > 0 else None,
        "output_token_throughput": round(out_tok / duration_s, 3) if duration_s > 0 else None,
        "total_token_throughput": round((out_tok + in_tok) / duration_s, 3) if duration_s > 0 else None,
        "goodput": round(n_good / duration_s, 4) if duration_s > 0 else None,
        "good_requests": n_good,
        "input_tokens": in_tok,
        "output_tokens": out_tok,
        "e2e_ms": latency_summary([r.latency_ms for r in ok]),
        "ttft_ms": latency_summary([r.ttft_ms for r in ok if r.ttft_ms is not None]),
        "tpot_ms": latency_summary([t for r in ok if (t := tpot_ms(r)) is not None]),
        "itl_ms": latency_summary(itl),
        "streamed": sum(1 for r in ok if r.ttft_ms is not None),
        "by_route": by_route,
        "served_models": dict(Counter(r.served_model or "?" for r in ok)),
    }


async def run_bench(opts: BenchOptions) -> Path:
    if bool(opts.concurrencies) == bool(opts.rates):
        raise ValueError("give either concurrency levels or arrival rates")
    label = "+".join(a or "default" for a in opts.adapters)
    out = opts.out_dir or (opts.reports_root or Path("reports")) / run_dir_name("bench", label)
    out.mkdir(parents=True, exist_ok=True)
    mode = "concurrency" if opts.concurrencies else "rate"
    levels: list[float] = list(opts.concurrencies or opts.rates or [])
    config = {
        "base_url": opts.base_url, "tasks": [t.name for t in opts.tasks],
        "adapters": [a or "default" for a in opts.adapters],
        "mode": mode, "levels": levels, "num_requests": opts.num_requests, "max_concurrency": opts.max_concurrency,
        "stream": opts.stream, "max_tokens": opts.max_tokens,
        "slo_ms": {"e2e": opts.slo_e2e_ms, "ttft": opts.slo_ttft_ms, "tpot": opts.slo_tpot_ms},
        "seed": opts.seed, "command": opts.command, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    def client(**kw: Any) -> EvalClient:
        return EvalClient(opts.base_url, api_key=opts.api_key, transport=opts.transport, **kw)

    if opts.warmup:
        # One request per (task, adapter), one at a time: loads adapters and warms caches.
        warm = build_requests(opts, len(opts.tasks) * len(opts.adapters), "warmup")
        await client(concurrency=1).run(warm, None, progress=False)
    results = []
    for level in levels:
        tag = f"c{int(level)}" if mode == "concurrency" else f"r{level:g}"
        items = build_requests(opts, opts.num_requests, tag)
        if mode == "concurrency":
            sender = client(concurrency=int(level), keep_itl=True, seed=opts.seed)
        else:
            sender = client(concurrency=opts.max_concurrency, rate=float(level), keep_itl=True, seed=opts.seed)
        path = out / f"records-{tag}.jsonl"
        path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        records = await sender.run(items, path, progress=opts.progress, description=f"bench {mode}={level:g}")
        duration = time.perf_counter() - t0
        summary = {"level": level, **summarize_level(list(records.values()), duration, opts)}
        results.append(summary)
        (out / "bench.json").write_text(json.dumps({"config": config, "levels": results}, indent=2) + "\n")
    report = {"config": config, "levels": results}
    report["plots"] = plot_bench(out, report)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "bench.md").write_text(bench_markdown(report), encoding="utf-8")
    return out


def _f(x: float | None, nd: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{nd}f}"


def bench_markdown(report: dict[str, Any]) -> str:
    c = report["config"]
    slo = (", ".join(f"{k} ≤ {v:g} ms" for k, v in c["slo_ms"].items() if v is not None)
           or "none (goodput = completed/s)")
    lines = [
        f"# Load test: {c['mode']} sweep, adapters {', '.join(c['adapters'])}",
        "",
        f"- tasks (routes in turn): {', '.join(c['tasks'])}; {c['num_requests']} requests per level",
        f"- latency targets for goodput: {slo}",
        f"- {c['base_url']}, started {c['started_at']}",
        "",
        f"| {c['mode']} | ok/total | req/s | out tok/s | goodput req/s | e2e p50 / p99 (ms) | TTFT p50 / p99 (ms) | "
        "TPOT p50 (ms) | ITL p50 (ms) | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in report["levels"]:
        lines.append(
            f"| {lv['level']:g} | {lv['completed']}/{lv['requests']} | {_f(lv['request_throughput'], 3)} | "
            f"{_f(lv['output_token_throughput'], 1)} | {_f(lv['goodput'], 3)} | {_f(lv['e2e_ms']['median'])} / "
            f"{_f(lv['e2e_ms']['p99'])} | {_f(lv['ttft_ms']['median'])} / {_f(lv['ttft_ms']['p99'])} | "
            f"{_f(lv['tpot_ms']['median'], 1)} | {_f(lv['itl_ms']['median'], 1)} | {lv['error_rate']:.1%} |")
    if report.get("plots"):
        lines += [""] + [f"![{p}]({p})" for p in report["plots"]]
    if c.get("command"):
        lines += ["", "```", c["command"], "```"]
    return "\n".join(lines) + "\n"


def plot_bench(out: Path, report: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["levels"]
    if not levels:
        return []
    mode = report["config"]["mode"]
    x = [lv["level"] for lv in levels]
    written = []

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    ax.plot(x, [lv["request_throughput"] or 0 for lv in levels], "o-", label="completed")
    ax.plot(x, [lv["goodput"] or 0 for lv in levels], "s--", label="goodput")
    ax.set_xlabel(mode)
    ax.set_ylabel("requests / s")
    ax.legend(fontsize=7)
    ax = axes[1]
    for key, style in (("median", "o-"), ("p99", "s--")):
        ax.plot(x, [(lv["e2e_ms"][key] or 0) / 1000 for lv in levels], style, label=f"e2e {key}")
        if any(lv["ttft_ms"][key] for lv in levels):
            ax.plot(x, [(lv["ttft_ms"][key] or 0) / 1000 for lv in levels], style, alpha=0.6, label=f"TTFT {key}")
    ax.set_xlabel(mode)
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot([lv["request_throughput"] or 0 for lv in levels], [(lv["e2e_ms"]["median"] or 0) / 1000 for lv in levels],
            "o-")
    for lv in levels:
        ax.annotate(f"{lv['level']:g}", ((lv["request_throughput"] or 0), (lv["e2e_ms"]["median"] or 0) / 1000),
                    fontsize=7)
    ax.set_xlabel("throughput (requests / s)")
    ax.set_ylabel("median e2e latency (s)")
    fig.suptitle(f"{', '.join(report['config']['tasks'])}; adapters {', '.join(report['config']['adapters'])}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=110)
    plt.close(fig)
    written.append("bench.png")
    return written
