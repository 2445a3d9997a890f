"""`bioinstruct eval ...` (benchmarks, reports, compare, gate) and `bioinstruct load` (the load test)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bioinstruct.eval.settings import EvalSettings, admin_token_from_env
from bioinstruct.instruct.benchmark import TaskError, load_task, task_files
from bioinstruct.instruct.prompts import TypeStrategy

console = Console(stderr=True)
out = Console()

eval_app = typer.Typer(
    help="Benchmarks through the live API: `bioinstruct eval --task pubmedqa --adapter base`; "
    "subcommands list, report, compare, gate, load.",
    invoke_without_command=True, add_completion=False,
)
load_app = typer.Typer(
    help="Load test: sweep concurrency or Poisson arrival rate over the task routes "
    "(`bioinstruct load --concurrency 1,2,4,8 --adapter base`).",
    invoke_without_command=True, add_completion=False,
)


def _settings() -> EvalSettings:
    return EvalSettings()


def _secret(value: str | None, fallback) -> str | None:
    if value:
        return value
    return fallback.get_secret_value() if fallback is not None else None


def _reports_root() -> Path:
    return _settings().reports_root()


def _tasks(names: list[str], tasks_dir: Path | None):
    extra = [tasks_dir] if tasks_dir else None
    if names == ["all"]:
        names = sorted(task_files(extra))
    from bioinstruct.eval.metrics import check_task_metrics

    try:
        return [check_task_metrics(load_task(n, extra)) for n in names]
    except TaskError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc


def _levels(text: str | None, cast) -> list | None:
    if not text:
        return None
    try:
        return [cast(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError as exc:
        raise typer.BadParameter(f"expected a comma-separated list of numbers, got {text!r}") from exc


def _print_scores(report: dict, run_dir: Path) -> None:
    from bioinstruct.eval.metrics import is_percent
    from bioinstruct.eval.report import fmt_score

    table = Table(title=f"{report['task']} ({report['split']}), adapter {report['adapter']}", title_justify="left")
    table.add_column("metric")
    table.add_column("score [95% CI]")
    table.add_column("N", justify="right")
    for name, s in report["scores"].items():
        table.add_row(name, fmt_score(s, percent=is_percent(name)), str(s["n"]))
    for items in report.get("breakdown", {}).values():
        for name, s in items.items():
            table.add_row(escape(f"  {name}"), fmt_score(s), str(s["n"]))
    out.print(table)
    sv = report["serving"]
    out.print(f"errors {sv['errors']}/{sv['requests']}  e2e p50 {sv['latency_ms']['e2e']['p50']} ms  "
              f"p99 {sv['latency_ms']['e2e']['p99']} ms  → {run_dir}")


@eval_app.callback()
def eval_main(
    ctx: typer.Context,
    task: list[str] = typer.Option(None, "--task", "-t", help="Task name (repeatable), a task YAML path, or 'all'"),
    adapter: str = typer.Option(None, help="base | an alias (qa) | name@version | auto; default: the route's default"),
    split: str = typer.Option(None, help="Split to run; default the task's default_split (test)"),
    limit: int = typer.Option(None, min=1, help="Only N items (quick runs): a fixed random sample, "
                              "the same every time; a larger N adds items"),
    base_url: str = typer.Option(None, help="Gateway URL (env BIOINSTRUCT_EVAL_BASE_URL, default http://127.0.0.1:8000)"),
    out_dir: Path = typer.Option(None, "--out", help="Run folder; an existing one is resumed. Default "
                                 "<home>/reports/<time>-<task>-<adapter>"),
    concurrency: int = typer.Option(4, min=1, help="Requests in flight (closed loop)"),
    rate: float = typer.Option(None, min=0.0, help="Poisson arrival rate (req/s) instead of a closed loop; "
                               "--concurrency still caps requests in flight"),
    data_dir: Path = typer.Option(None, help="Data folder (env BIOINSTRUCT_DATA_DIR, default ../shared/data)"),
    tasks_dir: Path = typer.Option(None, help="Extra folder of task YAML files (env BIOINSTRUCT_EVAL_TASKS_DIR)"),
    api_key: str = typer.Option(None, help="Bearer key for the gateway (env BIOINSTRUCT_EVAL_API_KEY)"),
    judge_url: str = typer.Option(None, help="LLM judge: OpenAI-compatible base URL ending in /v1 "
                                  "(env BIOINSTRUCT_EVAL_JUDGE_URL)"),
    judge_model: str = typer.Option(None, help="LLM judge model (env BIOINSTRUCT_EVAL_JUDGE_MODEL)"),
    judge_api_key: str = typer.Option(None, help="LLM judge key (env BIOINSTRUCT_EVAL_JUDGE_API_KEY)"),
    timeout: float = typer.Option(900.0, help="Seconds to wait for one answer"),
    max_retries: int = typer.Option(6, min=0, help="Retries of a request answered 429/503"),
    progress: bool = typer.Option(True, help="Show a progress bar"),
    plots: bool = typer.Option(True, help="Write PNG plots"),
) -> None:
    """Run benchmark tasks against the live API and write their reports."""
    if ctx.invoked_subcommand is not None:
        return
    if not task:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    from bioinstruct.eval.judge import JudgeConfig
    from bioinstruct.eval.provenance import current_command
    from bioinstruct.eval.runner import RunOptions, run_task
    from bioinstruct.settings import CoreSettings

    settings = _settings()
    specs = _tasks(list(task), tasks_dir)
    if out_dir is not None and len(specs) > 1:
        raise typer.BadParameter("--out names one run folder: give one --task with it")
    judge = None
    j_url, j_model = judge_url or settings.judge_url, judge_model or settings.judge_model
    if j_url and j_model:
        judge = JudgeConfig(url=j_url, model=j_model, api_key=_secret(judge_api_key, settings.judge_api_key))
    core = CoreSettings()
    failed = 0
    for spec in specs:
        opts = RunOptions(
            task=spec, base_url=base_url or settings.base_url, split=split, adapter=adapter, out_dir=out_dir,
            reports_root=settings.reports_root(core), limit=limit, concurrency=concurrency, rate=rate or None,
            data_dir=data_dir or core.data_dir, api_key=_secret(api_key, settings.api_key), judge=judge,
            progress=progress, max_retries=max_retries, timeout_s=timeout, command=current_command(),
            plots=plots,
        )
        try:
            run_dir = asyncio.run(run_task(opts))
        except TaskError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from exc
        report = json.loads((run_dir / "report.json").read_text())
        _print_scores(report, run_dir)
        failed += report["serving"]["errors"] == report["serving"]["requests"] and report["serving"]["requests"] > 0
    if failed:
        console.print("[red]every request of a run failed: is the service up at the base URL?[/red]")
        raise typer.Exit(1)


@eval_app.command("list")
def eval_list(tasks_dir: Path = typer.Option(None, help="Extra folder of task YAML files")) -> None:
    """List the tasks: route, splits and metrics."""
    from bioinstruct.eval.metrics import check_task_metrics

    table = Table()
    for col in ("task", "family", "route", "splits (default, dev)", "metrics"):
        table.add_column(col)
    for name, path in sorted(task_files([tasks_dir] if tasks_dir else None).items()):
        try:
            t = check_task_metrics(load_task(path))
        except TaskError as exc:
            table.add_row(name, "", "", "", f"[red]{escape(str(exc))}[/red]")
            continue
        splits = ", ".join(f"{s}({v.count or '?'})" for s, v in t.splits.items())
        table.add_row(name, t.family.value, t.route, f"{splits}; default {t.default_split}, dev {t.dev_split}",
                      ", ".join(t.scoring.metrics))
    out.print(table)


@eval_app.command("report")
def eval_report(
    run_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="A run folder"),
    data_dir: Path = typer.Option(None, help="Data folder, if not the run's"),
    plots: bool = typer.Option(True, help="Write PNG plots"),
) -> None:
    """Score a run again from its records (no requests) and rewrite report.json/.md and plots."""
    from bioinstruct.eval.runner import rescore

    try:
        report = rescore(run_dir, data_dir, plots=plots)
    except (TaskError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    _print_scores(report, run_dir)


@eval_app.command("compare")
def eval_compare(
    run_a: Path = typer.Argument(..., exists=True, file_okay=False, help="Baseline run (e.g. base)"),
    run_b: Path = typer.Argument(..., exists=True, file_okay=False, help="Run compared with it (e.g. adapter)"),
    metric: list[str] = typer.Option(None, help="Only these metrics (repeatable); default all"),
    resamples: int = typer.Option(1000, min=100, help="Bootstrap resamples"),
    seed: int = typer.Option(0),
    out_dir: Path = typer.Option(None, "--out", help="Also write compare.json/.md/.png here"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of Markdown"),
) -> None:
    """Paired bootstrap of B − A for every metric, over the items both runs answered."""
    from bioinstruct.eval.compare import CompareError, compare_markdown, compare_runs, write_compare

    try:
        result = compare_runs(run_a, run_b, n_boot=resamples, seed=seed, metrics=list(metric) if metric else None)
    except (CompareError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    if out_dir is not None:
        write_compare(out_dir, result)
    typer.echo(json.dumps(result, indent=2) if as_json else compare_markdown(result))


@eval_app.command("gate")
def eval_gate(
    alias: str = typer.Option(..., help="Alias to move (qa, ie, gen, ...)"),
    candidate: str = typer.Option(..., help="Candidate version: name@version, or a bare version number of the "
                                  "alias's current adapter"),
    task: str = typer.Option(..., help="Task whose dev split decides"),
    split: str = typer.Option(None, help="Split; default the task's dev_split"),
    min_delta: float = typer.Option(0.0, help="Required gain of the primary metric, as a fraction "
                                    "(0.01 = one point)"),
    require_significant: bool = typer.Option(False, help="Also require the paired 95% CI to exclude 0"),
    max_error_rate: float = typer.Option(0.02, help="Refuse to decide when a run has more errors than this"),
    dry_run: bool = typer.Option(False, help="Decide but do not move the alias"),
    base_url: str = typer.Option(None, help="Gateway URL (env BIOINSTRUCT_EVAL_BASE_URL)"),
    admin_token: str = typer.Option(None, help="Admin token (env BIOINSTRUCT_ADMIN_TOKEN)"),
    api_key: str = typer.Option(None, help="Bearer key for inference routes"),
    limit: int = typer.Option(None, min=1, help="Only N items of the split (a fixed random sample)"),
    concurrency: int = typer.Option(4, min=1),
    data_dir: Path = typer.Option(None),
    out_dir: Path = typer.Option(None, "--out"),
    progress: bool = typer.Option(True),
    plots: bool = typer.Option(True, help="Write PNG plots of both runs"),
) -> None:
    """Move ALIAS to CANDIDATE only if it beats the current version by MIN_DELTA on a dev split.

    Exit status: 0 promoted (or would be, with --dry-run, or nothing to do), 1 rejected, 2 error.
    """
    from bioinstruct.eval.gate import GateError, GateOptions, run_gate
    from bioinstruct.eval.provenance import current_command
    from bioinstruct.settings import CoreSettings

    settings = _settings()
    core = CoreSettings()
    spec = _tasks([task], None)[0]
    opts = GateOptions(
        alias=alias, candidate=candidate, task=spec, base_url=base_url or settings.base_url,
        admin_token=admin_token or admin_token_from_env(), split=split, min_delta=min_delta,
        require_significant=require_significant, max_error_rate=max_error_rate, dry_run=dry_run, out_dir=out_dir,
        reports_root=settings.reports_root(core), api_key=_secret(api_key, settings.api_key), limit=limit,
        concurrency=concurrency, data_dir=data_dir or core.data_dir, progress=progress, command=current_command(),
        plots=plots,
    )
    try:
        result = asyncio.run(run_gate(opts))
    except (GateError, TaskError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    colour = {"promoted": "green", "would_promote": "green", "noop": "yellow"}.get(result["decision"], "red")
    out.print(f"[{colour}]{result['decision']}[/{colour}]: {escape(result.get('reason', ''))}")
    if "delta" in result and result["delta"] is not None:
        out.print(f"{result['metric']}: {result['current']} {result['current_score']:.4f} → {result['candidate']} "
                  f"{result['candidate_score']:.4f} (Δ {result['delta']:+.4f}, 95% CI [{result['ci_low']:+.4f}, "
                  f"{result['ci_high']:+.4f}], N={result['n']})")
    out.print(f"→ {result.get('out')}")
    if result["decision"] in ("rejected", "aborted"):
        raise typer.Exit(1)
    if result["decision"] == "failed":
        raise typer.Exit(2)


def load_main(
    ctx: typer.Context,
    task: list[str] = typer.Option(None, "--task", "-t", help="Tasks whose items are sent, in turn (repeatable); "
                                   "default pubmedqa, bc5cdr, mediqa_qs (one per route)"),
    adapter: list[str] = typer.Option(None, help="Adapter(s); several are mixed request by request "
                                      "(e.g. --adapter base --adapter qa). Default: each route's default"),
    concurrency: str = typer.Option(None, help="Concurrency levels, e.g. 1,2,4,8 (closed loop)"),
    rate: str = typer.Option(None, help="Poisson arrival rates in req/s, e.g. 0.25,0.5,1 (open loop)"),
    max_concurrency: int = typer.Option(256, min=1, help="With --rate: cap on requests in flight"),
    num_requests: int = typer.Option(32, min=1, help="Requests per level"),
    stream: bool = typer.Option(None, "--stream/--no-stream", help="Stream /generate (TTFT, TPOT); default as "
                                "the task file says"),
    max_tokens: int = typer.Option(None, min=1, help="max_tokens for /extract and /generate requests"),
    slo_e2e_ms: float = typer.Option(None, help="Goodput target: end-to-end latency (ms)"),
    slo_ttft_ms: float = typer.Option(None, help="Goodput target: time to first token (ms)"),
    slo_tpot_ms: float = typer.Option(None, help="Goodput target: time per output token (ms)"),
    warmup: bool = typer.Option(True, help="One unmeasured request per task and adapter first"),
    base_url: str = typer.Option(None, help="Gateway URL (env BIOINSTRUCT_EVAL_BASE_URL)"),
    api_key: str = typer.Option(None),
    data_dir: Path = typer.Option(None),
    tasks_dir: Path = typer.Option(None),
    out_dir: Path = typer.Option(None, "--out"),
    seed: int = typer.Option(0),
    progress: bool = typer.Option(True),
) -> None:
    """Sweep load levels; report throughput, latency (e2e, TTFT, TPOT, ITL) and goodput per level."""
    if ctx.invoked_subcommand is not None:
        return
    from bioinstruct.eval.load import DEFAULT_TASKS, BenchOptions, run_bench
    from bioinstruct.eval.provenance import current_command
    from bioinstruct.settings import CoreSettings

    settings = _settings()
    core = CoreSettings()
    conc, rates = _levels(concurrency, int), _levels(rate, float)
    if conc and rates:
        raise typer.BadParameter("give --concurrency or --rate, not both")
    if not conc and not rates:
        conc = [1, 2, 4, 8]
    specs = _tasks(list(task) if task else DEFAULT_TASKS, tasks_dir)
    opts = BenchOptions(
        base_url=base_url or settings.base_url, tasks=specs, adapters=list(adapter) if adapter else [None],
        concurrencies=conc, rates=rates, max_concurrency=max_concurrency, num_requests=num_requests, stream=stream,
        max_tokens=max_tokens, slo_e2e_ms=slo_e2e_ms, slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, warmup=warmup,
        data_dir=data_dir or core.data_dir, api_key=_secret(api_key, settings.api_key), out_dir=out_dir,
        reports_root=settings.reports_root(core), seed=seed, progress=progress, command=current_command(),
    )
    try:
        run_dir = asyncio.run(run_bench(opts))
    except (TaskError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    typer.echo((run_dir / "bench.md").read_text())
    out.print(f"→ {run_dir}")


@eval_app.command("entity-types")
def eval_entity_types(
    split: str = typer.Option("dev", help="Split of bc5cdr and bc2gm (settings are chosen on dev)"),
    limit: int = typer.Option(150, min=1, help="Items per corpus (the task files' fixed random sample)"),
    adapter: str = typer.Option(None, help="base | an alias | name@version; default: the route's default"),
    base_url: str = typer.Option(None, help="Gateway URL (env BIOINSTRUCT_EVAL_BASE_URL)"),
    api_key: str = typer.Option(None, help="Bearer key for the gateway (env BIOINSTRUCT_EVAL_API_KEY)"),
    concurrency: int = typer.Option(4, min=1, help="Requests in flight"),
    data_dir: Path = typer.Option(None, help="Data folder (env BIOINSTRUCT_DATA_DIR)"),
    out_dir: Path = typer.Option(..., "--out", help="Writes entity_types.json, .md and .png here"),
    title: str = typer.Option("Entity types requested", help="Title of the Markdown report"),
    strategy: str = typer.Option(None, help="full | grouped | asked: each request's type_strategy "
                                 "(default: the gateway's BIOINSTRUCT_EXTRACT_TYPE_STRATEGY)"),
) -> None:
    """Per type, precision and recall with each subset of types requested (BC5CDR: Chemical,
    Disease; BC2GM: Gene), through /extract: does the service honour the types asked for?"""
    from rich.progress import Progress

    from bioinstruct.eval.entity_types import MATRIX, run_matrix, write

    if strategy is not None and strategy not in get_args(TypeStrategy):
        console.print(f"[red]error:[/red] --strategy {escape(strategy)} is not one of "
                      f"{', '.join(get_args(TypeStrategy))}")
        raise typer.Exit(2)

    settings = _settings()
    total = sum(len(spec["subsets"]) for spec in MATRIX.values())
    try:
        with Progress(console=console) as bar:
            job = bar.add_task("entity types", total=total)
            result = asyncio.run(run_matrix(
                base_url or settings.base_url, split=split, limit=limit, adapter=adapter, concurrency=concurrency,
                data_dir=data_dir, api_key=_secret(api_key, settings.api_key), strategy=strategy,
                progress=lambda what: bar.update(job, advance=1, description=what)))
    except TaskError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    paths = write(result, out_dir, title)
    typer.echo(paths[1].read_text())
    out.print(f"→ {out_dir}")


load_app.callback()(load_main)
eval_app.add_typer(load_app, name="load")


def register(app: typer.Typer) -> None:
    # `load` is its own name: `bench` belongs to the side-by-side suite (bench/cli.py).
    app.add_typer(eval_app, name="eval")
    app.add_typer(load_app, name="load")
