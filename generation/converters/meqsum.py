"""MeQSum -> GEN records: consumer question -> one short question. Its held-out part
(instruct/benchmarks/meqsum_heldout.yaml) is removed afterwards by decontamination."""

from __future__ import annotations

from pathlib import Path

from bioinstruct.generation.datasets import meqsum
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.prompts import question_summary_task
from bioinstruct.instruct.records import InstructionRecord


def convert_meqsum(data_dir: Path) -> list[InstructionRecord]:
    records = []
    for item in meqsum(data_dir):
        idx = int(item["idx"])
        instruction, input_text = question_summary_task(item["chq"], variant=idx)
        records.append(InstructionRecord(
            id=f"meqsum-{idx}", instruction=instruction, input=input_text, output=item["summary"].strip(),
            category=TaskFamily.GEN, task_type="question_summarization",
            provenance={"source": "convert:meqsum", "dataset": "meqsum", "file": "meqsum_all.jsonl",
                        "split": "all", "item": idx, "variant": idx},
        ))
    return records
