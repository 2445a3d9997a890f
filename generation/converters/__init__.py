"""Converters: labeled train splits -> instruction records in the service's formats.

Each converter reads one dataset's training split (never an evaluation split, see
`generation.datasets`) and builds records with the canonical templates of
`instruct.prompts`, cycling over their paraphrases (`variant`), so that training data asks
and answers exactly the way the service does and parses (`instruct.parsing`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bioinstruct.generation.converters.bc2gm import convert_bc2gm
from bioinstruct.generation.converters.bc5cdr import convert_bc5cdr
from bioinstruct.generation.converters.chemprot import convert_chemprot
from bioinstruct.generation.converters.meqsum import convert_meqsum
from bioinstruct.generation.converters.pubmedqa import convert_pubmedqa
from bioinstruct.instruct.records import InstructionRecord

CONVERTERS: dict[str, Callable[[Path], list[InstructionRecord]]] = {
    "pubmedqa": convert_pubmedqa,
    "bc5cdr": convert_bc5cdr,
    "bc2gm": convert_bc2gm,
    "chemprot": convert_chemprot,
    "meqsum": convert_meqsum,
}

__all__ = ["CONVERTERS", "convert_bc2gm", "convert_bc5cdr", "convert_chemprot", "convert_meqsum", "convert_pubmedqa"]
