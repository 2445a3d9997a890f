"""Cross-check two harnesses on the same PubMedQA test items: `bioinstruct eval` (/qa, option
scoring, our prompt) against lm-evaluation-harness (`local-completions` through the gateway's
/v1/completions, loglikelihood of " yes" / " no" / " maybe" after lm-eval's own PubMedQA
prompt). Both numbers come with a 95% bootstrap CI, plus how often the two agree per item.

    python scripts/lm_eval_crosscheck.py RUN_DIR --base-url http://127.0.0.1:8000 --model base

RUN_DIR is a finished `bioinstruct eval --task pubmedqa ...` run: its items are the ones scored.
Writes RUN_DIR/../<name>-lm-eval/{crosscheck.json, crosscheck.md}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import typer

from bioinstruct.eval.report import load_items
from bioinstruct.generation.datasets import pubmedqa
from bioinstruct.settings import core_settings

LABELS = ["yes", "no", "maybe"]
# lm-evaluation-harness's own pubmedqa task prompt (tasks/pubmedqa/pubmedqa.yaml), on a local file.
TASK = """task: pubmedqa_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Abstract: {{{{context}}}}\\nQuestion: {{{{question}}}}\\nAnswer:"
doc_to_choice: ["yes", "no", "maybe"]
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    boots = correct[rng.integers(0, len(correct), (n_boot, len(correct)))].mean(axis=1)
    return float(correct.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def main(run_dir: Path, base_url: str = typer.Option("http://127.0.0.1:8000"),
         model: str = typer.Option("base")) -> None:
    items = load_items(run_dir)  # items.jsonl, or the items.jsonl.gz a run in the repository keeps
    by_id = {str(it["id"]): it for it in items}
    data = {str(d["pmid"]): d for d in pubmedqa(core_settings().data_dir, "test")}
    out = run_dir.parent / f"{run_dir.name}-lm-eval"
    out.mkdir(parents=True, exist_ok=True)
    ids = sorted(by_id)
    with (out / "items.jsonl").open("w") as fh:
        for pmid in ids:
            d = data[pmid]
            fh.write(json.dumps({"id": pmid, "question": d["QUESTION"], "context": " ".join(d["CONTEXTS"]),
                                 "label": LABELS.index(d["final_decision"])}) + "\n")
    (out / "pubmedqa_local.yaml").write_text(TASK.format(data=out / "items.jsonl"))
    args = (f"base_url={base_url}/v1/completions,model={model},tokenizer={core_settings().base_model_dir},"
            "num_concurrent=4,max_retries=2,tokenized_requests=True")
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions", "--model_args", args,
           "--tasks", "pubmedqa_local", "--include_path", str(out), "--output_path", str(out / "lm_eval"),
           "--log_samples"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "unused"}
    subprocess.run(cmd, check=True, env=env)
    samples = [json.loads(line) for f in sorted((out / "lm_eval").rglob("samples_pubmedqa_local_*.jsonl"))[-1:]
               for line in f.read_text().splitlines()]
    lm_pred, lm_ok = {}, {}
    for s in samples:
        lls = [float(ll) for ll, _ in s["filtered_resps"]]
        pmid = str(s["doc"]["id"])
        lm_pred[pmid] = LABELS[int(np.argmax(lls))]
        lm_ok[pmid] = float(s["acc"])
    ours_ok = np.array([1.0 if by_id[i]["pred"] == by_id[i]["gold"] else 0.0 for i in ids])
    theirs_ok = np.array([lm_ok[i] for i in ids])
    agree = float(np.mean([by_id[i]["pred"] == lm_pred[i] for i in ids]))
    result = {
        "n": len(ids), "model": model, "command": " ".join(["python", *sys.argv]), "lm_eval_command": " ".join(cmd),
        "bioinstruct_eval_accuracy": _ci(ours_ok), "lm_eval_accuracy": _ci(theirs_ok),
        "difference_lm_eval_minus_ours": _ci(theirs_ok - ours_ok), "agreement": agree,
        "prediction_counts": {"bioinstruct_eval": {k: sum(by_id[i]["pred"] == k for i in ids) for k in LABELS},
                              "lm_eval": {k: sum(lm_pred[i] == k for i in ids) for k in LABELS},
                              "gold": {k: sum(by_id[i]["gold"] == k for i in ids) for k in LABELS}},
    }
    (out / "crosscheck.json").write_text(json.dumps(result, indent=2) + "\n")

    def fmt(t):
        return f"{100 * t[0]:.1f} [{100 * t[1]:.1f}, {100 * t[2]:.1f}]"

    md = [f"# PubMedQA test, {len(ids)} items, model `{model}`: two harnesses", "",
          f"- `bioinstruct eval` (/qa, option scoring): accuracy {fmt(result['bioinstruct_eval_accuracy'])}",
          f"- lm-evaluation-harness (local-completions, loglikelihood): accuracy {fmt(result['lm_eval_accuracy'])}",
          f"- paired difference (lm-eval − ours): {fmt(result['difference_lm_eval_minus_ours'])} points",
          f"- same answer on {100 * agree:.1f}% of items",
          f"- predictions: {json.dumps(result['prediction_counts'])}", "",
          f"lm-eval command: `{' '.join(cmd)}`", ""]
    (out / "crosscheck.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    typer.run(main)
