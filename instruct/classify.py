"""Rule-based task-family classifier.

Used by the service for adapter="auto" on /generate (pick the adapter whose family
matches the instruction) and by data generation as the fallback category labeler when
the model's own label is missing or invalid.
"""

from __future__ import annotations

import re

from instruct.families import TaskFamily

_IE = re.compile(
    r"\b(extract|identify (all|every|the)|list (all|every|the)\b.*\b(mention|entit|drug|chemical|disease|gene|protein|symptom|medication)|"
    r"find (all|every)|named entit|ner\b|tag (each|the|all)|annotate|recogni[sz]e|relation(ship)? between|"
    r"which (drugs|chemicals|genes|proteins|diseases) are mentioned|spans?\b|normali[sz]e .* to (a |an )?(code|concept|term)|"
    r"icd|umls|mesh (term|id)|snomed|rxnorm|adverse (drug )?events? mentioned|mentions?)",
    re.IGNORECASE,
)
_QA = re.compile(
    r"(\?\s*$|^\s*(what|which|who|whom|whose|when|where|why|how|is|are|does|do|did|can|could|should|will|would|was|were|has|have)\b|"
    r"^\s*(name|state) (the|a|an|one|two|three)\b|"
    r"\banswer\b|\bchoose\b|\bselect (the|one)|\btrue or false\b|\byes or no\b|\byes, no,? or maybe\b|"
    r"\bmultiple[- ]choice\b|\bcorrect option\b|\bbest (answer|option)\b|\bdoes the (text|passage|abstract) (support|state)\b|\bentail)",
    re.IGNORECASE | re.MULTILINE,
)
_GEN = re.compile(
    r"\b(summari[sz]e|summary|rewrite|rephrase|paraphrase|simplify|explain|write|draft|generate|compose|"
    r"translate|describe|create|convert .* into (plain|simple|lay)|plain language|lay (terms|language)|outline)\b",
    re.IGNORECASE,
)


def classify_family(instruction: str, input_text: str | None = None) -> TaskFamily:
    """QA, IE or GEN for an instruction; the instruction decides, the input only breaks ties."""
    text = instruction.strip()
    if _IE.search(text):
        return TaskFamily.IE
    gen = _GEN.search(text)
    qa = _QA.search(text)
    if gen and not qa:
        return TaskFamily.GEN
    if qa and not gen:
        return TaskFamily.QA
    if qa and gen:
        # "Explain why ...?" is still a generation task; a question mark at the end with a
        # short instruction is QA.
        return TaskFamily.QA if text.endswith("?") and len(text) < 200 and gen.start() > 0 else TaskFamily.GEN
    return TaskFamily.GEN
