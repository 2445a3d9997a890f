"""Comparison 5: training throughput in real (non-padding) tokens per second, by batching.

Runs the project's own training loop (`training.trainer.train`, the shipped cpu-smollm2
config: LoRA r=8 on q/k/v/o, batch 4 x grad_accum 2, max_length 1024, fp32, 2 threads)
for a fixed number of optimizer steps with each batching mode of `training/batching.py`:

- `naive`: shuffle and batch in order, pad to the longest of each batch (the baseline)
- `bucket`: length bucketing (the default)
- `pack`: several examples per row, position ids restarting per example

Data: a fixed random sample of the converted training records (data/train/all.jsonl,
written by `bioinstruct convert`): PubMedQA, BC5CDR, ChemProt, MeQSum; lengths vary a lot.
Modes take turns within each repeat. Real tokens/s = tokens of the examples (no padding)
/ time in optimizer steps, as the trainer counts them.

    bioinstruct bench training          # or: python -m bioinstruct.bench.training
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import typer
from bioinstruct.bench import common as C

MODES = ("naive", "bucket", "pack")


def sample_records(src: Path, n: int, dest: Path, seed: int = 0) -> Path:
    lines = [line for line in src.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(lines)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(lines[:n]) + "\n")
    return dest


def run(steps: int = 6, repeats: int = 3, records: int = 2000, data: Path | None = None,
        modes: list[str] | None = None, out: Path | None = None) -> Path:
    from bioinstruct.training.config import load_config
    from bioinstruct.training.trainer import TrainJob, train

    C.setup_env()
    out = C.run_dir("training", out)
    machine = C.machine_info()
    src = data or C.HOME / "data" / "train" / "all.jsonl"
    if not src.is_file():
        raise typer.BadParameter(f"{src} not found: run `bioinstruct convert` first (it writes data/train/*.jsonl)")
    sample = sample_records(src, records, out / "data" / "sample.jsonl")
    modes = modes or list(MODES)
    C.log(f"training throughput ({', '.join(modes)}) → {out}; load {machine['loadavg_start']}")
    runs: list[dict[str, Any]] = []
    t_start = time.time()
    for rep in range(repeats):
        order = modes[rep % len(modes):] + modes[:rep % len(modes)]
        for mode in order:
            cfg = load_config("cpu-smollm2", {
                "batching": mode, "max_steps": steps, "eval_fraction": 0.0, "save_every": 0, "eval_every": 0,
                "num_threads": machine["cores"], "warmup_ratio": 0.0,
            })
            job = TrainJob(config=cfg, data_files=[sample], category="ALL", name="bench-train", publish=False,
                           run_dir=out / "runs" / f"{mode}-{rep}")
            la = C.loadavg()[0]
            t0 = time.monotonic()
            result = train(job, progress=True, log=lambda msg: None)
            wall = time.monotonic() - t0
            s = result.summary
            run = {"repeat": rep, "mode": mode, "loadavg_before": la, "wall_s": round(wall, 1),
                   "tokens": s["tokens"], "target_tokens": s["target_tokens"], "train_time_s": s["train_time_s"],
                   "tokens_per_s": s["tokens_per_s"], "target_tokens_per_s": s["target_tokens"] / s["train_time_s"],
                   "padding_fraction": s["padding_fraction"], "train_loss": s["train_loss"]}
            runs.append(run)
            C.log(f"rep {rep + 1} {mode}: {run['tokens_per_s']:.0f} real tok/s, padding "
                  f"{run['padding_fraction']:.1%}, {s['tokens']} tokens in {s['train_time_s']:.1f} s")
    rows = {}
    for mode in modes:
        rs = [r for r in runs if r["mode"] == mode]
        rows[mode] = {k: C.summary([r[k] for r in rs]) for k in
                      ("tokens_per_s", "target_tokens_per_s", "padding_fraction", "tokens", "train_time_s")}

    def paired(a: str, b: str) -> dict[str, Any]:
        ra = {r["repeat"]: r["tokens_per_s"] for r in runs if r["mode"] == a}
        rb = {r["repeat"]: r["tokens_per_s"] for r in runs if r["mode"] == b}
        return C.summary([C.ratio(ra[i], rb[i]) for i in ra if i in rb])

    ratios = {f"{m}/naive": paired(m, "naive") for m in modes if m != "naive" and "naive" in modes}
    pack = ratios.get("pack/naive", {}).get("median")
    bucket = ratios.get("bucket/naive", {}).get("median")
    report = {
        "machine": machine, "command": C.current_command(), "runs": runs, "rows": rows, "ratios": ratios,
        "config": {"steps": steps, "repeats": repeats, "records": records, "data": str(src),
                   "training_config": "cpu-smollm2 (r=8 q/k/v/o, batch 4 x accum 2, max_length 1024, fp32)",
                   "seconds": round(time.time() - t_start, 1)},
        "targets": [{"target": "packing >= 1.5x real tokens/s (vs naive batching)", "value": pack,
                     "met": bool(pack and pack >= 1.5), "bucket_vs_naive": bucket}],
    }
    report["plots"] = plot(out, report)
    C.write_report(out, "training", report, markdown)
    C.log(f"done: {out / 'training.md'}")
    return out


def markdown(rep: dict[str, Any]) -> str:
    cfg, m = rep["config"], rep["machine"]
    lines = [
        "# Training throughput: real tokens/s by batching mode",
        "",
        f"- command: `{rep['command']}`",
        f"- machine: {C.machine_line(m)}",
        f"- `training.trainer.train`, config {cfg['training_config']}, {cfg['steps']} optimizer steps per run, "
        f"{cfg['records']} records sampled from {Path(cfg['data']).name}",
        f"- {cfg['repeats']} repeats, modes interleaved; median (min–max); {cfg['seconds']:.0f} s",
        "",
        "| batching | real tokens/s | response tokens/s | padding | real tokens per run | vs naive (paired) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, row in rep["rows"].items():
        vs = rep["ratios"].get(f"{mode}/naive")
        lines.append(f"| {mode} | {C.fmt_summary(row['tokens_per_s'], 0)} | {C.fmt_summary(row['target_tokens_per_s'], 0)} "
                     f"| {C.fmt_summary(row['padding_fraction'], 1, 100)} % | {C.fmt_summary(row['tokens'], 0)} | "
                     f"{C.fmt_summary(vs, 2) + 'x' if vs else '1.00'} |")
    lines += ["", "Targets:", ""]
    for t in rep["targets"]:
        lines.append(f"- {'MET' if t['met'] else 'NOT MET'}: {t['target']} — measured {C.fmt(t['value'], 2)}x "
                     f"(bucketing: {C.fmt(t.get('bucket_vs_naive'), 2)}x)")
    for p in rep.get("plots", []):
        lines += ["", f"![{p}]({p})"]
    return "\n".join(lines) + "\n"


def plot(out: Path, rep: dict[str, Any]) -> list[str]:
    plt = C.plt()
    rows = rep["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    names = list(rows)
    for ax, key, label, scale in ((axes[0], "tokens_per_s", "real tokens / s", 1),
                                  (axes[1], "padding_fraction", "padding (%)", 100)):
        med = [rows[n][key]["median"] * scale for n in names]
        lo = [(rows[n][key]["median"] - rows[n][key]["min"]) * scale for n in names]
        hi = [(rows[n][key]["max"] - rows[n][key]["median"]) * scale for n in names]
        ax.bar(names, med, yerr=[lo, hi], capsize=4)
        ax.set_ylabel(label)
    fig.tight_layout()
    fig.savefig(out / "training.png", dpi=110)
    plt.close(fig)
    return ["training.png"]


def command(
    steps: int = typer.Option(6, min=1, help="Optimizer steps per run"),
    repeats: int = typer.Option(3, min=1),
    records: int = typer.Option(2000, min=16, help="Records sampled from the training data"),
    data: Path = typer.Option(None, help="Training JSONL (default data/train/all.jsonl)"),
    modes: str = typer.Option(",".join(MODES), help="Batching modes"),
    out: Path = typer.Option(None, help="Report folder (default reports/bench/training-<time>)"),
) -> None:
    """Real tokens/s of the training loop with naive batching, bucketing and packing."""
    path = run(steps, repeats, records, data, [m.strip() for m in modes.split(",") if m.strip()], out)
    print((path / "training.md").read_text())


if __name__ == "__main__":
    typer.run(command)
