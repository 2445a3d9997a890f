"""How /extract asks for the requested entity types and what it returns (units: the prompt plan
and the merge of several asks; the served behaviour is in tests/test_gene_guard.py)."""

from __future__ import annotations

import pytest

from bioinstruct.instruct.prompts import ENTITY_TYPE_GROUPS, entity_asks, entity_task
from bioinstruct.service.protocol import ExtractRequest
from bioinstruct.service.serving.extract import _entities

TEXT = "Overexpression of VEGF and loss of p53 were associated with tumor angiogenesis after cisplatin."


@pytest.mark.parametrize(("requested", "strategy", "asks"), [
    (["Chemical"], "grouped", [("Chemical",)]),
    (["Disease", "chemical"], "grouped", [("Chemical", "Disease")]),  # group order and spelling
    (["Gene", "Chemical"], "grouped", [("Chemical",), ("Gene",)]),    # never mixed in one prompt
    (["Gene", "Chemical"], "asked", [("Gene", "Chemical")]),
    (["Chemical"], "full", list(ENTITY_TYPE_GROUPS)),
    (["Species", "Gene"], "grouped", [("Gene",), ("Species",)]),       # an unknown type asked apart
    (["Species"], "full", [("Species",)]),
])
def test_asks(requested, strategy, asks):
    assert entity_asks(requested, strategy) == asks


def test_one_type_is_asked_as_training_asked_it():
    instruction, text = entity_task(TEXT, entity_asks(["gene"])[0])
    assert instruction.startswith("Find every Gene entity mentioned") and text == TEXT


def _req(types):
    return ExtractRequest(text=TEXT, entity_types=types)


def test_only_requested_types_come_back_in_the_callers_spelling():
    raws = ["Chemical: cisplatin\nDisease: tumor angiogenesis", "Gene: VEGF\nGene: p53"]
    ents, dropped = _entities(raws, [("Chemical", "Disease"), ("Gene",)], _req(["chemical", "Gene"]))
    assert [(e.text, e.type) for e in ents] == [("VEGF", "Gene"), ("p53", "Gene"), ("cisplatin", "chemical")]
    assert all(TEXT[e.start:e.end] == e.text for e in ents)
    assert dropped == 0  # an unrequested type the full ask returned is not a loss


def test_a_span_called_a_gene_is_not_returned_as_a_chemical():
    raws = ["Chemical: VEGF\nChemical: cisplatin\nChemical: not in the text", "Gene: VEGF"]
    ents, dropped = _entities(raws, list(ENTITY_TYPE_GROUPS), _req(["Chemical"]))
    assert [(e.text, e.type) for e in ents] == [("cisplatin", "Chemical")]
    assert dropped == 1
    # asked for both, the caller gets both readings
    ents, _ = _entities(raws, list(ENTITY_TYPE_GROUPS), _req(["Chemical", "Gene"]))
    assert ("VEGF", "Gene") in [(e.text, e.type) for e in ents] and ("VEGF", "Chemical") in [
        (e.text, e.type) for e in ents]


def test_a_line_of_a_type_not_in_its_ask_is_dropped():
    ents, dropped = _entities(["Gene: VEGF\nChemical: cisplatin"], [("Chemical",)], _req(["Chemical"]))
    assert [(e.text, e.type) for e in ents] == [("cisplatin", "Chemical")] and dropped == 1
