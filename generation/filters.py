"""Heuristic filters for generated tasks (Self-Instruct/Alpaca's, adapted to biomedicine).

Each filter takes a parsed task and returns the reason it is rejected, or None. `first_rejection`
runs them in order; the ROUGE-L near-duplicate check against the pool is separate
(`generation.dedup`) because it depends on everything accepted before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from bioinstruct.generation.parsing import ParsedTask


@dataclass(frozen=True)
class FilterConfig:
    min_instruction_words: int = 3
    max_instruction_words: int = 150
    max_output_words: int = 600


# Tasks a text-only model cannot do: it cannot see or make images, plots, audio or video,
# open files or links, or (for this data set) should not be asked to write programs.
_BLACKLIST = re.compile(
    r"\b(images?|pictures?|photos?|photographs?|videos?|audio|sound (clip|recording)s?|music|"
    r"podcasts?|graphs?|plots?|plotting|(bar|pie|flow|line) ?charts?|charts? (showing|of the data)|"
    r"diagrams?|drawings?|sketch(es)?|infographics?|visuali[sz]ation|"
    r"files?|attach(ed|ment)s?|spreadsheets?|pdfs?|excel|csv|upload(ed|ing)?|download(ed|ing)?|"
    r"urls?|hyperlinks?|click|websites?|web ?pages?|go to|browse|"
    r"computer programs?|source code|code snippets?|python|java(script)?|sql|html|api)\b",
    re.IGNORECASE,
)
_PROGRAM = re.compile(
    r"\b((write|implement|code)\s+(a|an|the|some)?\s*(computer |python |simple )?program"
    r"|(write|create|implement|develop|build|code)\s+(a|an|the|some)?\s*(computer |python |simple )?"
    r"(code|script|function|app|application|software|website))\b",
    re.IGNORECASE,
)
_TEMPLATE_LEFTOVER = re.compile(
    r"(<\s*(no)?input\s*>|<\s*instruction\s*>|<\s*output\s*>|\b(instruction|input|output)\s*\d*\s*:|"
    r"\[(insert|your|add|placeholder)[^\]]*\]|\{[a-z_ ]+\}|lorem ipsum|\.\.\.\s*$)",
    re.IGNORECASE,
)
_WORD = re.compile(r"\S+")


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text).strip().casefold()


def truncated(task: ParsedTask, cfg: FilterConfig) -> str | None:
    return "truncated" if task.truncated else None


def missing_fields(task: ParsedTask, cfg: FilterConfig) -> str | None:
    if not task.instruction.strip():
        return "missing_instruction"
    if not task.output.strip():
        return "missing_output"
    return None


def instruction_length(task: ParsedTask, cfg: FilterConfig) -> str | None:
    n = _words(task.instruction)
    if n < cfg.min_instruction_words:
        return "instruction_too_short"
    if n > cfg.max_instruction_words:
        return "instruction_too_long"
    return None


def output_length(task: ParsedTask, cfg: FilterConfig) -> str | None:
    return "output_too_long" if _words(task.output) > cfg.max_output_words else None


def malformed(task: ParsedTask, cfg: FilterConfig) -> str | None:
    """Instruction that does not start like a sentence, or fields with template leftovers."""
    first = task.instruction.lstrip()[:1]
    if not first or not (first.isascii() and (first.isalpha() or first.isdigit())):
        return "malformed"
    if _TEMPLATE_LEFTOVER.search(task.instruction) or _TEMPLATE_LEFTOVER.search(task.output):
        return "malformed"
    if task.input and _TEMPLATE_LEFTOVER.search(task.input):
        return "malformed"
    return None


def blacklisted(task: ParsedTask, cfg: FilterConfig) -> str | None:
    """Something a text model cannot do (images, files, plots, audio, "write a program")."""
    if _PROGRAM.search(task.instruction) or _BLACKLIST.search(task.instruction):
        return "blacklisted"
    return None


def echo(task: ParsedTask, cfg: FilterConfig) -> str | None:
    """The output only repeats the instruction or the input."""
    out = _norm(task.output)
    if out and (out == _norm(task.instruction) or (task.input and out == _norm(task.input))):
        return "output_echoes_prompt"
    return None


FILTERS: list[Callable[[ParsedTask, FilterConfig], str | None]] = [
    truncated, missing_fields, instruction_length, malformed, blacklisted, output_length, echo,
]
REASONS = ("truncated", "missing_instruction", "missing_output", "instruction_too_short",
           "instruction_too_long", "malformed", "blacklisted", "output_too_long",
           "output_echoes_prompt", "rouge_duplicate")


def first_rejection(task: ParsedTask, cfg: FilterConfig | None = None) -> str | None:
    cfg = cfg or FilterConfig()
    for check in FILTERS:
        reason = check(task, cfg)
        if reason:
            return reason
    return None
