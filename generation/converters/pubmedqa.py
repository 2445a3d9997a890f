"""PubMedQA PQA-L trainval half -> QA records with options yes/no/maybe (the /qa format)."""

from __future__ import annotations

from pathlib import Path

from bioinstruct.generation.datasets import pubmedqa
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.prompts import qa_task
from bioinstruct.instruct.records import InstructionRecord

OPTIONS = ("yes", "no", "maybe")


def convert_pubmedqa(data_dir: Path) -> list[InstructionRecord]:
    records = []
    for i, item in enumerate(pubmedqa(data_dir, "trainval")):
        answer = item["final_decision"].strip().lower()
        if answer not in OPTIONS:
            continue
        instruction, input_text = qa_task(item["QUESTION"], item["CONTEXTS"], list(OPTIONS), variant=i)
        records.append(InstructionRecord(
            id=f"pubmedqa-{item['pmid']}", instruction=instruction, input=input_text, output=answer,
            category=TaskFamily.QA, task_type="pubmedqa",
            provenance={"source": "convert:pubmedqa", "dataset": "pubmedqa_pqal",
                        "file": "pqal_trainval_set.json", "split": "trainval", "item": item["pmid"],
                        "variant": i},
        ))
    return records
