"""Decontamination: exact and n-gram near-duplicates of evaluation inputs are removed and reported."""

from __future__ import annotations

import json

from generation.datasets import EvalText, evaluation_texts
from generation.decontaminate import EvalIndex, decontaminate, run_decontamination
from generation.store import read_records, write_records
from instruct.families import TaskFamily
from instruct.records import InstructionRecord
from instruct.tasks import qa_task

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


def test_evaluation_texts_cover_every_evaluation_split(data_dir):
    texts = evaluation_texts(data_dir)
    splits = {t.split for t in texts}
    assert splits == {"pubmedqa/test", "pubmedqa/dev", "medqa/test", "medmcqa/dev", "bc5cdr/devel", "bc5cdr/test",
                      "chemprot/dev", "chemprot/test", "meqsum/heldout", "mediqa_qs/validation", "mediqa_qs/test"}
    assert not any("<<" in t.text and ">>" in t.text for t in texts if t.split.startswith("chemprot"))
    meqsum_items = {int(t.item) for t in texts if t.split == "meqsum/heldout"}
    assert meqsum_items == set(range(800, 1000))


def test_real_training_data_overlaps_are_found(data_dir):
    from generation.converters import CONVERTERS

    sources = {name: fn(data_dir) for name, fn in CONVERTERS.items()}
    result = decontaminate(sources, EvalIndex(evaluation_texts(data_dir)))
    removed = {r.id: m for r, m in result.removed}
    # known overlaps of the published splits: a ChemProt train sentence that is also in its
    # test split, MeQSum questions that MEDIQA-QS 2021 reused in its test set
    assert removed["chemprot-train-1058"].reason == "exact"
    assert removed["chemprot-train-1058"].eval.split == "chemprot/test"
    assert removed["meqsum-215"].eval.split == "mediqa_qs/test"
    assert len(result.kept) + len(result.removed) == sum(len(v) for v in sources.values())
    # the 100 PubMedQA dev records (the gate's split) plus a handful of real overlaps
    assert 100 <= len(result.removed) < 200
    assert sum(m.eval.split == "pubmedqa/dev" for _, m in result.removed) == 100


def test_pubmedqa_dev_split_of_the_gate_never_reaches_training(data_dir):
    """The eval gate's dev split (last 100 trainval records) is an evaluation split here too."""
    import yaml

    from generation.converters.pubmedqa import convert_pubmedqa
    from generation.datasets import PUBMEDQA_DEV_SIZE, evaluation_texts, pubmedqa
    from generation.decontaminate import EvalIndex, decontaminate

    task = yaml.safe_load(open("eval/tasks/pubmedqa.yaml"))
    assert task["splits"]["dev"]["select"] == {"slice": [-PUBMEDQA_DEV_SIZE, None]}
    dev_pmids = {item["pmid"] for item in pubmedqa(data_dir, "trainval")[-PUBMEDQA_DEV_SIZE:]}
    result = decontaminate({"pubmedqa": convert_pubmedqa(data_dir)}, EvalIndex(evaluation_texts(data_dir)))
    kept = {r.provenance["item"] for r in result.kept}
    assert not kept & dev_pmids
    assert len(kept) == 500 - PUBMEDQA_DEV_SIZE
