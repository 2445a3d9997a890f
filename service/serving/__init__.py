"""Per-route serving classes, built once when the gateway starts and reached by the routes
through FastAPI dependencies (service/deps.py).

    Gateway (gateway.py)       wiring, lifecycle, the one way in: serving(), budget(), complete()
      ├─ QAServing             /qa            (serving/qa.py)
      ├─ ExtractServing        /extract       (serving/extract.py)
      ├─ GenerateServing       /generate      (serving/generate.py)
      ├─ OpenAIServing         /v1/*completions (serving/openai.py)
      └─ ServingModels         /v1/models and the admin views (serving/models.py)

Streaming (/generate and /v1) shares serving/streaming.py. /compare fans one body out over the
task servings (`Servings.tasks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bioinstruct.service.serving.extract import ExtractServing
from bioinstruct.service.serving.generate import GenerateServing
from bioinstruct.service.serving.models import ServingModels
from bioinstruct.service.serving.openai import OpenAIServing
from bioinstruct.service.serving.qa import QAServing

if TYPE_CHECKING:
    from bioinstruct.service.gateway import Gateway

TaskServing = QAServing | ExtractServing | GenerateServing


@dataclass(frozen=True)
class Servings:
    qa: QAServing
    extract: ExtractServing
    generate: GenerateServing
    openai: OpenAIServing
    models: ServingModels
    tasks: Mapping[str, TaskServing] = field(init=False)

    def __post_init__(self) -> None:
        # /compare's `route` names one of these.
        object.__setattr__(self, "tasks", {"qa": self.qa, "extract": self.extract, "generate": self.generate})

    @classmethod
    def build(cls, gateway: Gateway) -> Servings:
        return cls(qa=QAServing(gateway), extract=ExtractServing(gateway), generate=GenerateServing(gateway),
                   openai=OpenAIServing(gateway), models=ServingModels(gateway))


__all__ = ["ExtractServing", "GenerateServing", "OpenAIServing", "QAServing", "ServingModels", "Servings",
           "TaskServing"]
