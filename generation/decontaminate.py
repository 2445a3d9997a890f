"""Decontamination: no training record may contain an evaluation item's input or question.

Texts are compared after rouge-style normalisation (lower case, runs of [a-z0-9] as
tokens). A record field is contaminated when

- exact: it, or one of its lines, equals an evaluation text; or
- ngram: it shares word n-grams (n=8 by default) with an evaluation text covering at least
  `threshold` of the shorter of the two (containment), so an evaluation question pasted
  into a longer input is caught, and so is a lightly edited copy. Evaluation texts
  shorter than n tokens (but at least `min_short_tokens`) count as one gram of their own
  length and must appear as a contiguous run.

The fields checked are the instruction and the input (the question, passage or sentence
a model is given); outputs are not inputs. Evaluation texts come from every split of every
benchmark task file (`generation.datasets.evaluation_texts`). The report says what was removed and why.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioinstruct.generation.datasets import EvalText
from bioinstruct.generation.dedup import rouge_tokens
from bioinstruct.generation.store import read_records, write_json_atomic, write_records
from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.records import InstructionRecord

DEFAULT_N = 8
DEFAULT_THRESHOLD = 0.5
MIN_SHORT_TOKENS = 5
MIN_EXACT_TOKENS = 3
_LABEL_PREFIX = re.compile(r"^\s*(context|question|options?|input|text|sentence|abstract)\s*:\s*", re.I)


@dataclass(frozen=True)
class Match:
    reason: str          # exact | ngram
    field: str           # which part of the record
    eval: EvalText
    score: float         # 1.0 for exact; containment for ngram


def _grams(tokens: Sequence[str], n: int) -> set[int]:
    return {hash(tuple(tokens[i:i + n])) for i in range(len(tokens) - n + 1)}


class EvalIndex:
    """Every evaluation text, indexed for exact and n-gram lookups."""

    def __init__(self, texts: Iterable[EvalText], *, n: int = DEFAULT_N,
                 threshold: float = DEFAULT_THRESHOLD, min_short_tokens: int = MIN_SHORT_TOKENS) -> None:
        self.n = n
        self.threshold = threshold
        self.min_short_tokens = min_short_tokens
        self.texts: list[EvalText] = []
        self._exact: dict[str, int] = {}
        self._gram_count: list[int] = []
        self._postings: dict[int, list[int]] = defaultdict(list)
        self._short: dict[int, dict[int, int]] = defaultdict(dict)  # length -> gram hash -> text id
        self.split_sizes: Counter[str] = Counter()
        for et in texts:
            self._add(et)

    def _add(self, et: EvalText) -> None:
        tokens = rouge_tokens(et.text)
        if not tokens:
            return
        tid = len(self.texts)
        self.texts.append(et)
        self.split_sizes[et.split] += 1
        if len(tokens) >= MIN_EXACT_TOKENS:
            self._exact.setdefault(" ".join(tokens), tid)
        if len(tokens) >= self.n:
            grams = _grams(tokens, self.n)
            self._gram_count.append(len(grams))
            for g in grams:
                self._postings[g].append(tid)
        else:
            self._gram_count.append(0)
            if len(tokens) >= self.min_short_tokens:
                self._short[len(tokens)].setdefault(hash(tuple(tokens)), tid)

    def match(self, text: str, field: str) -> Match | None:
        tokens = rouge_tokens(text)
        if not tokens:
            return None
        tid = self._exact.get(" ".join(tokens))
        if tid is not None:
            return Match("exact", field, self.texts[tid], 1.0)
        for part in (text.splitlines() if "\n" in text else ()):
            part_tokens = rouge_tokens(_LABEL_PREFIX.sub("", part))
            if len(part_tokens) >= self.min_short_tokens:
                tid = self._exact.get(" ".join(part_tokens))
                if tid is not None:
                    return Match("exact", field, self.texts[tid], 1.0)
        best: Match | None = None
        if len(tokens) >= self.n:
            grams = _grams(tokens, self.n)
            shared: Counter[int] = Counter()
            for g in grams:
                for t in self._postings.get(g, ()):
                    shared[t] += 1
            for t, count in shared.items():
                score = count / min(len(grams), self._gram_count[t])
                if score >= self.threshold and (best is None or score > best.score):
                    best = Match("ngram", field, self.texts[t], round(score, 4))
        if best is None:
            for length, table in self._short.items():
                for i in range(len(tokens) - length + 1):
                    t = table.get(hash(tuple(tokens[i:i + length])))
                    if t is not None:
                        return Match("ngram", field, self.texts[t], 1.0)
        return best

    def check(self, record: InstructionRecord) -> Match | None:
        for name in ("input", "instruction"):
            value = getattr(record, name)
            if value and value.strip():
                m = self.match(value, name)
                if m is not None:
                    return m
        return None


@dataclass
class DecontaminationResult:
    kept: list[InstructionRecord] = field(default_factory=list)
    removed: list[tuple[InstructionRecord, Match]] = field(default_factory=list)
    per_source: dict[str, dict[str, Any]] = field(default_factory=dict)


def decontaminate(sources: dict[str, Sequence[InstructionRecord]], index: EvalIndex) -> DecontaminationResult:
    """Split records (by source name) into kept and removed, with per-source counts."""
    result = DecontaminationResult()
    seen_ids: set[str] = set()
    for name, records in sources.items():
        stats: dict[str, Any] = {"records": len(records), "kept": 0, "removed": 0, "duplicate_ids": 0,
                                 "by_reason": Counter(), "by_eval_split": Counter()}
        for record in records:
            if record.id in seen_ids:
                stats["duplicate_ids"] += 1
                continue
            seen_ids.add(record.id)
            m = index.check(record)
            if m is None:
                result.kept.append(record)
                stats["kept"] += 1
            else:
                result.removed.append((record, m))
                stats["removed"] += 1
                stats["by_reason"][m.reason] += 1
                stats["by_eval_split"][m.eval.split] += 1
        stats["by_reason"] = dict(stats["by_reason"])
        stats["by_eval_split"] = dict(stats["by_eval_split"])
        result.per_source[name] = stats
    return result


def _clip(text: str, n: int = 240) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= n else text[: n - 1] + "…"


def build_report(result: DecontaminationResult, index: EvalIndex, outputs: dict[str, int]) -> dict[str, Any]:
    removed = []
    for record, m in result.removed:
        removed.append({
            "id": record.id, "source": record.provenance.get("source"), "field": m.field,
            "reason": m.reason, "score": m.score, "eval_split": m.eval.split, "eval_item": m.eval.item,
            "eval_field": m.eval.field, "record_text": _clip(getattr(record, m.field)),
            "eval_text": _clip(m.eval.text),
        })
    return {
        "method": {
            "normalisation": "rouge-score tokenizer (lower case, [a-z0-9]+ tokens)",
            "exact": f"field or one of its lines equals an evaluation text (of at least {MIN_EXACT_TOKENS} tokens)",
            "ngram": f"shared {index.n}-grams cover >= {index.threshold} of the shorter text; "
                     f"evaluation texts of {index.min_short_tokens}..{index.n - 1} tokens must appear whole",
            "fields_checked": ["input", "instruction"],
        },
        "evaluation_texts": dict(sorted(index.split_sizes.items())),
        "sources": result.per_source,
        "totals": {"records": sum(s["records"] for s in result.per_source.values()),
                   "kept": len(result.kept), "removed": len(result.removed),
                   "by_reason": dict(Counter(m.reason for _, m in result.removed)),
                   "by_eval_split": dict(Counter(m.eval.split for _, m in result.removed))},
        "outputs": outputs,
        "removed": removed,
    }


def report_markdown(report: dict[str, Any], max_examples: int = 25) -> str:
    t = report["totals"]
    lines = [
        "# Decontamination report",
        "",
        f"{t['records']} training records checked against {sum(report['evaluation_texts'].values())} "
        f"evaluation texts; **{t['removed']} removed**, {t['kept']} kept.",
        "",
        f"Method: {report['method']['exact']} (exact); {report['method']['ngram']} (ngram). "
        f"Fields checked: {', '.join(report['method']['fields_checked'])}; texts normalised with the "
        f"{report['method']['normalisation']}.",
        "",
        "| source | records | kept | removed | exact | ngram | matched evaluation splits |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in report["sources"].items():
        splits = ", ".join(f"{k} {v}" for k, v in sorted(s["by_eval_split"].items())) or "-"
        lines.append(f"| {name} | {s['records']} | {s['kept']} | {s['removed']} | "
                     f"{s['by_reason'].get('exact', 0)} | {s['by_reason'].get('ngram', 0)} | {splits} |")
    lines += ["", "Evaluation texts indexed: " + ", ".join(f"{k} {v}" for k, v in report["evaluation_texts"].items()),
              "", "Training files written: " + ", ".join(f"{k} ({v})" for k, v in report["outputs"].items()), ""]
    if report["removed"]:
        lines += [f"## Removed records (first {min(max_examples, len(report['removed']))} of "
                  f"{len(report['removed'])})", "",
                  "| id | reason | score | field | evaluation item | record text | evaluation text |",
                  "|---|---|---|---|---|---|---|"]
        for r in report["removed"][:max_examples]:
            cell = lambda s: s.replace("|", "\\|")  # noqa: E731
            lines.append(f"| {r['id']} | {r['reason']} | {r['score']} | {r['field']} | "
                         f"{r['eval_split']} {r['eval_item']} ({r['eval_field']}) | {cell(r['record_text'][:120])} | "
                         f"{cell(r['eval_text'][:120])} |")
    return "\n".join(lines) + "\n"


def write_training_files(kept: Sequence[InstructionRecord], out_dir: Path) -> dict[str, int]:
    """<out_dir>/<family>.jsonl for each task family present, and all.jsonl."""
    outputs: dict[str, int] = {}
    by_family: dict[TaskFamily, list[InstructionRecord]] = defaultdict(list)
    for record in kept:
        by_family[record.category].append(record)
    for family in TaskFamily:
        path = out_dir / f"{family.value.lower()}.jsonl"
        if by_family.get(family):
            outputs[str(path)] = write_records(path, by_family[family])
        elif path.exists():
            path.unlink()
    outputs[str(out_dir / "all.jsonl")] = write_records(out_dir / "all.jsonl", kept)
    return outputs


def run_decontamination(inputs: Sequence[Path], eval_texts: Sequence[EvalText], train_dir: Path,
                        report_dir: Path, *, n: int = DEFAULT_N,
                        threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Read input JSONL files, drop contaminated records, write training files and the report."""
    index = EvalIndex(eval_texts, n=n, threshold=threshold)
    sources = {str(p): list(read_records(p)) for p in inputs}
    result = decontaminate(sources, index)
    outputs = write_training_files(result.kept, train_dir)
    report = build_report(result, index, outputs)
    write_json_atomic(report_dir / "decontamination.json", report)
    md = report_dir / "decontamination.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(report_markdown(report), encoding="utf-8")
    return report
