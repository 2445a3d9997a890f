"""Canonical instructions for the service's task routes, and the output formats they expect.

The first template of each list is what the service sends; the others are paraphrases
that data converters mix in so that an adapter does not overfit one wording. Every
template asks for the same output format, which `instruct.parsing` reads back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

DEFAULT_ENTITY_TYPES = ("Chemical", "Disease")
# The entity types the IE adapter is taught, grouped by the corpus that annotates them
# together (BC5CDR: chemicals and diseases; BC2GM: genes and proteins). A type is only ever
# taught as absent where its corpus annotates it, so a training prompt never mixes groups;
# the gateway asks the same way (bioinstruct.service.serving.extract).
ENTITY_TYPE_GROUPS: tuple[tuple[str, ...], ...] = (("Chemical", "Disease"), ("Gene",))
KNOWN_ENTITY_TYPES = tuple(t for group in ENTITY_TYPE_GROUPS for t in group)
# How the gateway asks for a request's types (BIOINSTRUCT_EXTRACT_TYPE_STRATEGY; chosen on dev,
# reports/ie-strategy-full/README.md): "asked", one prompt with exactly the requested types;
# "grouped", one prompt per group with the requested types of that group (as in training);
# "full", every known group in full, so that a mention the adapter calls a Gene is not
# returned as a Chemical or Disease when only those were requested.
TypeStrategy = Literal["asked", "grouped", "full"]

QA_WITH_OPTIONS = [
    "Answer the biomedical question. Reply with exactly one of the listed options.",
    "Read the question and choose the single best option. Reply with the option only.",
    "Which option answers the question? Reply with that option and nothing else.",
]
QA_FREE = [
    "Answer the biomedical question accurately and briefly.",
    "Give a short, accurate answer to the question.",
]
ENTITY_INSTRUCTIONS = [
    ("Find every {types} mentioned in the text. Write one per line as 'Type: mention', "
     "copying each mention exactly as written. Write 'None' if there is none."),
    ("List all {types} mentions in the text, one per line in the form 'Type: mention', "
     "with the mention copied verbatim. If there are none, write 'None'."),
    ("Extract the {types} entities from the text. Output one line per entity as 'Type: mention' "
     "using the exact words of the text, or 'None'."),
]
RELATION_INSTRUCTIONS = [
    ("Find the relations between the entities in the text. Write one per line as 'head | RELATION | tail', "
     "copying entity mentions exactly. Allowed relations: {labels}. Write 'None' if there is none."),
    ("List every relation stated in the text as 'head | RELATION | tail', one per line, "
     "with mentions copied verbatim. Use only these relations: {labels}. If none, write 'None'."),
]
NONE_ANSWER = "None"


def format_types(types: Sequence[str]) -> str:
    types = list(types)
    if len(types) == 1:
        return f"{types[0]} entity"
    return ", ".join(types[:-1]) + f" and {types[-1]} entity"


def qa_task(
    question: str,
    context: str | Sequence[str] | None = None,
    options: Sequence[str] | None = None,
    variant: int = 0,
) -> tuple[str, str]:
    """(instruction, input) for a question, its optional context passages and options."""
    parts: list[str] = []
    if context:
        passages = [context] if isinstance(context, str) else list(context)
        parts.append("Context:\n" + "\n".join(p.strip() for p in passages if p.strip()))
    parts.append(f"Question: {question.strip()}")
    if options:
        parts.append("Options:\n" + "\n".join(f"- {o}" for o in options))
        instruction = QA_WITH_OPTIONS[variant % len(QA_WITH_OPTIONS)]
    else:
        instruction = QA_FREE[variant % len(QA_FREE)]
    return instruction, "\n\n".join(parts)


def entity_task(text: str, entity_types: Sequence[str] = DEFAULT_ENTITY_TYPES, variant: int = 0) -> tuple[str, str]:
    template = ENTITY_INSTRUCTIONS[variant % len(ENTITY_INSTRUCTIONS)]
    return template.format(types=format_types(entity_types)), text


def entity_asks(requested: Sequence[str], strategy: TypeStrategy = "grouped") -> list[tuple[str, ...]]:
    """The type lists to ask for, one prompt each. Requested types the adapter does not know
    (any label is allowed) are asked together in one more prompt; known ones in group order
    and with the group's spelling, as training asked them."""
    known = {t.casefold(): t for t in KNOWN_ENTITY_TYPES}
    wanted = {t.casefold() for t in requested}
    if strategy == "asked":
        return [tuple(known.get(t.casefold(), t) for t in requested)]
    if strategy == "full" and wanted & set(known):
        asks = list(ENTITY_TYPE_GROUPS)
    else:
        asks = [sub for group in ENTITY_TYPE_GROUPS if (sub := tuple(t for t in group if t.casefold() in wanted))]
    other = tuple(t for t in dict.fromkeys(requested) if t.casefold() not in known)
    return asks + ([other] if other else [])


def relation_task(text: str, labels: Sequence[str], variant: int = 0) -> tuple[str, str]:
    template = RELATION_INSTRUCTIONS[variant % len(RELATION_INSTRUCTIONS)]
    return template.format(labels=", ".join(labels)), text


def entity_output(entities: Sequence[tuple[str, str]]) -> str:
    """Target text for (type, mention) pairs, in the format the parser reads."""
    if not entities:
        return NONE_ANSWER
    return "\n".join(f"{etype}: {mention}" for etype, mention in entities)


def relation_output(relations: Sequence[tuple[str, str, str]]) -> str:
    if not relations:
        return NONE_ANSWER
    return "\n".join(f"{h} | {r} | {t}" for h, r, t in relations)


# ChemProt's 13 relation labels (sentence level, no negative class), as the service and
# the converters use them.
CHEMPROT_LABELS = (
    "ACTIVATOR", "AGONIST", "AGONIST-ACTIVATOR", "AGONIST-INHIBITOR", "ANTAGONIST", "DOWNREGULATOR",
    "INDIRECT-DOWNREGULATOR", "INDIRECT-UPREGULATOR", "INHIBITOR", "PRODUCT-OF", "SUBSTRATE",
    "SUBSTRATE_PRODUCT-OF", "UPREGULATOR",
)
# The question for one marked pair. ChemProt's markers do not say which entity is the
# chemical (the first one in the sentence is marked first), so the question names both.
PAIR_RELATION_QUESTIONS = [
    "What is the relation between {first} and {second} in the sentence?",
    "Which chemical-protein relation does the sentence state between {first} and {second}?",
    "According to the sentence, how are {first} and {second} related?",
]

QUESTION_SUMMARY_INSTRUCTIONS = [
    "Summarize the consumer health question into one short question.",
    "Rewrite the patient's message as a single short question that keeps only the medical question.",
    "Condense this consumer health question into one brief question that a clinician could answer.",
]


def pair_relation_question(first: str, second: str, variant: int = 0) -> str:
    template = PAIR_RELATION_QUESTIONS[variant % len(PAIR_RELATION_QUESTIONS)]
    return template.format(first=first.strip(), second=second.strip())


def question_summary_task(text: str, variant: int = 0) -> tuple[str, str]:
    """(instruction, input) for summarizing a consumer health question (MeQSum, MEDIQA-QS)."""
    return QUESTION_SUMMARY_INSTRUCTIONS[variant % len(QUESTION_SUMMARY_INSTRUCTIONS)], text.strip()
