"""Each filter, the order they run in, and category labelling with the rule-based fallback."""

from __future__ import annotations

import pytest

from bioinstruct.generation.filters import (
    FilterConfig,
    blacklisted,
    echo,
    first_rejection,
    instruction_length,
    malformed,
    missing_fields,
    output_length,
    truncated,
)
from bioinstruct.generation.labeling import label_category
from bioinstruct.generation.parsing import ParsedTask
from bioinstruct.instruct.families import TaskFamily

CFG = FilterConfig(min_instruction_words=3, max_instruction_words=150, max_output_words=600)


def task(instruction="Explain how insulin lowers blood glucose.", input="", output="It helps cells take up glucose.",
         **kw) -> ParsedTask:
    return ParsedTask(position=0, instruction=instruction, input=input, output=output, **kw)


def test_a_good_task_passes_every_filter():
    assert first_rejection(task(), CFG) is None


def test_truncated():
    assert truncated(task(truncated=True), CFG) == "truncated"
    assert truncated(task(), CFG) is None
    # truncation wins even when the fields look complete
    assert first_rejection(task(truncated=True), CFG) == "truncated"


def test_missing_fields():
    assert missing_fields(task(instruction="  "), CFG) == "missing_instruction"
    assert missing_fields(task(output=""), CFG) == "missing_output"
    assert missing_fields(task(output=" \n "), CFG) == "missing_output"
    assert missing_fields(task(), CFG) is None


def test_instruction_length_bounds():
    assert instruction_length(task(instruction="Explain insulin."), CFG) == "instruction_too_short"
    assert instruction_length(task(instruction="Explain insulin action."), CFG) is None
    long = "Explain " + " ".join(["insulin"] * 150)
    assert instruction_length(task(instruction=long), CFG) == "instruction_too_long"
    assert instruction_length(task(instruction=long), FilterConfig(max_instruction_words=500)) is None


@pytest.mark.parametrize("instruction", [
    "Look at the chest X-ray image and describe the findings.",
    "Draw a diagram of the nephron.",
    "Plot the blood pressure readings over time.",
    "Listen to the audio recording of the heart sounds and classify them.",
    "Open the attached file and summarize the lab results.",
    "Write a program that computes the body mass index.",
    "Write a Python script to parse discharge summaries.",
    "Create a bar chart of the incidence by age group.",
    "Watch the video of the gait and name the disorder.",
    "Go to the hospital website and find the visiting hours.",
])
def test_blacklist_rejects_what_a_text_model_cannot_do(instruction):
    assert blacklisted(task(instruction=instruction), CFG) == "blacklisted"


@pytest.mark.parametrize("instruction", [
    "Design an exercise program for a patient recovering from a myocardial infarction.",
    "Describe the function of the loop of Henle.",
    "Explain the links between smoking and lung cancer.",
    "Summarize the patient's chart note in two sentences.",
    "Explain why blood is drawn before breakfast for a fasting glucose test.",
    "Describe the imaging findings typical of pneumonia.",
])
def test_blacklist_keeps_biomedical_tasks_with_similar_words(instruction):
    assert blacklisted(task(instruction=instruction), CFG) is None


@pytest.mark.parametrize("fields", [
    {"instruction": "- List the drugs."},
    {"instruction": "...and then explain dosing of heparin."},
    {"instruction": "Éxplain the dosing of heparin."},
    {"instruction": "Explain the <instruction> of heparin dosing."},
    {"instruction": "Explain heparin dosing. Input: none"},
    {"output": "The dose is [insert dose here]."},
    {"output": "Heparin is an anticoagulant that..."},
    {"input": "<noinput> The patient"},
    {"output": "Aspirin.\n5. Instruction: Name a statin."},
])
def test_malformed(fields):
    assert malformed(task(**fields), CFG) == "malformed"


def test_not_malformed():
    assert malformed(task(instruction="5 facts about aspirin: list them briefly."), CFG) is None
    assert malformed(task(input="A 45-year-old woman (G2P1) presents with..."[:-3]), CFG) is None


def test_output_length():
    assert output_length(task(output=" ".join(["word"] * 601)), CFG) == "output_too_long"
    assert output_length(task(output=" ".join(["word"] * 600)), CFG) is None


def test_echo():
    assert echo(task(output="Explain how insulin lowers blood glucose"), CFG) == "output_echoes_prompt"
    assert echo(task(input="The patient has a fever.", output="the patient has a fever"), CFG) == "output_echoes_prompt"
    assert echo(task(), CFG) is None


def test_first_rejection_order():
    # several problems at once: the first in FILTERS order is reported
    bad = task(instruction="Plot it.", output="")
    assert first_rejection(bad, CFG) == "missing_output"
    assert first_rejection(task(instruction="Plot it.", output="x"), CFG) == "instruction_too_short"


def test_label_uses_the_model_label_when_valid():
    family, source = label_category(task(category="IE"))
    assert (family, source) == (TaskFamily.IE, "model")
    family, source = label_category(task(category="question answering"))
    assert (family, source) == (TaskFamily.QA, "model")


@pytest.mark.parametrize("instruction,expected", [
    ("Extract all drug names mentioned in the clinical note.", TaskFamily.IE),
    ("What is the first-line treatment for type 2 diabetes?", TaskFamily.QA),
    ("Summarize the discharge note in two sentences.", TaskFamily.GEN),
    ("Name the enzyme inhibited by statins in the liver.", TaskFamily.QA),
    ("Name and explain three causes of anemia.", TaskFamily.GEN),
])
def test_label_falls_back_to_rules(instruction, expected):
    for label in (None, "", "banana"):
        family, source = label_category(task(instruction=instruction, category=label))
        assert (family, source) == (expected, "rules")
    # rules only, even with a valid model label
    family, source = label_category(task(instruction=instruction, category="OTHER"), use_model=False)
    assert (family, source) == (expected, "rules")


def test_rules_agree_with_the_seed_authors_and_label_the_service_templates():
    from bioinstruct.instruct import prompts as T
    from bioinstruct.instruct.classify import classify_family
    from bioinstruct.seeds import load_seeds

    seeds = [s for s in load_seeds() if s.category is not TaskFamily.OTHER]  # rules never say OTHER
    agree = sum(classify_family(s.instruction, s.input) is s.category for s in seeds)
    assert agree / len(seeds) >= 0.9, f"{agree}/{len(seeds)}"
    for text in T.QA_WITH_OPTIONS + T.QA_FREE:
        assert classify_family(text) is TaskFamily.QA, text
    for text in T.ENTITY_INSTRUCTIONS:
        assert classify_family(text.format(types=T.format_types(("Chemical", "Disease")))) is TaskFamily.IE
    for text in T.RELATION_INSTRUCTIONS:
        assert classify_family(text.format(labels=", ".join(T.CHEMPROT_LABELS))) is TaskFamily.IE
    for text in T.QUESTION_SUMMARY_INSTRUCTIONS:
        assert classify_family(text) is TaskFamily.GEN, text
