"""The append-only record store: atomic lines, recovery of a partial last line, one writer."""

from __future__ import annotations

import pytest

from bioinstruct.generation.store import RecordStore, StoreError, read_records, write_records
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.records import InstructionRecord


def rec(i: int) -> InstructionRecord:
    return InstructionRecord(id=f"si-{i:04d}", instruction=f"Explain topic {i} to a nurse.", output=f"Answer {i}.",
                             category=TaskFamily.GEN, provenance={"source": "test"})


def test_append_then_recover(tmp_path):
    path = tmp_path / "out.jsonl"
    with RecordStore(path) as store:
        assert store.recover() == []
        for i in range(3):
            store.append(rec(i))
    with RecordStore(path) as store:
        got = store.recover()
    assert [r.id for r in got] == ["si-0000", "si-0001", "si-0002"]
    assert path.read_bytes().endswith(b"\n")


def test_partial_last_line_is_dropped_and_appending_continues_cleanly(tmp_path):
    path = tmp_path / "out.jsonl"
    write_records(path, [rec(0), rec(1)])
    full = path.read_bytes()
    partial = rec(2).model_dump_json().encode()[:37]  # a write cut short by kill -9
    path.write_bytes(full + partial)
    with RecordStore(path) as store:
        got = store.recover()
        assert [r.id for r in got] == ["si-0000", "si-0001"]
        assert store.dropped_partial_bytes == len(partial)
        assert path.read_bytes() == full
        store.append(rec(2))
    assert [r.id for r in read_records(path)] == ["si-0000", "si-0001", "si-0002"]


def test_complete_but_invalid_last_line_is_dropped(tmp_path):
    path = tmp_path / "out.jsonl"
    write_records(path, [rec(0)])
    path.write_bytes(path.read_bytes() + b'{"id": "x"}\n')
    with RecordStore(path) as store:
        assert [r.id for r in store.recover()] == ["si-0000"]
    assert path.read_bytes().count(b"\n") == 1


def test_corruption_in_the_middle_is_an_error_not_silently_dropped(tmp_path):
    path = tmp_path / "out.jsonl"
    write_records(path, [rec(0)])
    path.write_bytes(path.read_bytes() + b"garbage\n" + rec(1).model_dump_json().encode() + b"\n")
    with RecordStore(path) as store, pytest.raises(StoreError, match=":2:"):
        store.recover()


def test_duplicate_ids_are_read_once(tmp_path):
    path = tmp_path / "out.jsonl"
    write_records(path, [rec(0), rec(0), rec(1)])
    with RecordStore(path) as store:
        assert [r.id for r in store.recover()] == ["si-0000", "si-0001"]


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "out.jsonl"
    with RecordStore(path), pytest.raises(StoreError, match="another run"):
        RecordStore(path).open()
    with RecordStore(path):  # released on close
        pass
