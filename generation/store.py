"""Append-only JSONL of instruction records that survives `kill -9` at any moment.

Each record is one line written with a single `write(2)` on an O_APPEND descriptor (and
fsynced by default), so a record is either entirely in the file or, if the process died
inside that call, a partial last line without its newline. `recover` drops such a line
(truncating the file back to the last complete record) and returns what is there; a
run then continues from it. An exclusive lock keeps two runs from writing one file.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bioinstruct.instruct.records import InstructionRecord


class StoreError(RuntimeError):
    pass


def read_records(path: Path) -> Iterator[InstructionRecord]:
    """Records of a finished JSONL file (every line must be a valid record)."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield InstructionRecord.model_validate_json(line)
                except ValidationError as exc:
                    raise StoreError(f"{path}:{n}: not a valid instruction record: {exc}") from None


def write_records(path: Path, records: Iterable[InstructionRecord]) -> int:
    """Write a whole JSONL file atomically (temp file + rename); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(record.model_dump_json() + "\n")
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RecordStore:
    """The output file of a generation run: recover, then append one record at a time."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self._fd: int | None = None
        self.dropped_partial_bytes = 0

    def __enter__(self) -> RecordStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{self.path} is being written by another run (it holds the lock); "
                             "wait for it or choose another --out") from None
        self._fd = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the lock
            self._fd = None

    def recover(self) -> list[InstructionRecord]:
        """Complete records in the file; a partial last line is cut off the file."""
        data = self.path.read_bytes() if self.path.exists() else b""
        keep = data.rfind(b"\n") + 1  # bytes up to and including the last newline
        lines = data[:keep].split(b"\n")[:-1] if keep else []
        records: list[InstructionRecord] = []
        seen: set[str] = set()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = InstructionRecord.model_validate_json(line)
            except ValidationError as exc:
                if n == len(lines):  # a last line that ends in "\n" but is not a record
                    keep -= len(line) + 1
                    break
                raise StoreError(f"{self.path}:{n}: not a valid instruction record ({exc.errors()[0]['msg']}); "
                                 "this file was not written by a generation run alone") from None
            if record.id not in seen:
                seen.add(record.id)
                records.append(record)
        if keep < len(data):
            self.dropped_partial_bytes = len(data) - keep
            os.truncate(self.path, keep)
        return records

    def append(self, record: InstructionRecord) -> None:
        if self._fd is None:
            raise StoreError("store is not open")
        payload = (record.model_dump_json() + "\n").encode("utf-8")
        view = memoryview(payload)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.fsync:
            os.fsync(self._fd)
