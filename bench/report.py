"""Where a comparison's results go: its run folder, the console log, and its report (JSON +
Markdown + PNG plots) in one shape for every comparison: title, command, machine, what was run,
the tables, the targets (MET / NOT MET with the measured figure), the plots.

    run = Comparison("serving", out, "serving comparison")  # folder, machine facts, log line
    ...
    return run.finish(report, markdown, plot)                 # serving.json, serving.md, plots
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bioinstruct.bench.console import log
from bioinstruct.bench.machine import loadavg, machine_info, machine_line
from bioinstruct.eval.provenance import current_command
from bioinstruct.settings import CoreSettings, apply_offline_env


def run_dir(name: str, out: Path | None = None) -> Path:
    path = out or CoreSettings().home / "reports" / "bench" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Comparison:
    """One run of a comparison: its folder (logs/ inside), the machine at the start, the clock."""

    def __init__(self, name: str, out: Path | None, what: str) -> None:
        apply_offline_env()
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.name = name
        self.out = run_dir(name, out)
        self.logs = self.out / "logs"
        self.machine = machine_info()
        self.started = time.time()
        log(f"{what} → {self.out}; load average {self.machine['loadavg_start']}")

    def seconds(self) -> float:
        return round(time.time() - self.started, 1)

    def finish(self, report: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
               plot: Callable[[Path, dict[str, Any]], list[str]] | None = None) -> Path:
        """Write <name>.json and <name>.md (and the plots) with the machine and the command."""
        report.setdefault("machine", self.machine)["loadavg_end"] = loadavg()
        report.setdefault("command", current_command())
        report["plots"] = plot(self.out, report) if plot else []
        (self.out / f"{self.name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n",
                                                    encoding="utf-8")
        (self.out / f"{self.name}.md").write_text(markdown(report), encoding="utf-8")
        log(f"done: {self.out / f'{self.name}.md'}")
        return self.out


# ---- Markdown ---------------------------------------------------------------------------------

def fmt(x: float | None, nd: int = 2, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:,.{nd}f}{unit}"


def fmt_summary(s: dict[str, Any] | None, nd: int = 2, scale: float = 1.0) -> str:
    """`median (min–max)`."""
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median'] * scale:,.{nd}f} ({s['min'] * scale:,.{nd}f}–{s['max'] * scale:,.{nd}f})"


def target(text: str, value: float | None, *, at_least: float | None = None, at_most: float | None = None,
           met: bool | None = None, measured: str | None = None, **extra: Any) -> dict[str, Any]:
    """A target of BENCHMARKS.md and whether the measured value meets it (None never does)."""
    if met is None:
        met = (value is not None and (at_least is None or value >= at_least)
               and (at_most is None or value <= at_most))
    out = {"target": text, "value": value, "met": bool(met), **extra}
    if measured is not None:
        out["measured"] = measured
    return out


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table: the header, its rule, one line per row of cells."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def document(title: str, rep: dict[str, Any], details: Sequence[str], body: Sequence[str]) -> str:
    """A comparison's Markdown: title, command, machine, details (bullets), body, targets, plots."""
    lines = [f"# {title}", "", f"- command: `{rep['command']}`", f"- machine: {machine_line(rep['machine'])}",
             *(f"- {d}" for d in details), "", *body]
    if rep.get("targets"):
        lines += ["", "Targets:", ""]
        for t in rep["targets"]:
            measured = t.get("measured") or fmt(t["value"], 3)
            lines.append(f"- {'MET' if t['met'] else 'NOT MET'}: {t['target']} — measured {measured}")
    for p in rep.get("plots", []):
        lines += ["", f"![{p}]({p})"]
    return "\n".join(lines) + "\n"
