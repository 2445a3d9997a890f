"""The instruction record: what generation and converters write and training reads (JSONL)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from bioinstruct.instruct.families import TaskFamily


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# Text that must say something: instructions and outputs, in records and in seed tasks.
NonBlankText = Annotated[str, AfterValidator(_not_blank)]


class InstructionRecord(BaseModel):
    """One instruction-following example.

    `category` is the task family (QA, IE, GEN, OTHER). `provenance` says where it came
    from: {"source": "self-instruct" | "convert:<dataset>", ...} plus seed ids, model,
    prompt hash, dataset split and item id, creation time, as applicable.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    instruction: NonBlankText
    input: str = ""
    output: NonBlankText
    category: TaskFamily
    task_type: str | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)
