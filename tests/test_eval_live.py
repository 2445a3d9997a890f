"""`bioinstruct eval` against the real gateway and vLLM engine: one quick run per route."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

pytestmark = pytest.mark.engine


def _app() -> typer.Typer:
    from bioinstruct.eval.cli import register

    app = typer.Typer()

    @app.command("noop")
    def _noop() -> None:
        pass

    register(app)
    return app


def test_eval_runs_against_the_live_service(live_service, data_dir, tmp_path):
    app, runner = _app(), CliRunner()
    for task, limit in (("pubmedqa", 5), ("bc5cdr", 2), ("mediqa_qs", 2)):
        out = tmp_path / task
        res = runner.invoke(app, ["eval", "--task", task, "--adapter", "base", "--limit", str(limit),
                                  "--base-url", live_service.base_url, "--out", str(out), "--data-dir", str(data_dir),
                                  "--concurrency", "2", "--no-progress"])
        assert res.exit_code == 0, res.output
        report = json.loads((out / "report.json").read_text())
        assert report["n_items"] == limit and report["adapter"] == "base"
        assert report["serving"]["errors"] == 0, report["serving"]["top_errors"]
        assert report["serving"]["served_models"] == {"base": limit}
        primary = report["scores"][report["primary_metric"]]
        assert primary["n"] == limit and 0.0 <= primary["value"] <= 1.0
        assert primary["ci_low"] <= primary["value"] <= primary["ci_high"]
        assert (out / "report.md").is_file() and (out / "scores.png").is_file()
        items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
        assert all(i["ok"] for i in items)
        if task == "pubmedqa":
            assert {i["pred"] for i in items} <= {"yes", "no", "maybe"}
        if task == "bc5cdr":
            assert all(isinstance(i["pred"], list) for i in items)
        if task == "mediqa_qs":  # streamed: text arrived and time to first token was measured
            assert all(i["pred"].strip() for i in items)
            assert report["serving"]["latency_ms"]["ttft"]["p50"] is not None
