"""The generation prompt: a few example tasks, numbered, and a request for the next ones.

The format is Self-Instruct/Alpaca's numbered tasks with plain field labels, simple
enough for a 135M chat model and natural for a GPT-4-class one:

    1. Instruction: ...
    Input: ... (or <noinput>)
    Output: ...
    Category: QA | IE | GEN | OTHER
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, field_validator

NO_INPUT = "<noinput>"

SYSTEM_PROMPT = (
    "You write new, diverse biomedical and clinical tasks for training an assistant. "
    "Reply only with the numbered tasks, in exactly the format of the examples."
)

USER_TEMPLATE = """Here are {n_examples} example tasks. Each has an instruction, an input ({no_input} when none is needed), the correct output, and a category: QA (answer a question), IE (extract information from a text), GEN (write, summarize, rewrite or explain) or OTHER.

{examples}

Write {k} new tasks, numbered {first} to {last}, in the same format. Make them different from the examples and from each other. A text-only model must be able to do each one: no images, files, audio, plots or computer programs. Give the full output of each task."""  # noqa: E501


class ExampleTask(Protocol):
    """What a prompt example needs: seeds.SeedTask and InstructionRecord both fit."""

    id: str
    instruction: str
    input: str
    output: str

    @property
    def category(self) -> object: ...


def format_task(number: int, task: ExampleTask) -> str:
    category = getattr(task.category, "value", task.category)
    input_text = task.input.strip() if task.input and task.input.strip() else NO_INPUT
    return (
        f"{number}. Instruction: {task.instruction.strip()}\n"
        f"Input: {input_text}\n"
        f"Output: {task.output.strip()}\n"
        f"Category: {category}"
    )


def build_messages(examples: Sequence[ExampleTask], k: int) -> list[dict[str, str]]:
    """Chat messages asking for k new tasks after the numbered examples."""
    n = len(examples)
    body = "\n\n".join(format_task(i + 1, t) for i, t in enumerate(examples))
    user = USER_TEMPLATE.format(n_examples=n, no_input=NO_INPUT, examples=body, k=k,
                                first=n + 1, last=n + k)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def prompt_hash(messages: Sequence[dict[str, str]]) -> str:
    blob = json.dumps(list(messages), sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def draw_examples(
    rng: random.Random,
    seeds: Sequence[ExampleTask],
    generated: Sequence[ExampleTask],
    num_examples: int = 3,
    mix_generated: int = 0,
) -> list[ExampleTask]:
    """num_examples tasks at random: seeds, with up to mix_generated already accepted
    generated tasks among them when there are any. Seeds come first, as in Self-Instruct."""
    n_gen = min(mix_generated, len(generated), num_examples)
    n_seed = min(num_examples - n_gen, len(seeds))
    picked = rng.sample(list(seeds), n_seed) if n_seed else []
    if n_gen:
        picked += rng.sample(list(generated), n_gen)
    return picked


class PromptExample(BaseModel):
    """A seed task as the prompt uses it (from the seeds package or a JSONL file)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    instruction: str
    input: str = ""
    output: str
    category: str = "OTHER"

    @field_validator("category", mode="before")
    @classmethod
    def _category(cls, value: object) -> str:
        return str(getattr(value, "value", value))

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: object) -> str:
        return "" if value is None else str(value)


def load_prompt_examples(path: Path | None = None) -> list[PromptExample]:
    """Seed tasks: from a JSONL file, or the project's seeds package (`seeds.load_seeds()`)."""
    if path is not None:
        examples = []
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        examples.append(PromptExample.model_validate_json(line))
                    except ValueError as exc:
                        raise ValueError(f"{path}:{n}: not a seed task: {exc}") from None
    else:
        from bioinstruct.seeds import load_seeds

        examples = [PromptExample.model_validate(s, from_attributes=True) for s in load_seeds()]
    if not examples:
        raise ValueError("no seed tasks")
    return examples
