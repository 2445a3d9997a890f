"""Readers for the labeled data in the data folder (../shared/data), and which split is which.

Training uses train splits only (PubMedQA: the trainval half; MeQSum: idx < MEQSUM_TRAIN_END).
Every other split listed in EVAL_SPLITS is evaluation data: converters never read it, and
decontamination removes training records that overlap it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# MeQSum ships 1,000 pairs with no official split. Fixed here: idx 0..799 is training,
# idx 800..999 is held out for evaluation (never converted, always decontaminated against).
MEQSUM_TRAIN_END = 800
MEQSUM_SIZE = 1000


class DatasetError(RuntimeError):
    pass


def _path(data_dir: Path, *parts: str) -> Path:
    path = data_dir.joinpath(*parts)
    if not path.is_file():
        raise DatasetError(f"{path} is missing: point BIOINSTRUCT_DATA_DIR (or --data-dir) at the "
                           "shared data folder (see ../shared/data/README.md)")
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

def meqsum(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """split "train" (idx < MEQSUM_TRAIN_END) or "heldout" (the rest, for evaluation)."""
    rows = list(_jsonl(_path(data_dir, "meqsum", "meqsum_all.jsonl")))
    if split == "train":
        return [r for r in rows if int(r["idx"]) < MEQSUM_TRAIN_END]
    if split == "heldout":
        return [r for r in rows if int(r["idx"]) >= MEQSUM_TRAIN_END]
    raise ValueError(f"meqsum split is train or heldout, not {split!r}")


# --- evaluation-only sets ----------------------------------------------------------------

def medqa(data_dir: Path) -> list[dict[str, Any]]:
    return list(_jsonl(_path(data_dir, "medqa_usmle_4opt", "test.jsonl")))


def medmcqa(data_dir: Path) -> list[dict[str, Any]]:
    return list(_jsonl(_path(data_dir, "medmcqa_dev", "dev_single_choice.jsonl")))


def mediqa_qs(data_dir: Path, split: str) -> list[dict[str, Any]]:
    return list(_jsonl(_path(data_dir, "mediqa_qs_2021", f"mediqa_qs_{split}.jsonl")))


@dataclass(frozen=True)
class EvalText:
    """One text of an evaluation split that training data must not contain."""

    split: str   # e.g. "pubmedqa/test"
    item: str    # the item's id in that split
    field: str   # question, context, text, summary...
    text: str


# The quality gate's PubMedQA dev split: the last 100 trainval records in file order
# (eval/tasks/pubmedqa.yaml, splits.dev). Training must never see them.
PUBMEDQA_DEV_SIZE = 100


def evaluation_texts(data_dir: Path) -> list[EvalText]:
    """Inputs and questions (and reference summaries) of every evaluation split."""
    out: list[EvalText] = []
    trainval = pubmedqa(data_dir, "trainval")
    for split, items in (("pubmedqa/test", pubmedqa(data_dir, "test")),
                         ("pubmedqa/dev", trainval[-PUBMEDQA_DEV_SIZE:])):
        for item in items:
            out.append(EvalText(split, item["pmid"], "question", item["QUESTION"]))
            for i, passage in enumerate(item["CONTEXTS"]):
                out.append(EvalText(split, item["pmid"], f"context[{i}]", passage))
    for item in medqa(data_dir):
        out.append(EvalText("medqa/test", str(item["realidx"]), "question", item["question"]))
    for item in medmcqa(data_dir):
        out.append(EvalText("medmcqa/dev", str(item["realidx"]), "question", item["question"]))
    for split in ("devel", "test"):
        for item in bc5cdr(data_dir, split):
            out.append(EvalText(f"bc5cdr/{split}", item["id"], "text", bc5cdr_text(item)))
    for split in ("dev", "test"):
        seen: set[str] = set()
        for pair in chemprot(data_dir, split):
            if pair.text not in seen:
                seen.add(pair.text)
                out.append(EvalText(f"chemprot/{split}", str(pair.index), "text", pair.text))
    for item in meqsum(data_dir, "heldout"):
        out.append(EvalText("meqsum/heldout", str(item["idx"]), "question", item["chq"]))
        out.append(EvalText("meqsum/heldout", str(item["idx"]), "summary", item["summary"]))
    for split in ("validation", "test"):
        for item in mediqa_qs(data_dir, split):
            out.append(EvalText(f"mediqa_qs/{split}", str(item["q_id"]), "question", item["question"]))
            out.append(EvalText(f"mediqa_qs/{split}", str(item["q_id"]), "summary", item["summary"]))
    return out
