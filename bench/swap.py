"""Comparison 3: hot-swap under load.

The gateway (its own process, on its own engine) serves three aliases a1..a3 under a
steady closed-loop load; meanwhile a probe sends 1-token requests to a1 back to back (it
resolves when a swap takes effect to about one probe's latency). Then new versions of a1
are published, one at a time, two ways:

- `admin`: POST /admin/adapters with alias a1 (validate, load, warm, flip, then answer);
- `registry`: another process writes the new version and moves the alias in the registry
  (what `bioinstruct train --alias` does); the gateway notices on its next poll
  (BIOINSTRUCT_POLL_INTERVAL_S, default 1 s).

Per swap: publish → first request routed to the new version (start of the earliest
request answered by it), publish → its first answer, failed requests over the whole run
(must be 0), and latency of load requests during the swap vs the 10 s before it.

    bioinstruct bench swap              # or: python -m bioinstruct.bench.swap
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import typer

from bioinstruct.bench import traffic
from bioinstruct.bench.console import log
from bioinstruct.bench.loras import make_lora, next_version, publish, publish_adapters
from bioinstruct.bench.plots import pyplot, save_figure
from bioinstruct.bench.processes import ADMIN_TOKEN, running_engine, running_gateway
from bioinstruct.bench.prompts import completion_bodies, load_prompts
from bioinstruct.bench.report import Comparison, document, fmt, fmt_summary, table, target
from bioinstruct.bench.stats import ratio, summaries
from bioinstruct.eval.client import Record
from bioinstruct.eval.latency import percentile


async def _drive(gw: str, prompts: list[str], refs: dict[str, str], plan: list[str], concurrency: int,
                 max_tokens: int, registry: Path, publish_root: Path, settle_s: float, before_s: float,
                 seeds: list[int]) -> dict[str, Any]:
    loads: list[Record] = []
    probes: list[Record] = []
    stop = asyncio.Event()
    aliases = list(refs)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    url = f"{gw}/v1/completions"
    sender = traffic.client(concurrency + 2)

    async def load_worker(w: int, http: httpx.AsyncClient) -> None:
        i = w
        while not stop.is_set():
            alias = aliases[i % len(aliases)]
            body = completion_bodies(prompts, [alias], 1, max_tokens, offset=i)[0]
            loads.append(await sender.send(http, traffic.request(url, body, i, alias)))
            i += concurrency

    async def probe(http: httpx.AsyncClient) -> None:
        i = 0
        while not stop.is_set():
            body = {"model": "a1", "prompt": prompts[i % len(prompts)], "max_tokens": 1, "temperature": 0.0}
            probes.append(await sender.send(http, traffic.request(url, body, i, "probe")))
            i += 1

    swaps: list[dict[str, Any]] = []
    async with sender.connect() as http:
        tasks = [asyncio.create_task(load_worker(w, http)) for w in range(concurrency)]
        tasks.append(asyncio.create_task(probe(http)))
        await asyncio.sleep(before_s)
        for k, how in enumerate(plan):
            folder = make_lora(seeds[k])
            version = next_version(registry, "bench-a1")
            new_ref = f"bench-a1@{version}"
            if how == "admin":
                dest = publish_root / f"a1-v{version}"
                shutil.copytree(folder, dest)

                def call(dest: Path = dest) -> httpx.Response:
                    body = {"path": dest.name, "name": "bench-a1", "category": "GEN", "alias": "a1"}
                    return httpx.post(f"{gw}/admin/adapters", headers=headers, timeout=300, json=body)

                t_pub = time.time()
                r = await asyncio.to_thread(call)
                ok = r.status_code == 201
                detail = r.text[:300] if not ok else None
            else:
                t_pub = time.time()
                await asyncio.to_thread(publish, registry, folder, "bench-a1", "a1")
                ok, detail = True, None
            t_ret = time.time()
            first = first_end = None
            while time.time() < t_pub + 60:
                new = [x for x in loads + probes if x.ok and x.served_model == new_ref]
                if new:
                    first = min(new, key=lambda x: x.sent_at)
                    first_end = min(x.ended_at for x in new)
                    break
                await asyncio.sleep(0.02)
            swaps.append({
                "swap": k + 1, "how": how, "ref": new_ref, "publish_ok": ok, "detail": detail,
                "t_publish": t_pub, "call_s": t_ret - t_pub,
                "to_first_routed_s": (first.sent_at - t_pub) if first else None,
                "to_first_answer_s": (first_end - t_pub) if first_end else None,
                "first_is_probe": bool(first and first.meta.get("tag") == "probe"),
            })
            log(f"swap {k + 1} ({how}) → {new_ref}: publish call {t_ret - t_pub:.3f} s, first routed "
                f"{swaps[-1]['to_first_routed_s'] if first else 'never'}")
            await asyncio.sleep(settle_s)
        stop.set()
        await asyncio.gather(*tasks)
    return {"loads": loads, "probes": probes, "swaps": swaps}


def _window_stats(loads: list[Record], swap: dict[str, Any], before_s: float) -> dict[str, Any]:
    t0 = swap["t_publish"]
    t1 = t0 + max(swap["call_s"], swap["to_first_answer_s"] or 0)
    before = [r.latency_ms for r in loads if r.ok and r.sent_at >= t0 - before_s and r.ended_at < t0]
    during = [r.latency_ms for r in loads if r.ok and r.ended_at >= t0 and r.sent_at <= t1]
    out = {"before_n": len(before), "during_n": len(during)}
    for q in (50, 99):
        b, d = percentile(before, q), percentile(during, q)
        out.update({f"before_p{q}_ms": b, f"during_p{q}_ms": d, f"p{q}_ratio": ratio(d, b)})
    return out


def run(swaps_per_way: int = 3, concurrency: int = 8, max_tokens: int = 32, settle_s: float = 10.0,
        before_s: float = 10.0, poll_interval_s: float | None = None, out: Path | None = None) -> Path:
    bench = Comparison("swap", out, "hot-swap under load")
    prompts = load_prompts(64)
    adapters = {f"a{i}": make_lora(i) for i in (1, 2, 3)}
    seeds = [100 + k for k in range(2 * swaps_per_way)]
    for s in seeds:
        make_lora(s)
    registry, publish_root = bench.out / "registry", bench.out / "publish"
    publish_root.mkdir(parents=True, exist_ok=True)
    refs = publish_adapters(registry, adapters)
    plan = ["admin"] * swaps_per_way + ["registry"] * swaps_per_way
    extra = {"BIOINSTRUCT_POLL_INTERVAL_S": str(poll_interval_s)} if poll_interval_s else {}
    with running_engine(log_dir=bench.logs) as engine, \
            running_gateway(engine.base_url, registry, bench.logs, publish_root=publish_root, **extra) as gw:
        traffic.warm(gw, list(refs), prompts[0])
        result = asyncio.run(_drive(gw, prompts, refs, plan, concurrency, max_tokens, registry, publish_root,
                                    settle_s, before_s, seeds))
    loads, probes, swaps = result["loads"], result["probes"], result["swaps"]
    for sw in swaps:
        sw.update(_window_stats(loads, sw, before_s))
    failed = [r for r in loads + probes if not r.ok]
    by_how = {how: summaries([s for s in swaps if s["how"] == how],
                             ("call_s", "to_first_routed_s", "to_first_answer_s", "before_p50_ms",
                              "during_p50_ms", "before_p99_ms", "during_p99_ms", "p50_ratio", "p99_ratio"))
              for how in ("admin", "registry")}
    admin_routed = by_how["admin"]["to_first_routed_s"]["median"]
    worst = max((s["to_first_routed_s"] or 1e9) for s in swaps if s["how"] == "admin")
    report = {
        "swaps": swaps, "by_how": by_how, "requests": len(loads), "probes": len(probes),
        "failed": len(failed),
        "failed_examples": [f"{r.status} {r.error}" for r in failed[:5]],
        "config": {"swaps_per_way": swaps_per_way, "concurrency": concurrency, "max_tokens": max_tokens,
                   "settle_s": settle_s, "before_s": before_s,
                   "poll_interval_s": poll_interval_s or 1.0, "seconds": bench.seconds()},
        "targets": [
            target("publish-to-serving <= 1 s (admin publish, median of swaps)", admin_routed, at_most=1.0,
                   worst=worst),
            target("zero failed requests during swaps", len(failed), met=not failed),
        ],
    }
    return bench.finish(report, markdown, lambda out, rep: plot(out, rep, loads, probes))


def markdown(rep: dict[str, Any]) -> str:
    cfg = rep["config"]
    details = [
        f"load: gateway, 3 aliases in turn, closed loop at concurrency {cfg['concurrency']}, "
        f"{cfg['max_tokens']} output tokens; plus a probe of 1-token requests to a1 back to back; "
        f"{rep['requests']} load requests and {rep['probes']} probes in all, **{rep['failed']} failed**",
        f"{cfg['swaps_per_way']} swaps of alias a1 per way; registry poll interval "
        f"{cfg['poll_interval_s']} s; "
        f"{cfg['settle_s']} s between swaps; 'before' = load requests in the {cfg['before_s']} s before "
        "publish, 'during' = load requests running between publish and the first answer of the new version",
    ]
    header = ["way", "publish call (s)", "publish → first request routed to new version (s)",
              "publish → its answer (s)", "p50 before → during (ms)", "p99 before → during (ms)"]
    timing = ("call_s", "to_first_routed_s", "to_first_answer_s")
    rows = [[how, *(fmt_summary(s[k], 3) for k in timing),
             *(f"{fmt_summary(s[f'before_{p}_ms'], 0)} → {fmt_summary(s[f'during_{p}_ms'], 0)}"
               for p in ("p50", "p99"))] for how, s in rep["by_how"].items()]
    lines = table(header, rows)
    header = ["#", "way", "version", "call (s)", "first routed (s)", "first answer (s)",
              "p50 during / before", "p99 during / before"]
    rows = [[s["swap"], s["how"], s["ref"], fmt(s["call_s"], 3), fmt(s["to_first_routed_s"], 3),
             fmt(s["to_first_answer_s"], 3), fmt(s["p50_ratio"], 2), fmt(s["p99_ratio"], 2)]
            for s in rep["swaps"]]
    lines += ["", "Each swap:", "", *table(header, rows)]
    return document("Hot-swap under load", rep, details, lines)


def plot(out: Path, rep: dict[str, Any], loads: list[Record], probes: list[Record]) -> list[str]:
    if not loads:
        return []
    t0 = min(r.sent_at for r in loads + probes)
    fig, ax = pyplot().subplots(figsize=(11, 4))
    for rs, style, label in ((loads, {"s": 6}, "load requests (by finish time)"),
                             (probes, {"s": 4, "alpha": 0.5}, "1-token probes")):
        ok = [r for r in rs if r.ok]
        ax.scatter([r.ended_at - t0 for r in ok], [r.latency_ms / 1000 for r in ok], label=label, **style)
    bad = [r for r in loads + probes if not r.ok]
    if bad:
        ax.scatter([r.ended_at - t0 for r in bad], [r.latency_ms / 1000 for r in bad], s=20, marker="x",
                   color="red", label="failed")
    for s in rep["swaps"]:
        x = s["t_publish"] - t0
        ax.axvline(x, color="grey", ls="--", lw=0.8)
        ax.annotate(f"{s['how']} v{s['ref'].split('@')[1]}", (x, ax.get_ylim()[1] * 0.9), fontsize=7,
                    rotation=90)
    ax.set_xlabel("seconds")
    ax.set_ylabel("latency (s)")
    ax.legend(fontsize=8)
    return save_figure(fig, out, "swap.png")


def command(
    swaps: int = typer.Option(3, min=1, help="Swaps per way (admin API, registry write)"),
    concurrency: int = typer.Option(8, min=1),
    max_tokens: int = typer.Option(32, min=1),
    settle: float = typer.Option(10.0, help="Seconds between swaps"),
    poll_interval: float = typer.Option(None, help="Gateway registry poll interval "
                                        "(default: the gateway's, 1 s)"),
    out: Path = typer.Option(None, help="Report folder (default reports/bench/swap-<time>)"),
) -> None:
    """Publish new adapter versions under load: time to serving, failures, latency."""
    path = run(swaps, concurrency, max_tokens, settle, 10.0, poll_interval, out)
    print((path / "swap.md").read_text())


if __name__ == "__main__":
    typer.run(command)
