"""Run one task against the live API and write its report; resume an interrupted run; re-score.

A run lives in one folder: run.json (what was asked, including the task definition),
records.jsonl (one line per request, appended as answers come), items.jsonl (per-item
scores), report.json, report.md and the plots. Running again into the same folder resumes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioinstruct.eval.client import EvalClient, RequestItem, read_records
from bioinstruct.eval.judge import JudgeConfig, run_judge
from bioinstruct.eval.metrics import check_task_metrics, metric_spec
from bioinstruct.eval.report import (
    build_report,
    metric_context,
    metrics_from_context,
    score_items,
    write_run,
)
from bioinstruct.instruct.benchmark import TaskError, TaskSpec


@dataclass(kw_only=True)
class ApiOptions:
    """What every command that sends a task's items to the live API takes."""

    base_url: str
    api_key: str | None = None
    data_dir: Path | None = None
    out_dir: Path | None = None
    reports_root: Path | None = None
    progress: bool = True
    seed: int = 0
    command: str | None = None
    transport: Any = None  # an httpx transport (tests)


@dataclass(kw_only=True)
class ScoredOptions(ApiOptions):
    """A split of one task, scored: a run, or the gate's two runs."""

    task: TaskSpec
    split: str | None = None
    limit: int | None = None
    concurrency: int = 4
    n_boot: int = 1000
    plots: bool = True


@dataclass(kw_only=True)
class RunOptions(ScoredOptions):
    adapter: str | None = None
    rate: float | None = None
    judge: JudgeConfig | None = None
    max_retries: int = 6
    timeout_s: float = 900.0
    extra_config: dict[str, Any] = field(default_factory=dict)


def run_dir_name(task: str, adapter: str | None, suffix: str = "") -> str:
    label = re.sub(r"[^A-Za-z0-9@._-]+", "_", adapter or "default")
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{task}-{label}{suffix}"


def _config(opts: RunOptions, split: str) -> dict[str, Any]:
    return {
        "task": opts.task.name, "split": split, "adapter": opts.adapter, "base_url": opts.base_url,
        "limit": opts.limit, "concurrency": opts.concurrency, "rate": opts.rate,
        "data_dir": str(opts.data_dir) if opts.data_dir else None,
        "judge_model": opts.judge.model if opts.judge else None,
        "command": opts.command, **opts.extra_config,
    }


def _check_resume(run_dir: Path, task: TaskSpec, split: str, adapter: str | None) -> dict[str, Any] | None:
    path = run_dir / "run.json"
    if not path.is_file():
        return None
    prev = json.loads(path.read_text(encoding="utf-8"))
    mismatches = []
    if prev.get("task") != task.name:
        mismatches.append(f"task {prev.get('task')} != {task.name}")
    if prev.get("split") != split:
        mismatches.append(f"split {prev.get('split')} != {split}")
    if prev.get("adapter") != adapter:
        mismatches.append(f"adapter {prev.get('adapter')} != {adapter}")
    if prev.get("task_fingerprint") != task.fingerprint():
        mismatches.append("the task file changed since this run began")
    if mismatches:
        raise TaskError(f"{run_dir} holds another run ({'; '.join(mismatches)}); choose another --out")
    return prev


async def run_task(opts: RunOptions) -> Path:
    """Send the split's items, score, write the report; returns the run folder."""
    task = check_task_metrics(opts.task)
    split = opts.split or task.default_split
    docs = task.load(split, opts.data_dir, opts.limit)
    if opts.out_dir is not None:
        run_dir = opts.out_dir
    else:
        root = opts.reports_root or Path("reports")
        run_dir = root / run_dir_name(task.name, opts.adapter)
    run_dir.mkdir(parents=True, exist_ok=True)
    prev = _check_resume(run_dir, task, split, opts.adapter)
    config = _config(opts, split)
    run_json = {**config, "task_fingerprint": task.fingerprint(), "task_spec": task.model_dump(mode="json"),
                "started_at": (prev or {}).get("started_at") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "sessions": [*((prev or {}).get("sessions") or []), time.strftime("%Y-%m-%dT%H:%M:%S%z")]}
    (run_dir / "run.json").write_text(json.dumps(run_json, indent=2) + "\n", encoding="utf-8")

    items = [RequestItem(id=d.id, path=task.path, body=task.body(d, opts.adapter)) for d in docs]
    client = EvalClient(opts.base_url, api_key=opts.api_key, concurrency=opts.concurrency, rate=opts.rate,
                        max_retries=opts.max_retries, timeout_s=opts.timeout_s, seed=opts.seed,
                        transport=opts.transport)
    records = await client.run(items, run_dir / "records.jsonl", progress=opts.progress,
                               description=f"{task.name}/{split}")
    judge_scores = None
    if opts.judge is not None and any(_needs_judge(name) for name in task.scoring.metrics):
        judge_scores = await _judge(task, docs, records, opts.judge, run_dir, opts.progress)
    _write(task, split, config, docs, records, judge_scores, run_dir, opts.n_boot, opts.seed, opts.plots)
    return run_dir


def _needs_judge(name: str) -> bool:
    spec = metric_spec(name)
    return spec is not None and spec.needs_judge


async def _judge(task, docs, records, judge: JudgeConfig, run_dir: Path, progress: bool):
    from bioinstruct.instruct.benchmark import render

    triples = []
    for doc in docs:
        rec = records.get(doc.id)
        pred = task.prediction(doc, rec.response if rec is not None and rec.ok else None)
        if pred is None:
            continue
        source_t = task.scoring.judge_source or task.request.get("input") or task.request.get("question") or ""
        triples.append((doc.id, str(render(source_t, doc.fields)), task.gold(doc), pred))
    return await run_judge(judge, triples, run_dir / "judge.jsonl", task.scoring.judge_prompt, progress)


def _write(task, split, config, docs, records, judge_scores, run_dir, n_boot, seed, plots) -> dict[str, Any]:
    ctx = metric_context(task, docs)
    judged = [n for n in ctx["names"] if _needs_judge(n)]
    if judge_scores is None and len(judged) < len(ctx["names"]):
        ctx["names"] = [n for n in ctx["names"] if n not in judged]  # no judge configured
    metrics = metrics_from_context(ctx)
    rows = score_items(task, docs, records, metrics, judge_scores)
    report = build_report(task, split, config, docs, records, rows, ctx, n_boot=n_boot, seed=seed)
    write_run(run_dir, report, rows, plots=plots)
    return report


def rescore(run_dir: Path, data_dir: Path | None = None, *, n_boot: int = 1000, seed: int = 0,
            plots: bool = True) -> dict[str, Any]:
    """Write the report again from records.jsonl (and judge.jsonl), without sending anything."""
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    task = TaskSpec.model_validate(run["task_spec"])
    split = run["split"]
    docs = task.load(split, data_dir or (Path(run["data_dir"]) if run.get("data_dir") else None), run.get("limit"))
    records = read_records(run_dir / "records.jsonl")
    judge_scores = None
    if (run_dir / "judge.jsonl").is_file():
        from bioinstruct.eval.judge import parse_score

        judge_scores = {}
        for doc_id, rec in read_records(run_dir / "judge.jsonl").items():
            choices = (rec.response or {}).get("choices") or [{}]
            judge_scores[doc_id] = parse_score((choices[0].get("message") or {}).get("content") or "")
    config = {k: run.get(k) for k in ("task", "split", "adapter", "base_url", "limit", "concurrency", "rate",
                                      "data_dir", "judge_model", "command")}
    return _write(task, split, config, docs, records, judge_scores, run_dir, n_boot, seed, plots)
