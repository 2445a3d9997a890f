"""Task families, after the paper's categories (QA, information extraction, generation)."""

from __future__ import annotations

from enum import StrEnum


class TaskFamily(StrEnum):
    QA = "QA"
    IE = "IE"
    GEN = "GEN"
    OTHER = "OTHER"

    @property
    def default_alias(self) -> str:
        """The registry alias that serves this family when a request says adapter="auto"."""
        return {"QA": "qa", "IE": "ie", "GEN": "gen", "OTHER": "gen"}[self.value]
