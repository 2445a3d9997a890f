"""Training data: JSONL instruction records -> tokenized examples with response-only labels.

Prompts are rendered by `instruct.format.render_example`, whose prompt part is exactly
what the service sends. Prompt and completion are tokenized separately (no special
tokens added: the chat template already has them) and concatenated, so the boundary is
exact; labels are -100 on the prompt, the completion (with its end-of-turn marker) is
learned.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioinstruct.checksums import sha256_file  # noqa: F401 - callers import it from here
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.format import render_example
from bioinstruct.instruct.records import InstructionRecord
from bioinstruct.training.formats import (
    FORMATS,
    FormatError,
    describe_unknown,
    detect_format,
    parse_line,
    to_record,
)

IGNORE_INDEX = -100
EVAL_SPLIT_SALT = "bioinstruct-eval-split-v1"  # fixed: the held-out split does not move with the seed


class DataError(ValueError):
    """Training data is missing or malformed; the message says which file and line."""


@dataclass
class DataFileInfo:
    path: str
    sha256: str
    records: int
    categories: dict[str, int]
    format: str = "bioinstruct"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "records": self.records,
                "categories": self.categories, "format": self.format}


@dataclass
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def n_target(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass
class TrainingData:
    train: list[Example]
    eval: list[Example]
    files: list[DataFileInfo]
    stats: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for f in self.files:
            # a foreign file's format changes what is read from it; ours adds nothing (old runs resume)
            suffix = "" if f.format == "bioinstruct" else f":{f.format}"
            digest.update(f"{f.path}:{f.sha256}{suffix};".encode())
        digest.update(json.dumps(self.stats.get("excluded_ids_sha256")).encode())
        return digest.hexdigest()


def read_data_file(
    path: Path, data_format: str = "auto", category: str | None = None
) -> tuple[str, list[InstructionRecord]]:
    """(format, records) of one JSONL file in any format of `training.formats`.

    `data_format` "auto" detects the format from the first record and holds the rest of the file
    to it. `category` is the family of foreign records that carry none (None or ALL: they must).
    DataError names the file and the 1-based line of the first bad record.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training data file {path} does not exist")
    if data_format != "auto" and data_format not in FORMATS:
        raise DataError(f"--format {data_format!r} is not one of auto, {', '.join(FORMATS)}")
    family = TaskFamily(category.upper()) if (category or "").upper() in TaskFamily.__members__ else None
    fmt = None if data_format == "auto" else data_format
    first_line = 0
    records: list[InstructionRecord] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark some editors write
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text ({exc.reason})") from exc
            if not line.strip():
                continue
            try:
                obj = parse_line(line)
                if data_format == "auto":
                    found = detect_format(obj)
                    if fmt is None:
                        if found is None:
                            raise FormatError(describe_unknown(obj))
                        fmt, first_line = found, lineno
                    elif found is not None and _SHAPE[found] != _SHAPE[fmt]:
                        raise FormatError(_mixed(found, fmt, first_line))
                # a line of no known shape is read as the file's format: its error says what is missing
                records.append(to_record(obj, fmt or data_format, family))
            except FormatError as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from exc
    if not records:
        raise DataError(f"training data file {path} holds no records")
    return fmt or data_format, records


# Ours and Alpaca share one shape (instruction/output): the file's first record decides which it is read as.
_SHAPE = {"bioinstruct": "instruction", "alpaca": "instruction", "messages": "messages",
          "prompt-completion": "prompt-completion"}


def _mixed(found: str, fmt: str, first_line: int) -> str:
    return (f"mixed formats in one file: this record is {found}, line {first_line} is {fmt}; keep one format "
            "per file (several --data files may each have their own)")


def read_records(
    path: Path, data_format: str = "auto", category: str | None = None
) -> list[InstructionRecord]:
    """All records of one JSONL file (see `read_data_file`)."""
    return read_data_file(path, data_format, category)[1]


def read_exclude_ids(path: Path | None) -> set[str]:
    """Ids from a file: a JSON list, a JSON object (its keys), or one id per line."""
    if path is None:
        return set()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"exclude_ids_file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
    if isinstance(data, dict):
        return {str(k) for k in data}
    if isinstance(data, list):
        return {str(v) for v in data}
    raise DataError(f"exclude_ids_file {path}: expected a JSON list, a JSON object or one id per line")


def record_keys(record: InstructionRecord) -> set[str]:
    """The ids a record can be excluded by: its id, the part after its last ':', and the source
    item id in its provenance ("item", "item_id", "id" or "pmid"; converters record the dataset's
    own id there, e.g. the PMID of a PubMedQA record)."""
    keys = {record.id, record.id.rsplit(":", 1)[-1]}
    for key in ("item", "item_id", "id", "pmid"):
        value = record.provenance.get(key)
        if value is not None:
            keys.add(str(value))
    return keys


def split_rank(record_id: str) -> float:
    """A uniform number in [0, 1) fixed by the id: the lowest ranks form the held-out split."""
    h = hashlib.sha256(f"{EVAL_SPLIT_SALT}:{record_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def tokenize_record(tokenizer: Any, record: InstructionRecord, max_length: int,
                    overlong: str) -> tuple[Example | None, bool]:
    """(example, truncated). None when it cannot fit in max_length."""
    input_text = record.input
    truncated = False
    for _attempt in range(6):
        prompt, completion = render_example(tokenizer, record.category, record.instruction, input_text, record.output)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        excess = len(p_ids) + len(c_ids) - max_length
        if excess <= 0:
            return Example(record.id, p_ids + c_ids, [IGNORE_INDEX] * len(p_ids) + c_ids), truncated
        if overlong == "drop" or not input_text.strip():
            return None, False
        in_ids = tokenizer(input_text, add_special_tokens=False)["input_ids"]
        keep = len(in_ids) - excess - 2 * (_attempt + 1)  # a little slack: re-tokenizing can merge differently
        if keep <= 0:
            return None, False
        input_text = tokenizer.decode(in_ids[:keep], skip_special_tokens=True).rstrip()
        truncated = True
    return None, False


def load_training_data(
    tokenizer: Any,
    files: list[Path],
    *,
    max_length: int,
    overlong: str = "truncate_input",
    eval_fraction: float = 0.05,
    eval_max_examples: int = 200,
    exclude_ids_file: Path | None = None,
    category: str | None = None,
    data_format: str = "auto",
) -> TrainingData:
    """Read, filter, split and tokenize. `category` (QA/IE/GEN/OTHER) keeps only that family, and is the
    family of foreign records that carry none; `data_format` is "auto" or one of `formats.FORMATS`."""
    if not files:
        raise DataError("no training data files given")
    excluded_ids = read_exclude_ids(exclude_ids_file)
    infos: list[DataFileInfo] = []
    records: list[InstructionRecord] = []
    for path in files:
        fmt, recs = read_data_file(Path(path), data_format, category)
        infos.append(DataFileInfo(str(Path(path).resolve()), sha256_file(Path(path)), len(recs),
                                  dict(Counter(r.category.value for r in recs)), fmt))
        records.extend(recs)
    stats: dict[str, Any] = {"records_read": len(records)}
    if category and category.upper() != "ALL":
        kept = [r for r in records if r.category.value == category.upper()]
        stats["other_category_skipped"] = len(records) - len(kept)
        records = kept
        if not records:
            raise DataError(f"no {category.upper()} records in {[str(f) for f in files]}")
    seen: set[str] = set()
    unique: list[InstructionRecord] = []
    for r in records:
        if r.id not in seen:
            seen.add(r.id)
            unique.append(r)
    stats["duplicate_ids_skipped"] = len(records) - len(unique)
    records = unique
    if excluded_ids:
        kept = [r for r in records if not (record_keys(r) & excluded_ids)]
        stats["excluded_by_id"] = len(records) - len(kept)
        stats["excluded_ids_file"] = str(exclude_ids_file)
        stats["excluded_ids_sha256"] = sha256_file(Path(exclude_ids_file)) if exclude_ids_file else None
        records = kept

    # Held-out split: by a hash of the id, so it does not depend on file order or seed.
    n_eval = 0
    if eval_fraction > 0 and len(records) >= 2:
        n_eval = min(eval_max_examples, max(1, round(eval_fraction * len(records))), len(records) - 1)
    ranked = sorted(records, key=lambda r: split_rank(r.id))
    eval_ids = {r.id for r in ranked[:n_eval]}

    train: list[Example] = []
    held: list[Example] = []
    dropped = truncated = 0
    for r in records:
        ex, was_truncated = tokenize_record(tokenizer, r, max_length, overlong)
        if ex is None:
            dropped += 1
            continue
        truncated += was_truncated
        (held if r.id in eval_ids else train).append(ex)
    if not train:
        raise DataError(
            f"no training examples left (read {stats['records_read']}, dropped {dropped} longer than "
            f"max_length={max_length}); raise max_length or check the data"
        )
    stats.update(
        train_examples=len(train),
        eval_examples=len(held),
        dropped_overlong=dropped,
        truncated_input=truncated,
        train_tokens=sum(e.length for e in train),
        train_target_tokens=sum(e.n_target for e in train),
        eval_tokens=sum(e.length for e in held),
        max_example_tokens=max(e.length for e in train),
    )
    return TrainingData(train=train, eval=held, files=infos, stats=stats)
