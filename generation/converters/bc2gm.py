"""BC2GM train -> IE records: gene/protein mentions as 'Gene: mention' lines (/extract).

BC2GM annotates genes only, so each sentence is asked for genes only: a chemical or disease in
it is unlabeled, and asking for those types here would teach the adapter that they are absent.
"""

from __future__ import annotations

from pathlib import Path

from bioinstruct.generation.converters.bc5cdr import entity_records
from bioinstruct.generation.datasets import bc2gm
from bioinstruct.instruct.records import InstructionRecord

# Every STRIDE-th training sentence: 1,572 of 12,574, about a third of BC5CDR's 4,560, so that
# one epoch of the IE mix fits a session here (~156 tokens/s) and genes are not most of it.
STRIDE = 8


def convert_bc2gm(data_dir: Path) -> list[InstructionRecord]:
    items = bc2gm(data_dir, "train")[::STRIDE]
    return entity_records(items, "bc2gm", lambda i: ("Gene",))
