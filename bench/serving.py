"""Comparison 1: multi-adapter serving, side by side.

The same prompts, the same 3 LoRA adapters (requests spread over them in turn) and the same
output length (min_tokens = max_tokens, EOS ignored, greedy), served by
  (a) our gateway (`bioinstruct serve`, its own process, attached to the engine below),
  (b) the vLLM engine directly (the same engine process the gateway uses),
  (c) a plain transformers + peft server (bench/hf_server.py: one request at a time,
      `set_adapter` per request).
Closed-loop load at each concurrency level; the three servers take turns within every
repeat (the order rotates), so background load falls on all of them alike.

Also the gateway's own overhead: pairs of 1-token requests at concurrency 1, alternating
gateway / engine, p50 difference.

    bioinstruct bench serving            # or: python -m bioinstruct.bench.serving
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import typer

from bioinstruct.bench import traffic
from bioinstruct.bench.console import log, progress
from bioinstruct.bench.loras import make_lora, publish_adapters
from bioinstruct.bench.machine import loadavg
from bioinstruct.bench.plots import errorbars, pyplot, save_figure
from bioinstruct.bench.processes import running_engine, running_gateway, running_hf_server
from bioinstruct.bench.prompts import completion_bodies, load_prompts
from bioinstruct.bench.report import Comparison, document, fmt_summary, table, target
from bioinstruct.bench.stats import ratio, summaries, summary
from bioinstruct.eval.latency import percentile

TARGETS = ("gateway", "engine", "hf")
LABELS = {"gateway": "gateway (ours)", "engine": "vLLM engine direct", "hf": "transformers+peft server"}


def _requests(target: str, level: int, hf_requests: int) -> int:
    return hf_requests if target == "hf" else max(16, 2 * level)


async def _overhead_pairs(gw: str, eng: str, prompts: list[str], refs: dict[str, str],
                          n: int) -> dict[str, Any]:
    """n alternating (gateway, engine) 1-token requests at concurrency 1 (same prompt and adapter
    within a pair, order flipped every pair). Two estimates of the gateway's own cost:
    - paired: median over pairs of (gateway e2e - engine e2e); engine noise enters twice;
    - in-gateway: median of (gateway e2e - X-BioInstruct-Latency-Ms), the client's time minus
      the time the gateway spent waiting on its engine call (its own work + the extra hop)."""
    g, e, diffs, inside = [], [], [], []
    aliases = list(refs)
    sender = traffic.client(1)
    async with sender.connect() as http:
        for i in range(n):
            alias = aliases[i % len(aliases)]
            body = {"prompt": prompts[i % len(prompts)], "max_tokens": 1, "temperature": 0.0}
            pair = [("gw", f"{gw}/v1/completions", alias), ("eng", f"{eng}/v1/completions", refs[alias])]
            if i % 2:
                pair.reverse()
            got = {}
            for who, url, model in pair:
                got[who] = await sender.send(http, traffic.request(url, {**body, "model": model}, i, who))
            if got["gw"].ok and got["eng"].ok:
                g.append(got["gw"].latency_ms)
                e.append(got["eng"].latency_ms)
                diffs.append(g[-1] - e[-1])
                if got["gw"].server_latency_ms is not None:
                    inside.append(g[-1] - got["gw"].server_latency_ms)
    gw_p50, eng_p50 = percentile(g, 50), percentile(e, 50)
    return {"gateway_p50_ms": gw_p50, "engine_p50_ms": eng_p50,
            "overhead_p50_ms": gw_p50 - eng_p50 if g and e else None,
            "paired_median_ms": percentile(diffs, 50), "in_gateway_p50_ms": percentile(inside, 50),
            "in_gateway_p90_ms": percentile(inside, 90), "pairs": len(diffs)}


def run(levels: list[int], repeats: int = 3, max_tokens: int = 32, hf_requests: int = 16,
        overhead_pairs: int = 60, skip_hf: bool = False, out: Path | None = None) -> Path:
    bench = Comparison("serving", out, "serving comparison")
    logs = bench.logs
    prompts = load_prompts(64)
    adapters = {f"a{i}": make_lora(i) for i in (1, 2, 3)}
    registry = bench.out / "registry"
    refs = publish_adapters(registry, adapters)  # alias -> bench-aN@1
    models = {"gateway": list(refs), "engine": [refs[a] for a in refs], "hf": list(refs)}
    targets = [t for t in TARGETS if not ((skip_hf or not levels) and t == "hf")]
    runs: list[dict[str, Any]] = []
    overhead: list[dict[str, Any]] = []
    hf_cm = running_hf_server(adapters, logs) if "hf" in targets else None
    with running_engine(log_dir=logs) as engine, running_gateway(engine.base_url, registry, logs) as gw:
        urls = {"gateway": gw, "engine": engine.base_url}
        with hf_cm or contextlib.nullcontext() as hf:
            if hf:
                urls["hf"] = hf
            for t in targets:
                traffic.warm(urls[t], models[t], prompts[0])
            total = sum(_requests(t, lv, hf_requests) for t in targets for lv in levels) * repeats
            with progress() as bar:
                task = bar.add_task("serving", total=total)
                for rep in range(repeats):
                    for lv in levels:
                        order = targets[rep % len(targets):] + targets[:rep % len(targets)]
                        for t in order:
                            n = _requests(t, lv, hf_requests)
                            bodies = completion_bodies(prompts, models[t], n, max_tokens, offset=rep * 7 + lv)
                            bar.update(task, description=f"rep {rep + 1}/{repeats} c={lv} {t}")
                            la = loadavg()[0]
                            res, dur = asyncio.run(traffic.closed_loop(
                                f"{urls[t]}/v1/completions", bodies, lv,
                                on_done=lambda t=task: bar.advance(t)))
                            st = traffic.level_stats(res, lv, dur)
                            runs.append({"repeat": rep, "target": t, **st.as_dict(), "loadavg_before": la,
                                         "served_models": sorted({r.served_model or "?" for r in res})})
                            if st.failed:
                                log(f"[yellow]{t} c={lv}: {st.failed} failed: {st.errors}[/yellow]")
                    o = asyncio.run(_overhead_pairs(gw, engine.base_url, prompts, refs, overhead_pairs))
                    o["repeat"] = rep
                    overhead.append(o)
                    log(f"repeat {rep + 1}: gateway overhead: paired median {o['paired_median_ms']:.2f} ms, "
                        f"in-gateway p50 {o['in_gateway_p50_ms']:.2f} ms; load {loadavg()}")
    report = aggregate(runs, overhead, levels, targets)
    report.update(config={
        "levels": levels, "repeats": repeats, "max_tokens": max_tokens, "hf_requests_per_level": hf_requests,
        "engine_requests_per_level": "max(16, 2 x concurrency)",
        "adapters": {a: str(p) for a, p in adapters.items()},
        "adapter_recipe": "random peft LoRA, r=8, alpha=16, q/k/v/o_proj (training/ defaults)",
        "prompts": "64 MEDIQA-QS 2021 test questions, <= 300 chars, chat template",
        "overhead_pairs": overhead_pairs,
        "engine": "EngineSettings() defaults: max_loras 4, max_cpu_loras 8, max_lora_rank 16, prefix caching",
        "seconds": bench.seconds()}, runs=runs, overhead=overhead)
    return bench.finish(report, markdown, plot)


def aggregate(runs, overhead, levels, targets) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    for t in targets:
        for lv in levels:
            rs = [r for r in runs if r["target"] == t and r["concurrency"] == lv]
            table[f"{t}@{lv}"] = {
                "target": t, "concurrency": lv, "requests": rs[0]["requests"] if rs else 0,
                "failed": sum(r["failed"] for r in rs),
                **summaries(rs, ("req_per_s", "out_tok_per_s", "p50_ms", "p90_ms", "p99_ms")),
            }
    ratios: dict[str, Any] = {}
    reps = sorted({r["repeat"] for r in runs})

    def per_rep(t: str, lv: int, key: str) -> dict[int, float]:
        return {r["repeat"]: r[key] for r in runs if r["target"] == t and r["concurrency"] == lv}

    for lv in levels:
        gw, eng = per_rep("gateway", lv, "out_tok_per_s"), per_rep("engine", lv, "out_tok_per_s")
        ratios[f"gateway/engine@{lv}"] = summary(ratio(gw.get(i), eng.get(i)) for i in reps)
        gp, ep = per_rep("gateway", lv, "p50_ms"), per_rep("engine", lv, "p50_ms")
        ratios[f"p50 gateway-engine ms@{lv}"] = summary(
            gp[i] - ep[i] for i in reps if gp.get(i) is not None and ep.get(i) is not None)
        if "hf" in targets:
            hf = per_rep("hf", lv, "out_tok_per_s")
            ratios[f"gateway/hf@{lv}"] = summary(ratio(gw.get(i), hf.get(i)) for i in reps)
            ratios[f"engine/hf@{lv}"] = summary(ratio(eng.get(i), hf.get(i)) for i in reps)
    over = summaries(overhead, ("overhead_p50_ms", "paired_median_ms", "in_gateway_p50_ms",
                                "in_gateway_p90_ms"))
    top = max(levels) if levels else None
    targets_out = []
    if "hf" in targets and top:
        targets_out.append(target(
            f"gateway >= 10x transformers+peft throughput at concurrency {top}, 3 adapters",
            ratios[f"gateway/hf@{top}"]["median"], at_least=10))
    if top:
        targets_out.append(target(f"gateway >= 97% of direct-engine throughput (concurrency {top})",
                                  ratios[f"gateway/engine@{top}"]["median"], at_least=0.97))
    targets_out.append(target(
        "gateway p50 overhead <= 2 ms (in-gateway time of 1-token requests, concurrency 1)",
        over["in_gateway_p50_ms"]["median"], at_most=2.0,
        paired_median_ms=over["paired_median_ms"]["median"]))
    failed = sum(r["failed"] for r in runs)
    return {"table": table, "ratios": ratios, "overhead_summary": over, "targets": targets_out,
            "failed": failed}


def markdown(rep: dict[str, Any]) -> str:
    cfg = rep["config"]
    targets = [t for t in TARGETS if any(v["target"] == t for v in rep["table"].values())]
    details = [
        f"workload: {cfg['prompts']}; 3 adapters ({cfg['adapter_recipe']}) in turn; "
        f"{cfg['max_tokens']} output tokens per request (min = max, EOS ignored, greedy); "
        f"requests per level: engine and gateway {cfg['engine_requests_per_level']}, "
        f"transformers+peft {cfg['hf_requests_per_level']}",
        f"{cfg['repeats']} repeats, servers interleaved; figures are median (min–max) over repeats; "
        f"{rep['failed']} failed requests in all; {cfg['seconds']:.0f} s",
    ]
    rows = []
    for lv in cfg["levels"]:
        for t in targets:
            row = rep["table"][f"{t}@{lv}"]
            vs = rep["ratios"].get(f"{t}/hf@{lv}")
            rows.append([lv, LABELS[t], fmt_summary(row["req_per_s"], 2),
                         fmt_summary(row["out_tok_per_s"], 1),
                         *(fmt_summary(row[k], 0) for k in ("p50_ms", "p90_ms", "p99_ms")),
                         "1.00" if t == "hf" else (fmt_summary(vs, 1) + "x" if vs else "n/a")])
    lines = table(["concurrency", "server", "req/s", "output tok/s", "p50 ms", "p90 ms", "p99 ms",
                   "tok/s vs transformers+peft"], rows)
    rows = [[lv, fmt_summary(rep["ratios"][f"gateway/engine@{lv}"], 3),
             fmt_summary(rep["ratios"][f"p50 gateway-engine ms@{lv}"], 1)] for lv in cfg["levels"]]
    lines += ["", *table(["concurrency", "gateway / engine throughput", "gateway − engine p50 (ms)"], rows)]
    o, ov = rep["overhead"], rep["overhead_summary"]
    header = ["gateway p50 (ms)", "engine p50 (ms)", "p50 difference (ms)", "median paired difference (ms)",
              "in-gateway p50 (ms)", "in-gateway p90 (ms)"]
    row = [fmt_summary(summary(x["gateway_p50_ms"] for x in o), 1),
           fmt_summary(summary(x["engine_p50_ms"] for x in o), 1),
           *(fmt_summary(ov[k], 2)
             for k in ("overhead_p50_ms", "paired_median_ms", "in_gateway_p50_ms", "in_gateway_p90_ms"))]
    lines += ["", f"Gateway overhead: {cfg['overhead_pairs']} alternating 1-token request pairs per repeat "
              "at concurrency 1 (same prompt and adapter within a pair), median (min–max) over repeats:", "",
              *table(header, [row]), "",
              "In-gateway = the client's latency minus the gateway's X-BioInstruct-Latency-Ms (the time it "
              "waited on its engine call): the gateway's own work plus the extra loopback hop."]
    return document("Multi-adapter serving: gateway vs vLLM direct vs transformers+peft", rep, details, lines)


def plot(out: Path, rep: dict[str, Any]) -> list[str]:
    cfg = rep["config"]
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4))
    for t in TARGETS:
        rows = [rep["table"].get(f"{t}@{lv}") for lv in cfg["levels"]]
        if not rows or rows[0] is None:
            continue
        for ax, key, scale in ((axes[0], "out_tok_per_s", 1), (axes[1], "p50_ms", 1 / 1000)):
            med, err = errorbars([r[key] for r in rows], scale)
            ax.errorbar(cfg["levels"], med, yerr=err, marker="o", capsize=3, label=LABELS[t])
    axes[0].set_ylabel("output tokens / s")
    axes[1].set_ylabel("p50 latency (s)")
    for ax in axes:
        ax.set_xlabel("concurrency")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(f"3 adapters, {cfg['max_tokens']} output tokens; median and min–max of {cfg['repeats']} "
                 "repeats", fontsize=9)
    return save_figure(fig, out, "serving.png")


def command(
    concurrency: str = typer.Option("1,8,32", help="Concurrency levels"),
    repeats: int = typer.Option(3, min=1),
    max_tokens: int = typer.Option(32, min=1, help="Output tokens per request (fixed)"),
    hf_requests: int = typer.Option(16, min=1, help="Requests per level for the transformers+peft server"),
    overhead_pairs: int = typer.Option(60, min=2, help="1-token request pairs per repeat for the overhead"),
    skip_hf: bool = typer.Option(False, help="Leave out the transformers+peft server"),
    out: Path = typer.Option(None, help="Report folder (default reports/bench/serving-<time>)"),
) -> None:
    """Gateway vs vLLM direct vs transformers+peft, 3 adapters, concurrency 1/8/32."""
    levels = [int(x) for x in concurrency.split(",") if x.strip()]
    path = run(levels, repeats, max_tokens, hf_requests, overhead_pairs, skip_hf, out)
    print((path / "serving.md").read_text())


if __name__ == "__main__":
    typer.run(command)
