"""ChemProt train -> QA records: which of the 13 relations holds for the marked pair.

The sentence loses its << >> / [[ ]] markers (context), the question names the two
entities, and the options are the 13 labels; the output is the gold label.
"""

from __future__ import annotations

from pathlib import Path

from bioinstruct.generation.datasets import chemprot
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.prompts import (
    CHEMPROT_LABELS,
    QA_WITH_OPTIONS,
    pair_relation_question,
    qa_task,
)
from bioinstruct.instruct.records import InstructionRecord


def convert_chemprot(data_dir: Path) -> list[InstructionRecord]:
    records = []
    n_instr = len(QA_WITH_OPTIONS)
    for pair in chemprot(data_dir, "train"):
        if pair.label not in CHEMPROT_LABELS:
            continue
        i = pair.index
        question = pair_relation_question(pair.first, pair.second, variant=i // n_instr)
        instruction, input_text = qa_task(question, pair.text, list(CHEMPROT_LABELS), variant=i)
        records.append(InstructionRecord(
            id=f"chemprot-train-{i}", instruction=instruction, input=input_text, output=pair.label,
            category=TaskFamily.QA, task_type="chemprot_relation",
            provenance={"source": "convert:chemprot", "dataset": "chemprot", "file": "train.txt",
                        "split": "train", "item": i, "variant": i},
        ))
    return records
