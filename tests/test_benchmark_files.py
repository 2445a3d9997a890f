"""Task files: every shipped YAML loads against the real data with the published counts,
and the generic loaders/steps do what the task files rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bioinstruct.instruct.benchmark import (
    PACKAGED_TASKS_DIR,
    TaskError,
    TaskSpec,
    all_tasks,
    load_task,
    load_task_file,
    render,
    step_options_from_dict,
    step_strip_markers,
    task_files,
)

EXPECTED = {
    ("pubmedqa", "test"): 500,
    ("pubmedqa", "dev"): 100,
    ("medqa", "test"): 1273,
    ("medmcqa", "dev"): 2816,
    ("bc5cdr", "test"): 4797,
    ("chemprot", "test"): 3469,
    ("mediqa_qs", "test"): 100,
    ("meqsum_heldout", "test"): 200,
}
SHIPPED = {"pubmedqa", "medqa", "medmcqa", "bc5cdr", "chemprot", "mediqa_qs", "meqsum_heldout"}


@pytest.fixture(scope="module")
def tasks() -> dict[str, TaskSpec]:
    return {t.name: t for t in all_tasks()}


def test_every_benchmark_is_shipped_as_a_packaged_file(tasks):
    assert SHIPPED <= set(tasks)
    assert {p.stem for p in PACKAGED_TASKS_DIR.glob("*.yaml")} >= SHIPPED


@pytest.mark.parametrize("name,split", sorted(EXPECTED))
def test_split_counts_and_requests(tasks, data_dir, name, split):
    task = tasks[name]
    docs = task.load(split, data_dir)
    assert len(docs) == EXPECTED[(name, split)]
    assert len({d.id for d in docs}) == len(docs)
    for doc in docs:
        body = task.body(doc, "base")
        assert body["adapter"] == "base"
        gold = task.gold(doc)
        if task.scoring.kind == "choice":
            options = body["options"]
            assert 2 <= len(options) <= 32 and len({o.casefold() for o in options}) == len(options)
            assert gold in task.labels(doc)
            assert len(task.labels(doc)) == len(options)
        elif task.scoring.kind == "spans":
            for start, end, etype in gold:
                assert etype in body["entity_types"]
                assert body["text"][start:end].strip() == body["text"][start:end] != ""
        else:
            assert gold.strip() and body["input"].strip()


def test_default_split_is_the_evaluation_split(tasks):
    assert tasks["pubmedqa"].default_split == "test"
    assert tasks["medmcqa"].default_split == "dev"  # MedMCQA's test labels are not public
    assert tasks["pubmedqa"].dev_split == "dev"
    assert tasks["medqa"].dev_split is None


def test_pubmedqa_dev_is_the_last_100_trainval_records_and_disjoint_from_test(tasks, data_dir):
    trainval = json.loads((data_dir / "pubmedqa_pqal/pqal_trainval_set.json").read_text())
    dev = tasks["pubmedqa"].load("dev", data_dir)
    assert [d.id for d in dev] == list(trainval)[-100:]
    test_ids = {d.id for d in tasks["pubmedqa"].load("test", data_dir)}
    assert not test_ids & {d.id for d in dev}
    doc = dev[0]
    body = tasks["pubmedqa"].body(doc, None)
    assert "adapter" not in body
    assert isinstance(body["context"], list) and body["options"] == ["yes", "no", "maybe"]
    assert body["method"] == "logprob"


def test_bc5cdr_gold_offsets_match_the_entity_text(tasks, data_dir):
    task = tasks["bc5cdr"]
    docs = task.load("test", data_dir)
    n = 0
    by_type = {"Chemical": 0, "Disease": 0}
    for doc in docs:
        text = task.body(doc, None)["text"]
        assert text == " ".join(doc.fields["tokens"])
        gold = task.gold(doc)
        ents = sorted(doc.fields["entities"], key=lambda e: (e["start_tok"], e["end_tok"]))
        assert [text[s:e] for s, e, _ in gold] == [e["text"] for e in ents]
        n += len(gold)
        for _, _, t in gold:
            by_type[t] += 1
    assert by_type == {"Chemical": 5385, "Disease": 4424}  # the official test mention counts
    assert n == 9809


def test_conll_loader_matches_the_derived_entities_file(data_dir):
    """A raw CoNLL file needs only a task file: the conll loader reads test.tsv to the same entities."""
    spec = TaskSpec.model_validate({
        "name": "bc5cdr_tsv", "family": "IE", "splits": {"test": {"path": "bc5cdr/test.tsv", "loader": "conll"}},
        "process": [{"step": "token_spans"}], "route": "extract", "request": {"text": "{text}"},
        "scoring": {"kind": "spans", "target": "{gold_spans}", "metrics": ["entity_f1"]},
    })
    raw = spec.load("test", data_dir)
    derived = [json.loads(line) for line in (data_dir / "bc5cdr/test.entities.jsonl").open()]
    assert len(raw) == len(derived) == 4797
    for a, b in zip(raw, derived, strict=True):
        assert a.fields["tokens"] == b["tokens"]
        assert a.fields["entities"] == b["entities"]


def test_chemprot_question_and_clean_sentence(tasks, data_dir):
    task = tasks["chemprot"]
    doc = task.load("test", data_dir)[0]
    body = task.body(doc, "base")
    assert body["question"] == "What is the relation between Androgen and androgen receptor in the sentence?"
    assert body["context"] == ("Androgen antagonistic effect of estramustine phosphate (EMP) metabolites on "
                               "wild-type and mutated androgen receptor.")
    assert len(body["options"]) == 13 and "SUBSTRATE_PRODUCT-OF" in body["options"]
    for doc in task.load("test", data_dir):
        ctx = task.body(doc, None)["context"]
        assert "<< " not in ctx and "[[ " not in ctx


def test_prompts_match_the_training_converters(tasks):
    """The task files ask what training taught: instruct.prompts' first (canonical) wordings,
    named with `!shared`, not copied."""
    from bioinstruct.instruct.prompts import (
        CHEMPROT_LABELS,
        PAIR_RELATION_QUESTIONS,
        QUESTION_SUMMARY_INSTRUCTIONS,
    )

    chem = tasks["chemprot"].request
    assert chem["options"] == list(CHEMPROT_LABELS)
    assert chem["question"] == PAIR_RELATION_QUESTIONS[0]
    for name in ("mediqa_qs", "meqsum_heldout"):
        assert tasks[name].request["instruction"] == QUESTION_SUMMARY_INSTRUCTIONS[0]
    for name in ("chemprot", "mediqa_qs", "meqsum_heldout"):
        assert "!shared" in Path(tasks[name].source).read_text()


def test_a_shared_name_that_is_not_a_prompt_constant_is_a_clear_error(tmp_path):
    text = (PACKAGED_TASKS_DIR / "chemprot.yaml").read_text()
    for wrong in ("CHEMPROT_LABEL", "PAIR_RELATION_QUESTIONS[9]", "format_types", "os.system"):
        path = _write(tmp_path, text.replace("!shared CHEMPROT_LABELS", f"!shared {wrong}"))
        with pytest.raises(TaskError, match=r"!shared .*instruct/prompts.py"):
            load_task_file(path)


def test_meqsum_heldout_is_idx_800_and_up(tasks, data_dir):
    docs = tasks["meqsum_heldout"].load("test", data_dir)
    assert [int(d.id) for d in docs] == list(range(800, 1000))
    assert tasks["meqsum_heldout"].body(docs[0], "gen")["stream"] is True


def test_medmcqa_duplicate_options_made_distinct(tasks, data_dir):
    task = tasks["medmcqa"]
    changed = [d for d in task.load("dev", data_dir) if any(o.endswith(")") and f"({k})" in o
               for o, k in zip(d.fields["choices"], d.fields["choice_keys"], strict=True))]
    assert len(changed) >= 14


def test_limit_takes_a_fixed_sample_that_grows_as_a_superset(tasks, data_dir):
    task = tasks["pubmedqa"]
    full = task.load(None, data_dir)
    small = task.load(None, data_dir, limit=20)
    assert [d.id for d in small] == [d.id for d in task.load(None, data_dir, limit=20)]
    order = {d.id: i for i, d in enumerate(full)}
    assert [order[d.id] for d in small] == sorted(order[d.id] for d in small)  # file order kept
    assert {d.id for d in small} < {d.id for d in task.load(None, data_dir, limit=60)}
    # The test file lists every 'yes' first: the first 20 would all be 'yes', a sample is not.
    assert {d.fields["final_decision"] for d in full[:20]} == {"yes"}
    assert len({d.fields["final_decision"] for d in small}) > 1
    assert len(task.load(None, data_dir, limit=10_000)) == 500


# --- generic pieces ---------------------------------------------------------------------------

def test_render_templates():
    rec = {"q": "Why?", "ctx": ["a", "b"], "opts": {"A": "x"}, "n": 3}
    assert render("{ctx}", rec) == ["a", "b"]  # a whole-field template keeps the value's type
    assert render("Q: {q} ({n})", rec) == "Q: Why? (3)"
    assert render("{opts[A]}", rec) == "x"
    assert render(["{q}", "lit", 5], rec) == ["Why?", "lit", 5]
    assert render({"k": "{n}"}, rec) == {"k": 3}
    with pytest.raises(TaskError, match="not in the record"):
        render("{missing}", rec)
    with pytest.raises(TaskError, match="missing"):
        render("x {missing} y", rec)


def test_options_from_dict_dedupes():
    rec = step_options_from_dict({"o": {"A": "X", "B": "x", "C": "Y", "D": "X"}}, field="o")
    assert rec["choices"] == ["X", "x (B)", "Y", "X (D)"]
    assert rec["choice_keys"] == ["A", "B", "C", "D"]


def test_strip_markers():
    rec = step_strip_markers({"t": "The << aspirin >> blocks [[ COX-1 ]] here."}, field="t",
                             markers={"chem": ["<< ", " >>"], "prot": ["[[ ", " ]]"]}, into="s")
    assert (rec["chem"], rec["prot"], rec["s"]) == ("aspirin", "COX-1", "The aspirin blocks COX-1 here.")
    with pytest.raises(TaskError):
        step_strip_markers({"t": "no markers"}, field="t", markers={"c": ["<< ", " >>"]}, into="s")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mytask.yaml"
    path.write_text(text)
    return path


def test_new_benchmark_with_same_shape_needs_only_a_file(tmp_path, data_dir):
    """A MedQA-shaped dataset (here MedQA itself under another name) from a YAML file alone."""
    path = _write(tmp_path, (PACKAGED_TASKS_DIR / "medqa.yaml").read_text().replace("name: medqa", "name: mytask"))
    assert task_files([tmp_path])["mytask"] == path
    task = load_task("mytask", [tmp_path])
    assert len(task.load(None, data_dir, limit=3)) == 3
    assert load_task(str(path)).name == "mytask"


@pytest.mark.parametrize("patch,message", [
    (("metrics: [accuracy]", "metrics: []"), "at least one metric"),
    (("route: qa", "route: extract"), "reads a /qa response"),
    (("default_split: test", "default_split: train"), "default_split"),
    (("  - {step: options_from_dict", "  - {step: nosuchstep"), "unknown process step"),
    (("  method: logprob", "  adapter: base"), "must not set 'adapter'"),
])
def test_bad_task_files_are_refused_with_a_reason(tmp_path, patch, message):
    text = (PACKAGED_TASKS_DIR / "medqa.yaml").read_text()
    assert patch[0] in text
    path = _write(tmp_path, text.replace(*patch))
    with pytest.raises(TaskError, match=message):
        load_task_file(path)


def test_wrong_count_is_reported(tmp_path, data_dir):
    text = (PACKAGED_TASKS_DIR / "medqa.yaml").read_text().replace("count: 1273", "count: 1000")
    task = load_task_file(_write(tmp_path, text))
    with pytest.raises(TaskError, match="expected 1000"):
        task.load(None, data_dir)


def test_unknown_task_lists_known_ones():
    with pytest.raises(TaskError, match="pubmedqa"):
        load_task("nope")
