"""`bioinstruct train` (one adapter) and `bioinstruct train-all` (QA, IE, GEN and ALL)."""

from __future__ import annotations

import functools
import inspect
import json
import time
from pathlib import Path
from typing import Any

import typer

from bioinstruct.registry import CATEGORIES
from bioinstruct.settings import core_settings

TRAIN_ALL_DEFAULT = ("QA", "IE", "GEN", "ALL")

# Options shared by both commands (None = take the config file's value).
CONFIG = typer.Option(None, "--config", "-c", help=(
    "YAML file, or a packaged config: cpu-smollm2 (default), gpu-llama2-7b"))
BASE_MODEL = typer.Option(None, "--base-model", help=(
    "Local Hugging Face model folder (default: BIOINSTRUCT_BASE_MODEL or the embedded SmolLM2)"))
RANK = typer.Option(None, "--rank", help="LoRA rank r")
ALPHA = typer.Option(None, "--alpha", help="LoRA alpha")
DROPOUT = typer.Option(None, "--dropout", help="LoRA dropout")
TARGETS = typer.Option(None, "--target-modules", help="Comma-separated module names (q_proj,v_proj) or all-linear")
LR = typer.Option(None, "--lr", help="Peak learning rate")
SCHEDULE = typer.Option(None, "--schedule", help="cosine, linear or constant")
EPOCHS = typer.Option(None, "--epochs", help="Epochs (may be fractional)")
MAX_STEPS = typer.Option(None, "--max-steps", help="Optimizer steps (overrides --epochs)")
BATCH = typer.Option(None, "--batch-size", help="Sequences per micro-batch per process")
ACCUM = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step")
MAX_LEN = typer.Option(None, "--max-length", help="Tokens per sequence")
BATCHING = typer.Option(None, "--batching", help="bucket (length bucketing), pack (several examples per row) or naive")
SEED = typer.Option(None, "--seed")
SAVE_EVERY = typer.Option(None, "--save-every", help="Checkpoint every N steps (0: only at the end)")
EVAL_EVERY = typer.Option(None, "--eval-every", help="Held-out eval loss every N steps (0: only at the end)")
PRECISION = typer.Option(None, "--precision", help="fp32, bf16 or fp16")
GRAD_CKPT = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing")
EXCLUDE = typer.Option(None, "--exclude-ids-file", help="Ids never trained on (e.g. the eval harness's dev part)")
THREADS = typer.Option(None, "--num-threads", help="torch CPU threads")
PUBLISH = typer.Option(True, "--publish/--no-publish", help="Publish the finished adapter to the registry")
REGISTRY = typer.Option(None, "--registry", help=(
    "Registry root or fsspec URL (default BIOINSTRUCT_REGISTRY or <home>/registry)"))
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar")
FORMAT = typer.Option(None, "--format", help=(
    "How data files are read: auto (detected per file, the default), bioinstruct, prompt-completion, "
    "messages or alpaca (docs/TRAINING.md, Data formats)"))


def _overrides(**kw: Any) -> dict[str, Any]:
    mapping = {"lr": "learning_rate"}
    out = {mapping.get(k, k): v for k, v in kw.items() if v is not None}
    if isinstance(out.get("target_modules"), str):
        value = out["target_modules"].strip()
        out["target_modules"] = value if value == "all-linear" else [m for m in value.split(",") if m.strip()]
    return out


# The recipe options both commands take: name -> (type, option). One list, so `train` and
# `train-all` cannot drift apart; the command receives them loaded as `cfg`.
RECIPE_OPTIONS: dict[str, tuple[type, Any]] = {
    "config": (str, CONFIG), "base_model": (Path, BASE_MODEL), "rank": (int, RANK), "alpha": (float, ALPHA),
    "dropout": (float, DROPOUT), "target_modules": (str, TARGETS), "lr": (float, LR), "schedule": (str, SCHEDULE),
    "epochs": (float, EPOCHS), "max_steps": (int, MAX_STEPS), "batch_size": (int, BATCH), "grad_accum": (int, ACCUM),
    "max_length": (int, MAX_LEN), "batching": (str, BATCHING), "seed": (int, SEED), "save_every": (int, SAVE_EVERY),
    "eval_every": (int, EVAL_EVERY), "precision": (str, PRECISION), "gradient_checkpointing": (bool, GRAD_CKPT),
    "exclude_ids_file": (Path, EXCLUDE), "num_threads": (int, THREADS), "data_format": (str, FORMAT),
}


def with_recipe_options(command):
    """Add RECIPE_OPTIONS to a typer command's options and call it with `cfg=` the TrainConfig
    they make (the config file, overridden by every option given)."""
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "cfg"]
    recipe = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
              for name, (kind, option) in RECIPE_OPTIONS.items()]

    @functools.wraps(command)
    def run(**kwargs: Any) -> None:
        options = {name: kwargs.pop(name) for name in RECIPE_OPTIONS}
        command(**kwargs, cfg=_load(options.pop("config"), _overrides(**options)))

    run.__signature__ = inspect.Signature([*own, *recipe])
    return run


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg="red", err=True)
    return typer.Exit(2)


def _load(config: str | None, overrides: dict[str, Any]):
    from bioinstruct.training.config import ConfigError, load_config

    try:
        return load_config(config, overrides)
    except ConfigError as exc:
        raise _fail(exc) from exc


def _infer_category(files: list[Path], data_format: str) -> str:
    from bioinstruct.training.data import read_records

    cats = {r.category.value for f in files for r in read_records(f, data_format)}
    return cats.pop() if len(cats) == 1 else "ALL"


def _run(job, quiet: bool):
    from bioinstruct.training.trainer import train

    return train(job, progress=not quiet, log=typer.echo)


def register(app: typer.Typer) -> None:
    from bioinstruct.training.ship import ship_app

    app.add_typer(ship_app, name="ship")

    @app.command("train")
    @with_recipe_options
    def train_cmd(
        data: list[Path] = typer.Option(None, "--data", "-d", help=(
            "JSONL records (ours, prompt/completion, messages or Alpaca: see --format); repeat for several "
            "files. Default: <home>/data/train/<category>.jsonl")),
        category: str = typer.Option(None, "--category", help=(
            "QA, IE, GEN, OTHER or ALL: the adapter's family; records of other families are skipped, and "
            "records that carry no family get this one (default: from the data)")),
        name: str = typer.Option(None, "--name", help="Registry adapter name (default bioinstruct-<category>)"),
        run_name: str = typer.Option(None, "--run-name", help=(
            "Run folder under <home>/runs (default <name>-<hash of config and data>)")),
        out: Path = typer.Option(None, "--out", help="Run folder path (instead of --run-name)"),
        alias: str = typer.Option(None, "--alias", help="Point this registry alias (e.g. qa) at the new version"),
        description: str = typer.Option(None, "--description"),
        publish: bool = PUBLISH, registry: str = REGISTRY, quiet: bool = QUIET, *, cfg: Any,
    ) -> None:
        """Train one LoRA adapter (re-running the same command resumes it), publish it, move an alias."""
        from bioinstruct.training.data import DataError
        from bioinstruct.training.trainer import TrainError, TrainJob

        core = core_settings()
        try:
            if category is not None and category.upper() not in CATEGORIES:
                raise DataError(f"--category {category!r} is not one of {', '.join(CATEGORIES)}")
            if not data:
                if category is None:
                    raise DataError("pass --data FILE.jsonl, or --category to use <home>/data/train/<category>.jsonl")
                default = core.home / "data" / "train" / f"{category.lower()}.jsonl"
                if not default.is_file():
                    raise DataError(f"{default} does not exist: generate/convert the data first, or pass --data")
                data = [default]
            category = (category or _infer_category(data, cfg.data_format)).upper()
            run_dir = out if out else (core.home / "runs" / run_name if run_name else None)
            job = TrainJob(config=cfg, data_files=list(data), category=category, name=name, run_dir=run_dir,
                           publish=publish, alias=alias, registry=registry, description=description)
            result = _run(job, quiet)
        except (DataError, TrainError) as exc:
            raise _fail(exc) from exc
        if result.manifest is not None:
            typer.echo(json.dumps({"ref": result.manifest.ref, "alias": alias, "run_dir": str(result.run_dir),
                                   "metrics": result.manifest.metrics}, indent=2))

    @app.command("train-all")
    @with_recipe_options
    def train_all_cmd(
        data_dir: Path = typer.Option(None, "--data-dir", help=(
            "Folder with qa.jsonl, ie.jsonl, gen.jsonl, all.jsonl in any format of --format (default "
            "<home>/data/train); a missing family file is taken from all.jsonl filtered by category")),
        categories: str = typer.Option(",".join(TRAIN_ALL_DEFAULT), "--categories", help=(
            "Comma-separated subset of QA,IE,GEN,ALL")),
        prefix: str = typer.Option("bioinstruct", "--prefix", help="Adapters are named <prefix>-qa, <prefix>-ie, ..."),
        set_aliases: bool = typer.Option(True, "--aliases/--no-aliases", help=(
            "Point aliases qa, ie, gen, all at the new versions")),
        publish: bool = PUBLISH, registry: str = REGISTRY, quiet: bool = QUIET, *, cfg: Any,
    ) -> None:
        """One adapter per family (QA, IE, GEN) and one on all of them: the paper's comparison."""
        from bioinstruct.training.data import DataError
        from bioinstruct.training.trainer import TrainError, TrainJob

        core = core_settings()
        folder = (data_dir or core.home / "data" / "train").expanduser()
        wanted = [c.strip().upper() for c in categories.split(",") if c.strip()]
        bad = [c for c in wanted if c not in CATEGORIES]
        if bad or not wanted:
            raise _fail(ValueError(f"--categories: {bad or 'none given'} not in {', '.join(CATEGORIES)}"))
        try:
            jobs = []
            for cat in wanted:  # resolve every input before training anything
                path = folder / f"{cat.lower()}.jsonl"
                if not path.is_file():
                    path = folder / "all.jsonl"
                    if not path.is_file():
                        raise DataError(f"neither {folder / (cat.lower() + '.jsonl')} nor {path} exists; "
                                        "produce the training data first or pass --data-dir")
                jobs.append(TrainJob(config=cfg, data_files=[path], category=cat, name=f"{prefix}-{cat.lower()}",
                                     publish=publish, alias=cat.lower() if set_aliases and publish else None,
                                     registry=registry))
            results = []
            for job in jobs:
                typer.secho(f"== {job.category}: {job.name} from {job.data_files[0]}", bold=True)
                results.append((job, _run(job, quiet)))
        except (DataError, TrainError) as exc:
            raise _fail(exc) from exc
        _report(results, core.home / "runs" / f"{prefix}-train-all.json")


def _report(results, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = []
    table = Table(title="train-all: one adapter per family and one on all")
    for col in ("category", "adapter", "examples", "steps", "train loss", "eval loss (before -> after)",
                "tokens/s", "wall s"):
        table.add_column(col)
    for job, res in results:
        s = res.summary
        run = json.loads((res.run_dir / "run.json").read_text())
        row = {"category": job.category, "ref": res.manifest.ref if res.manifest else None, "run_dir": str(res.run_dir),
               "train_examples": run["data_stats"]["train_examples"], **{k: s.get(k) for k in (
                   "steps", "train_loss", "eval_loss_initial", "eval_loss", "tokens_per_s", "wall_time_s")}}
        rows.append(row)
        table.add_row(job.category, row["ref"] or res.run_dir.name, str(row["train_examples"]), str(row["steps"]),
                      _f(row["train_loss"]), f"{_f(row['eval_loss_initial'])} -> {_f(row['eval_loss'])}",
                      _f(row["tokens_per_s"], 0), _f(row["wall_time_s"], 0))
    Console().print(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": rows},
                               indent=2))
    typer.echo(f"comparison written to {path}")


def _f(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
