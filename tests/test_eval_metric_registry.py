"""Metrics register themselves (eval/metrics.py) and task files name them: eval checks a task file's
names against the registry when it loads the task, and reports read formatting from the registry."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from bioinstruct.eval.metrics import (
    METRICS,
    Accuracy,
    build_metrics,
    check_task_metrics,
    is_percent,
    metric_spec,
    register_metric,
)
from bioinstruct.instruct.benchmark import PACKAGED_TASKS_DIR, TaskError, all_tasks, load_task_file


def test_every_shipped_task_names_registered_metrics_of_its_kind():
    tasks = all_tasks()
    assert len(tasks) >= 7
    for task in tasks:
        assert check_task_metrics(task) is task
        assert {metric_spec(n).output_type for n in task.scoring.metrics} == {task.scoring.kind}, task.name


def test_the_registry_says_what_reports_used_to_switch_on_by_name():
    assert not is_percent("llm_judge") and is_percent("accuracy") and is_percent("rougeL")
    assert is_percent("f1[yes]")  # a breakdown's entries are F1s
    assert metric_spec("f1_by_label").breakdown and metric_spec("entity_f1_by_type").breakdown
    assert not metric_spec("entity_f1").breakdown
    assert metric_spec("llm_judge").needs_judge and not metric_spec("rouge1").needs_judge
    built = build_metrics("spans", ["entity_f1_by_type", "entity_recall"],
                          entity_types=["Chemical", "Disease"])
    assert [(m.name, m.group) for m in built] == [
        ("f1[Chemical]", "entity_f1_by_type"), ("f1[Disease]", "entity_f1_by_type"), ("entity_recall", None)]


def _medqa_with(tmp_path, metrics: str):
    text = (PACKAGED_TASKS_DIR / "medqa.yaml").read_text()
    assert "metrics: [accuracy]" in text
    path = tmp_path / "medqa_variant.yaml"
    path.write_text(text.replace("name: medqa", "name: medqa_variant")
                    .replace("metrics: [accuracy]", f"metrics: {metrics}\n  primary: accuracy"))
    return path


@pytest.mark.parametrize("metrics,message", [
    ("[accuracy, rougeL]", "metrics ['rougeL'] do not apply to scoring kind 'choice'"),
    ("[accuracy, acuracy]", "unknown metrics ['acuracy']"),
])
def test_a_metric_eval_does_not_know_is_refused_naming_the_ones_it_does(tmp_path, metrics, message):
    path = _medqa_with(tmp_path, metrics)
    task = load_task_file(path)  # instruct/ checks the file's shape only: it must not import eval/
    with pytest.raises(TaskError, match=re.escape(message)) as exc:
        check_task_metrics(task)
    assert str(path) in str(exc.value)
    assert "['accuracy', 'f1_by_label', 'macro_f1', 'micro_f1']" in str(exc.value)


def _cli() -> typer.Typer:
    from bioinstruct import cli

    cli._register_subcommands()  # the real `bioinstruct` CLI
    return cli.app


def test_the_cli_refuses_such_a_task_before_sending_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOINSTRUCT_EVAL_BASE_URL", "http://127.0.0.1:9")  # nothing listens: nothing is sent
    path = _medqa_with(tmp_path, "[accuracy, rougeL]")
    runner = CliRunner()
    res = runner.invoke(_cli(), ["eval", "--task", str(path), "--no-progress",
                                 "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert "do not apply" in res.output and not (tmp_path / "run").exists()
    res = runner.invoke(_cli(), ["eval", "list", "--tasks-dir", str(tmp_path)], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "do not apply" in res.output


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="registered twice"):
        register_metric("accuracy", output_type="choice")(lambda ctx: [Accuracy()])
    assert METRICS["accuracy"].build(None)[0].name == "accuracy"
