"""BC5CDR train -> IE records: Chemical and Disease mentions as 'Type: mention' lines (/extract)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bioinstruct.generation.datasets import bc5cdr
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.parsing import find_spans
from bioinstruct.instruct.prompts import DEFAULT_ENTITY_TYPES, entity_output, entity_task
from bioinstruct.instruct.records import InstructionRecord

ENTITY_TYPES = ("Chemical", "Disease")
assert set(ENTITY_TYPES) == set(DEFAULT_ENTITY_TYPES)


# No space before these tokens / after these tokens when writing a sentence as people do.
_CLOSE = {",", ".", ";", ":", ")", "]", "%", "?", "!"}
_OPEN = {"(", "["}
_JOIN = {"-", "/"}


def natural_text(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The sentence with ordinary spacing ("L-dopa", "Parkinson's disease (PD)") and each
    token's character span in it, so that a mention is still an exact slice of the text."""
    text, spans = "", []
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else None
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        glue = (prev is None or tok in _CLOSE or tok in _JOIN or prev in _OPEN or prev in _JOIN
                or (tok == "'" and nxt == "s") or (tok == "s" and prev == "'"))
        if not glue:
            text += " "
        spans.append((len(text), len(text) + len(tok)))
        text += tok
    return text, spans


# The type subsets a BC5CDR sentence is asked for, in turn: half of them both types (what the
# benchmark and most callers ask), a quarter each type alone, so that a request for chemicals
# only is one the adapter has seen (it otherwise files every salient name under the one type).
SUBSETS: tuple[tuple[str, ...], ...] = (ENTITY_TYPES, ("Chemical",), ENTITY_TYPES, ("Disease",))


def convert_bc5cdr(data_dir: Path) -> list[InstructionRecord]:
    return entity_records(bc5cdr(data_dir, "train"), "bc5cdr", lambda i: SUBSETS[(i // 2) % len(SUBSETS)])


def entity_records(items: list[dict], dataset: str, types_for: Callable[[int], tuple[str, ...]]
                   ) -> list[InstructionRecord]:
    """IE records for token/entity items (bc5cdr, bc2gm), item i asked for types_for(i) and
    answered with the mentions of those types only. Every other sentence in ordinary spacing:
    the benchmark's text is space-tokenized ("L - dopa"), the text callers send is not
    ("L-dopa"); the adapter should read both."""
    records = []
    for i, item in enumerate(items):
        text, spans = " ".join(item["tokens"]), None
        if i % 2 == 1:
            natural, token_spans = natural_text(item["tokens"])
            # Only where every mention stays findable as a word-bounded span ("O2 -" followed
            # by "production" would glue into "O2-production").
            if all(find_spans(natural, natural[token_spans[e["start_tok"]][0]:token_spans[e["end_tok"] - 1][1]])
                   for e in item["entities"]):
                text, spans = natural, token_spans
        types = types_for(i)
        # In order of appearance; a (type, mention) listed once, since the parser finds
        # every occurrence of a listed mention in the text.
        entities: list[tuple[str, str]] = []
        for ent in sorted(item["entities"], key=lambda e: (e["start_tok"], e["end_tok"])):
            etype = ent["type"].capitalize()  # BC2GM's GENE is the service's Gene
            if etype not in types:
                continue
            if spans:
                pair = (etype, text[spans[ent["start_tok"]][0]:spans[ent["end_tok"] - 1][1]])
            else:
                pair = (etype, " ".join(item["tokens"][ent["start_tok"]:ent["end_tok"]]))
            if pair not in entities:
                entities.append(pair)
        instruction, input_text = entity_task(text, types, variant=i)
        records.append(InstructionRecord(
            id=f"{dataset}-{item['id']}", instruction=instruction, input=input_text,
            output=entity_output(entities), category=TaskFamily.IE, task_type="ner",
            provenance={"source": f"convert:{dataset}", "dataset": dataset, "file": "train.entities.jsonl",
                        "split": "train", "item": item["id"], "variant": i, "types": list(types),
                        "spacing": "natural" if spans else "tokens"},
        ))
    return records
