"""Every paired difference docs/RESULTS.md states, re-computed from the per-item files in the repository.

The runs behind the docs keep their `items.jsonl.gz` beside their reports; this re-runs the paired
bootstrap (eval/compare.py, the code `bioinstruct eval compare` runs) and checks each figure as
printed: a number in the docs that its items do not give fails here. A run from an earlier session
whose per-item file was not kept must be named in RESULTS.md's "Per-item files" list (and checked
to have none); its figures are the only ones this cannot re-compute.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

from bioinstruct.eval.compare import compare_runs
from bioinstruct.eval.report import items_file

ROOT = Path(__file__).resolve().parent.parent
RESULTS = (ROOT / "docs" / "RESULTS.md").read_text()
SHIPPED = ROOT / "reports" / "shipped"
NUM = r"[+\-−]?\d+\.\d"
TRIPLE = rf"({NUM}) \[({NUM}), ({NUM})\]"


def _num(text: str) -> float:
    return float(text.replace("−", "-"))


def _section(heading: str) -> str:
    start = RESULTS.index(heading)
    end = RESULTS.find("\n#", start + len(heading))
    return RESULTS[start:end if end > 0 else None]


def _table(heading: str) -> list[list[str]]:
    """The first Markdown table after `heading`, as rows of cells (header and rule dropped)."""
    lines = RESULTS[RESULTS.index(heading):].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


# The runs RESULTS.md declares to have no per-item file in the repository (globs, relative to the root).
NOT_KEPT = re.findall(r"`(reports/[^`]+)`", _section("### Per-item files").split("Not kept", 1)[-1])


def _declared(run: Path) -> bool:
    rel = run.relative_to(ROOT).as_posix()
    return any(fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern.rstrip("*") + "/") for pattern in NOT_KEPT)


def _check(runs: tuple[Path, Path], metric: str, stated: tuple[float, ...]) -> None:
    """`stated` (B − A, its CI, in points) recomputes from the two runs' items, or a run is declared not kept."""
    missing = [r for r in runs if items_file(r) is None]
    if missing:
        undeclared = [r.relative_to(ROOT).as_posix() for r in missing if not _declared(r)]
        assert not undeclared, f"no per-item file, and not in RESULTS.md's 'Per-item files' list: {undeclared}"
        return
    diff = compare_runs(*runs)["metrics"][metric]
    got = tuple(round(100 * diff[k], 1) for k in ("delta", "ci_low", "ci_high"))
    assert got == pytest.approx(stated, abs=0.051), f"{runs[0].name} → {runs[1].name}: items give {got}"


def _matrix_claims() -> list[tuple[str, str, str, tuple[float, float, float]]]:
    rows = _table("### The adapter × task matrix")
    adapters = rows[0][1:]
    claims = []
    for row in rows[2:]:
        task, metric = re.fullmatch(r"(\w+) \((\w+)\)", row[0]).groups()
        for adapter, cell in zip(adapters, row[1:], strict=True):
            if m := re.search(rf"Δ {TRIPLE}", cell):
                claims.append((task, metric, adapter, tuple(_num(x) for x in m.groups())))
    return claims


MATRIX = _matrix_claims()


def test_the_matrix_states_a_paired_difference_for_every_adapter_cell():
    # 7 tasks x 4 adapters: a cell without its Δ is a claim the docs dropped.
    assert len(MATRIX) == 28, [c[:3] for c in MATRIX]


@pytest.mark.parametrize(("task", "metric", "adapter", "stated"), MATRIX, ids=[f"{t}-{a}" for t, _, a, _ in MATRIX])
def test_matrix_delta_to_base_recomputes(task, metric, adapter, stated):
    _check((SHIPPED / f"{task}-base", SHIPPED / f"{task}-{adapter}"), metric, stated)


MATCHED_ROWS = _table("### The paper's comparison")[2:]


@pytest.mark.parametrize("row", MATCHED_ROWS, ids=[r[0] for r in MATCHED_ROWS])
def test_all_minus_matched_recomputes(row):
    task, metric = re.fullmatch(r"(\w+) \((\w+)\)", row[0]).groups()
    m = re.fullmatch(TRIPLE, row[4])
    runs = (SHIPPED / f"{task}-{row[1]}", SHIPPED / f"{task}-all")
    _check(runs, metric, tuple(_num(x) for x in m.groups()))
    if all(items_file(r) for r in runs):
        assert int(row[6]) == compare_runs(*runs)["metrics"][metric]["n"]


# Other paired figures RESULTS.md prints: (the words before the triple, run A, run B, metric).
OTHER_CLAIMS = [
    ("macro ", "reports/shipped/chemprot-base", "reports/shipped/chemprot-qa", "macro_f1"),
    ("vs without ", "reports/gen-without-si/meqsum_heldout-gen", "reports/shipped/meqsum_heldout-gen", "rougeL"),
    ("MEDIQA-QS ", "reports/gen-without-si/mediqa_qs-gen", "reports/shipped/mediqa_qs-gen", "rougeL"),
    ("| accuracy | 58.0 | 58.8 | ", "reports/eval/pubmedqa-base", "reports/eval/pubmedqa-qa1", "accuracy"),
    ("Paired difference (lm-eval − ours): ", "reports/shipped/pubmedqa-base",
     "reports/shipped/pubmedqa-base-lm-eval", "accuracy"),
]


@pytest.mark.parametrize(("words", "run_a", "run_b", "metric"), OTHER_CLAIMS,
                         ids=[f"{Path(c[2]).name}-{c[3]}" for c in OTHER_CLAIMS])
def test_other_paired_figures_recompute(words, run_a, run_b, metric):
    m = re.search(re.escape(words) + TRIPLE, RESULTS)
    assert m, f"RESULTS.md no longer states '{words}A [lo, hi]'"
    _check((ROOT / run_a, ROOT / run_b), metric, tuple(_num(x) for x in m.groups()))


GATES = sorted(p.parent for p in SHIPPED.glob("gate-*/gate.json"))


@pytest.mark.parametrize("gate", GATES, ids=[g.name for g in GATES])
def test_each_shipped_gate_is_in_the_docs_and_recomputes_from_its_items(gate):
    """A gate's Δ and CI (the numbers its alias move rests on): printed in RESULTS.md as gate.json has
    them, and re-computed from its current/candidate items."""
    decision = json.loads((gate / "gate.json").read_text())
    stated = tuple(round(100 * decision[k], 1) for k in ("delta", "ci_low", "ci_high"))
    printed = {tuple(_num(x) for x in m) for m in re.findall(TRIPLE, RESULTS.replace("**", ""))}
    assert stated in printed, f"{gate.name}: Δ {stated} is not printed in RESULTS.md"
    _check((gate / "current", gate / "candidate"), decision["metric"], stated)


def test_every_gate_the_docs_cite_is_kept():
    cited = set(re.findall(r"eval gate --alias ([\w-]+) ", RESULTS))
    assert cited <= {g.name.removeprefix("gate-") for g in GATES}, cited


def test_the_not_kept_list_is_true():
    """Each run the docs call not kept exists and has no per-item file; the list is not a blanket."""
    assert NOT_KEPT, "RESULTS.md's 'Per-item files' section lists nothing"
    for pattern in NOT_KEPT:
        matches = list(ROOT.glob(pattern))
        assert matches, f"{pattern}: no such run"
        for run in matches:
            kept = list(run.rglob("items.jsonl*"))
            assert not kept, f"{pattern} is listed as not kept, but {kept[0].relative_to(ROOT)} is"
    kept_runs = [p.parent for p in SHIPPED.glob("*/items.jsonl.gz")]
    assert len(kept_runs) >= 10, "the runs behind the headline figures keep their items"


README_FIGURES = [  # (the words README puts before "A → B", task, adapter, metric)
    ("BC5CDR entity F1", "bc5cdr", "ie", "entity_f1"),
    ("MeQSum ROUGE-L", "meqsum_heldout", "gen", "rougeL"),
    ("ChemProt micro-F1", "chemprot", "qa", "micro_f1"),
    ("PubMedQA unchanged,", "pubmedqa", "qa", "accuracy"),
]


@pytest.mark.parametrize(("words", "task", "adapter", "metric"), README_FIGURES, ids=[f[1] for f in README_FIGURES])
def test_readme_scores_are_the_shipped_reports(words, task, adapter, metric):
    readme = " ".join((ROOT / "README.md").read_text().split())
    w = re.escape(words)
    m = re.search(rf"{w} ({NUM}) → ({NUM})[^(]*?\((\d+) of ([\d,]+)|{w} ({NUM}) → ({NUM}) \(its (\d+)", readme)
    assert m, f"README no longer states {words} A → B (N ...)"
    groups = [g for g in m.groups() if g is not None]
    for run, stated in ((f"{task}-base", groups[0]), (f"{task}-{adapter}", groups[1])):
        report = json.loads((SHIPPED / run / "report.json").read_text())
        assert f"{100 * report['scores'][metric]['value']:.1f}" == stated, run
        assert report["n_items"] == int(groups[2]), run
    # The headline figures are the ones a clone must be able to re-compute.
    assert items_file(SHIPPED / f"{task}-base") and items_file(SHIPPED / f"{task}-{adapter}"), task


def test_the_documented_compare_command_runs_on_a_clone():
    """The `bioinstruct eval compare ...` line of the 'Per-item files' section, as a user types it."""
    import shlex

    from typer.testing import CliRunner

    from bioinstruct.cli import _register_subcommands, app

    section = _section("### Per-item files")
    line = re.search(r"`(bioinstruct eval compare reports/shipped/\S+ reports/shipped/\S+)`", section)
    assert line, "the section shows no compare command"
    _register_subcommands()
    args = shlex.split(line.group(1))[1:]
    res = CliRunner().invoke(app, [*args[:2], *(str(ROOT / a) for a in args[2:])], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    stated = re.search(rf"gives\s+{TRIPLE}", section)
    assert stated, "the section does not say what the command gives"
    d, lo, hi = (_num(x) for x in stated.groups())
    assert f"| {d:.1f} [{lo:.1f}, {hi:.1f}] |" in res.output, res.output
