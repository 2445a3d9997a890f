"""Read numbered tasks back from a model's reply, however messy.

Small models add chatter before and after, bold the labels, number every field, forget
numbers, start a new task with a bare "Instruction:", or stop mid-task when they run out
of tokens. The parser accepts all of that and says what it saw; deciding what to keep is
the filters' job (`generation.filters`).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from bioinstruct.instruct.families import TaskFamily

_FIELDS = {
    "instruction": "instruction", "instructions": "instruction",
    "input": "input", "context": "input",
    "output": "output", "response": "output", "answer": "output",
    "category": "category", "type": "category", "task type": "category",
}
_LABEL = r"(instructions?|input|context|output|response|answer|category|task type|type)"
# "4. Instruction: ...", "Instruction 4: ...", "- **Input:** ...", "4) Output -" ...
_FIELD_LINE = re.compile(
    rf"^(?:[-*•]\s*)?(?:(?:task|example)\s*)?(?:#?\s*(?P<num>\d+)\s*[.):\-]?\s*)?"
    rf"(?P<label>{_LABEL})\s*(?P<num2>\d+)?\s*(?:[:：]|[-–](?=\s))\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
# "Task 4", "Task 4: <instruction>", "4.", "### Example 4"
_HEADER_LINE = re.compile(
    r"^(?:(?:task|example)\s*#?\s*(?P<num>\d+)|#?\s*(?P<bare>\d+)\s*[.)])\s*[.):\-–]?\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_MARKDOWN = re.compile(r"(\*\*|__|`)")
_HEADING = re.compile(r"^\s*#{1,6}\s*")
_CHATTER = re.compile(
    r"^(i hope|hope (this|these)|let me know|feel free|these (tasks|examples|are)|note:|"
    r"here (are|is)|i('ve| have)|good luck|thank|please note|in summary, these|"
    r"the (above|following) (tasks|examples)|sure[,!.]|certainly[,!.])",
    re.IGNORECASE,
)
_NO_INPUT = {"", "<noinput>", "noinput", "<no input>", "no input", "none", "n/a", "na", "-", "(none)",
             "<none>", "empty", "not applicable", "null", "nil", "<empty>", "no input needed",
             "no input required", "(no input)"}

_CATEGORY_WORDS: list[tuple[re.Pattern[str], TaskFamily]] = [
    (re.compile(r"^(ie|information extraction|extraction|extract|ner|named entity|relation)", re.I), TaskFamily.IE),
    (re.compile(r"^(qa|q&a|question answering|question|answer|"
                r"multiple[- ]choice|classification)", re.I), TaskFamily.QA),
    (re.compile(r"^(gen|generation|generate|writing|summari[sz]ation|summary|"
                r"rewrite|rewriting|explanation|paraphras)", re.I), TaskFamily.GEN),
    (re.compile(r"^(other|misc)", re.I), TaskFamily.OTHER),
]


class ParsedTask(BaseModel):
    """One task as the model wrote it (fields stripped; input "" when it said <noinput>)."""

    position: int = Field(description="0-based place in the reply")
    number: int | None = None
    instruction: str = ""
    input: str = ""
    output: str = ""
    category: str | None = Field(None, description="the model's raw category label, if any")
    truncated: bool = Field(False, description="last task of a reply cut by max_tokens")


class ParsedResponse(BaseModel):
    tasks: list[ParsedTask]
    preamble: str = ""
    finish_reason: str | None = None


def normalize_category(raw: str | None) -> TaskFamily | None:
    """The model's category label as a task family, or None when it is not one."""
    if not raw:
        return None
    text = re.sub(r"[^\w&\- ]", " ", raw).strip()
    for pattern, family in _CATEGORY_WORDS:
        if pattern.match(text):
            return family
    return None


def normalize_input(raw: str) -> str:
    text = raw.strip()
    return "" if text.strip("\"'.").strip().lower() in _NO_INPUT else text


def _strip_chatter(text: str) -> str:
    """Drop trailing paragraphs that are the model talking to us, not task content."""
    paragraphs = re.split(r"\n\s*\n", text)
    for i, para in enumerate(paragraphs):
        if i > 0 and _CHATTER.match(para.strip()):
            return "\n\n".join(paragraphs[:i]).strip()
    return text.strip()


class _Item:
    def __init__(self, position: int, number: int | None) -> None:
        self.position = position
        self.number = number
        self.fields: dict[str, list[str]] = {}
        self.current: str | None = None

    def has(self, name: str) -> bool:
        return any(s.strip() for s in self.fields.get(name, []))

    def set(self, name: str, text: str) -> None:
        self.current = name
        self.fields.setdefault(name, []).append(text)

    def extend(self, text: str) -> None:
        if self.current is not None:
            self.fields[self.current].append(text)

    def build(self, truncated: bool) -> ParsedTask:
        def get(name: str) -> str:
            return "\n".join(self.fields.get(name, [])).strip()

        values = {name: get(name) for name in ("instruction", "input", "output", "category")}
        last = self.current
        if last and last != "category" and values[last]:
            values[last] = _strip_chatter(values[last])
        category = values["category"].splitlines()[0].strip() if values["category"] else None
        return ParsedTask(position=self.position, number=self.number,
                          instruction=re.sub(r"\s*\n\s*", " ", values["instruction"]).strip(),
                          input=normalize_input(values["input"]), output=values["output"],
                          category=category, truncated=truncated)


def parse_response(text: str, finish_reason: str | None = None) -> ParsedResponse:
    """Every task in a reply, in order. With finish_reason "length" the last one is marked
    truncated (the model was cut off while writing it)."""
    items: list[_Item] = []
    preamble: list[str] = []
    cur: _Item | None = None

    def start(number: int | None) -> _Item:
        item = _Item(len(items), number)
        items.append(item)
        return item

    lines = [_HEADING.sub("", _MARKDOWN.sub("", ln)).rstrip()
             for ln in (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")]

    def fields_follow(i: int) -> bool:
        """An Input/Output field (not of another numbered task) within the next lines."""
        seen = 0
        for ln in lines[i + 1:]:
            if not ln.strip():
                continue
            m = _FIELD_LINE.match(ln.strip())
            if m:
                return _FIELDS[m.group("label").lower()] in ("input", "output") and not m.group("num")
            seen += 1
            if seen >= 3:
                return False
        return False

    for i, line in enumerate(lines):
        stripped = line.strip()
        field = _FIELD_LINE.match(stripped)
        if field:
            name = _FIELDS[field.group("label").lower()]
            num_text = field.group("num") or field.group("num2")
            number = int(num_text) if num_text else None
            rest = field.group("rest").strip()
            if (cur is None or (number is not None and number != cur.number)
                    or (name == "instruction" and cur.has("instruction"))):
                cur = start(number)
                cur.set(name, rest)
            elif name == "category" or not cur.has(name):
                cur.set(name, rest)
            else:
                cur.extend(stripped)  # e.g. "Answer: ..." inside an output is content
            continue
        header = _HEADER_LINE.match(stripped)
        if header:
            number = int(header.group("num") or header.group("bare"))
            rest = header.group("rest").strip()
            # "Task 4" / "4." alone always start a task; "4. <text>" only where it reads as
            # the next task's instruction (the next number, followed by its fields), not as
            # an item of a numbered list inside an output.
            expected = cur is None or cur.number is None or number == cur.number + 1
            if header.group("num") or not rest or (expected and fields_follow(i)):
                cur = start(number)
                if rest:
                    cur.set("instruction", rest)
                continue
        if cur is not None and cur.current is not None:
            cur.extend(line)
        elif cur is not None and stripped and not cur.has("instruction"):
            cur.set("instruction", stripped)
        elif stripped:
            preamble.append(stripped)

    tasks = [item.build(truncated=(finish_reason == "length" and i == len(items) - 1))
             for i, item in enumerate(items)]
    return ParsedResponse(tasks=tasks, preamble="\n".join(preamble), finish_reason=finish_reason)
