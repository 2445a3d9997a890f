"""Task families, after the paper's categories (QA, information extraction, generation)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args


class TaskFamily(StrEnum):
    QA = "QA"
    IE = "IE"
    GEN = "GEN"
    OTHER = "OTHER"

    @property
    def default_alias(self) -> str:
        """The registry alias that serves this family when a request says adapter="auto"."""
        return {"QA": "qa", "IE": "ie", "GEN": "gen", "OTHER": "gen"}[self.value]


# An adapter's category: a task family, or ALL (trained on every family). The registry, the
# shipped manifests, training and the HTTP schema all spell it with this one type.
Category = Literal["QA", "IE", "GEN", "OTHER", "ALL"]
assert set(get_args(Category)) == {*TaskFamily, "ALL"}, "Category and TaskFamily disagree"
