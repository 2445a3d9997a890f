"""Training data formats: ours and the ones people have, each mapped to one InstructionRecord.

Every format becomes (family, instruction, input, output), so every record is rendered by the
one prompt renderer (`instruct.format.render_example`) and training stays byte-identical to
serving. Formats:

- `bioinstruct`: our InstructionRecord (id and category required, extra keys refused);
- `prompt-completion`: TRL's {"prompt": str, "completion": str}, or its conversational variant
  where both are lists of {"role", "content"} messages;
- `messages`: {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]};
- `alpaca`: {"instruction", "input" (optional), "output"}.

Foreign formats tolerate extra keys. Chats must be single-turn (an optional system turn, one
user turn, the assistant's answer): the service sends one user turn per request, so a model
trained on earlier turns would be trained on prompts it is never served.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, get_args

from pydantic import ValidationError

from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.format import SYSTEM_PROMPTS, user_content
from bioinstruct.instruct.records import InstructionRecord

DataFormat = Literal["auto", "bioinstruct", "prompt-completion", "messages", "alpaca"]
FORMATS: tuple[str, ...] = get_args(DataFormat)[1:]  # the concrete ones, without "auto"
FAMILIES = "|".join(f.value for f in TaskFamily)
INPUT_MARK = "\n\nInput:\n"  # how user_content joins instruction and input
# Keys of a foreign record kept in provenance: --exclude-ids-file matches them (training.data.record_keys).
SOURCE_ID_KEYS = ("item", "item_id", "pmid")
_FAMILY_BY_SYSTEM = {text.strip(): family for family, text in SYSTEM_PROMPTS.items()}


class FormatError(ValueError):
    """One record does not fit its format; the reader prefixes the file and line."""


def detect_format(obj: dict[str, Any]) -> str | None:
    """The format a JSON object's keys say it is, or None."""
    if "messages" in obj:
        return "messages"
    if "prompt" in obj and "completion" in obj:
        return "prompt-completion"
    if "instruction" in obj and "output" in obj:
        return "bioinstruct" if "id" in obj and "category" in obj else "alpaca"
    return None


def to_record(obj: dict[str, Any], fmt: str, default_family: TaskFamily | None) -> InstructionRecord:
    """Map one JSON object of format `fmt` to an InstructionRecord; FormatError says what is wrong."""
    if fmt == "bioinstruct":
        return _native(obj)
    system: str | None = None
    if fmt == "alpaca":
        instruction = _text(obj, "instruction")
        input_text = _text(obj, "input", required=False)
        output = _text(obj, "output")
    elif fmt == "messages":
        system, instruction, input_text, output = _chat(obj.get("messages", _MISSING), "messages")
    elif fmt == "prompt-completion":
        system, instruction, input_text, output = _prompt_completion(obj)
    else:
        raise FormatError(f"unknown format {fmt!r}; use one of auto, {', '.join(FORMATS)}")
    family = _family(obj, system, default_family)
    if system is not None and _FAMILY_BY_SYSTEM.get(system) is None:
        # A foreign system prompt: the renderer puts the family's own system prompt first, so
        # the record's instructions go ahead of the user's text instead of being lost.
        instruction = f"{system}\n\n{instruction}"
    provenance: dict[str, Any] = {"format": fmt}
    provenance.update({k: obj[k] for k in SOURCE_ID_KEYS if _scalar(obj.get(k))})
    try:
        return InstructionRecord(id=_record_id(obj, instruction, input_text, output), instruction=instruction,
                                 input=input_text, output=output, category=family, provenance=provenance)
    except ValidationError as exc:  # blank instruction or output
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise FormatError(f"{loc}: {first['msg'].removeprefix('Value error, ')}") from exc


_MISSING = object()


def _native(obj: dict[str, Any]) -> InstructionRecord:
    try:
        return InstructionRecord.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "record"
        hint = ""
        if first["type"] == "extra_forbidden":
            hint = "; to train on records with extra keys, pass --format alpaca"
        raise FormatError(
            f"not an instruction record ({loc}: {first['msg']}){hint}; each line must be an "
            "InstructionRecord (id, instruction, input, output, category, ...)"
        ) from exc


def _text(obj: dict[str, Any], key: str, *, required: bool = True, where: str = "") -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    prefix = f"{where}: " if where else ""
    if value is None:
        raise FormatError(f"{prefix}missing key {key!r}")
    if not isinstance(value, str):
        raise FormatError(f"{prefix}{key!r} must be a string, not {type(value).__name__}")
    return value


def _split_user(text: str) -> tuple[str, str]:
    """A user turn as (instruction, input): split where our own renderer joins them, only when
    rendering the parts gives the same text back, so the prompt stays byte-identical."""
    head, mark, tail = text.partition(INPUT_MARK)
    if mark and head.strip() and tail.strip() and user_content(head, tail) == text.strip():
        return head, tail
    return text, ""


def _chat(messages: Any, key: str) -> tuple[str | None, str, str, str]:
    """(system, instruction, input, output) of a single-turn chat."""
    if messages is _MISSING:
        raise FormatError(f"missing key {key!r}")
    if not isinstance(messages, list) or not messages:
        raise FormatError(f"{key!r} must be a non-empty list of {{\"role\", \"content\"}} messages")
    roles: list[str] = []
    contents: list[str] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise FormatError(f"{key}[{i}] must be an object with 'role' and 'content', "
                              f"not {type(msg).__name__}")
        roles.append(_text(msg, "role", where=f"{key}[{i}]"))
        contents.append(_text(msg, "content", where=f"{key}[{i}]"))
    unknown = sorted({r for r in roles if r not in ("system", "user", "assistant")})
    if unknown:
        raise FormatError(f"{key}: role(s) {unknown} are not trained; roles must be system, user or "
                          "assistant")
    system = None
    if roles[0] == "system":
        system = contents[0].strip() or None
        roles, contents = roles[1:], contents[1:]
    if roles != ["user", "assistant"]:
        shape = ", ".join(roles) or "none"
        raise FormatError(
            f"{key}: the turns after any system turn are [{shape}]; only single-turn chats are trained (an "
            "optional system turn, one user turn, then the assistant's answer), because the service sends "
            "one user turn per request: split the conversation into single-turn records or leave it out"
        )
    instruction, input_text = _split_user(contents[0])
    return system, instruction, input_text, contents[1]


def _prompt_completion(obj: dict[str, Any]) -> tuple[str | None, str, str, str]:
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        instruction, input_text = _split_user(prompt)
        return None, instruction, input_text, completion
    if isinstance(prompt, list) and isinstance(completion, list):
        return _chat(prompt + completion, "prompt+completion")
    for key, value in (("prompt", prompt), ("completion", completion)):
        if value is None:
            raise FormatError(f"missing key {key!r}")
    raise FormatError(
        f"'prompt' and 'completion' must both be strings or both be lists of messages, not "
        f"{type(prompt).__name__} and {type(completion).__name__}"
    )


def _family(obj: dict[str, Any], system: str | None, default: TaskFamily | None) -> TaskFamily:
    """The record's own valid category, else the family whose system prompt it carries, else the default."""
    own = obj.get("category")
    if isinstance(own, str) and own.strip().upper() in TaskFamily.__members__:
        return TaskFamily(own.strip().upper())
    if system is not None and system in _FAMILY_BY_SYSTEM:
        return _FAMILY_BY_SYSTEM[system]
    if default is not None:
        return default
    got = "carries no 'category'" if own is None else f"has category {own!r}, not one of {FAMILIES}"
    raise FormatError(
        f"no task family: the record {got}; pass --category {FAMILIES} to train these records "
        "under that family, or give each record a 'category' key"
    )


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and str(value) != ""


def _record_id(obj: dict[str, Any], instruction: str, input_text: str, output: str) -> str:
    """The record's own id if it has one, else a hash of its content: the same example gets the
    same id in every file and format, so dedup by id and the held-out split keep working."""
    if _scalar(obj.get("id")):
        return str(obj["id"])
    content = json.dumps([instruction.strip(), input_text.strip(), output.strip()], ensure_ascii=False)
    return "content:" + hashlib.sha256(content.encode()).hexdigest()[:20]


def parse_line(line: str) -> dict[str, Any]:
    """One JSONL line as a JSON object; FormatError when it is not one."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise FormatError(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(obj, dict):
        raise FormatError(f"expected a JSON object, got a JSON {type(obj).__name__}")
    return obj


def describe_unknown(obj: dict[str, Any]) -> str:
    keys = ", ".join(sorted(obj)[:8]) or "none"
    return (
        f"not a record of a known format (keys: {keys}); expected an InstructionRecord, 'messages', "
        "'prompt' + 'completion', or 'instruction' + 'output' (Alpaca), or pass --format"
    )
