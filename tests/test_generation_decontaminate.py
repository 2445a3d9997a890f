"""Decontamination: exact and n-gram near-duplicates of evaluation inputs are removed and reported."""

from __future__ import annotations

import json
from pathlib import Path

from bioinstruct.generation.datasets import EvalText, evaluation_texts
from bioinstruct.generation.decontaminate import EvalIndex, decontaminate, run_decontamination
from bioinstruct.generation.store import read_records, write_records
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.prompts import qa_task
from bioinstruct.instruct.records import InstructionRecord

EVAL_QUESTION = "Do statins reduce mortality in patients with chronic kidney disease on dialysis?"
EVAL_SENTENCE = ("Treatment with carvedilol reversed both protein and mRNA of HIF-1alpha, VEGF, BNP, "
                 "and NGF-beta to the baseline values in the rat heart.")
EVAL_SHORT = "Is aspirin safe in pregnancy?"
EVAL = [
    EvalText("pubmedqa/test", "111", "question", EVAL_QUESTION),
    EvalText("chemprot/test", "7", "text", EVAL_SENTENCE),
    EvalText("mediqa_qs/test", "9", "summary", EVAL_SHORT),
    EvalText("bc5cdr/test", "t-1", "text", "A case report ."),
]


def rec(rid: str, instruction: str, input_text: str = "", family=TaskFamily.QA, source="convert:x"):
    return InstructionRecord(id=rid, instruction=instruction, input=input_text, output="yes", category=family,
                             provenance={"source": source})


def test_exact_ngram_and_clean_records():
    index = EvalIndex(EVAL)
    # exact, after normalisation (case, punctuation, spacing)
    m = index.check(rec("a", "Answer the question.", "do STATINS reduce mortality in patients with chronic "
                                                     "kidney disease, on dialysis"))
    assert m and m.reason == "exact" and m.eval.item == "111" and m.field == "input"
    # exact as one line of a formatted input (the eval question inside the /qa input format)
    _, qa_input = qa_task(EVAL_QUESTION, "Some unrelated context about lipids.", ["yes", "no", "maybe"])
    m = index.check(rec("b", "Answer the question.", qa_input))
    assert m and m.reason == "exact"
    # near-duplicate: an edited copy of the sentence inside a longer input
    edited = EVAL_SENTENCE.replace("rat heart", "mouse heart") + " Other words follow here and there."
    m = index.check(rec("c", "Classify the relation.", "Context:\nWe found that " + edited))
    assert m and m.reason == "ngram" and m.eval.split == "chemprot/test" and m.score >= 0.5
    # near-duplicate: the eval question in a self-instruct instruction, with an extra clause
    m = index.check(rec("d", EVAL_QUESTION.rstrip("?") + " according to recent trials?", ""))
    assert m and m.reason == "ngram" and m.field == "instruction"
    # a short eval text (fewer than n tokens) contained whole
    m = index.check(rec("e", "Answer briefly: is aspirin safe in pregnancy? Explain your answer."))
    assert m and m.eval.split == "mediqa_qs/test"
    # clean: shares a few words only
    assert index.check(rec("f", "Explain how statins lower cholesterol.", "Statins reduce LDL in patients.")) is None
    # too short to count as an exact duplicate ("A case report ." is 3 tokens: it does count)
    assert index.check(rec("g", "Summarize.", "A case report.")).reason == "exact"
    assert index.check(rec("h", "Summarize the case.", "Case report")) is None


def test_report_and_training_files(tmp_path):
    converted = tmp_path / "x.train.jsonl"
    generated = tmp_path / "selfinstruct.jsonl"
    write_records(converted, [
        rec("x-1", "Answer the question.", EVAL_QUESTION),
        rec("x-2", "Answer the question.", "What is the half-life of warfarin in healthy adults?"),
        rec("x-3", "Extract the chemicals.", "Aspirin and heparin were given.", TaskFamily.IE),
    ])
    write_records(generated, [
        rec("si-1", "Explain how carvedilol works in heart failure.", "", TaskFamily.GEN, "self-instruct"),
        rec("si-2", "Summarize: " + EVAL_SENTENCE, "", TaskFamily.GEN, "self-instruct"),
        rec("x-2", "Duplicate id from another file.", ""),
    ])
    report = run_decontamination([converted, generated], EVAL, tmp_path / "train", tmp_path / "reports")
    assert report["totals"] == {"records": 6, "kept": 3, "removed": 2, "by_reason": {"exact": 1, "ngram": 1},
                                "by_eval_split": {"pubmedqa/test": 1, "chemprot/test": 1}}
    assert report["sources"][str(generated)]["duplicate_ids"] == 1
    removed = {r["id"]: r for r in report["removed"]}
    assert set(removed) == {"x-1", "si-2"}
    assert removed["x-1"]["eval_item"] == "111" and removed["x-1"]["reason"] == "exact"
    assert removed["si-2"]["field"] == "instruction" and removed["si-2"]["eval_split"] == "chemprot/test"
    saved = json.loads((tmp_path / "reports" / "decontamination.json").read_text())
    assert saved["totals"] == report["totals"]
    md = (tmp_path / "reports" / "decontamination.md").read_text()
    assert "**2 removed**" in md and "x-1" in md and "pubmedqa/test" in md
    # training files: one per family present, plus all
    train = tmp_path / "train"
    assert sorted(p.name for p in train.iterdir()) == ["all.jsonl", "gen.jsonl", "ie.jsonl", "qa.jsonl"]
    assert [r.id for r in read_records(train / "all.jsonl")] == ["x-2", "x-3", "si-1"]
    assert [r.id for r in read_records(train / "qa.jsonl")] == ["x-2"]


def test_evaluation_texts_cover_every_split_of_every_task_file(data_dir):
    from bioinstruct.instruct.benchmark import all_tasks

    texts = evaluation_texts(data_dir)
    splits = {t.split for t in texts}
    assert splits == {f"{task.name}/{split}" for task in all_tasks() for split in task.splits}
    assert {"pubmedqa/dev", "bc5cdr/dev", "chemprot/dev", "mediqa_qs/dev", "meqsum_heldout/test"} <= splits
    assert not any("<<" in t.text and ">>" in t.text for t in texts if t.split.startswith("chemprot"))
    meqsum_items = {int(t.item) for t in texts if t.split == "meqsum_heldout/test"}
    assert meqsum_items == set(range(800, 1000))
    # an item is what it shows the model (and a text task's reference), not the constants
    assert {t.field for t in texts if t.split == "meqsum_heldout/test"} == {"input", "reference"}
    assert {t.field for t in texts if t.split == "chemprot/test"} == {"sentence"}


def test_a_task_file_added_in_a_folder_removes_its_items_from_training_data(data_dir, tmp_path, monkeypatch):
    """A new benchmark is decontaminated against as soon as its task file exists: here, one
    over the first 5 BC5CDR *training* sentences."""
    from bioinstruct.generation.converters.bc5cdr import convert_bc5cdr

    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "bc5cdr_probe.yaml").write_text(
        Path("instruct/benchmarks/bc5cdr.yaml").read_text()
         .replace("name: bc5cdr", "name: bc5cdr_probe")
         .replace("path: bc5cdr/test.entities.jsonl", "path: bc5cdr/train.entities.jsonl\n    select: {slice: [0, 5]}")
         .replace("count: 4797", "count: 5"))
    records = convert_bc5cdr(data_dir)
    probe_ids = {json.loads(line)["id"] for line in
                 (data_dir / "bc5cdr" / "train.entities.jsonl").read_text().splitlines()[:5]}

    def removed_items(texts):
        result = decontaminate({"bc5cdr": records}, EvalIndex(texts))
        return {r.provenance["item"] for r, m in result.removed if m.eval.split.startswith("bc5cdr_probe/")}

    assert removed_items(evaluation_texts(data_dir)) == set()
    assert removed_items(evaluation_texts(data_dir, [folder])) == probe_ids
    monkeypatch.setenv("BIOINSTRUCT_EVAL_TASKS_DIR", str(folder))  # the setting `convert` reads
    assert removed_items(evaluation_texts(data_dir)) == probe_ids


def test_real_training_data_overlaps_are_found(data_dir):
    from bioinstruct.generation.converters import CONVERTERS

    sources = {name: fn(data_dir) for name, fn in CONVERTERS.items()}
    result = decontaminate(sources, EvalIndex(evaluation_texts(data_dir)))
    removed = {r.id: m for r, m in result.removed}
    # known overlaps of the published splits: a ChemProt train sentence that is also in its
    # test split, MeQSum questions that MEDIQA-QS 2021 reused in its test set
    assert removed["chemprot-train-1058"].reason == "exact"
    assert removed["chemprot-train-1058"].eval.split == "chemprot/test"
    assert removed["meqsum-215"].eval.split == "mediqa_qs/test"
    assert len(result.kept) + len(result.removed) == sum(len(v) for v in sources.values())
    # the 100 PubMedQA dev records (the gate's split), MeQSum's 200 held-out pairs (converted
    # with the rest: the task file alone says they are evaluation data), a few real overlaps
    assert 300 <= len(result.removed) < 400
    assert sum(m.eval.split == "pubmedqa/dev" for _, m in result.removed) == 100
    heldout = {r.provenance["item"] for r, m in result.removed if m.eval.split == "meqsum_heldout/test"}
    assert heldout >= set(range(800, 1000))  # (and meqsum-488, a near-copy of a held-out pair)
    assert not any(r.provenance["dataset"] == "meqsum" and r.provenance["item"] >= 800 for r in result.kept)


def test_pubmedqa_dev_split_of_the_gate_never_reaches_training(data_dir):
    """The eval gate's dev split (last 100 trainval records) is an evaluation split here too."""
    from bioinstruct.generation.converters.pubmedqa import convert_pubmedqa
    from bioinstruct.generation.datasets import evaluation_texts
    from bioinstruct.generation.decontaminate import EvalIndex, decontaminate
    from bioinstruct.instruct.benchmark import load_task

    dev_pmids = {doc.id for doc in load_task("pubmedqa").load("dev", data_dir)}
    assert len(dev_pmids) == 100
    result = decontaminate({"pubmedqa": convert_pubmedqa(data_dir)}, EvalIndex(evaluation_texts(data_dir)))
    kept = {r.provenance["item"] for r in result.kept}
    assert not kept & dev_pmids
    assert len(kept) == 500 - len(dev_pmids)
