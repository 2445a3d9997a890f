"""Category of a generated task: the model's own label when usable, else the shared rules."""

from __future__ import annotations

from bioinstruct.generation.parsing import ParsedTask, normalize_category
from bioinstruct.instruct.classify import classify_family
from bioinstruct.instruct.families import TaskFamily


def label_category(task: ParsedTask, *, use_model: bool = True) -> tuple[TaskFamily, str]:
    """(family, source) with source "model" or "rules" (instruct.classify.classify_family)."""
    if use_model:
        family = normalize_category(task.category)
        if family is not None:
            return family, "model"
    return classify_family(task.instruction, task.input), "rules"
