"""`bioinstruct ship` (make adapters' last stage): a finished run packaged into adapters/<alias>/
with a shipped.json the service loads, results recorded into it, and unknown recipes refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bioinstruct.cli import main_app
from bioinstruct.settings import core_settings
from bioinstruct.shipped import load_shipped

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, make_lora, monkeypatch):
    (tmp_path / "adapters").mkdir()
    shutil.copy(ROOT / "adapters" / "recipes.yaml", tmp_path / "adapters" / "recipes.yaml")
    run = tmp_path / "runs" / "ship-ie"
    shutil.copytree(make_lora(seed=61, rank=4), run / "adapter")
    (run / "metrics.json").write_text(json.dumps({"steps": 3, "train_loss": 1.5, "eval_loss": 1.2}))
    (run / "run.json").write_text(json.dumps({
        "base_model_fingerprint": "f" * 32, "run_hash": "abc", "data_files": [], "data_stats": {"train_examples": 9},
        "config": {"rank": 4}}))
    monkeypatch.setenv("BIOINSTRUCT_HOME", str(tmp_path))
    core_settings.cache_clear()
    yield tmp_path
    core_settings.cache_clear()


def test_package_then_record(home, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main_app(), ["ship", "package", "ie"])
    assert r.exit_code == 0, r.output
    (item,) = load_shipped(home / "adapters")
    assert (item.name, item.alias, item.category) == ("bioinstruct-ie", "ie", "IE")
    assert item.training["steps"] == 3 and item.training["recipe"]["train"]["rank"] == 16
    assert (home / "adapters" / "ie" / "adapter_model.safetensors").read_bytes() == (
        home / "runs" / "ship-ie" / "adapter" / "adapter_model.safetensors").read_bytes()
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"task": "bc5cdr", "split": "test", "adapter": "ie", "n_items": 300,
                                  "primary_metric": "entity_f1",
                                  "scores": {"entity_f1": {"value": 0.7, "ci_low": 0.65, "ci_high": 0.75}}}))
    r = runner.invoke(main_app(), ["ship", "record", "ie", "test", str(report)])
    assert r.exit_code == 0, r.output
    (item,) = load_shipped(home / "adapters")
    assert item.metrics["test"] == {"task": "bc5cdr", "split": "test", "adapter": "ie", "n": 300,
                                    "metric": "entity_f1", "value": 0.7, "ci_low": 0.65, "ci_high": 0.75}


def test_an_unknown_recipe_is_refused_before_anything_runs(home):
    r = CliRunner().invoke(main_app(), ["ship", "train", "poetry"])
    assert r.exit_code == 2 and "no recipe ['poetry']" in r.output
    assert not (home / "runs" / "ship-poetry").exists()


def test_new_weights_do_not_inherit_the_previous_gate_and_scores(home, tmp_path, make_lora):
    runner = CliRunner()
    assert runner.invoke(main_app(), ["ship", "package", "ie"]).exit_code == 0
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps({"alias": "ie", "task": "bc5cdr", "split": "dev", "metric": "entity_f1",
                                "delta": 0.75, "ci_low": 0.7, "ci_high": 0.8, "decision": "promoted", "n": 200}))
    assert runner.invoke(main_app(), ["ship", "record", "ie", "gate", str(gate)]).exit_code == 0
    # The same run packaged again keeps its gate.
    assert runner.invoke(main_app(), ["ship", "package", "ie"]).exit_code == 0
    (item,) = load_shipped(home / "adapters")
    assert item.gate and item.gate["decision"] == "promoted"
    # A retrained run (other weights) starts ungated, and the operator is told.
    adapter = home / "runs" / "ship-ie" / "adapter"
    shutil.rmtree(adapter)
    shutil.copytree(make_lora(seed=62, rank=4), adapter)
    r = runner.invoke(main_app(), ["ship", "package", "ie"])
    assert r.exit_code == 0, r.output
    assert "previous adapter's gate and scores were not carried over" in " ".join(r.output.split())
    (item,) = load_shipped(home / "adapters")
    assert item.gate is None and item.metrics == {}
