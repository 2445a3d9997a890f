"""MeQSum (idx < MEQSUM_TRAIN_END) -> GEN records: consumer question -> one short question."""

from __future__ import annotations

from pathlib import Path

from generation.datasets import MEQSUM_TRAIN_END, meqsum
from instruct.families import TaskFamily
from instruct.records import InstructionRecord
from instruct.tasks import question_summary_task


def convert_meqsum(data_dir: Path) -> list[InstructionRecord]:
    records = []
    for item in meqsum(data_dir, "train"):
        idx = int(item["idx"])
        instruction, input_text = question_summary_task(item["chq"], variant=idx)
        records.append(InstructionRecord(
            id=f"meqsum-{idx}", instruction=instruction, input=input_text, output=item["summary"].strip(),
            category=TaskFamily.GEN, task_type="question_summarization",
            provenance={"source": "convert:meqsum", "dataset": "meqsum", "file": "meqsum_all.jsonl",
                        "split": f"train (idx < {MEQSUM_TRAIN_END})", "item": idx, "variant": idx},
        ))
    return records
