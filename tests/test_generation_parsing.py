"""Parsing model replies into tasks: well-formed, messy, broken."""

from __future__ import annotations

from bioinstruct.generation.parsing import normalize_category, normalize_input, parse_response
from bioinstruct.generation.prompting import (
    PromptExample,
    build_messages,
    draw_examples,
    format_task,
)
from bioinstruct.instruct.families import TaskFamily

WELL_FORMED = """4. Instruction: List three common side effects of metformin.
Input: <noinput>
Output: Nausea, diarrhea and abdominal discomfort.
Category: GEN

5. Instruction: Extract every drug mentioned in the sentence.
Input: The patient took aspirin and warfarin.
Output: aspirin
warfarin
Category: IE

6. Instruction: Is hypertension a risk factor for stroke?
Input: <noinput>
Output: Yes.
Category: QA"""


def test_well_formed_reply():
    parsed = parse_response(WELL_FORMED, "stop")
    assert [t.number for t in parsed.tasks] == [4, 5, 6]
    first, second, third = parsed.tasks
    assert first.instruction == "List three common side effects of metformin."
    assert first.input == ""
    assert first.output == "Nausea, diarrhea and abdominal discomfort."
    assert first.category == "GEN"
    assert second.input == "The patient took aspirin and warfarin."
    assert second.output == "aspirin\nwarfarin"  # multi-line output kept
    assert third.category == "QA"
    assert not any(t.truncated for t in parsed.tasks)
    assert parsed.preamble == ""


def test_chatter_before_and_after_is_not_content():
    reply = ("Sure! Here are some new tasks for you:\n\n" + WELL_FORMED +
             "\n\nI hope these tasks help! Let me know if you need more.")
    parsed = parse_response(reply, "stop")
    assert len(parsed.tasks) == 3
    assert parsed.preamble.startswith("Sure!")
    assert parsed.tasks[-1].category == "QA"
    reply2 = WELL_FORMED.rsplit("\nCategory: QA", 1)[0] + "\n\nI hope this helps!"
    assert parse_response(reply2).tasks[-1].output == "Yes."


def test_truncated_last_item_when_cut_by_length():
    reply = WELL_FORMED + "\n\n7. Instruction: Summarize the abstract.\nInput: Background: we studied"
    parsed = parse_response(reply, "length")
    assert [t.truncated for t in parsed.tasks] == [False, False, False, True]
    assert parsed.tasks[-1].output == ""
    # the same text with finish_reason stop: nothing is marked truncated
    assert not any(t.truncated for t in parse_response(reply, "stop").tasks)


def test_markdown_and_numbered_field_variants():
    reply = """**Task 4**
**Instruction:** Define anemia in one sentence.
**Input:** N/A
**Output:** A low red blood cell count or hemoglobin level.

5. Instruction: Name the organ that produces insulin.
5. Input: <noinput>
5. Output: The pancreas.

### Instruction 6: Classify the drug as an antibiotic or not.
- Input: amoxicillin
- Output - Antibiotic"""
    tasks = parse_response(reply).tasks
    assert [t.number for t in tasks] == [4, 5, 6]
    assert tasks[0].instruction == "Define anemia in one sentence."
    assert tasks[0].input == ""
    assert tasks[1].output == "The pancreas."
    assert tasks[2].instruction == "Classify the drug as an antibiotic or not."
    assert tasks[2].input == "amoxicillin"
    assert tasks[2].output == "Antibiotic"


def test_unnumbered_tasks_split_on_repeated_instruction():
    reply = """Instruction: Explain what a biopsy is.
Output: A biopsy removes a small piece of tissue for examination.
Instruction: Give the normal range of adult resting heart rate.
Output: 60 to 100 beats per minute."""
    tasks = parse_response(reply).tasks
    assert len(tasks) == 2
    assert tasks[1].instruction.startswith("Give the normal range")
    assert tasks[1].number is None


def test_numbered_list_inside_output_is_not_a_new_task():
    reply = """4. Instruction: List the steps of hand washing.
Input: <noinput>
Output: 1. Wet hands.
2. Apply soap.
3. Scrub for 20 seconds.
4. Rinse and dry.
Category: GEN

5. Instruction: Name one loop diuretic.
Input: <noinput>
Output: Furosemide."""
    tasks = parse_response(reply).tasks
    assert len(tasks) == 2
    assert tasks[0].output.splitlines() == ["1. Wet hands.", "2. Apply soap.", "3. Scrub for 20 seconds.",
                                            "4. Rinse and dry."]
    assert tasks[1].output == "Furosemide."


def test_bare_numbered_instruction_without_label():
    reply = """4. Describe the symptoms of appendicitis.
Input: <noinput>
Output: Right lower abdominal pain, fever and nausea.

5. Name the vitamin deficiency that causes scurvy.
Input: <noinput>
Output: Vitamin C."""
    tasks = parse_response(reply).tasks
    assert [t.instruction for t in tasks] == ["Describe the symptoms of appendicitis.",
                                              "Name the vitamin deficiency that causes scurvy."]
    assert tasks[1].output == "Vitamin C."


def test_missing_fields_are_reported_empty():
    reply = """4. Instruction: Explain the mechanism of action of statins.
Input: <noinput>

5. Input: some text
Output: something"""
    tasks = parse_response(reply).tasks
    assert tasks[0].instruction and tasks[0].output == ""
    assert tasks[1].instruction == "" and tasks[1].output == "something"


def test_empty_and_garbage_replies():
    assert parse_response("", "stop").tasks == []
    assert parse_response(None, None).tasks == []  # type: ignore[arg-type]
    parsed = parse_response("I am sorry, I cannot help with that.", "stop")
    assert parsed.tasks == [] and parsed.preamble


def test_answer_line_inside_output_stays_in_output():
    reply = ("4. Instruction: Read the case and answer.\nInput: A man with chest pain.\n"
             "Output: Reasoning first.\nAnswer: myocardial infarction")
    task = parse_response(reply).tasks[0]
    assert task.output == "Reasoning first.\nAnswer: myocardial infarction"


def test_normalize_category_and_input():
    assert normalize_category("QA") is TaskFamily.QA
    assert normalize_category("Information extraction") is TaskFamily.IE
    assert normalize_category("generation (summary)") is TaskFamily.GEN
    assert normalize_category("other") is TaskFamily.OTHER
    assert normalize_category("banana") is None
    assert normalize_category(None) is None
    for empty in ("<noinput>", "None", "N/A", " - ", "(none)", ""):
        assert normalize_input(empty) == ""
    assert normalize_input(" aspirin ") == "aspirin"


def test_prompt_round_trips_through_the_parser():
    seeds = [PromptExample(id=f"s{i}", instruction=f"Explain topic number {i} to a nurse.",
                           input="" if i % 2 else "text", output=f"Answer {i}.", category="GEN") for i in range(5)]
    import random

    picked = draw_examples(random.Random(0), seeds, [], 3, 0)
    assert len(picked) == 3 and len({p.id for p in picked}) == 3
    messages = build_messages(picked, 5)
    assert "numbered 4 to 8" in messages[-1]["content"]
    # the examples as the prompt shows them parse back to themselves
    body = "\n\n".join(format_task(i + 1, t) for i, t in enumerate(picked))
    tasks = parse_response(body).tasks
    assert [(t.instruction, t.input, t.output, t.category) for t in tasks] == [
        (p.instruction, p.input, p.output, p.category) for p in picked]


def test_draw_examples_mixes_generated():
    import random

    seeds = [PromptExample(id=f"s{i}", instruction="x y z", output="o") for i in range(10)]
    gen = [PromptExample(id=f"g{i}", instruction="x y z", output="o") for i in range(10)]
    picked = draw_examples(random.Random(1), seeds, gen, 3, 1)
    assert sum(p.id.startswith("g") for p in picked) == 1
    assert sum(p.id.startswith("s") for p in picked) == 2
    # no generated tasks yet: all seeds
    assert all(p.id.startswith("s") for p in draw_examples(random.Random(1), seeds, [], 3, 2))
