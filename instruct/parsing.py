"""Read model output back into validated structure: options, entities with offsets, relations.

Constrained decoding makes output well-formed, not right; these functions keep only what
can be checked against the request (an allowed option, a span that is really in the text).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz, process

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_LETTER = re.compile(r"^\s*\(?([A-Za-z])[).:]\s*|^\s*\(?([A-Za-z])\)?\s*$")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip(".").strip().casefold()


@dataclass(frozen=True)
class OptionMatch:
    index: int | None
    how: str  # exact | letter | contains | fuzzy | none


def match_option(raw: str, options: Sequence[str], *, fuzzy_cutoff: float = 80.0) -> OptionMatch:
    """Map free model text to one of the options, or say that none fits."""
    if not options:
        return OptionMatch(None, "none")
    first_line = next((ln for ln in raw.strip().splitlines() if ln.strip()), "")
    first_line = _BULLET.sub("", first_line)
    normed = [_norm(o) for o in options]
    target = _norm(first_line)
    if target in normed:
        return OptionMatch(normed.index(target), "exact")
    # "B", "(B)", "B. text": a letter naming the option's position.
    letter = _LETTER.match(first_line)
    if letter:
        idx = ord((letter.group(1) or letter.group(2)).upper()) - ord("A")
        if 0 <= idx < len(options):
            return OptionMatch(idx, "letter")
    # The answer contains an option's text (longest first, so "no" does not win over "not known").
    lowered = _norm(raw)
    hits = [i for i, o in sorted(enumerate(normed), key=lambda p: -len(p[1]))
            if o and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", lowered)]
    if hits:
        return OptionMatch(hits[0], "contains")
    best = process.extractOne(target, normed, scorer=fuzz.ratio)
    if best and best[1] >= fuzzy_cutoff:
        return OptionMatch(best[2], "fuzzy")
    return OptionMatch(None, "none")


@dataclass(frozen=True)
class Entity:
    text: str
    type: str
    start: int
    end: int


_ENTITY_LINE = re.compile(r"^(?P<type>[A-Za-z][\w /-]{0,40}?)\s*:\s*(?P<mention>.+)$")
_ENTITY_PAREN = re.compile(r"^(?P<mention>.+?)\s*\((?P<type>[A-Za-z][\w /-]{0,40})\)$")


def _iter_entity_lines(raw: str):
    for line in raw.splitlines():
        line = _BULLET.sub("", line).strip()
        if not line or _norm(line) in ("none", "no entities", "n/a"):
            continue
        m = _ENTITY_LINE.match(line) or _ENTITY_PAREN.match(line)
        if m:
            yield m.group("type").strip(), m.group("mention").strip().strip("\"'").strip()
        else:
            yield None, line


def find_spans(text: str, mention: str) -> list[tuple[int, int]]:
    """Every whole-word occurrence of mention in text; exact case first, else case-insensitive."""
    if not mention:
        return []
    pattern = rf"(?<!\w){re.escape(mention)}(?!\w)"
    spans = [(m.start(), m.end()) for m in re.finditer(pattern, text)]
    if not spans:
        spans = [(m.start(), m.end()) for m in re.finditer(pattern, text, flags=re.IGNORECASE)]
    return spans


def parse_entities(raw: str, text: str, allowed_types: Sequence[str]) -> tuple[list[Entity], int]:
    """Entities whose mention is really in text (all occurrences), and how many were dropped.

    A line is dropped when its type is not one of allowed_types or its mention cannot be
    found in the text; every returned entity satisfies text[start:end] == entity.text.
    """
    by_norm = {t.casefold(): t for t in allowed_types}
    found: dict[tuple[int, int, str], Entity] = {}
    dropped = 0
    for etype, mention in _iter_entity_lines(raw):
        canonical = by_norm.get((etype or "").casefold())
        if canonical is None and etype is None and len(allowed_types) == 1:
            canonical = allowed_types[0]
        spans = find_spans(text, mention) if canonical else []
        if not spans:
            dropped += 1
            continue
        for start, end in spans:
            found.setdefault((start, end, canonical), Entity(text[start:end], canonical, start, end))
    entities = sorted(found.values(), key=lambda e: (e.start, e.end, e.type))
    return entities, dropped


@dataclass(frozen=True)
class Relation:
    head: str
    type: str
    tail: str
    head_start: int
    head_end: int
    tail_start: int
    tail_end: int


def parse_relations(raw: str, text: str, labels: Sequence[str]) -> tuple[list[Relation], int]:
    """'head | LABEL | tail' lines whose label is allowed and whose mentions are in text."""
    by_norm = {lab.casefold(): lab for lab in labels}
    out: dict[tuple, Relation] = {}
    dropped = 0
    for line in raw.splitlines():
        line = _BULLET.sub("", line).strip()
        if not line or _norm(line) == "none":
            continue
        parts = [p.strip().strip("\"'") for p in line.split("|")]
        if len(parts) != 3:
            dropped += 1
            continue
        head, label, tail = parts
        canonical = by_norm.get(label.casefold())
        head_spans, tail_spans = find_spans(text, head), find_spans(text, tail)
        if canonical is None or not head_spans or not tail_spans:
            dropped += 1
            continue
        (hs, he), (ts, te) = head_spans[0], tail_spans[0]
        rel = Relation(text[hs:he], canonical, text[ts:te], hs, he, ts, te)
        out.setdefault((hs, he, canonical, ts, te), rel)
    return list(out.values()), dropped
