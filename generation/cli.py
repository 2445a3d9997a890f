"""`bioinstruct generate`, `bioinstruct convert`, `bioinstruct decontaminate`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from bioinstruct.generation.settings import GenerationSettings, data_root
from bioinstruct.settings import CoreSettings

CONVERTER_NAMES = ("pubmedqa", "bc5cdr", "bc2gm", "chemprot", "meqsum")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def generate(
    n: int = typer.Option(200, "--n", min=1, help="Records the output file must hold at the end."),
    out: Path | None = typer.Option(None, help="Output JSONL (default: <home>/data/generated/selfinstruct.jsonl)."),
    base_url: str | None = typer.Option(
        None, help="OpenAI-compatible endpoint ending in /v1 (default: http://127.0.0.1:8000/v1, the service)."),
    model: str | None = typer.Option(None, help='Model name (default: "base", the service\'s base model).'),
    api_key: str | None = typer.Option(None, help="API key (default: BIOINSTRUCT_GEN_API_KEY, else a dummy)."),
    temperature: float | None = typer.Option(None, help="Sampling temperature (default 0.7)."),
    top_p: float | None = typer.Option(None, help="Nucleus sampling (default 1.0)."),
    concurrency: int | None = typer.Option(None, min=1, help="Requests in flight (default 4)."),
    batch_size: int | None = typer.Option(None, min=1, help="New tasks asked for per request (default 5)."),
    seed: int | None = typer.Option(None, help="Random seed for example draws and request seeds (default 0)."),
    max_tokens: int | None = typer.Option(None, min=16, help="max_tokens per request (default 1024)."),
    mix_generated: int | None = typer.Option(
        None, min=0, help="Of the 3 examples, how many may be accepted generated tasks (default 0)."),
    max_requests: int | None = typer.Option(
        None, min=1, help="Give up after this many requests (default max(100, 20*n))."),
    rouge_threshold: float | None = typer.Option(
        None, help="Drop an instruction whose ROUGE-L F vs the pool exceeds this (default 0.7)."),
    label_with_model: bool | None = typer.Option(
        None, "--label-with-model/--label-with-rules",
        help="Use the model's category label when valid (default), or rules only."),
    seeds_file: Path | None = typer.Option(
        None, "--seeds",
        help="JSONL of seed tasks (id, instruction, input, output, category) (default: the seeds package)."),
    progress: bool = typer.Option(True, help="Show the progress bar."),
) -> None:
    """Self-Instruct: prompt a chat model with 3 random seed tasks until --n records are accepted.

    Resumable: re-run the same command after an interruption (even kill -9) and it continues
    from the output file. Stats go to <out>.stats.json and <out>.stats.md.
    """
    from bioinstruct.generation.loop import GenerationError, SelfInstructLoop
    from bioinstruct.generation.prompting import load_prompt_examples
    from bioinstruct.generation.store import StoreError

    overrides = {k: v for k, v in {
        "base_url": base_url, "model": model, "api_key": api_key, "temperature": temperature,
        "top_p": top_p, "concurrency": concurrency, "batch_size": batch_size, "seed": seed,
        "max_tokens": max_tokens, "mix_generated": mix_generated, "max_requests": max_requests,
        "rouge_threshold": rouge_threshold, "label_with_model": label_with_model, "out": out,
    }.items() if v is not None}
    try:
        settings = GenerationSettings(**overrides)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    out_path = settings.out_path()
    try:
        seeds = load_prompt_examples(seeds_file)
    except (OSError, ValueError, ImportError) as exc:
        raise _fail(f"cannot load seed tasks: {exc}") from None
    loop = SelfInstructLoop(settings, seeds, out_path, n, show_progress=progress)
    try:
        stats = asyncio.run(loop.run())
    except (GenerationError, StoreError) as exc:
        raise _fail(str(exc), 1) from None
    except KeyboardInterrupt:
        raise _fail(f"interrupted; {out_path} keeps every accepted record, re-run to continue", 130) from None
    md = stats.to_markdown()
    if loop.seed_refused:
        md += "\nThe endpoint refused per-request `seed`; this run's requests were sent without one.\n"
    out_path.with_name(out_path.name + ".stats.md").write_text(md, encoding="utf-8")
    typer.echo(md)
    if not stats.complete:
        raise _fail(f"stopped before {n} records: {stats.stop_reason}", 3)


def _default_inputs(core: CoreSettings) -> list[Path]:
    root = data_root(core)
    paths = sorted((root / "converted").glob("*.train.jsonl"))
    generated = root / "generated" / "selfinstruct.jsonl"
    if generated.is_file():
        paths.append(generated)
    return paths


def convert(
    datasets: list[str] = typer.Option(
        list(CONVERTER_NAMES), "--dataset", "-d", help="Datasets to convert (repeat the option)."),
    data_dir: Path | None = typer.Option(
        None, help="Labeled data folder (default: BIOINSTRUCT_DATA_DIR or ../shared/data)."),
    out_dir: Path | None = typer.Option(None, help="Converted files (default: <home>/data/converted)."),
    decontaminate_after: bool = typer.Option(
        True, "--decontaminate/--no-decontaminate", help="Then build the training files."),
    extra: list[Path] = typer.Option(
        [], "--include",
        help="More JSONL files for the training set (default: data/generated/selfinstruct.jsonl if present)."),
    train_dir: Path | None = typer.Option(None, help="Training files (default: <home>/data/train)."),
    report_dir: Path | None = typer.Option(None, help="Reports (default: <home>/data/reports)."),
    tasks_dir: Path | None = typer.Option(
        None, help="Extra folder of benchmark task files whose items are kept out of training too "
        "(env BIOINSTRUCT_EVAL_TASKS_DIR)."),
) -> None:
    """Convert train splits (PubMedQA trainval, BC5CDR, BC2GM, ChemProt, MeQSum) to instruction records,
    then decontaminate them against every split of every benchmark task file."""
    from bioinstruct.generation.converters import CONVERTERS
    from bioinstruct.generation.datasets import DatasetError
    from bioinstruct.generation.store import write_records

    core = CoreSettings(**({"data_dir": data_dir} if data_dir else {}))
    unknown = [d for d in datasets if d not in CONVERTERS]
    if unknown:
        raise _fail(f"unknown dataset(s) {unknown}; choose from {list(CONVERTERS)}")
    out_dir = out_dir or data_root(core) / "converted"
    written: list[Path] = []
    for name in datasets:
        try:
            records = CONVERTERS[name](core.data_dir)
        except DatasetError as exc:
            raise _fail(str(exc)) from None
        path = out_dir / f"{name}.train.jsonl"
        count = write_records(path, records)
        written.append(path)
        typer.echo(f"{name}: {count} records -> {path}")
    if decontaminate_after:
        generated = data_root(core) / "generated" / "selfinstruct.jsonl"
        inputs = written + (list(extra) if extra else ([generated] if generated.is_file() else []))
        _decontaminate(core, inputs, train_dir, report_dir, tasks_dir)


def decontaminate(
    inputs: list[Path] = typer.Argument(
        None, help="JSONL files (default: data/converted/*.train.jsonl and data/generated/selfinstruct.jsonl)."),
    data_dir: Path | None = typer.Option(None, help="Labeled data folder (for the evaluation splits)."),
    train_dir: Path | None = typer.Option(None, help="Training files (default: <home>/data/train)."),
    report_dir: Path | None = typer.Option(None, help="Reports (default: <home>/data/reports)."),
    ngram: int = typer.Option(8, min=2, help="n of the word n-grams."),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0, help="Containment at which a record is a near-duplicate."),
    tasks_dir: Path | None = typer.Option(
        None, help="Extra folder of benchmark task files whose items are kept out of training too "
        "(env BIOINSTRUCT_EVAL_TASKS_DIR)."),
) -> None:
    """Drop training records that overlap any evaluation split; write data/train/*.jsonl and a report."""
    core = CoreSettings(**({"data_dir": data_dir} if data_dir else {}))
    paths = list(inputs) if inputs else _default_inputs(core)
    if not paths:
        raise _fail("no input files: run `bioinstruct convert` or `bioinstruct generate` first")
    _decontaminate(core, paths, train_dir, report_dir, tasks_dir, n=ngram, threshold=threshold)


def _decontaminate(core: CoreSettings, inputs: list[Path], train_dir: Path | None, report_dir: Path | None,
                   tasks_dir: Path | None = None, **kwargs: float) -> None:
    from bioinstruct.generation.datasets import DatasetError, evaluation_texts
    from bioinstruct.generation.decontaminate import run_decontamination
    from bioinstruct.generation.store import StoreError

    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        raise _fail(f"input file(s) not found: {missing}")
    train_dir = train_dir or data_root(core) / "train"
    report_dir = report_dir or data_root(core) / "reports"
    try:
        texts = evaluation_texts(core.data_dir, [tasks_dir] if tasks_dir else None)
        report = run_decontamination(inputs, texts, train_dir, report_dir, **kwargs)
    except (DatasetError, StoreError) as exc:
        raise _fail(str(exc)) from None
    t = report["totals"]
    typer.echo(f"decontamination: {t['records']} records, removed {t['removed']} "
               f"({json.dumps(t['by_reason'])}), kept {t['kept']}")
    for path, count in report["outputs"].items():
        typer.echo(f"  {path}: {count}")
    typer.echo(f"  report: {report_dir / 'decontamination.md'} (+ .json)")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("convert")(convert)
    app.command("decontaminate")(decontaminate)


def main() -> None:
    app = typer.Typer(no_args_is_help=True, add_completion=False, help="BioInstruct data generation.")
    register(app)
    app()


if __name__ == "__main__":
    main()
