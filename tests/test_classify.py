from bioinstruct.instruct import TaskFamily
from bioinstruct.instruct.classify import classify_family

CASES = [
    ("Extract all drug names mentioned in the clinical note.", TaskFamily.IE),
    ("Identify every disease in the abstract and give its span.", TaskFamily.IE),
    ("List all the genes mentioned in the sentence.", TaskFamily.IE),
    ("Normalize each medication to its RxNorm concept.", TaskFamily.IE),
    ("What is the first-line treatment for type 2 diabetes?", TaskFamily.QA),
    ("Does the abstract support the claim that statins reduce mortality? Answer yes, no or maybe.", TaskFamily.QA),
    ("Choose the correct option for the patient's most likely diagnosis.", TaskFamily.QA),
    ("Summarize the patient's discharge note in two sentences.", TaskFamily.GEN),
    ("Rewrite this drug label warning in plain language for a patient.", TaskFamily.GEN),
    ("Write a short consent form paragraph for a phase II trial.", TaskFamily.GEN),
    ("Explain how ACE inhibitors lower blood pressure.", TaskFamily.GEN),
    ("Tell me about the liver.", TaskFamily.GEN),
]


def test_rule_based_classifier_on_typical_instructions():
    for instruction, expected in CASES:
        assert classify_family(instruction) == expected, instruction
