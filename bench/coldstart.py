"""Comparison 6: cold start, from the command to ready, with the model already converted.

Per repeat, in turn:
- `engine`: the bare vLLM engine with the gateway's settings (EngineProcess.start() →
  /health 200): the baseline;
- `serve`: `bioinstruct serve` → /health/ready 200 (engine healthy and every alias loaded);
- `make serve`: the README's command → /health/ready 200 (adds make and `bioinstruct model
  fetch`, which finds the converted model and returns).
The gateway runs with a registry of 3 aliases (3 rank-8 adapters to load and warm before it
says ready). Each is stopped with SIGTERM afterwards; the stop time is reported too.

    bioinstruct bench coldstart         # or: python -m bioinstruct.bench.coldstart
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import typer

from bioinstruct.bench.console import log
from bioinstruct.bench.loras import make_lora, publish_adapters
from bioinstruct.bench.machine import loadavg
from bioinstruct.bench.plots import pyplot, save_figure
from bioinstruct.bench.processes import (
    PY,
    engine_process,
    free_port,
    gateway_env,
    spawn,
    stop_group,
)
from bioinstruct.bench.report import Comparison, document, fmt_summary, table
from bioinstruct.bench.stats import paired_ratio, summaries, summary
from bioinstruct.settings import CoreSettings

WAYS = ("engine", "serve", "make serve")
GATEWAY_WAYS = WAYS[1:]


def _stamp_fresh(home: Path) -> bool:
    """True when `make serve` would not reinstall (.venv/.installed newer than pyproject.toml)."""
    r = subprocess.run(["make", "-q", "install"], cwd=home, capture_output=True)
    return r.returncode == 0


def _gateway_way(cmd: list[str], env: dict[str, str], port: int, log_path: Path,
                 timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    proc = spawn(cmd, log_path, env)
    live = None
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() - t0 < timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd} exited with {proc.returncode}; see {log_path}")
                try:
                    if live is None and client.get(f"{url}/health/live").status_code == 200:
                        live = time.monotonic() - t0
                    if client.get(f"{url}/health/ready").status_code == 200:
                        ready = time.monotonic() - t0
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            else:
                raise RuntimeError(f"not ready within {timeout} s; see {log_path}")
    finally:
        t1 = time.monotonic()
        stop_group(proc)
        stop = time.monotonic() - t1
    return {"ready_s": ready, "http_up_s": live, "stop_s": stop, "exit_code": proc.returncode}


def _engine_way(logs: Path, timeout: float) -> dict[str, Any]:
    proc = engine_process(log_dir=logs)
    proc.start()
    try:
        ready = proc.wait_healthy(timeout)
    finally:
        t1 = time.monotonic()
        code = proc.stop()
        stop = time.monotonic() - t1
    return {"ready_s": ready, "http_up_s": None, "stop_s": stop, "exit_code": code}


def run(repeats: int = 3, timeout: float = 600.0, out: Path | None = None) -> Path:
    bench = Comparison("coldstart", out, "cold start")
    home = CoreSettings().home
    registry = bench.out / "registry"
    publish_adapters(registry, {f"a{i}": make_lora(i) for i in (1, 2, 3)})
    fresh = _stamp_fresh(home)
    make_cmd = ["make", "serve"] if fresh else ["make", "-o", ".venv/.installed", "serve"]
    if not fresh:
        log("[yellow].venv/.installed is older than pyproject.toml: timing `make -o .venv/.installed serve` "
            "(a plain `make serve` would reinstall first)[/yellow]")
    runs: list[dict[str, Any]] = []
    for rep in range(repeats):
        for way in list(WAYS[rep % 3:] + WAYS[:rep % 3]):
            la = loadavg()[0]
            if way == "engine":
                res = _engine_way(bench.logs, timeout)
            else:
                port = free_port()
                env = gateway_env(None, registry, BIOINSTRUCT_PORT=str(port))
                if way == "serve":
                    cmd = [str(home / ".venv" / "bin" / "bioinstruct"), "serve", "--port", str(port)]
                    if not Path(cmd[0]).is_file():
                        cmd = [PY, "-m", "bioinstruct.cli", "serve", "--port", str(port)]
                else:
                    cmd = [*make_cmd, f"PORT={port}"]
                res = _gateway_way(cmd, env, port, bench.logs / f"{way.replace(' ', '-')}-{rep}.log", timeout)
            runs.append({"repeat": rep, "way": way, "loadavg_before": la, **res})
            log(f"rep {rep + 1} {way}: ready in {res['ready_s']:.1f} s (stop {res['stop_s']:.1f} s, "
                f"exit {res['exit_code']})")
    rows = {w: summaries([r for r in runs if r["way"] == w], ("ready_s", "http_up_s", "stop_s"))
            for w in WAYS}
    report = {
        "runs": runs, "rows": rows,
        "ratios": {f"{w}/engine": paired_ratio(runs, "ready_s", "way", w, "engine") for w in GATEWAY_WAYS},
        "extra_s": {f"{w} - engine": summary(r["ready_s"] - e["ready_s"] for r in runs if r["way"] == w
                                             for e in runs if e["way"] == "engine"
                                             and e["repeat"] == r["repeat"])
                    for w in GATEWAY_WAYS},
        "config": {"repeats": repeats, "make_command": " ".join(make_cmd), "stamp_fresh": fresh,
                   "aliases": 3, "seconds": bench.seconds()},
    }
    return bench.finish(report, markdown, plot)


def markdown(rep: dict[str, Any]) -> str:
    cfg = rep["config"]
    details = [
        f"gateway registry: {cfg['aliases']} aliases (rank-8 adapters loaded and warmed before ready); "
        f"make command: `{cfg['make_command']} PORT=...`"
        + ("" if cfg["stamp_fresh"] else " (the install stamp was older than pyproject.toml; `-o` skips the "
                                         "reinstall a plain `make serve` would do first)"),
        f"{cfg['repeats']} repeats, ways interleaved; median (min–max); {cfg['seconds']:.0f} s",
    ]
    rows = []
    for w, row in rep["rows"].items():
        ratio = rep["ratios"].get(f"{w}/engine")
        extra = rep["extra_s"].get(f"{w} - engine")
        rows.append(["bare vLLM engine (/health)" if w == "engine" else w + " (/health/ready)",
                     fmt_summary(row["ready_s"], 1), fmt_summary(row["http_up_s"], 1),
                     fmt_summary(ratio, 2) + "x" if ratio else "1.00",
                     fmt_summary(extra, 1) if extra else "—", fmt_summary(row["stop_s"], 1)])
    header = ["way", "to ready (s)", "HTTP up (s)", "vs bare engine", "extra over engine (s)",
              "stop on SIGTERM (s)"]
    return document("Cold start: command → ready (model already converted)", rep, details,
                    table(header, rows))


def plot(out: Path, rep: dict[str, Any]) -> list[str]:
    fig, ax = pyplot().subplots(figsize=(6, 3.2))
    for i, w in enumerate(WAYS):
        xs = [r["ready_s"] for r in rep["runs"] if r["way"] == w]
        ax.scatter(xs, [i] * len(xs))
        ax.plot([rep["rows"][w]["ready_s"]["median"]] * 2, [i - 0.3, i + 0.3], color="black")
    ax.set_yticks(range(len(WAYS)), WAYS)
    ax.set_xlabel("seconds to ready")
    ax.set_xlim(left=0)
    return save_figure(fig, out, "coldstart.png")


def command(
    repeats: int = typer.Option(3, min=1),
    timeout: float = typer.Option(600.0, help="Seconds to wait for ready"),
    out: Path = typer.Option(None, help="Report folder (default reports/bench/coldstart-<time>)"),
) -> None:
    """Time from `make serve` / `bioinstruct serve` to ready, vs the bare vLLM engine."""
    path = run(repeats, timeout, out)
    print((path / "coldstart.md").read_text())


if __name__ == "__main__":
    typer.run(command)
