"""`bioinstruct bench trl` as documented, at its smallest: both trainers run on the same examples
in their own processes, each adapter is a real peft folder, and the report carries the ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_both_trainers_on_one_recipe(tmp_path, data_dir):
    from bioinstruct.generation.converters import convert_bc5cdr
    from bioinstruct.generation.store import write_records

    data = tmp_path / "ie.jsonl"
    write_records(data, convert_bc5cdr(data_dir)[:120])
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "bioinstruct.cli", "bench", "trl", "--steps", "2", "--repeats", "1",
                           "--records", "120", "--data", str(data), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "trl.json").read_text())
    runs = {r["backend"]: r for r in report["runs"]}
    assert set(runs) == {"ours", "trl"}
    for run in runs.values():
        assert run["tokens"] > 0 and run["tokens_per_s"] > 0 and run["peak_rss_mb"] > 100
        assert 0 < run["heldout_loss"] < 10
        config = json.loads((Path(run["adapter"]) / "adapter_config.json").read_text())
        assert config["r"] == 16 and sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert report["ratios"]["tokens_per_s"]["median"] > 0
    assert "TRL / ours" in (out / "trl.md").read_text() and (out / "trl.png").is_file()


def test_trl_runs_the_recipe_not_its_own_defaults(tmp_path):
    """SFTConfig turns gradient checkpointing and bf16 on by default; the recipe (fp32, no
    checkpointing on this CPU) must win, or TRL is timed doing other work than ours."""
    from bioinstruct.bench.trainers import RECIPE, _config, trl_args

    cfg = _config(3, 2)
    args = trl_args(cfg, 3, tmp_path)
    assert cfg.precision == "fp32" and not cfg.gradient_checkpointing
    assert args.gradient_checkpointing is False and args.bf16 is False and args.fp16 is False
    assert (args.max_steps, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (
        3, RECIPE["batch_size"], RECIPE["grad_accum"])
    assert args.learning_rate == RECIPE["learning_rate"] and args.max_length == RECIPE["max_length"]
    assert args.completion_only_loss is True
