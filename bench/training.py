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

from bioinstruct.bench.console import log
from bioinstruct.bench.machine import loadavg
from bioinstruct.bench.plots import bar_panels
from bioinstruct.bench.report import Comparison, document, fmt, fmt_summary, table, target
from bioinstruct.bench.stats import paired_ratio, summaries
from bioinstruct.settings import CoreSettings

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

    src = data or CoreSettings().home / "data" / "train" / "all.jsonl"
    if not src.is_file():
        raise typer.BadParameter(f"{src} not found: run `bioinstruct convert` first "
                                 "(it writes data/train/*.jsonl)")
    modes = modes or list(MODES)
    bench = Comparison("training", out, f"training throughput ({', '.join(modes)})")
    sample = sample_records(src, records, bench.out / "data" / "sample.jsonl")
    runs: list[dict[str, Any]] = []
    for rep in range(repeats):
        order = modes[rep % len(modes):] + modes[:rep % len(modes)]
        for mode in order:
            cfg = load_config("cpu-smollm2", {
                "batching": mode, "max_steps": steps, "eval_fraction": 0.0, "save_every": 0, "eval_every": 0,
                "num_threads": bench.machine["cores"], "warmup_ratio": 0.0,
            })
            job = TrainJob(config=cfg, data_files=[sample], category="ALL", name="bench-train", publish=False,
                           run_dir=bench.out / "runs" / f"{mode}-{rep}")
            la = loadavg()[0]
            t0 = time.monotonic()
            result = train(job, progress=True, log=lambda msg: None)
            wall = time.monotonic() - t0
            s = result.summary
            run = {"repeat": rep, "mode": mode, "loadavg_before": la, "wall_s": round(wall, 1),
                   "tokens": s["tokens"], "target_tokens": s["target_tokens"],
                   "train_time_s": s["train_time_s"], "tokens_per_s": s["tokens_per_s"],
                   "target_tokens_per_s": s["target_tokens"] / s["train_time_s"],
                   "padding_fraction": s["padding_fraction"], "train_loss": s["train_loss"]}
            runs.append(run)
            log(f"rep {rep + 1} {mode}: {run['tokens_per_s']:.0f} real tok/s, padding "
                f"{run['padding_fraction']:.1%}, {s['tokens']} tokens in {s['train_time_s']:.1f} s")
    rows = {mode: summaries([r for r in runs if r["mode"] == mode],
                            ("tokens_per_s", "target_tokens_per_s", "padding_fraction", "tokens",
                             "train_time_s"))
            for mode in modes}
    ratios = {f"{m}/naive": paired_ratio(runs, "tokens_per_s", "mode", m, "naive")
              for m in modes if m != "naive" and "naive" in modes}
    pack = ratios.get("pack/naive", {}).get("median")
    bucket = ratios.get("bucket/naive", {}).get("median")
    report = {
        "runs": runs, "rows": rows, "ratios": ratios,
        "config": {"steps": steps, "repeats": repeats, "records": records, "data": str(src),
                   "training_config": "cpu-smollm2 (r=8 q/k/v/o, batch 4 x accum 2, max_length 1024, fp32)",
                   "seconds": bench.seconds()},
        "targets": [target("packing >= 1.5x real tokens/s (vs naive batching)", pack, at_least=1.5,
                           bucket_vs_naive=bucket,
                           measured=f"{fmt(pack, 2)}x (bucketing: {fmt(bucket, 2)}x)")],
    }
    return bench.finish(report, markdown, plot)


def markdown(rep: dict[str, Any]) -> str:
    cfg = rep["config"]
    details = [
        f"`training.trainer.train`, config {cfg['training_config']}, {cfg['steps']} optimizer steps per run, "
        f"{cfg['records']} records sampled from {Path(cfg['data']).name}",
        f"{cfg['repeats']} repeats, modes interleaved; median (min–max); {cfg['seconds']:.0f} s",
    ]
    header = ["batching", "real tokens/s", "response tokens/s", "padding", "real tokens per run",
              "vs naive (paired)"]
    rows = [[mode, fmt_summary(row["tokens_per_s"], 0), fmt_summary(row["target_tokens_per_s"], 0),
             fmt_summary(row["padding_fraction"], 1, 100) + " %", fmt_summary(row["tokens"], 0),
             fmt_summary(vs, 2) + "x" if (vs := rep["ratios"].get(f"{mode}/naive")) else "1.00"]
            for mode, row in rep["rows"].items()]
    return document("Training throughput: real tokens/s by batching mode", rep, details, table(header, rows))


def plot(out: Path, rep: dict[str, Any]) -> list[str]:
    return bar_panels(rep["rows"], (("tokens_per_s", "real tokens / s", 1), ("padding_fraction", "padding (%)", 100)),
                      out, "training.png")


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
