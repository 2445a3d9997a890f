"""Schema and loader for the seed tasks in `seed_tasks.jsonl` (one JSON object a line)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.records import NonBlankText

SEEDS_PATH = Path(__file__).with_name("seed_tasks.jsonl")


class SeedTask(BaseModel):
    """One seed task: an instruction, its optional input and the correct output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^seed-\d{3}$")
    category: TaskFamily
    task_type: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    instruction: NonBlankText
    input: str = ""
    output: NonBlankText


def load_seeds(path: str | Path | None = None) -> list[SeedTask]:
    """Read seed tasks from a JSONL file (default: the packaged seeds).

    Raises ValueError naming the file and line number for a line that is not valid JSON,
    does not match the schema, or repeats an earlier id.
    """
    path = Path(path) if path is not None else SEEDS_PATH
    seeds: list[SeedTask] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                seed = SeedTask.model_validate(json.loads(line))
            except (json.JSONDecodeError, ValidationError) as exc:
                raise ValueError(f"{path}:{lineno}: invalid seed task: {exc}") from exc
            if seed.id in seen:
                raise ValueError(f"{path}:{lineno}: duplicate seed id {seed.id!r}")
            seen.add(seed.id)
            seeds.append(seed)
    return seeds
