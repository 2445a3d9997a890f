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
from bioinstruct.bench import common as C


async def _drive(gw: str, prompts: list[str], refs: dict[str, str], plan: list[str], concurrency: int,
                 max_tokens: int, registry: Path, publish_root: Path, settle_s: float, before_s: float,
                 seeds: list[int]) -> dict[str, Any]:
    loads: list[C.Result] = []
    probes: list[C.Result] = []
    stop = asyncio.Event()
    aliases = list(refs)
    headers = {"Authorization": f"Bearer {C.ADMIN_TOKEN}"}
    url = f"{gw}/v1/completions"

    async def load_worker(w: int, s) -> None:
        i = w
        while not stop.is_set():
            body = C.completion_bodies(prompts, [aliases[i % len(aliases)]], 1, max_tokens, offset=i)[0]
            loads.append(await C.post_completion(s, url, body, tag=aliases[i % len(aliases)]))
            i += concurrency

    async def probe(s) -> None:
        i = 0
        while not stop.is_set():
            body = {"model": "a1", "prompt": prompts[i % len(prompts)], "max_tokens": 1, "temperature": 0.0}
            probes.append(await C.post_completion(s, url, body, tag="probe"))
            i += 1

    from bioinstruct.adapter_files import AdapterLimits
    from bioinstruct.model import inspect_base_model
    from bioinstruct.registry import Registry

    base = inspect_base_model(C.CoreSettings().base_model_dir)
    reg = Registry(registry)
    swaps: list[dict[str, Any]] = []
    async with C.session(concurrency + 2) as s:
        tasks = [asyncio.create_task(load_worker(w, s)) for w in range(concurrency)]
        tasks.append(asyncio.create_task(probe(s)))
        await asyncio.sleep(before_s)
        for k, how in enumerate(plan):
            folder = C.make_lora(seeds[k])
            version = len(reg.versions("bench-a1")) + 1
            new_ref = f"bench-a1@{version}"
            t_pub = time.perf_counter()
            if how == "admin":
                dest = publish_root / f"a1-v{version}"
                shutil.copytree(folder, dest)
                t_pub = time.perf_counter()

                def call(dest: Path = dest) -> httpx.Response:
                    return httpx.post(f"{gw}/admin/adapters", headers=headers, timeout=300,
                                      json={"path": dest.name, "name": "bench-a1", "category": "GEN", "alias": "a1"})

                r = await asyncio.to_thread(call)
                ok = r.status_code == 201
                detail = r.text[:300] if not ok else None
            else:
                def write(folder: Path = folder) -> None:
                    reg.publish(folder, name="bench-a1", category="GEN", base_fingerprint=base.fingerprint,
                                limits=AdapterLimits(base_hidden_size=base.hidden_size), alias="a1")

                await asyncio.to_thread(write)
                ok, detail = True, None
            t_ret = time.perf_counter()
            deadline = t_pub + 60
            first = first_end = None
            while time.perf_counter() < deadline:
                new = [x for x in loads + probes if x.ok and x.model == new_ref]
                if new:
                    first = min(new, key=lambda x: x.start)
                    first_end = min(x.end for x in new)
                    break
                await asyncio.sleep(0.02)
            swaps.append({
                "swap": k + 1, "how": how, "ref": new_ref, "publish_ok": ok, "detail": detail,
                "t_publish": t_pub, "call_s": t_ret - t_pub,
                "to_first_routed_s": (first.start - t_pub) if first else None,
                "to_first_answer_s": (first_end - t_pub) if first_end else None,
                "first_is_probe": bool(first and first.tag == "probe"),
            })
            C.log(f"swap {k + 1} ({how}) → {new_ref}: publish call {t_ret - t_pub:.3f} s, first routed "
                  f"{swaps[-1]['to_first_routed_s'] if first else 'never'}")
            await asyncio.sleep(settle_s)
        stop.set()
        await asyncio.gather(*tasks)
    return {"loads": loads, "probes": probes, "swaps": swaps}


def _window_stats(loads: list[C.Result], swap: dict[str, Any], before_s: float) -> dict[str, Any]:
    t0 = swap["t_publish"]
    t1 = t0 + max(swap["call_s"], swap["to_first_answer_s"] or 0)
    before = [r.latency * 1000 for r in loads if r.ok and r.start >= t0 - before_s and r.end < t0]
    during = [r.latency * 1000 for r in loads if r.ok and r.end >= t0 and r.start <= t1]
    return {"before_n": len(before), "during_n": len(during),
            "before_p50_ms": C.percentile(before, 50), "before_p99_ms": C.percentile(before, 99),
            "during_p50_ms": C.percentile(during, 50), "during_p99_ms": C.percentile(during, 99),
            "p50_ratio": C.ratio(C.percentile(during, 50), C.percentile(before, 50)),
            "p99_ratio": C.ratio(C.percentile(during, 99), C.percentile(before, 99))}


def run(swaps_per_way: int = 3, concurrency: int = 8, max_tokens: int = 32, settle_s: float = 10.0,
        before_s: float = 10.0, poll_interval_s: float | None = None, out: Path | None = None) -> Path:
    C.setup_env()
    out = C.run_dir("swap", out)
    logs = out / "logs"
    machine = C.machine_info()
    C.log(f"hot-swap under load → {out}; load {machine['loadavg_start']}")
    prompts = C.load_prompts(64)
    adapters = {f"a{i}": C.make_lora(i) for i in (1, 2, 3)}
    seeds = [100 + k for k in range(2 * swaps_per_way)]
    for s in seeds:
        C.make_lora(s)
    registry, publish_root = out / "registry", out / "publish"
    publish_root.mkdir(parents=True, exist_ok=True)
    refs = C.publish_adapters(registry, adapters)
    plan = ["admin"] * swaps_per_way + ["registry"] * swaps_per_way
    extra = {"BIOINSTRUCT_POLL_INTERVAL_S": str(poll_interval_s)} if poll_interval_s else {}
    t_start = time.time()
    with C.running_engine(log_dir=logs) as engine, \
            C.running_gateway(engine.base_url, registry, logs, publish_root=publish_root, **extra) as gw:
        C.warm(gw, list(refs), prompts[0])
        result = asyncio.run(_drive(gw, prompts, refs, plan, concurrency, max_tokens, registry, publish_root,
                                    settle_s, before_s, seeds))
    loads, probes, swaps = result["loads"], result["probes"], result["swaps"]
    for sw in swaps:
        sw.update(_window_stats(loads, sw, before_s))
    failed = [r for r in loads + probes if not r.ok]
    by_how = {}
    for how in ("admin", "registry"):
        ss = [s for s in swaps if s["how"] == how]
        by_how[how] = {k: C.summary([s[k] for s in ss]) for k in
                       ("call_s", "to_first_routed_s", "to_first_answer_s", "before_p50_ms", "during_p50_ms",
                        "before_p99_ms", "during_p99_ms", "p50_ratio", "p99_ratio")}
    admin_routed = by_how["admin"]["to_first_routed_s"]["median"]
    worst = max((s["to_first_routed_s"] or 1e9) for s in swaps if s["how"] == "admin")
    report = {
        "machine": machine, "command": C.current_command(), "swaps": swaps, "by_how": by_how,
        "requests": len(loads), "probes": len(probes), "failed": len(failed),
        "failed_examples": [f"{r.status} {r.error}" for r in failed[:5]],
        "config": {"swaps_per_way": swaps_per_way, "concurrency": concurrency, "max_tokens": max_tokens,
                   "settle_s": settle_s, "before_s": before_s,
                   "poll_interval_s": poll_interval_s or 1.0, "seconds": round(time.time() - t_start, 1)},
        "targets": [
            {"target": "publish-to-serving <= 1 s (admin publish, median of swaps)", "value": admin_routed,
             "met": bool(admin_routed is not None and admin_routed <= 1.0), "worst": worst},
            {"target": "zero failed requests during swaps", "value": len(failed), "met": not failed},
        ],
    }
    report["plots"] = plot(out, report, loads, probes)
    C.write_report(out, "swap", report, markdown)
    C.log(f"done: {out / 'swap.md'}")
    return out


def markdown(rep: dict[str, Any]) -> str:
    cfg, m = rep["config"], rep["machine"]
    lines = [
        "# Hot-swap under load",
        "",
        f"- command: `{rep['command']}`",
        f"- machine: {C.machine_line(m)}",
        f"- load: gateway, 3 aliases in turn, closed loop at concurrency {cfg['concurrency']}, {cfg['max_tokens']} "
        f"output tokens; plus a probe of 1-token requests to a1 back to back; {rep['requests']} load requests and "
        f"{rep['probes']} probes in all, **{rep['failed']} failed**",
        f"- {cfg['swaps_per_way']} swaps of alias a1 per way; registry poll interval {cfg['poll_interval_s']} s; "
        f"{cfg['settle_s']} s between swaps; 'before' = load requests in the {cfg['before_s']} s before publish, "
        f"'during' = load requests running between publish and the first answer of the new version",
        "",
        "| way | publish call (s) | publish → first request routed to new version (s) | publish → its answer (s) | "
        "p50 before → during (ms) | p99 before → during (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for how, s in rep["by_how"].items():
        lines.append(f"| {how} | {C.fmt_summary(s['call_s'], 3)} | {C.fmt_summary(s['to_first_routed_s'], 3)} | "
                     f"{C.fmt_summary(s['to_first_answer_s'], 3)} | {C.fmt_summary(s['before_p50_ms'], 0)} → "
                     f"{C.fmt_summary(s['during_p50_ms'], 0)} | {C.fmt_summary(s['before_p99_ms'], 0)} → "
                     f"{C.fmt_summary(s['during_p99_ms'], 0)} |")
    lines += ["", "Each swap:", "", "| # | way | version | call (s) | first routed (s) | first answer (s) | "
              "p50 during / before | p99 during / before |", "|---|---|---|---|---|---|---|---|"]
    for s in rep["swaps"]:
        lines.append(f"| {s['swap']} | {s['how']} | {s['ref']} | {C.fmt(s['call_s'], 3)} | "
                     f"{C.fmt(s['to_first_routed_s'], 3)} | {C.fmt(s['to_first_answer_s'], 3)} | "
                     f"{C.fmt(s['p50_ratio'], 2)} | {C.fmt(s['p99_ratio'], 2)} |")
    lines += ["", "Targets:", ""]
    for t in rep["targets"]:
        lines.append(f"- {'MET' if t['met'] else 'NOT MET'}: {t['target']} — measured {C.fmt(t['value'], 3)}")
    for p in rep.get("plots", []):
        lines += ["", f"![{p}]({p})"]
    return "\n".join(lines) + "\n"


def plot(out: Path, rep: dict[str, Any], loads: list[C.Result], probes: list[C.Result]) -> list[str]:
    plt = C.plt()
    if not loads:
        return []
    t0 = min(r.start for r in loads + probes)
    fig, ax = plt.subplots(figsize=(11, 4))
    ok = [r for r in loads if r.ok]
    ax.scatter([r.end - t0 for r in ok], [r.latency for r in ok], s=6, label="load requests (by finish time)")
    ax.scatter([r.end - t0 for r in probes if r.ok], [r.latency for r in probes if r.ok], s=4, alpha=0.5,
               label="1-token probes")
    bad = [r for r in loads + probes if not r.ok]
    if bad:
        ax.scatter([r.end - t0 for r in bad], [r.latency for r in bad], s=20, marker="x", color="red",
                   label="failed")
    for s in rep["swaps"]:
        x = s["t_publish"] - t0
        ax.axvline(x, color="grey", ls="--", lw=0.8)
        ax.annotate(f"{s['how']} v{s['ref'].split('@')[1]}", (x, ax.get_ylim()[1] * 0.9), fontsize=7, rotation=90)
    ax.set_xlabel("seconds")
    ax.set_ylabel("latency (s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "swap.png", dpi=110)
    plt.close(fig)
    return ["swap.png"]


def command(
    swaps: int = typer.Option(3, min=1, help="Swaps per way (admin API, registry write)"),
    concurrency: int = typer.Option(8, min=1),
    max_tokens: int = typer.Option(32, min=1),
    settle: float = typer.Option(10.0, help="Seconds between swaps"),
    poll_interval: float = typer.Option(None, help="Gateway registry poll interval (default: the gateway's, 1 s)"),
    out: Path = typer.Option(None, help="Report folder (default reports/bench/swap-<time>)"),
) -> None:
    """Publish new adapter versions under load: time to serving, failures, latency."""
    path = run(swaps, concurrency, max_tokens, settle, 10.0, poll_interval, out)
    print((path / "swap.md").read_text())


if __name__ == "__main__":
    typer.run(command)
