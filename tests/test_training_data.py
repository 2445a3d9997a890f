"""Training data: response-only labels, the exact prompt boundary, batching that avoids padding."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bioinstruct.instruct.format import SYSTEM_PROMPTS, render_example, render_prompt, user_content
from bioinstruct.instruct.prompts import qa_task
from bioinstruct.instruct.records import InstructionRecord
from bioinstruct.training import batching
from bioinstruct.training.data import (
    IGNORE_INDEX,
    DataError,
    load_training_data,
    read_data_file,
    read_records,
    tokenize_record,
)
from tests.tiny_model import make_tiny_llama


def _record(i: int, words: int = 5, category: str = "QA", output: str | None = None) -> dict:
    instruction, input_text = qa_task(f"Does drug {i} lower blood pressure?", ["context " * words],
                                      ["yes", "no", "maybe"])
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


# --- the formats people have (training/formats.py) --------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "TRAINING.md"


def _native_qa() -> dict:
    return _record(7, words=4, output="Yes, in most trials.")


def _as_formats(native: dict) -> dict[str, dict]:
    """The native record written in each foreign format, as its users would write it."""
    system = SYSTEM_PROMPTS[native["category"]]
    user = user_content(native["instruction"], native["input"])
    return {
        "alpaca": {"instruction": native["instruction"], "input": native["input"], "output": native["output"],
                   "source": "some-dataset", "meta": {"split": "train"}},  # extra keys are tolerated
        "prompt-completion": {"prompt": user, "completion": native["output"], "id": 17},
        "prompt-completion (conversational)": {
            "prompt": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "completion": [{"role": "assistant", "content": native["output"]}]},
        "messages": {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                                  {"role": "assistant", "content": native["output"]}]},
        "messages (no system turn)": {"messages": [{"role": "user", "content": user},
                                                   {"role": "assistant", "content": native["output"]}]},
    }


@pytest.mark.parametrize("variant", list(_as_formats(_native_qa())))
def test_each_format_trains_on_the_native_records_exact_tokens(tokenizer, tmp_path, variant):
    native = InstructionRecord.model_validate(_native_qa())
    obj = _as_formats(_native_qa())[variant]
    path = _write(tmp_path / "d.jsonl", [obj])
    fmt, (rec,) = read_data_file(path, category="QA")
    assert fmt == variant.split(" ")[0]
    # mapped faithfully: the user turn is split back into instruction and input where ours joined them
    assert (rec.category, rec.instruction, rec.input, rec.output) == (
        native.category, native.instruction, native.input, native.output)
    ours = render_example(tokenizer, native.category, native.instruction, native.input, native.output)
    theirs = render_example(tokenizer, rec.category, rec.instruction, rec.input, rec.output)
    assert theirs == ours  # byte-identical prompt and completion
    ex_ours, _ = tokenize_record(tokenizer, native, 1024, "drop")
    ex_theirs, _ = tokenize_record(tokenizer, rec, 1024, "drop")
    assert ex_theirs.input_ids == ex_ours.input_ids and ex_theirs.labels == ex_ours.labels
    assert rec.provenance["format"] == fmt


def test_the_docs_examples_are_one_example_in_every_format(tokenizer, tmp_path):
    """The JSONL block of docs/TRAINING.md "Data formats": each line read alone gives the same example."""
    section = DOCS.read_text().split("## Data formats", 1)[1]
    block = section.split("```jsonl\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 5
    rendered, formats = set(), []
    for i, line in enumerate(lines):
        fmt, (rec,) = read_data_file(_write(tmp_path / f"{i}.jsonl", [json.loads(line)]), category="QA")
        formats.append(fmt)
        rendered.add(render_example(tokenizer, rec.category, rec.instruction, rec.input, rec.output))
    assert formats == ["bioinstruct", "prompt-completion", "prompt-completion", "messages", "alpaca"]
    assert len(rendered) == 1


def test_a_foreign_system_turn_goes_ahead_of_the_instruction(tokenizer, tmp_path):
    obj = {"messages": [{"role": "system", "content": "You are a pharmacologist. "},
                        {"role": "user", "content": "List the drugs in: aspirin and warfarin interact."},
                        {"role": "assistant", "content": "aspirin; warfarin"}]}
    (rec,) = read_records(_write(tmp_path / "m.jsonl", [obj]), category="IE")
    assert rec.category == "IE" and rec.input == ""
    assert rec.instruction == "You are a pharmacologist.\n\nList the drugs in: aspirin and warfarin interact."
    prompt, completion = render_example(tokenizer, rec.category, rec.instruction, rec.input, rec.output)
    # the family's system prompt is the one served; the record's own instructions reach the model too
    assert SYSTEM_PROMPTS["IE"] in prompt and "You are a pharmacologist.\n\nList the drugs" in prompt
    assert completion.startswith("aspirin; warfarin")


def test_the_family_comes_from_the_record_then_its_system_prompt_then_the_option(tmp_path):
    rows = [
        {"instruction": "Summarise.", "output": "A summary.", "category": "gen"},  # its own (any case) wins
        {"instruction": "Answer.", "output": "yes", "category": "biology"},  # not a family: the option's
        {"instruction": "Answer.", "output": "no"},  # none: the option's
        {"messages": [{"role": "system", "content": SYSTEM_PROMPTS["IE"]}, {"role": "user", "content": "x"},
                      {"role": "assistant", "content": "y"}]},  # our IE system prompt says IE
    ]
    alpaca = _write(tmp_path / "a.jsonl", rows[:3])
    assert [r.category for r in read_records(alpaca, category="QA")] == ["GEN", "QA", "QA"]
    assert read_records(_write(tmp_path / "m.jsonl", rows[3:]))[0].category == "IE"
    # without the option, a record that carries no family is an error that says what to pass
    for category in (None, "ALL"):
        with pytest.raises(DataError, match=r"a\.jsonl:2: no task family: the record has category 'biology'.*"
                                            r"pass --category QA\|IE\|GEN\|OTHER"):
            read_records(alpaca, category=category)
    with pytest.raises(DataError, match=r"b\.jsonl:1: no task family: the record carries no 'category'"):
        read_records(_write(tmp_path / "b.jsonl", rows[2:3]))


def test_records_without_ids_get_content_ids_so_dedup_and_the_split_still_work(tokenizer, tmp_path):
    pairs = [(f"Is statin {i} safe in pregnancy?", ["yes", "no"][i % 2]) for i in range(12)]
    alpaca = _write(tmp_path / "a.jsonl", [{"instruction": q, "output": a} for q, a in pairs])
    chats = _write(tmp_path / "m.jsonl", [_msg(("user", q), ("assistant", a)) for q, a in pairs])
    a_ids = [r.id for r in read_records(alpaca, category="QA")]
    assert a_ids == [r.id for r in read_records(chats, category="QA")]  # same example, same id
    assert len(set(a_ids)) == 12 and all(i.startswith("content:") for i in a_ids)
    assert a_ids == [r.id for r in read_records(alpaca, category="QA")]  # deterministic
    data = load_training_data(tokenizer, [alpaca, chats], max_length=256, eval_fraction=0.2, category="QA")
    assert data.stats["records_read"] == 24 and data.stats["duplicate_ids_skipped"] == 12
    assert [f.format for f in data.files] == ["alpaca", "messages"]
    assert data.files[1].as_dict()["format"] == "messages"
    # a record's own id is kept, and so is a source id that --exclude-ids-file can match
    own_ids = _write(tmp_path / "p.jsonl", [{"prompt": "q", "completion": "a", "id": 5, "pmid": "123"}])
    (rec,) = read_records(own_ids, category="QA")
    assert rec.id == "5" and rec.provenance["pmid"] == "123"


def test_the_fingerprint_names_a_foreign_format_and_keeps_ours_unchanged(tokenizer, tmp_path):
    import hashlib

    native = _write(tmp_path / "n.jsonl", [_record(i) for i in range(4)])
    data = load_training_data(tokenizer, [native], max_length=256, eval_fraction=0)
    # the formula before formats existed: runs started then still find their run folder
    old = hashlib.sha256(f"{native.resolve()}:{data.files[0].sha256};".encode() + b"null").hexdigest()
    assert data.fingerprint() == old
    alpaca = _write(tmp_path / "a.jsonl", [{"instruction": "Q?", "output": "yes", "id": "x", "category": "QA",
                                            "extra": 1}])
    as_alpaca = load_training_data(tokenizer, [alpaca], max_length=256, eval_fraction=0, data_format="alpaca")
    plain = hashlib.sha256(f"{alpaca.resolve()}:{as_alpaca.files[0].sha256};".encode() + b"null").hexdigest()
    assert as_alpaca.files[0].format == "alpaca" and as_alpaca.fingerprint() != plain


def _msg(*turns: tuple[str, object]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


GOOD_CHAT = _msg(("user", "q"), ("assistant", "a"))


@pytest.mark.parametrize(
    ("lines", "fmt", "bad_line", "message"),
    [
        (['{"instruction": "q", "output": "a"}', '{"instruction": "q", "output": '], "auto", 2,
         "not valid JSON"),
        (["[1, 2]"], "auto", 1, "expected a JSON object, got a JSON list"),
        (['{"text": "raw text"}'], "auto", 1, r"not a record of a known format \(keys: text\)"),
        ([GOOD_CHAT, {"instruction": "q", "output": "a"}], "auto", 2,
         "mixed formats in one file: this record is alpaca, line 1 is messages"),
        ([GOOD_CHAT, {"instruction": "q"}], "auto", 2, "missing key 'messages'"),
        ([GOOD_CHAT, _msg(("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "a2"))], "auto", 2,
         r"the turns after any system turn are \[user, assistant, user, assistant\]; only single-turn chats"),
        ([_msg(("user", "q"))], "auto", 1, r"are \[user\]; only single-turn"),
        ([_msg(("user", "q"), ("tool", "{}"), ("assistant", "a"))], "auto", 1, r"role\(s\) \['tool'\]"),
        ([_msg(("user", [{"type": "text", "text": "q"}]), ("assistant", "a"))], "auto", 1,
         r"messages\[0\]: 'content' must be a string, not list"),
        ([{"messages": [{"role": "user"}]}], "auto", 1, r"messages\[0\]: missing key 'content'"),
        ([{"prompt": "q", "completion": [{"role": "assistant", "content": "a"}]}], "auto", 1,
         "must both be strings or both be lists of messages"),
        ([{"prompt": [{"role": "user", "content": "q"}],
           "completion": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]}],
         "auto", 1, r"prompt\+completion: the turns after any system turn are \[user, assistant, assistant"),
        ([{"instruction": "q", "output": "   "}], "auto", 1, "output: must not be blank"),
        ([{"instruction": "q", "input": 3, "output": "a"}], "auto", 1, "'input' must be a string, not int"),
        ([{**_record(1), "note": "x"}], "auto", 1, r"note: Extra inputs.*pass --format alpaca"),
        ([_record(1), {k: v for k, v in _record(2).items() if k != "category"}], "auto", 2,
         r"not an instruction record \(category: Field required\)"),
        ([{"instruction": "q", "output": "a"}], "messages", 1, "missing key 'messages'"),
        ([GOOD_CHAT], "prompt-completion", 1, "missing key 'prompt'"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path, lines, fmt, bad_line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    with pytest.raises(DataError, match=rf"bad\.jsonl:{bad_line}: .*{message}"):
        read_records(path, data_format=fmt, category="QA")


def test_forcing_a_format(tmp_path):
    # ours with extra keys is refused as ours and read as Alpaca when asked (its id and category kept)
    path = _write(tmp_path / "x.jsonl", [{**_record(i), "note": "x"} for i in range(3)])
    recs = read_records(path, data_format="alpaca")
    assert [r.id for r in recs] == ["syn:0", "syn:1", "syn:2"] and {r.category for r in recs} == {"QA"}
    with pytest.raises(DataError, match="not one of auto, bioinstruct, prompt-completion, messages, alpaca"):
        read_records(path, data_format="sharegpt")
    not_utf8 = tmp_path / "latin1.jsonl"
    latin1 = '{"instruction": "caf\xe9"}'.encode("latin-1")
    not_utf8.write_bytes(json.dumps(_record(1)).encode() + b"\n" + latin1)
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not UTF-8"):
        read_records(not_utf8)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, base_model_dir) -> Path:
    return make_tiny_llama(base_model_dir, tmp_path_factory.mktemp("tiny-llama"), hidden=32, layers=1, heads=2)


def test_bioinstruct_train_on_a_messages_file(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from bioinstruct.cli import _register_subcommands, app

    chats = [_msg(("user", f"Extract the chemicals: compound {i} and aspirin."),
                  ("assistant", f"compound {i}; aspirin")) | {"id": f"chat-{i}", "meta": {"src": "x"}}
             for i in range(6)]
    data = _write(tmp_path / "chats.jsonl", chats)
    _register_subcommands()
    common = ["train", "--data", str(data), "--base-model", str(tiny_model_dir), "--no-publish", "--quiet",
              "--max-length", "96", "--rank", "2", "--batch-size", "2", "--grad-accum", "1",
              "--max-steps", "1", "--save-every", "0", "--eval-every", "0"]
    res = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "run0")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"{data}:1: no task family" in res.output and "pass --category" in res.output
    res = CliRunner().invoke(app, [*common, "--category", "IE", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["category"] == "IE" and run["config"]["data_format"] == "auto"
    assert run["data_files"][0]["format"] == "messages" and run["data_files"][0]["categories"] == {"IE": 6}
    assert run["data_stats"]["records_read"] == 6
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
