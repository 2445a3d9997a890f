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
