"""BC5CDR train -> IE records: Chemical and Disease mentions as 'Type: mention' lines (/extract)."""

from __future__ import annotations

from pathlib import Path

from generation.datasets import bc5cdr, bc5cdr_text
from instruct.families import TaskFamily
from instruct.records import InstructionRecord
from instruct.tasks import DEFAULT_ENTITY_TYPES, entity_output, entity_task

ENTITY_TYPES = ("Chemical", "Disease")
assert set(ENTITY_TYPES) == set(DEFAULT_ENTITY_TYPES)


def convert_bc5cdr(data_dir: Path) -> list[InstructionRecord]:
    records = []
    for i, item in enumerate(bc5cdr(data_dir, "train")):
        text = bc5cdr_text(item)
        # In order of appearance; a (type, mention) listed once, since the parser finds
        # every occurrence of a listed mention in the text.
        entities: list[tuple[str, str]] = []
        for ent in sorted(item["entities"], key=lambda e: (e["start_tok"], e["end_tok"])):
            pair = (ent["type"], " ".join(item["tokens"][ent["start_tok"]:ent["end_tok"]]))
            if pair not in entities:
                entities.append(pair)
        instruction, input_text = entity_task(text, ENTITY_TYPES, variant=i)
        records.append(InstructionRecord(
            id=f"bc5cdr-{item['id']}", instruction=instruction, input=input_text,
            output=entity_output(entities), category=TaskFamily.IE, task_type="ner",
            provenance={"source": "convert:bc5cdr", "dataset": "bc5cdr", "file": "train.entities.jsonl",
                        "split": "train", "item": item["id"], "variant": i},
        ))
    return records
