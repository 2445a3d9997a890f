"""Comparison 2: the cost of LoRA on the CPU engine, and what closes it.

One vLLM engine configuration at a time (requests go to the engine directly; the gateway's
own cost is comparison 1). In each, several workloads take turns within every repeat:
the base model, one adapter, requests spread over three adapters, and adapters of other
ranks and target modules. Engine configurations:

- `plain`: vLLM without --enable-lora (the base model's ceiling)
- `default`: what the gateway starts (max_loras 4, max_lora_rank 16, LoRA layers on qkv_proj
  and o_proj only, where training/'s adapters have weights, our plugin's grouped CPU LoRA ops)
- `stock_ops`: the same, with vLLM's own CPU LoRA ops (BIOINSTRUCT_ENGINE_FAST_CPU_LORA=0)
- `all_layers`: LoRA layers on every linear module (the default before BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES)
- `max_loras1`: one adapter slot per batch (vLLM's default)
- `rank8`: max_lora_rank 8
- `merged`: one adapter merged into the base weights (peft merge_and_unload), plain vLLM

All at concurrency 32, fixed output length, greedy. Workloads marked "long" send PubMedQA-length
prompts (question + abstract, a few hundred tokens, as /qa does) with 16 new tokens: prefill-heavy.

    bioinstruct bench adapters          # or: python -m bioinstruct.bench.adapters
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer

from bioinstruct.bench import traffic
from bioinstruct.bench.console import log, progress
from bioinstruct.bench.loras import ALL_LINEAR, DEFAULT_TARGETS, make_lora, merge_lora
from bioinstruct.bench.machine import loadavg
from bioinstruct.bench.plots import errorbars, pyplot, save_figure
from bioinstruct.bench.processes import running_engine
from bioinstruct.bench.prompts import completion_bodies, load_long_prompts, load_prompts
from bioinstruct.bench.report import Comparison, document, fmt, fmt_summary, table, target
from bioinstruct.bench.stats import paired_ratio, ratio, summaries


@dataclass
class EngineConfig:
    name: str
    label: str
    lora: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    merged: str | None = None  # adapter key whose merged weights the engine serves
    workloads: list[str] = field(default_factory=list)


# adapter key -> (seed, rank, targets)
ADAPTERS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "r8-qkvo-1": (1, 8, DEFAULT_TARGETS),
    "r8-qkvo-2": (2, 8, DEFAULT_TARGETS),
    "r8-qkvo-3": (3, 8, DEFAULT_TARGETS),
    "r16-qkvo": (4, 16, DEFAULT_TARGETS),
    "r4-qkvo": (5, 4, DEFAULT_TARGETS),
    "r8-qv": (6, 8, ("q_proj", "v_proj")),
    "r8-all": (7, 8, ALL_LINEAR),
}

# workload -> adapter keys used in turn ("base": the served model itself)
WORKLOADS: dict[str, list[str]] = {
    "base": ["base"],
    "1 adapter": ["r8-qkvo-1"],
    "3 adapters": ["r8-qkvo-1", "r8-qkvo-2", "r8-qkvo-3"],
    "1 adapter r4": ["r4-qkvo"],
    "1 adapter r16": ["r16-qkvo"],
    "1 adapter q,v": ["r8-qv"],
    "1 adapter all-linear": ["r8-all"],
    "base, long": ["base"],
    "1 adapter, long": ["r8-qkvo-1"],
    "3 adapters, long": ["r8-qkvo-1", "r8-qkvo-2", "r8-qkvo-3"],
}
LONG_NEW_TOKENS = 16
DEFAULT_WORKLOADS = ["base", "1 adapter", "3 adapters", "1 adapter r16", "1 adapter q,v",
                     "base, long", "1 adapter, long", "3 adapters, long"]

CONFIGS = [
    EngineConfig("plain", "vLLM without LoRA", lora=False, workloads=["base"]),
    EngineConfig("default", "gateway default: max_loras 4, max_lora_rank 16, LoRA on qkv_proj, o_proj",
                 workloads=DEFAULT_WORKLOADS),
    EngineConfig("stock_ops", "the default with vLLM's own CPU LoRA ops (plugin's kernels off)",
                 settings={"fast_cpu_lora": False}, workloads=DEFAULT_WORKLOADS),
    # An all-linear adapter is only servable here: the default engine refuses it.
    EngineConfig("all_layers", "LoRA on every linear layer", settings={"lora_target_modules": []},
                 workloads=["base", "1 adapter", "3 adapters", "1 adapter all-linear"]),
    EngineConfig("max_loras1", "max_loras 1", settings={"max_loras": 1, "max_cpu_loras": 4},
                 workloads=["1 adapter", "3 adapters"]),
    EngineConfig("rank8", "max_lora_rank 8", settings={"max_lora_rank": 8},
                 workloads=["1 adapter", "3 adapters", "1 adapter r4"]),
    EngineConfig("merged", "adapter r8-qkvo-1 merged into the base weights, vLLM without LoRA", lora=False,
                 merged="r8-qkvo-1", workloads=["base"]),
]


def _adapter(key: str) -> Path:
    seed, rank, targets = ADAPTERS[key]
    return make_lora(seed, rank, targets)


def run(configs: list[str] | None = None, repeats: int = 3, concurrency: int = 32, requests: int = 32,
        max_tokens: int = 32, out: Path | None = None) -> Path:
    chosen = [c for c in CONFIGS if not configs or c.name in configs]
    bench = Comparison("adapters", out, f"adapter-mix comparison ({', '.join(c.name for c in chosen)})")
    prompts = load_prompts(64)
    long_prompts = load_long_prompts(48)
    runs: list[dict[str, Any]] = []
    for cfg in chosen:
        model_dir = merge_lora(_adapter(cfg.merged)) if cfg.merged else None
        needed = sorted({k for w in cfg.workloads for k in WORKLOADS[w] if k != "base"})
        folders = {k: _adapter(k) for k in needed}
        log(f"engine {cfg.name}: {cfg.label}")
        t0 = time.monotonic()
        with running_engine(model_dir, lora=cfg.lora, log_dir=bench.logs, **cfg.settings) as engine:
            startup = time.monotonic() - t0
            url = engine.base_url
            with httpx.Client(base_url=url, timeout=300) as client:
                for key, folder in folders.items():
                    r = client.post("/v1/load_lora_adapter",
                                    json={"lora_name": key, "lora_path": str(folder)})
                    r.raise_for_status()
            traffic.warm(url, [k for k in ["base", *folders]], prompts[0])
            with progress() as bar:
                task = bar.add_task(cfg.name, total=repeats * len(cfg.workloads) * requests)
                for rep in range(repeats):
                    k = rep % len(cfg.workloads)
                    for w in cfg.workloads[k:] + cfg.workloads[:k]:
                        bar.update(task, description=f"{cfg.name} rep {rep + 1}/{repeats}: {w}")
                        long = w.endswith(", long")
                        bodies = completion_bodies(long_prompts if long else prompts, WORKLOADS[w], requests,
                                                   LONG_NEW_TOKENS if long else max_tokens, offset=rep * 5)
                        la = loadavg()[0]
                        res, dur = asyncio.run(traffic.closed_loop(
                            f"{url}/v1/completions", bodies, concurrency,
                            on_done=lambda t=task: bar.advance(t)))
                        st = traffic.level_stats(res, concurrency, dur)
                        if st.failed:
                            log(f"[yellow]{cfg.name}/{w}: {st.failed} failed: {st.errors}[/yellow]")
                        runs.append({"config": cfg.name, "workload": w, "repeat": rep, "loadavg_before": la,
                                     "engine_start_s": round(startup, 1), **st.as_dict()})
        log(f"engine {cfg.name} done; load {loadavg()}")
    report = aggregate(runs, chosen)
    report.update(runs=runs, config={
        "configs": [{"name": c.name, "label": c.label, "lora": c.lora, "settings": c.settings,
                     "merged": c.merged, "workloads": c.workloads} for c in chosen],
        "adapters": {k: {"seed": s, "rank": r, "targets": list(t)} for k, (s, r, t) in ADAPTERS.items()},
        "repeats": repeats, "concurrency": concurrency, "requests": requests, "max_tokens": max_tokens,
        "seconds": bench.seconds()})
    return bench.finish(report, markdown, plot)


def aggregate(runs: list[dict[str, Any]], chosen: list[EngineConfig]) -> dict[str, Any]:
    rows = []
    for cfg in chosen:
        for w in cfg.workloads:
            rs = [r for r in runs if r["config"] == cfg.name and r["workload"] == w]
            rows.append({"config": cfg.name, "label": cfg.label, "workload": w,
                         "failed": sum(r["failed"] for r in rs),
                         **summaries(rs, ("out_tok_per_s", "req_per_s", "p50_ms", "p99_ms"))})

    def med(config: str, workload: str) -> float | None:
        for row in rows:
            if row["config"] == config and row["workload"] == workload:
                return row["out_tok_per_s"]["median"]
        return None

    one_default = med("default", "1 adapter")
    plain = med("plain", "base")
    for row in rows:
        row["vs_default_1_adapter"] = ratio(row["out_tok_per_s"]["median"], one_default)
        row["vs_plain_base"] = ratio(row["out_tok_per_s"]["median"], plain)

    def pairs(a: str, b: str) -> dict[str, Any]:
        """Per engine: median over repeats of a/b measured in the same repeat of that engine."""
        return {cfg.name: paired_ratio([r for r in runs if r["config"] == cfg.name], "out_tok_per_s",
                                       "workload", a, b)
                for cfg in chosen if {a, b} <= set(cfg.workloads)}

    mixes, lora_cost = pairs("3 adapters", "1 adapter"), pairs("1 adapter", "base")
    mixes_long = pairs("3 adapters, long", "1 adapter, long")
    lora_cost_long = pairs("1 adapter, long", "base, long")
    # the plugin's kernels vs vLLM's own, same workload: medians of the two engines' runs
    speedup = {w: ratio(med("default", w), med("stock_ops", w)) for w in DEFAULT_WORKLOADS
               if med("default", w) and med("stock_ops", w)}
    targets = []
    for text, found, floor in (
            ("1 adapter / base >= 0.90, short prompts (gateway's engine)", lora_cost, 0.9),
            ("1 adapter / base >= 0.90, PubMedQA-length prompts", lora_cost_long, 0.9),
            ("3 mixed adapters >= 0.95 of one adapter, short prompts", mixes, 0.95),
            ("3 mixed adapters >= 0.95 of one adapter, PubMedQA-length prompts", mixes_long, 0.95)):
        if "default" in found:
            targets.append(target(text, found["default"]["median"], at_least=floor))
    return {"rows": rows, "mix_ratio": mixes, "one_adapter_vs_base": lora_cost, "mix_ratio_long": mixes_long,
            "one_adapter_vs_base_long": lora_cost_long, "plugin_vs_stock_ops": speedup, "targets": targets}


def markdown(rep: dict[str, Any]) -> str:
    cfg = rep["config"]
    details = [
        f"workload: engine directly, concurrency {cfg['concurrency']}, {cfg['requests']} requests per run, "
        f"{cfg['max_tokens']} output tokens (min = max, EOS ignored), greedy; 64 MEDIQA-QS questions",
        "adapters: random peft LoRA, alpha = 2 x rank; `r8-qkvo-N`: rank 8 on q/k/v/o_proj "
        "(training/ default)",
        f"{cfg['repeats']} repeats per engine, workloads interleaved; median (min–max) over repeats; "
        f"{cfg['seconds']:.0f} s",
    ]
    header = ["engine", "workload", "output tok/s", "req/s", "p50 ms", "p99 ms",
              "vs default engine, 1 adapter", "vs vLLM without LoRA"]
    rows = [[f"{r['config']} ({r['label']})", r["workload"], fmt_summary(r["out_tok_per_s"], 1),
             fmt_summary(r["req_per_s"], 2), fmt_summary(r["p50_ms"], 0), fmt_summary(r["p99_ms"], 0),
             fmt(r["vs_default_1_adapter"], 2), fmt(r["vs_plain_base"], 2)] for r in rep["rows"]]
    lines = table(header, rows)
    keys = ("mix_ratio", "one_adapter_vs_base", "mix_ratio_long", "one_adapter_vs_base_long")
    names = sorted(set().union(*(rep.get(k, {}) for k in keys)),
                   key=lambda n: [c["name"] for c in cfg["configs"]].index(n))
    header = ["engine", "3 adapters / 1 adapter", "1 adapter / base", "3 / 1 adapter, long",
              "1 adapter / base, long"]
    rows = [[name, *(fmt_summary(rep.get(k, {}).get(name, {}), 3) for k in keys)] for name in names]
    lines += ["", "Paired ratios (same engine, same repeat), median (min–max):", "", *table(header, rows)]
    if rep.get("plugin_vs_stock_ops"):
        rows = [[w, fmt(v, 2)] for w, v in rep["plugin_vs_stock_ops"].items()]
        lines += ["", "Plugin's grouped LoRA ops / vLLM's own ops (default vs stock_ops engine, medians):",
                  "", *table(["workload", "speed-up"], rows)]
    return document("Adapter mix and the LoRA cost on the CPU engine", rep, details, lines)


def plot(out: Path, rep: dict[str, Any]) -> list[str]:
    rows = rep["rows"]
    fig, ax = pyplot().subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    labels = [f"{r['config']}: {r['workload']}" for r in rows][::-1]
    med, (lo, hi) = errorbars([r["out_tok_per_s"] for r in rows][::-1])
    ax.barh(range(len(rows)), med, xerr=[lo, hi], capsize=3, color="tab:blue")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xlabel(f"output tokens / s (concurrency {rep['config']['concurrency']}), median and min–max")
    return save_figure(fig, out, "adapters.png")


def command(
    configs: str = typer.Option("", help="Engine configurations, comma-separated (default all: "
                                + ", ".join(c.name for c in CONFIGS) + ")"),
    repeats: int = typer.Option(3, min=1),
    concurrency: int = typer.Option(32, min=1),
    requests: int = typer.Option(32, min=1, help="Requests per run"),
    max_tokens: int = typer.Option(32, min=1),
    out: Path = typer.Option(None, help="Report folder (default reports/bench/adapters-<time>)"),
) -> None:
    """Base vs one adapter vs three mixed; engine settings, rank, target modules, merged weights."""
    names = [c.strip() for c in configs.split(",") if c.strip()] or None
    unknown = set(names or []) - {c.name for c in CONFIGS}
    if unknown:
        raise typer.BadParameter(f"unknown configs {sorted(unknown)}")
    path = run(names, repeats, concurrency, requests, max_tokens, out)
    print((path / "adapters.md").read_text())


if __name__ == "__main__":
    typer.run(command)
