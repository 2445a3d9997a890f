"""The seed tasks: schema, category mix, output formats the service parses, no near-duplicates."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from rouge_score import rouge_scorer

from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.parsing import match_option, parse_entities, parse_relations
from bioinstruct.seeds.schema import SEEDS_PATH, SeedTask, load_seeds

TARGET_MIX = {TaskFamily.IE: 27, TaskFamily.GEN: 27, TaskFamily.QA: 18, TaskFamily.OTHER: 8}
# A line that `instruct.parsing` reads as an entity ('Type: mention') or a relation.
ENTITY_LINE = re.compile(r"^(?P<type>[A-Za-z][\w /-]{0,40}?):\s+(?P<mention>\S.*)$")
RELATION_LINE = re.compile(r"^[^|]+\|[^|]+\|[^|]+$")


@pytest.fixture(scope="module")
def seeds() -> list[SeedTask]:
    return load_seeds()


def options_in(text: str) -> list[str]:
    """The '- option' lines after an 'Options:' line, as `instruct.prompts.qa_task` writes them."""
    lines = text.splitlines()
    if "Options:" not in lines:
        return []
    out = []
    for line in lines[lines.index("Options:") + 1:]:
        if not line.startswith("- "):
            break
        out.append(line[2:])
    return out


def test_eighty_seeds_with_unique_ids(seeds):
    assert len(seeds) == 80
    ids = [s.id for s in seeds]
    assert len(set(ids)) == 80
    assert len(SEEDS_PATH.read_text(encoding="utf-8").splitlines()) == 80


def test_every_line_validates_strictly():
    for lineno, line in enumerate(SEEDS_PATH.read_text(encoding="utf-8").splitlines(), 1):
        record = json.loads(line)
        assert set(record) == {"id", "category", "task_type", "instruction", "input", "output"}, lineno
        SeedTask.model_validate(record)


def test_category_mix_near_paper(seeds):
    counts = Counter(s.category for s in seeds)
    for family, target in TARGET_MIX.items():
        assert abs(counts[family] - target) <= 5, (family, counts[family])


def test_task_types_are_varied(seeds):
    assert len({s.task_type for s in seeds}) >= 12


def test_entity_outputs_are_verbatim_spans(seeds):
    checked = 0
    for s in seeds:
        if s.category != TaskFamily.IE:
            continue
        lines = [ln for ln in s.output.splitlines() if ln.strip()]
        if lines == ["None"]:
            checked += 1
            continue
        if not all(ENTITY_LINE.match(ln) and "|" not in ln for ln in lines):
            continue
        types = sorted({ENTITY_LINE.match(ln).group("type") for ln in lines})
        entities, dropped = parse_entities(s.output, s.input, types)
        assert dropped == 0, s.id
        assert entities, s.id
        checked += 1
    assert checked >= 10


def test_relation_outputs_are_verbatim_spans(seeds):
    checked = 0
    for s in seeds:
        lines = [ln for ln in s.output.splitlines() if ln.strip()]
        if s.category != TaskFamily.IE or not all(RELATION_LINE.match(ln) for ln in lines):
            continue
        labels = sorted({ln.split("|")[1].strip() for ln in lines})
        relations, dropped = parse_relations(s.output, s.input, labels)
        assert dropped == 0, s.id
        assert len(relations) == len(lines), s.id
        checked += 1
    assert checked >= 4


def test_multiple_choice_output_is_a_listed_option(seeds):
    checked = 0
    for s in seeds:
        options = options_in(s.input)
        if s.task_type == "multiple_choice_qa":
            assert len(options) >= 2, s.id
        if not options:
            continue
        assert s.output in options, s.id
        assert match_option(s.output, options).how == "exact", s.id
        checked += 1
    assert checked >= 6


def test_no_near_duplicate_instructions(seeds):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    too_close = []
    for i, a in enumerate(seeds):
        for b in seeds[i + 1:]:
            f = scorer.score(a.instruction, b.instruction)["rougeL"].fmeasure
            if f > 0.7:
                too_close.append((a.id, b.id, round(f, 3)))
    assert not too_close


def test_load_seeds_names_the_bad_line(tmp_path):
    good = SEEDS_PATH.read_text(encoding="utf-8").splitlines()[0]
    bad = tmp_path / "seeds.jsonl"
    bad.write_text(good + "\n" + json.dumps({**json.loads(good), "id": "seed-002", "output": " "}) + "\n")
    with pytest.raises(ValueError, match=r":2: "):
        load_seeds(bad)
    bad.write_text(good + "\n{not json\n")
    with pytest.raises(ValueError, match=r":2: "):
        load_seeds(bad)
    bad.write_text(good + "\n" + good + "\n")
    with pytest.raises(ValueError, match="duplicate"):
        load_seeds(bad)
    bad.write_text(json.dumps({**json.loads(good), "extra": 1}) + "\n")
    with pytest.raises(ValueError, match=r":1: "):
        load_seeds(bad)
