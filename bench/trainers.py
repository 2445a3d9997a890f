"""Comparison 7: our training loop beside TRL's SFTTrainer, on one recipe (docs/TRAINING.md).

The same examples for both: the records are rendered and tokenized once by our loader
(`training.data.load_training_data`, the prompt format serving uses, byte for byte), and TRL gets
them already tokenized (`input_ids` + `completion_mask`, completion-only loss), so the two differ
only in what each trainer does with a batch. The same recipe: the shipped `ie` one (LoRA r=16,
alpha 32, dropout 0.05 on q/k/v/o, lr 5e-4 cosine, 5% warmup, batch 4 x accumulation 2, max_length
1024, fp32, seed 42), for a fixed number of optimizer steps; our loop batches by length buckets,
TRL with its length-grouped sampler (`train_sampling_strategy="group_by_length"`).

Each run is its own process (peak memory is that process's maximum RSS); backends take turns in
each repeat. Real tokens/s = non-padding tokens / time in training, as each trainer counts them.
Held-out loss: the mean response-token loss of each run's adapter on the same held-out examples,
computed by one function for both. The dev score of each adapter is measured through the live
API with `bioinstruct eval` (docs/TRAINING.md, "TRL side by side").

    bioinstruct bench trl               # or: python -m bioinstruct.bench.trainers
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

from bioinstruct.bench.console import log
from bioinstruct.bench.plots import bar_panels
from bioinstruct.bench.report import Comparison, document, fmt, fmt_summary, table, target
from bioinstruct.bench.stats import paired_ratio, summaries, summary
from bioinstruct.bench.training import sample_records
from bioinstruct.settings import CoreSettings

BACKENDS = ("ours", "trl")
RECIPE = {"rank": 16, "alpha": 32, "dropout": 0.05, "learning_rate": 5e-4, "schedule": "cosine", "warmup_ratio": 0.05,
          "batch_size": 4, "grad_accum": 2, "max_length": 1024, "seed": 42,
          "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def _config(steps: int, threads: int):
    from bioinstruct.training.config import load_config

    return load_config("cpu-smollm2", {
        **RECIPE, "epochs": 1, "max_steps": steps, "batching": "bucket", "save_every": 0, "eval_every": 0,
        "num_threads": threads,
    })


def _data(sample: Path, cfg):
    from transformers import AutoTokenizer

    from bioinstruct.training.data import load_training_data

    tok = AutoTokenizer.from_pretrained(CoreSettings().base_model_dir)
    data = load_training_data(tok, [sample], max_length=cfg.max_length, overlong=cfg.overlong,
                              eval_fraction=cfg.eval_fraction, eval_max_examples=cfg.eval_max_examples)
    return tok, data


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def train_ours(sample: Path, steps: int, out: Path, threads: int) -> dict[str, Any]:
    from bioinstruct.training.trainer import TrainJob, train

    job = TrainJob(config=_config(steps, threads), data_files=[sample], category="ALL", name="bench-trl-ours",
                   publish=False, run_dir=out)
    s = train(job, progress=False, log=lambda msg: None).summary
    return {"tokens": s["tokens"], "train_time_s": s["train_time_s"], "tokens_per_s": s["tokens_per_s"],
            "train_loss": s["train_loss"], "adapter": str(out / "adapter")}


def trl_args(cfg, steps: int, out: Path):
    """TRL's SFTConfig for the recipe: every setting that changes the work done set to ours."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out / "trl"), max_steps=steps, per_device_train_batch_size=RECIPE["batch_size"],
        gradient_accumulation_steps=RECIPE["grad_accum"], learning_rate=RECIPE["learning_rate"],
        lr_scheduler_type=RECIPE["schedule"], warmup_steps=RECIPE["warmup_ratio"], weight_decay=0.0,
        max_grad_norm=1.0, max_length=RECIPE["max_length"], completion_only_loss=True,
        train_sampling_strategy="group_by_length",
        seed=RECIPE["seed"], logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True,
        # TRL's own defaults differ from transformers' (gradient checkpointing on, bf16 on): set
        # both to the recipe's, or TRL pays for recomputation and slow CPU bf16 that ours does not.
        gradient_checkpointing=cfg.gradient_checkpointing, bf16=cfg.precision == "bf16", fp16=cfg.precision == "fp16",
    )


def train_trl(sample: Path, steps: int, out: Path, threads: int) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from bioinstruct.training.data import IGNORE_INDEX

    torch.set_num_threads(threads)
    cfg = _config(steps, threads)
    tok, data = _data(sample, cfg)
    rows = [{"input_ids": ex.input_ids, "completion_mask": [int(t != IGNORE_INDEX) for t in ex.labels]}
            for ex in data.train]
    model = AutoModelForCausalLM.from_pretrained(CoreSettings().base_model_dir, dtype=torch.float32)
    args = trl_args(cfg, steps, out)
    peft_config = LoraConfig(r=RECIPE["rank"], lora_alpha=RECIPE["alpha"], lora_dropout=RECIPE["dropout"],
                             target_modules=RECIPE["target_modules"], task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config)
    result = trainer.train()
    tokens = int(trainer._total_train_tokens)  # non-padding tokens (attention mask), TRL's own count
    seconds = float(result.metrics["train_runtime"])
    trainer.model.save_pretrained(out / "adapter")
    return {"tokens": tokens, "train_time_s": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "train_loss": round(float(result.training_loss), 4), "adapter": str(out / "adapter")}


def heldout_loss(adapter: Path, sample: Path, cfg, limit: int = 100) -> float:
    """Mean response-token loss of base + adapter on the loader's held-out examples (one function
    for every backend's adapter)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from bioinstruct.training.trainer import response_loss

    _, data = _data(sample, cfg)
    base = AutoModelForCausalLM.from_pretrained(CoreSettings().base_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in data.eval[:limit]:
            batch = {"input_ids": torch.tensor([ex.input_ids]),
                     "attention_mask": torch.ones(1, ex.length, dtype=torch.long),
                     "labels": torch.tensor([ex.labels])}
            loss, n = response_loss(model, batch)
            total, count = total + float(loss), count + n
    return round(total / max(count, 1), 4)


def _worker(backend: str, sample: Path, steps: int, out: Path, threads: int) -> dict[str, Any]:
    """One run in a fresh process, so that its peak memory is its own."""
    result_file = out / "result.json"
    cmd = [sys.executable, "-m", "bioinstruct.bench.trainers", "worker", backend, str(sample), str(steps), str(out),
           str(threads)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(result_file.read_text())
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


def run(steps: int = 40, repeats: int = 2, records: int = 1500, data: Path | None = None,
        backends: list[str] | None = None, out: Path | None = None) -> Path:
    src = data or CoreSettings().home / "data" / "train" / "ie.jsonl"
    if not src.is_file():
        raise typer.BadParameter(f"{src} not found: run `bioinstruct convert` first (it writes data/train/*.jsonl)")
    backends = backends or list(BACKENDS)
    bench = Comparison("trl", out, f"training loops side by side ({', '.join(backends)})")
    sample = sample_records(src, records, bench.out / "data" / "sample.jsonl")
    threads = bench.machine["cores"]
    cfg = _config(steps, threads)
    runs: list[dict[str, Any]] = []
    for rep in range(repeats):
        order = backends[rep % len(backends):] + backends[:rep % len(backends)]
        for backend in order:
            result = _worker(backend, sample, steps, bench.out / "runs" / f"{backend}-{rep}", threads)
            result["heldout_loss"] = heldout_loss(Path(result["adapter"]), sample, cfg)
            runs.append({"repeat": rep, "backend": backend, **result})
            log(f"rep {rep + 1} {backend}: {result['tokens_per_s']:.0f} real tok/s, "
                f"peak {result['peak_rss_mb']:.0f} MB, held-out loss {result['heldout_loss']:.3f}")
    keys = ("tokens_per_s", "peak_rss_mb", "heldout_loss", "train_loss", "tokens", "train_time_s")
    rows = {b: summaries([r for r in runs if r["backend"] == b], keys) for b in backends}
    ratios, loss_delta = {}, None
    if set(BACKENDS) <= set(backends):
        ratios = {k: paired_ratio(runs, k, "backend", "trl", "ours") for k in ("tokens_per_s", "peak_rss_mb")}
        by = {(r["repeat"], r["backend"]): r for r in runs}
        loss_delta = summary([by[(i, "trl")]["heldout_loss"] - by[(i, "ours")]["heldout_loss"] for i in range(repeats)])
    speed = ratios.get("tokens_per_s", {}).get("median")
    report = {
        "runs": runs, "rows": rows, "ratios": ratios, "heldout_loss_delta": loss_delta,
        "config": {"steps": steps, "repeats": repeats, "records": records, "data": str(src), "recipe": RECIPE,
                   "threads": threads, "seconds": bench.seconds()},
        "targets": [target("TRL reaches >= 0.95x our real tokens/s (the issue's rule for moving onto it)", speed,
                           at_least=0.95, measured=f"{fmt(speed, 2)}x")],
    }
    return bench.finish(report, markdown, plot)


def markdown(rep: dict[str, Any]) -> str:
    cfg = rep["config"]
    details = [
        f"recipe {json.dumps(cfg['recipe'])}, {cfg['steps']} optimizer steps per run, {cfg['records']} records "
        f"sampled from {Path(cfg['data']).name}, {cfg['threads']} threads",
        f"{cfg['repeats']} repeats, backends interleaved, each run its own process; median (min–max); "
        f"{cfg['seconds']:.0f} s",
    ]
    header = ["trainer", "real tokens/s", "peak RSS (MB)", "held-out loss", "train loss", "tokens per run"]
    rows = [[b, fmt_summary(row["tokens_per_s"], 0), fmt_summary(row["peak_rss_mb"], 0),
             fmt_summary(row["heldout_loss"], 3), fmt_summary(row["train_loss"], 3), fmt_summary(row["tokens"], 0)]
            for b, row in rep["rows"].items()]
    body = table(header, rows)
    if rep["ratios"]:
        r = rep["ratios"]
        body += ["", f"TRL / ours (paired by repeat): real tokens/s {fmt_summary(r['tokens_per_s'], 2)}x, "
                     f"peak memory {fmt_summary(r['peak_rss_mb'], 2)}x; held-out loss TRL − ours "
                     f"{fmt_summary(rep['heldout_loss_delta'], 3)}."]
    return document("Training loops side by side: ours and TRL's SFTTrainer", rep, details, body)


def plot(out: Path, rep: dict[str, Any]) -> list[str]:
    return bar_panels(rep["rows"], (("tokens_per_s", "real tokens / s", 1), ("peak_rss_mb", "peak RSS (MB)", 1),
                                    ("heldout_loss", "held-out loss", 1)), out, "trl.png")


def command(
    steps: int = typer.Option(40, min=1, help="Optimizer steps per run"),
    repeats: int = typer.Option(2, min=1),
    records: int = typer.Option(1500, min=16, help="Records sampled from the training data"),
    data: Path = typer.Option(None, help="Training JSONL (default data/train/ie.jsonl)"),
    backends: str = typer.Option(",".join(BACKENDS), help="Trainers to run"),
    out: Path = typer.Option(None, help="Report folder (default reports/bench/trl-<time>)"),
) -> None:
    """Our training loop and TRL's SFTTrainer on the same recipe and examples: real tokens/s, peak
    memory, held-out loss (the dev score of each adapter: `bioinstruct eval`, docs/TRAINING.md)."""
    path = run(steps, repeats, records, data, [b.strip() for b in backends.split(",") if b.strip()], out)
    print((path / "trl.md").read_text())


def _worker_main(backend: str, sample: str, steps: str, out: str, threads: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    fn = {"ours": train_ours, "trl": train_trl}[backend]
    result = fn(Path(sample), int(steps), out_dir, int(threads))
    result["peak_rss_mb"] = _peak_rss_mb()
    (out_dir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        _worker_main(*sys.argv[2:7])
    else:
        typer.run(command)
