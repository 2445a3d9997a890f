"""The base of the per-route serving classes.

A route family's serving class turns its request into engine calls and their results into
its response; what every family does around that is here, once: rendering a prompt exactly
as training did and giving it its token budget, and finishing a response (token metrics and
the `Served` fields). The way into the engine itself (engine up, admission, adapter resolved
and allowed, lease) is Gateway.serving(), the one pipeline every route goes through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.format import render_prompt
from bioinstruct.service.adapters import Target
from bioinstruct.service.protocol import Usage

if TYPE_CHECKING:
    from bioinstruct.service.gateway import Gateway


@dataclass(frozen=True)
class Prompt:
    """A prompt as the engine gets it (token ids) and the tokens it may generate."""

    ids: list[int]
    max_tokens: int


class Serving:
    """One route family's requests and responses, over the shared gateway."""

    route: ClassVar[str]  # the metrics label of its tokens

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings

    def prompt(self, family: TaskFamily, instruction: str, input_text: str | None, requested: int | None,
               default: int) -> Prompt:
        """Render with the shared `instruct` format, encode, and budget (a 400 that names the
        limits when the input or max_tokens does not fit): before any slot is taken."""
        ids = self.gateway.encode(render_prompt(self.gateway.tokenizer, family, instruction, input_text))
        return Prompt(ids, self.gateway.budget(ids, requested, default))

    def finish(self, target: Target, usage: Usage, started: float) -> dict[str, Any]:
        """Count the tokens and say which version served and what it cost (the `Served` fields)."""
        self.gateway.observe(self.route, target, usage)
        return self.gateway.served(target, usage, started)
