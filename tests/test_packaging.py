"""The installed distribution has one top-level package: the repository's folders (service/,
eval/, ...) install as bioinstruct.service, bioinstruct.eval, ..., with their data files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_one_top_level_package_with_its_data(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           str(ROOT), "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("bioinstruct-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"bioinstruct"}
    for package in ("service", "service/routes", "eval", "training", "generation", "generation/converters",
                    "seeds", "instruct", "bench", "vllm_plugin", "data"):
        assert f"bioinstruct/{package}/__init__.py" in names, package
    for data in ("instruct/benchmarks/pubmedqa.yaml", "seeds/seed_tasks.jsonl", "training/configs/cpu-smollm2.yaml",
                 "data/sources.yaml"):
        assert f"bioinstruct/{data}" in names, data
