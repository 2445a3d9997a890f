"""Rule-based task-family classifier.

Used by the service for adapter="auto" on /generate (pick the adapter whose family
matches the instruction) and by data generation as the fallback category labeler when
the model's own label is missing or invalid.
"""

from __future__ import annotations

import re

from bioinstruct.instruct.families import TaskFamily

_IE = re.compile(
    r"\b(extract|identify (all|every|the)|"
    r"list (all|every|the)\b.*\b(mention|entit|drug|chemical|disease|gene|protein|symptom|medication)|"
    r"find (all|every)|named entit|ner\b|tag (each|the|all)|annotate|mark up|"
    r"recogni[sz]e (all |every |each |the )?(named )?(entit|mention|drug|chemical|disease|gene|protein)|"
    r"relation(ship)? between|relations\b|"
    r"which (drugs|chemicals|genes|proteins|diseases) are mentioned|spans?\b|"
    r"normali[sz]e .* to (a |an )?(code|concept|term)|"
    r"map (each|every|all|the)\b|assign each|expand (every|each|all|the)\b.*abbreviation|json\b|"
    r"icd|umls|mesh (term|id)|snomed|rxnorm|adverse (drug )?events? mentioned|mentions?)"
    # an output format of labelled lines: 'Type: mention', 'head | REL | tail', 'drug -> class'
    r"|'[^'\n]{1,40}: (text|mention|result|value|name)'|'[^'\n]+\|[^'\n]+\|[^'\n]+'|'[^'\n]+ -> [^'\n]+'",
    re.IGNORECASE,
)
# Options, a fixed answer set, or "answer the question": a question to answer, even when
# the instruction also says "explain" or mentions a summary.
_QA_STRONG = re.compile(
    r"\b(options?|choose|pick (the|one|an?)|select (the|one)|multiple[- ]choice|true or false|yes or no|"
    r"yes, no,? or maybe|answer the (\w+ )?question|most likely (diagnosis|cause)|correct (answer|option)|"
    r"best (answer|option))\b",
    re.IGNORECASE,
)
_QA = re.compile(
    r"(\?\s*$|^\s*(what|which|who|whom|whose|when|where|why|how|is|are|does|do|did|can|could|should|will|would|was|were|has|have)\b|"
    r"^\s*(name|state) (the|a|an|one|two|three)\b|^\s*(calculate|compute)\b|"
    r"\banswer\b|\bchoose\b|\bselect (the|one)|\btrue or false\b|\byes or no\b|\byes, no,? or maybe\b|"
    r"\bmultiple[- ]choice\b|\bcorrect option\b|\bbest (answer|option)\b|"
    r"\bdoes the (text|passage|abstract) (support|state)\b|\bentail)",
    re.IGNORECASE | re.MULTILINE,
)
_GEN = re.compile(
    r"\b(summari[sz]e|summary|rewrite|rephrase|paraphrase|simplify|condense|shorten|explain|write|draft|generate|compose|"
    r"translate|describe|create|convert .* into (plain|simple|lay)|plain language|lay (terms|language)|outline)\b",
    re.IGNORECASE,
)
# Starts by asking for a text to be written: generation, whatever the text is about.
_GEN_LEAD = re.compile(
    r"^\s*(write|draft|compose|build|create|generate|rewrite|rephrase|paraphrase|summari[sz]e|translate|"
    r"simplify|condense|shorten)\b",
    re.IGNORECASE,
)
# Extraction cues strong enough to win over a leading generation verb.
_IE_STRONG = re.compile(r"\b(extract|named entit)|'[^'\n]{1,40}: (text|mention)'|'[^'\n]+\|[^'\n]+\|[^'\n]+'",
                        re.IGNORECASE)


def classify_family(instruction: str, input_text: str | None = None) -> TaskFamily:
    """QA, IE or GEN for an instruction; the instruction decides, the input only breaks ties."""
    text = instruction.strip()
    ie_strong = _IE_STRONG.search(text)
    if _GEN_LEAD.search(text) and not ie_strong:
        return TaskFamily.GEN
    if ie_strong:
        return TaskFamily.IE
    if _QA_STRONG.search(text):
        return TaskFamily.QA
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
