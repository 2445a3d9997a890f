"""Counters of a generation run, and their sum over every run that wrote one output file."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field


class RunCounters(BaseModel):
    requests: int = 0
    failed_requests: int = 0
    retries: int = 0
    tasks_parsed: int = 0
    accepted: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)
    surplus: int = Field(0, description="valid tasks beyond the requested count, not written")
    finish_reasons: dict[str, int] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def finish(self, reason: str | None) -> None:
        key = reason or "unknown"
        self.finish_reasons[key] = self.finish_reasons.get(key, 0) + 1

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def plus(self, other: RunCounters) -> RunCounters:
        out = RunCounters()
        for name in ("requests", "failed_requests", "retries", "tasks_parsed", "accepted", "surplus",
                     "prompt_tokens", "completion_tokens", "elapsed_s"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.rejected = dict(Counter(self.rejected) + Counter(other.rejected))
        out.finish_reasons = dict(Counter(self.finish_reasons) + Counter(other.finish_reasons))
        return out

    def rates(self) -> dict[str, float]:
        t = self.elapsed_s or 1e-9
        return {
            "requests_per_s": round(self.requests / t, 4),
            "accepted_per_min": round(60 * self.accepted / t, 3),
            "completion_tokens_per_s": round(self.completion_tokens / t, 2),
            "acceptance_rate": round(self.accepted / self.tasks_parsed, 4) if self.tasks_parsed else 0.0,
        }


class GenerationStats(BaseModel):
    """What `bioinstruct generate` reports (and keeps beside the output as <out>.stats.json)."""

    out: str
    model: str
    base_url: str
    requested: int
    records_in_file: int
    resumed_from: int = 0
    complete: bool = False
    stop_reason: str = ""
    categories: dict[str, int] = Field(default_factory=dict)
    category_source: dict[str, int] = Field(default_factory=dict)
    runs: int = 1
    this_run: RunCounters = Field(default_factory=RunCounters)
    total: RunCounters = Field(default_factory=RunCounters)
    settings: dict = Field(default_factory=dict)

    def to_json(self) -> dict:
        data = self.model_dump()
        data["this_run"]["rates"] = self.this_run.rates()
        data["total"]["rates"] = self.total.rates()
        return data

    def to_markdown(self) -> str:
        r, t = self.this_run, self.total
        rr, tr = r.rates(), t.rates()
        lines = [
            f"# Generation run: {self.out}",
            "",
            f"- model `{self.model}` at `{self.base_url}`; requested {self.requested}, "
            f"records in file {self.records_in_file} "
            f"({'complete' if self.complete else 'INCOMPLETE: ' + self.stop_reason})",
            f"- runs that wrote this file: {self.runs}; this run resumed from {self.resumed_from} records",
            "",
            "| | this run | all runs |",
            "|---|---|---|",
            f"| requests (failed) | {r.requests} ({r.failed_requests}) | {t.requests} ({t.failed_requests}) |",
            f"| retries | {r.retries} | {t.retries} |",
            f"| tasks parsed | {r.tasks_parsed} | {t.tasks_parsed} |",
            f"| accepted | {r.accepted} | {t.accepted} |",
            f"| rejected | {r.rejected_total} | {t.rejected_total} |",
            f"| acceptance rate | {rr['acceptance_rate']:.1%} | {tr['acceptance_rate']:.1%} |",
            f"| elapsed | {r.elapsed_s:.1f} s | {t.elapsed_s:.1f} s |",
            f"| requests/s | {rr['requests_per_s']:.3f} | {tr['requests_per_s']:.3f} |",
            f"| accepted/min | {rr['accepted_per_min']:.2f} | {tr['accepted_per_min']:.2f} |",
            f"| prompt / completion tokens | {r.prompt_tokens} / {r.completion_tokens} | "
            f"{t.prompt_tokens} / {t.completion_tokens} |",
            f"| completion tokens/s | {rr['completion_tokens_per_s']:.1f} | {tr['completion_tokens_per_s']:.1f} |",
            "",
            "Rejected by reason (all runs): " + (
                ", ".join(f"{k} {v}" for k, v in sorted(t.rejected.items(), key=lambda kv: -kv[1])) or "none"),
            "",
            "Category mix of the file: " + ", ".join(
                f"{k} {v} ({v / max(1, self.records_in_file):.1%})" for k, v in sorted(self.categories.items())),
            "",
            "Category labelled by: " + ", ".join(f"{k} {v}" for k, v in sorted(self.category_source.items())),
            "",
            "Finish reasons (all runs): " + ", ".join(f"{k} {v}" for k, v in sorted(t.finish_reasons.items())),
        ]
        return "\n".join(lines) + "\n"
