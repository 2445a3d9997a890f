"""/qa: a free answer, or always one of the options (scored, constrained, or generated and matched)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.format import render_example
from bioinstruct.instruct.parsing import match_option
from bioinstruct.instruct.prompts import qa_task
from bioinstruct.service.adapters import Target
from bioinstruct.service.auth import Caller
from bioinstruct.service.protocol import QARequest, QAResponse, Usage
from bioinstruct.service.scoring import score_options
from bioinstruct.service.serving.base import Prompt, Serving


@dataclass(frozen=True)
class Question:
    """A /qa request rendered for the model: what each way of choosing an option reads."""

    instruction: str
    input_text: str
    prompt: Prompt
    options: list[str]


@dataclass
class Answer:
    answer: str
    method: str
    raw_text: str
    answer_index: int | None = None
    scores: dict[str, float] | None = None


class QAServing(Serving):
    route = "qa"

    async def serve(self, req: QARequest, caller: Caller, state: Any = None) -> QAResponse:
        started = time.perf_counter()
        instruction, input_text = qa_task(req.question, req.context, req.options)
        default = 64 if req.options else 256  # an option is short; a free answer may not be
        prompt = self.prompt(TaskFamily.QA, instruction, input_text, req.max_tokens, default)
        question = Question(instruction, input_text, prompt, list(req.options or []))
        usage = Usage()
        async with self.gateway.serving(req.adapter, TaskFamily.QA, self.settings.qa_adapter, caller,
                                        state) as target:
            if not question.options:
                text = await self._text(target, question, usage, temperature=req.temperature)
                answer = Answer(answer=text.strip(), method="free", raw_text=text)
            else:
                answer = await self._choose(req.method or self.settings.qa_method, target, question, usage)
        return QAResponse(**asdict(answer), **self.finish(target, usage, started))

    async def _choose(self, method: str, target: Target, question: Question, usage: Usage) -> Answer:
        if method == "constrained":
            answer = await self._constrained(target, question, usage)
            # The grammar should make a miss unreachable; never answer off-list.
            return answer or await self._by_logprob(target, question, usage)
        if method == "generate":
            return await self._generated(target, question, usage)
        return await self._by_logprob(target, question, usage)

    async def _text(self, target: Target, question: Question, usage: Usage, **params: Any) -> str:
        out = await self.gateway.complete(target, question.prompt.ids, max_tokens=question.prompt.max_tokens,
                                          **params)
        usage.add(out.get("usage"))
        return out["choices"][0]["text"]

    async def _constrained(self, target: Target, question: Question, usage: Usage) -> Answer | None:
        options = question.options
        text = await self._text(target, question, usage, structured_outputs={"choice": options})
        match = match_option(text, options)
        if match.index is None:
            return None
        return Answer(answer=options[match.index], answer_index=match.index, method="constrained",
                      raw_text=text)

    async def _generated(self, target: Target, question: Question, usage: Usage) -> Answer:
        options = question.options
        text = await self._text(target, question, usage)
        match = match_option(text, options)
        if match.index is not None:
            return Answer(answer=options[match.index], answer_index=match.index,
                          method=f"generate:{match.how}", raw_text=text)
        scored = await self._by_logprob(target, question, usage)
        scored.method, scored.raw_text = "generate:none->logprob", text
        return scored

    async def _by_logprob(self, target: Target, question: Question, usage: Usage) -> Answer:
        """Each option's likelihood from next-token log-probabilities (service/scoring.py)."""
        options, prompt_ids = question.options, question.prompt.ids
        # The completion as training writes it (option + end-of-turn), so scoring matches what
        # an adapter learned to produce.
        tokenizer, instruction, input_text = self.gateway.tokenizer, question.instruction, question.input_text
        completions = [render_example(tokenizer, TaskFamily.QA, instruction, input_text, option)[1]
                       for option in options]
        option_ids = [self.gateway.encode(completion) for completion in completions]
        calls = 0

        async def top(ids: list[int]) -> dict[int, float]:
            nonlocal calls
            calls += 1
            return await self._top_logprobs(target, ids)

        scores = await score_options(prompt_ids, option_ids, top)
        usage.add({"prompt_tokens": len(prompt_ids) * calls, "completion_tokens": calls})
        best = max(range(len(options)), key=lambda i: (scores[i], -i))
        return Answer(answer=options[best], answer_index=best, method="logprob", raw_text=options[best],
                      scores={o: round(s, 4) for o, s in zip(options, scores, strict=True)})

    async def _top_logprobs(self, target: Target, ids: list[int]) -> dict[int, float]:
        out = await self.gateway.complete(target, ids, max_tokens=1, logprobs=self.settings.qa_top_logprobs,
                                          return_tokens_as_token_ids=True)
        top = (out["choices"][0].get("logprobs") or {}).get("top_logprobs") or [{}]
        return {int(k.split(":", 1)[1]): float(v) for k, v in (top[0] or {}).items()
                if k.startswith("token_id:")}
