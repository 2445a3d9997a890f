"""Every comparison's report renders (Markdown and plots) from synthetic runs: the benchmarks
themselves start engines and take long, so their report code is checked here on made-up figures."""

from __future__ import annotations

import pytest

from bioinstruct.bench import adapters, coldstart, dedup_repeats, serving, swap, training
from bioinstruct.eval.client import Record

MACHINE = {"cores": 2, "cpu": "cpu", "memory_gib": 24.0, "versions": {"vllm": "0.32.0"}, "base_model": "m",
           "dtype": "float32", "loadavg_start": [1.0], "loadavg_end": [2.0]}


def _common(**config):
    return {"machine": MACHINE, "command": "bioinstruct bench x",
            "config": {"repeats": 2, "seconds": 12.0, **config}}


def serving_report():
    runs = [{"repeat": rep, "target": t, "concurrency": lv, "requests": 16, "failed": 0,
             "req_per_s": 1.0 + rep + lv, "out_tok_per_s": (30.0 if t == "hf" else 300.0) * lv + rep,
             "p50_ms": 100.0 * lv, "p90_ms": 150.0 * lv, "p99_ms": 200.0 * lv}
            for rep in (0, 1) for lv in (1, 8) for t in serving.TARGETS]
    overhead = [{"gateway_p50_ms": 10.0 + r, "engine_p50_ms": 8.0, "overhead_p50_ms": 2.0 + r,
                 "paired_median_ms": 1.9, "in_gateway_p50_ms": 1.5 + r, "in_gateway_p90_ms": 3.0}
                for r in (0, 1)]
    rep = serving.aggregate(runs, overhead, [1, 8], list(serving.TARGETS))
    rep.update(_common(levels=[1, 8], max_tokens=32, hf_requests_per_level=16, overhead_pairs=20,
                       engine_requests_per_level="max(16, 2 x concurrency)", adapter_recipe="r8",
                       prompts="64 questions"), runs=runs, overhead=overhead)
    return rep


def adapters_report():
    chosen = [c for c in adapters.CONFIGS if c.name in ("plain", "default", "stock_ops")]
    runs = [{"config": c.name, "workload": w, "repeat": rep, "failed": 0, "out_tok_per_s": 100.0 + i + rep,
             "req_per_s": 3.0, "p50_ms": 900.0, "p99_ms": 1200.0}
            for c in chosen for i, w in enumerate(c.workloads) for rep in (0, 1)]
    rep = adapters.aggregate(runs, chosen)
    rep.update(_common(configs=[{"name": c.name} for c in chosen], concurrency=32, requests=32,
                       max_tokens=32), runs=runs)
    return rep


def _record(n: int, sent: float, ok: bool = True) -> Record:
    return Record(id=str(n), path="/v1/completions", status=200 if ok else 429, ok=ok, started_at=sent,
                  sent_at=sent, latency_ms=250.0, total_ms=250.0, served_model="bench-a1@2" if ok else None)


def swap_report():
    swaps = [{"swap": k + 1, "how": how, "ref": f"bench-a1@{k + 2}", "t_publish": 100.0 + 10 * k,
              "call_s": 0.9,
              "to_first_routed_s": 1.1, "to_first_answer_s": 1.4, "p50_ratio": 1.1, "p99_ratio": 1.3,
              "before_p50_ms": 250.0, "during_p50_ms": 260.0, "before_p99_ms": 300.0, "during_p99_ms": 390.0}
             for k, how in enumerate(("admin", "registry"))]
    spread = {"median": 1.0, "min": 0.5, "max": 2.0}
    by_how = {how: {k: spread for k in swaps[0] if k.endswith(("_s", "_ms", "io"))}
              for how in ("admin", "registry")}
    rep = {**_common(concurrency=8, max_tokens=32, swaps_per_way=1, settle_s=10.0, before_s=10.0,
                     poll_interval_s=1.0),
           "swaps": swaps, "by_how": by_how, "requests": 40, "probes": 90, "failed": 1,
           "targets": [swap.target("publish-to-serving <= 1 s", 1.1, at_most=1.0)]}
    loads = [_record(i, 95.0 + i) for i in range(30)] + [_record(99, 110.0, ok=False)]
    return rep, loads, [_record(200 + i, 96.0 + i / 2) for i in range(40)]


def coldstart_report():
    runs = [{"repeat": rep, "way": w, "ready_s": 30.0 + 5 * i + rep, "stop_s": 1.0,
             "http_up_s": None if w == "engine" else 2.0}
            for rep in (0, 1) for i, w in enumerate(coldstart.WAYS)]
    rows = {w: coldstart.summaries([r for r in runs if r["way"] == w], ("ready_s", "http_up_s", "stop_s"))
            for w in coldstart.WAYS}
    return {**_common(make_command="make serve", stamp_fresh=False, aliases=3), "runs": runs, "rows": rows,
            "ratios": {f"{w}/engine": coldstart.paired_ratio(runs, "ready_s", "way", w, "engine")
                       for w in coldstart.GATEWAY_WAYS},
            "extra_s": {f"{w} - engine": {"median": 5.0, "min": 4.0, "max": 6.0}
                        for w in coldstart.GATEWAY_WAYS}}


def training_report():
    s = {"median": 300.0, "min": 280.0, "max": 320.0}
    rows = {m: {k: s for k in ("tokens_per_s", "target_tokens_per_s", "padding_fraction", "tokens")}
            for m in training.MODES}
    return {**_common(steps=3, records=2000, data="data/train/all.jsonl", training_config="cpu-smollm2"),
            "rows": rows, "ratios": {"pack/naive": {"median": 1.6, "min": 1.5, "max": 1.7}},
            "targets": [training.target("packing >= 1.5x", 1.6, at_least=1.5,
                                        measured="1.60x (bucketing: 1.20x)")]}


def dedup_report():
    s = {"median": 2.0, "min": 1.0, "max": 3.0}
    rows = [{"texts": n, "kept": n - 10, "pairs_scored": n * 50, "fast_s": s, "baseline_s": s, "speedup": s,
             "baseline": "measured" if n == 1000 else "extrapolated",
             "identical_decisions": [True, True] if n == 1000 else [None, None],
             "score_check": {"pairs": 20000, "bit_identical": 20000}} for n in (1000, 5000)]
    return {**_common(baseline_max=1000, sizes=[1000, 5000]), "rows": rows, "per_pair_us": s,
            "targets": [dedup_repeats.target("dedup >= 100x", 2.0, met=False, measured="2x")]}


@pytest.mark.parametrize("name,build,module,expected", [
    ("serving", serving_report, serving,
     ["| 8 | gateway (ours) |", "| 2.00 (1.50–2.50) | 3.00 (3.00–3.00) |", "in-gateway p50 (ms)"]),
    ("adapters", adapters_report, adapters, ["| default (", "Paired ratios", "| workload | speed-up |"]),
    ("coldstart", coldstart_report, coldstart,
     ["| bare vLLM engine (/health) |", "| make serve (/health/ready) |"]),
    ("training", training_report, training,
     ["| pack | 300 (280–320) |", "MET: packing >= 1.5x — measured 1.60x"]),
    ("dedup", dedup_report, dedup_repeats, ["| 5,000 | 4,990 |", "(extrapolated)", "NOT MET: dedup >= 100x"]),
])
def test_each_comparison_renders_its_report(tmp_path, name, build, module, expected):
    rep = build()
    rep["plots"] = module.plot(tmp_path, rep)
    assert rep["plots"] == [f"{name}.png"] and (tmp_path / f"{name}.png").stat().st_size > 1000
    md = module.markdown(rep)
    assert md.startswith("# ") and "- command: `bioinstruct bench x`" in md and f"![{name}.png]" in md
    for text in expected:
        assert text in md, text
    header, rule = [line for line in md.splitlines() if line.startswith("|")][:2]
    assert rule == "|" + "---|" * (header.count("|") - 1)


def test_swap_renders_its_report(tmp_path):
    rep, loads, probes = swap_report()
    rep["plots"] = swap.plot(tmp_path, rep, loads, probes)
    assert (tmp_path / "swap.png").is_file()
    md = swap.markdown(rep)
    assert "| 2 | registry | bench-a1@3 | 0.900 | 1.100 | 1.400 | 1.10 | 1.30 |" in md
    assert "| admin | 1.000 (0.500–2.000) |" in md and "NOT MET: publish-to-serving <= 1 s" in md
