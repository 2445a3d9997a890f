"""The one prompt format: (family, instruction, input) -> chat messages -> prompt text.

The text is produced by the base model's own chat template (tokenizer.apply_chat_template),
so any chat model works. `render_prompt` is what the service sends to the engine;
`render_example` is what training learns from, and its prompt part is `render_prompt`'s
output, byte for byte.
"""

from __future__ import annotations

from typing import Any, Protocol

from bioinstruct.instruct.families import TaskFamily

# One short system message per family: it tells a small base model what shape of answer
# is wanted, and is part of the trained format, so it must not change casually.
SYSTEM_PROMPTS: dict[TaskFamily, str] = {
    TaskFamily.QA: "You are a biomedical assistant. Answer the question accurately and briefly.",
    TaskFamily.IE: ("You are a biomedical assistant. Extract exactly what is asked from the text, "
                    "copying mentions verbatim."),
    TaskFamily.GEN: "You are a biomedical assistant. Write a clear, accurate and concise response.",
    TaskFamily.OTHER: "You are a biomedical assistant. Follow the instruction carefully.",
}


class ChatTokenizer(Protocol):
    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def user_content(instruction: str, input_text: str | None = None) -> str:
    instruction = instruction.strip()
    if input_text and input_text.strip():
        return f"{instruction}\n\nInput:\n{input_text.strip()}"
    return instruction


def build_messages(
    family: TaskFamily | str, instruction: str, input_text: str | None = None
) -> list[dict[str, str]]:
    """The chat messages the model sees for one task."""
    family = TaskFamily(family)
    return [
        {"role": "system", "content": SYSTEM_PROMPTS[family]},
        {"role": "user", "content": user_content(instruction, input_text)},
    ]


def render_prompt(
    tokenizer: ChatTokenizer, family: TaskFamily | str, instruction: str, input_text: str | None = None
) -> str:
    """Prompt text up to where the assistant's answer begins (what the service sends)."""
    return tokenizer.apply_chat_template(
        build_messages(family, instruction, input_text), tokenize=False, add_generation_prompt=True
    )


def render_example(
    tokenizer: ChatTokenizer,
    family: TaskFamily | str,
    instruction: str,
    input_text: str | None,
    output: str,
) -> tuple[str, str]:
    """(prompt, completion) for training: the loss covers the completion only.

    The completion is what the template puts after the prompt for an assistant turn,
    including its end-of-turn marker, so the model learns to stop.
    """
    prompt = render_prompt(tokenizer, family, instruction, input_text)
    messages = build_messages(family, instruction, input_text)
    messages.append({"role": "assistant", "content": output.strip()})
    full = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    if not full.startswith(prompt):
        raise ValueError(
            "this chat template renders the assistant turn differently from the generation "
            "prompt; the prompt/completion split would not match serving"
        )
    return prompt, full[len(prompt):]
