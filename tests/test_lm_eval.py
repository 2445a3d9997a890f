"""lm-evaluation-harness itself, unchanged, against the live gateway (its `local-completions`
model: loglikelihood through /v1/completions with echo + logprobs), for base and an adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.service_helpers import publish

pytestmark = pytest.mark.engine

ITEMS = [
    ("Which organ produces insulin?", ["Liver", "Pancreas", "Kidney", "Spleen"], 1),
    ("Scurvy is caused by a lack of which vitamin?", ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"], 2),
    ("Which blood cells carry oxygen?", ["Red blood cells", "White blood cells", "Platelets", "Plasma cells"], 0),
    ("Which drug class do statins belong to?", ["Antibiotics", "Lipid-lowering drugs", "Anticoagulants", "Opioids"], 1),
    ("What does the kidney filter?", ["Air", "Bile", "Blood", "Lymph"], 2),
    ("Which hormone lowers blood glucose?", ["Glucagon", "Cortisol", "Adrenaline", "Insulin"], 3),
]



def _task(data: Path) -> dict:
    """An lm-eval multiple-choice task config on a local JSONL file (written out as YAML)."""
    return {"task": "bio_mc_tiny", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "multiple_choice",
            "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices}}", "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lm-eval-task")
    data = folder / "items.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in ITEMS))
    (folder / "bio_mc_tiny.yaml").write_text(yaml.safe_dump(_task(data)))
    return folder


def _lm_eval(live_service, base_model_dir, task_dir, model: str, out: Path) -> dict:
    args = (f"base_url={live_service.base_url}/v1/completions,model={model},tokenizer={base_model_dir},"
            "num_concurrent=4,max_retries=1,tokenized_requests=True")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "unused"}
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions", "--model_args", args,
         "--tasks", "bio_mc_tiny", "--include_path", str(task_dir), "--output_path", str(out), "--log_samples"],
        env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = sorted(out.rglob("results_*.json"))
    assert results, proc.stdout[-2000:]
    return json.loads(results[-1].read_text())


def test_lm_eval_scores_base_and_an_adapter_through_the_gateway(live_service, make_lora, base_model_dir, task_dir,
                                                                 tmp_path):
    publish(live_service, make_lora(seed=81), "lmeval-qa", "QA", alias="lmevalqa")
    scores = {}
    for model in ("base", "lmevalqa"):
        result = _lm_eval(live_service, base_model_dir, task_dir, model, tmp_path / model)
        task = result["results"]["bio_mc_tiny"]
        assert 0.0 <= task["acc,none"] <= 1.0
        assert result["n-samples"]["bio_mc_tiny"]["effective"] == len(ITEMS)
        samples = sorted((tmp_path / model).rglob("samples_bio_mc_tiny_*.jsonl"))
        rows = [json.loads(line) for line in samples[-1].read_text().splitlines()]
        # one loglikelihood per choice, each a real log-probability from the engine
        scores[model] = [float(ll) for row in rows for ll, _greedy in row["filtered_resps"]]
        assert len(scores[model]) == sum(len(c) for _, c, _ in ITEMS) and all(s < 0 for s in scores[model])
    assert scores["base"] != scores["lmevalqa"]  # the adapter, not the base model, answered
