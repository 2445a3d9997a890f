"""Readers for the training data in the data folder (../shared/data), and the evaluation texts.

Converters read training files only (PubMedQA: the trainval half; MeQSum: its one file, which
has no official split). What is evaluation data is defined once, by the benchmark task files
(instruct/benchmarks/*.yaml and BIOINSTRUCT_EVAL_TASKS_DIR): `evaluation_texts` reads every
split of every task file, and decontamination removes the training records that overlap them
(the PubMedQA dev PMIDs, MeQSum's held-out part, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DatasetError(RuntimeError):
    pass


def _path(data_dir: Path, *parts: str) -> Path:
    path = data_dir.joinpath(*parts)
    if not path.is_file():
        raise DatasetError(f"{path} is missing: run `bioinstruct data fetch` (every dataset, checksummed), "
                           "or point BIOINSTRUCT_DATA_DIR (or --data-dir) at a data folder laid out as "
                           "docs/DATA.md says")
    return path


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


# --- PubMedQA (PQA-L) --------------------------------------------------------------------

def pubmedqa(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """split "trainval" (training) or "test" (evaluation): records with a "pmid" key added."""
    name = {"trainval": "pqal_trainval_set.json", "test": "pqal_test_set.json"}[split]
    data = json.loads(_path(data_dir, "pubmedqa_pqal", name).read_text(encoding="utf-8"))
    return [{"pmid": pmid, **item} for pmid, item in data.items()]


# --- BC5CDR ------------------------------------------------------------------------------

def bc5cdr(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """split train/devel/test: {id, tokens, tags, entities[{text, type, start_tok, end_tok}]}."""
    return list(_jsonl(_path(data_dir, "bc5cdr", f"{split}.entities.jsonl")))


def bc2gm(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """BioCreative II gene mentions, split train/devel/test, in BC5CDR's layout (type GENE)."""
    return list(_jsonl(_path(data_dir, "bc2gm", f"{split}.entities.jsonl")))


def bc5cdr_text(item: dict[str, Any]) -> str:
    return " ".join(item["tokens"])


# --- ChemProt ----------------------------------------------------------------------------

_FIRST = re.compile(r"<< (.+?) >>")
_SECOND = re.compile(r"\[\[ (.+?) \]\]")


@dataclass(frozen=True)
class ChemProtPair:
    index: int
    text: str      # the sentence without markers
    first: str     # the entity marked << >> (first in the sentence)
    second: str    # the entity marked [[ ]]
    label: str


def chemprot_unmark(marked: str) -> tuple[str, str, str]:
    """(sentence without markers, << entity >>, [[ entity ]])."""
    first = _FIRST.search(marked)
    if not first:
        raise DatasetError(f"no << >> entity in {marked[:80]!r}")
    text = marked[:first.start()] + first.group(1) + marked[first.end():]
    rest_from = first.start() + len(first.group(1))
    second = _SECOND.search(text, rest_from) or _SECOND.search(text)
    if not second:
        raise DatasetError(f"no [[ ]] entity in {marked[:80]!r}")
    text = text[:second.start()] + second.group(1) + text[second.end():]
    return text, first.group(1), second.group(1)


def chemprot(data_dir: Path, split: str) -> list[ChemProtPair]:
    """split train/dev/test. Sentence-level pairs, 13 labels, no negative class."""
    out = []
    for i, row in enumerate(_jsonl(_path(data_dir, "chemprot", f"{split}.txt"))):
        text, first, second = chemprot_unmark(row["text"])
        out.append(ChemProtPair(i, text, first, second, row["label"]))
    return out


# --- MeQSum ------------------------------------------------------------------------------

def meqsum(data_dir: Path) -> list[dict[str, Any]]:
    """All 1,000 pairs. The held-out part (instruct/benchmarks/meqsum_heldout.yaml) is removed from
    training data by decontamination, like every evaluation split."""
    return list(_jsonl(_path(data_dir, "meqsum", "meqsum_all.jsonl")))


@dataclass(frozen=True)
class EvalText:
    """One text of an evaluation split that training data must not contain."""

    split: str   # e.g. "pubmedqa/test"
    item: str    # the item's id in that split
    field: str   # question, context, text, summary...
    text: str


def evaluation_texts(data_dir: Path, extra_task_dirs: Sequence[Path] | None = None) -> list[EvalText]:
    """The texts of every split of every benchmark task file (packaged, BIOINSTRUCT_EVAL_TASKS_DIR,
    `extra_task_dirs`): what each item shows the model, and its reference for text tasks."""
    from bioinstruct.instruct.benchmark import TaskError, all_tasks

    out: list[EvalText] = []
    try:
        for task in all_tasks(extra_task_dirs):
            for split in task.splits:
                seen: set[tuple[str, str]] = set()  # ChemProt: one sentence, several pairs
                for doc in task.load(split, data_dir):
                    for name, text in task.evaluation_texts(doc):
                        if (name, text) not in seen:
                            seen.add((name, text))
                            out.append(EvalText(f"{task.name}/{split}", doc.id, name, text))
    except TaskError as exc:
        raise DatasetError(str(exc)) from None
    return out
