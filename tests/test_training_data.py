"""Training data: response-only labels, the exact prompt boundary, batching that avoids padding."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from bioinstruct.instruct.format import render_example, render_prompt
from bioinstruct.instruct.prompts import qa_task
from bioinstruct.instruct.records import InstructionRecord
from bioinstruct.training import batching
from bioinstruct.training.data import (
    IGNORE_INDEX,
    DataError,
    load_training_data,
    read_records,
    tokenize_record,
)


def _record(i: int, words: int = 5, category: str = "QA", output: str | None = None) -> dict:
    instruction, input_text = qa_task(f"Does drug {i} lower blood pressure?", ["context " * words], ["yes", "no", "maybe"])
    return {"id": f"syn:{i}", "instruction": instruction, "input": input_text,
            "output": output or ["yes", "no", "maybe"][i % 3], "category": category,
            "provenance": {"source": "test", "item": str(1000 + i)}}


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_labels_mask_the_prompt_exactly(tokenizer):
    rec = InstructionRecord.model_validate(_record(1, output="Yes, it lowers systolic pressure."))
    ex, truncated = tokenize_record(tokenizer, rec, max_length=1024, overlong="drop")
    assert ex is not None and not truncated
    prompt, completion = render_example(tokenizer, rec.category, rec.instruction, rec.input, rec.output)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    # -100 exactly on the prompt; every completion token is learned
    assert ex.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert all(t != IGNORE_INDEX for t in ex.labels[n_prompt:])
    assert len(ex.labels) == len(ex.input_ids)
    # the prompt part is what the service sends, token for token
    served = render_prompt(tokenizer, rec.category, rec.instruction, rec.input)
    assert tokenizer.decode(ex.input_ids[:n_prompt]) == served
    assert ex.input_ids[:n_prompt] == tokenizer(served, add_special_tokens=False)["input_ids"]
    # the learned tokens decode to the completion: the answer and the end-of-turn marker
    learned = tokenizer.decode([t for t in ex.labels if t != IGNORE_INDEX])
    assert learned == completion
    assert learned.startswith("Yes, it lowers systolic pressure.") and tokenizer.eos_token in learned


def test_collate_masks_padding_and_packs_with_restarting_positions(tokenizer):
    recs = [InstructionRecord.model_validate(_record(i, words=3 + 20 * i)) for i in range(3)]
    examples = [tokenize_record(tokenizer, r, 1024, "drop")[0] for r in recs]
    pad_id = tokenizer.pad_token_id
    batch = batching.collate([[0], [2]], examples, pad_id, packed=False)
    width = examples[2].length
    assert batch["input_ids"].shape == (2, width)
    n0 = examples[0].length
    assert batch["attention_mask"][0, :n0].all() and not batch["attention_mask"][0, n0:].any()
    assert (batch["labels"][0, n0:] == IGNORE_INDEX).all()
    assert batch["labels"][0, :n0].tolist() == examples[0].labels
    packed = batching.collate([[0, 1], [2]], examples, pad_id, packed=True)
    assert "attention_mask" not in packed
    pos = packed["position_ids"][0].tolist()
    n1 = examples[1].length
    assert pos[:n0] == list(range(n0)) and pos[n0 : n0 + n1] == list(range(n1))
    assert packed["labels"][0, : n0 + n1].tolist() == examples[0].labels + examples[1].labels
    assert (packed["labels"][0, n0 + n1 :] == IGNORE_INDEX).all()


def test_bucketing_and_packing_waste_less_padding_than_naive():
    rng = random.Random(0)
    lengths = [rng.randint(60, 900) for _ in range(600)]
    waste = {
        mode: batching.padding_fraction(
            batching.plan_epoch(lengths, mode=mode, batch_size=8, max_length=1024, seed=1, epoch=0), lengths)
        for mode in ("naive", "bucket", "pack")
    }
    assert waste["bucket"] < waste["naive"] / 5, waste
    assert waste["pack"] < waste["naive"] / 3, waste
    # every example appears exactly once per epoch, in any mode
    for mode in ("naive", "bucket", "pack"):
        plan = batching.plan_epoch(lengths, mode=mode, batch_size=8, max_length=1024, seed=1, epoch=0)
        seen = sorted(i for mb in plan for row in mb for i in row)
        assert seen == list(range(len(lengths)))
        if mode == "pack":
            assert all(sum(lengths[i] for i in row) <= 1024 for mb in plan for row in mb)


def test_batch_order_is_a_function_of_seed_and_epoch():
    lengths = list(range(10, 400, 3))
    plan = lambda seed, epoch: batching.plan_epoch(lengths, mode="bucket", batch_size=4, max_length=512,  # noqa: E731
                                                   seed=seed, epoch=epoch)
    assert plan(1, 0) == plan(1, 0)
    assert plan(1, 0) != plan(1, 1)
    assert plan(1, 0) != plan(2, 0)


def test_split_exclusion_filter_and_overlong(tokenizer, tmp_path):
    records = [_record(i, words=3) for i in range(40)]
    records.append(_record(99, words=3000))  # far longer than max_length
    records.append(_record(100, category="IE"))
    data_file = _write(tmp_path / "d.jsonl", records)
    excluded = tmp_path / "dev_ids.txt"
    excluded.write_text("1003\nsyn:4\n")  # by provenance item (e.g. a PMID) and by record id
    kwargs = dict(max_length=256, eval_fraction=0.1, eval_max_examples=100, exclude_ids_file=excluded, category="QA")
    data = load_training_data(tokenizer, [data_file], overlong="drop", **kwargs)
    ids = [e.id for e in data.train] + [e.id for e in data.eval]
    assert "syn:3" not in ids and "syn:4" not in ids and "syn:100" not in ids and "syn:99" not in ids
    assert data.stats["excluded_by_id"] == 2 and data.stats["other_category_skipped"] == 1
    assert data.stats["dropped_overlong"] == 1
    assert not {e.id for e in data.train} & {e.id for e in data.eval}
    assert len(data.eval) == 4
    assert data.files[0].records == 42 and len(data.files[0].sha256) == 64
    # the held-out split depends on ids only (not on file order)
    shuffled = _write(tmp_path / "s.jsonl", list(reversed(records)))
    again = load_training_data(tokenizer, [shuffled], overlong="drop", **kwargs)
    assert {e.id for e in again.eval} == {e.id for e in data.eval}
    # truncate_input keeps the long example, cut to fit, with its answer intact
    kept = load_training_data(tokenizer, [data_file], overlong="truncate_input", **kwargs)
    long_ex = next(e for e in kept.train + kept.eval if e.id == "syn:99")
    assert long_ex.length <= 256 and kept.stats["truncated_input"] == 1
    assert tokenizer.decode([t for t in long_ex.labels if t != IGNORE_INDEX]).startswith("yes")


def test_bad_data_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_record(1)) + "\n" + json.dumps({"id": "x", "instruction": "hi"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        read_records(path)
    with pytest.raises(DataError, match="does not exist"):
        read_records(tmp_path / "missing.jsonl")
