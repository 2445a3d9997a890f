"""The instruction record: what generation and converters write and training reads (JSONL)."""

from __future__ import annotations

from typing import Any

from bioinstruct.instruct.families import TaskFamily
from pydantic import BaseModel, ConfigDict, Field, field_validator


class InstructionRecord(BaseModel):
    """One instruction-following example.

    `category` is the task family (QA, IE, GEN, OTHER). `provenance` says where it came
    from: {"source": "self-instruct" | "convert:<dataset>", ...} plus seed ids, model,
    prompt hash, dataset split and item id, creation time, as applicable.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    instruction: str = Field(min_length=1)
    input: str = ""
    output: str = Field(min_length=1)
    category: TaskFamily
    task_type: str | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)

    @field_validator("instruction", "output")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value
