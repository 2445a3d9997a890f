"""Converters on the real shared data: counts, validity, the service's formats, train splits only."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from bioinstruct.generation.converters import CONVERTERS
from bioinstruct.generation.datasets import bc2gm, bc5cdr, chemprot, chemprot_unmark, pubmedqa
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.parsing import find_spans, match_option, parse_entities
from bioinstruct.instruct.prompts import (
    CHEMPROT_LABELS,
    ENTITY_INSTRUCTIONS,
    QA_WITH_OPTIONS,
    QUESTION_SUMMARY_INSTRUCTIONS,
    format_types,
)
from bioinstruct.instruct.records import InstructionRecord

EXPECTED = {"pubmedqa": 500, "bc5cdr": 4560, "bc2gm": 1572, "chemprot": 4169, "meqsum": 1000}


@pytest.fixture(scope="module")
def converted(data_dir):
    return {name: fn(data_dir) for name, fn in CONVERTERS.items()}


def _options(input_text: str) -> list[str]:
    block = input_text.split("Options:\n", 1)[1]
    return [line[2:] for line in block.splitlines() if line.startswith("- ")]


def test_counts_and_valid_unique_records(converted):
    ids = set()
    for name, records in converted.items():
        assert len(records) == EXPECTED[name], name
        for r in records:
            InstructionRecord.model_validate_json(r.model_dump_json())  # round-trips as JSONL
            assert r.provenance["source"] == f"convert:{name}"
            assert r.id not in ids
            ids.add(r.id)


def test_several_phrasings_per_task(converted):
    for name in converted:
        assert len({r.instruction for r in converted[name]}) >= 3, name


def test_pubmedqa_answers_are_options_and_come_from_trainval_only(converted, data_dir):
    records = converted["pubmedqa"]
    test_pmids = {item["pmid"] for item in pubmedqa(data_dir, "test")}
    for r in records:
        assert r.category is TaskFamily.QA and r.instruction in QA_WITH_OPTIONS
        options = _options(r.input)
        assert options == ["yes", "no", "maybe"]
        assert r.output in options
        assert match_option(r.output, options).index == options.index(r.output)  # the service reads it back
        assert r.input.startswith("Context:\n") and "\n\nQuestion: " in r.input
        assert r.provenance["item"] not in test_pmids
    assert set(Counter(r.output for r in records)) == {"yes", "no", "maybe"}


def _check_entity_records(records, items, groups):
    """Each record asks for one of `groups` of types and lists exactly the gold mentions of those
    types (once per type and text), each found in the text and parsed back without loss."""
    by_id = {item["id"]: item for item in items}
    gold_count = expected = 0
    for r in records:
        types = tuple(r.provenance["types"])
        assert types in groups
        assert r.category is TaskFamily.IE
        assert r.instruction in {t.format(types=format_types(types)) for t in ENTITY_INSTRUCTIONS}
        item = by_id[r.provenance["item"]]
        expected += len({(e["type"].capitalize(), e["text"]) for e in item["entities"]
                         if e["type"].capitalize() in types})
        if r.output == "None":
            continue
        for line in r.output.splitlines():
            etype, mention = line.split(": ", 1)
            assert etype in types, (r.id, line)  # a type not asked for is never answered
            assert find_spans(r.input, mention), (r.id, mention)
            gold_count += 1
        entities, dropped = parse_entities(r.output, r.input, list(types))
        assert dropped == 0 and entities
    assert gold_count == expected
    assert any(r.output == "None" for r in records)
    # About half in ordinary spacing ("L-dopa", "Parkinson's"), as callers write; the rest as the benchmark.
    natural = [r for r in records if r.provenance["spacing"] == "natural"]
    assert 0.4 < len(natural) / len(records) <= 0.5
    assert not any(" - " in r.input or " ' s " in r.input or " ," in r.input for r in natural)


def test_bc5cdr_mentions_are_in_the_text_and_parse_back(converted, data_dir):
    records = converted["bc5cdr"]
    _check_entity_records(records, bc5cdr(data_dir, "train"), {("Chemical", "Disease"), ("Chemical",), ("Disease",)})
    # half ask for both types (the benchmark's request), a quarter each type alone
    share = Counter(tuple(r.provenance["types"]) for r in records)
    assert share[("Chemical", "Disease")] == len(records) // 2
    assert abs(share[("Chemical",)] - share[("Disease",)]) <= 2


def test_bc2gm_sentences_are_asked_for_genes_only(converted, data_dir):
    records = converted["bc2gm"]
    train = bc2gm(data_dir, "train")
    _check_entity_records(records, train, {("Gene",)})
    assert {r.provenance["item"] for r in records} <= {item["id"] for item in train}
    assert sum(r.output != "None" for r in records) > 500


def test_chemprot_is_qa_over_the_13_labels_without_markers(converted, data_dir):
    records = converted["chemprot"]
    pairs = chemprot(data_dir, "train")
    for r, pair in zip(records, pairs, strict=True):
        assert r.category is TaskFamily.QA
        assert _options(r.input) == list(CHEMPROT_LABELS)
        assert r.output == pair.label and r.output in CHEMPROT_LABELS
        assert not re.search(r"<< .+? >>|\[\[ .+? \]\]", r.input)
        question = re.search(r"Question: (.*)", r.input).group(1)
        assert pair.first in question and pair.second in question
        assert pair.first in r.input.split("Question:")[0] and pair.second in r.input.split("Question:")[0]
    assert len(Counter(r.output for r in records)) == 13


def test_chemprot_unmark():
    text, first, second = chemprot_unmark("<< Aspirin >> inhibits [[ COX-1 ]] irreversibly.")
    assert (text, first, second) == ("Aspirin inhibits COX-1 irreversibly.", "Aspirin", "COX-1")
    # a chemical name containing "[[" (it occurs in the test split)
    text, first, second = chemprot_unmark("A << 5-[2-[[2-hydroxy]propyl]] >> blocks the [[ beta(1)-adrenoceptor ]].")
    assert first == "5-[2-[[2-hydroxy]propyl]]" and second == "beta(1)-adrenoceptor"
    assert text == "A 5-[2-[[2-hydroxy]propyl]] blocks the beta(1)-adrenoceptor."


def test_meqsum_converts_every_pair(converted, data_dir):
    """All 1,000: the held-out part is the task file's to define and decontamination's to remove
    (tests/test_generation_decontaminate.py)."""
    records = converted["meqsum"]
    idx = sorted(r.provenance["item"] for r in records)
    assert idx == list(range(1000))
    rows = {json.loads(line)["idx"]: json.loads(line)
            for line in (data_dir / "meqsum" / "meqsum_all.jsonl").read_text().splitlines()}
    for r in records:
        assert r.category is TaskFamily.GEN and r.instruction in QUESTION_SUMMARY_INSTRUCTIONS
        row = rows[r.provenance["item"]]
        assert r.input == row["chq"].strip() and r.output == row["summary"].strip()
