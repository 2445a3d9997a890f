"""Optional LLM-judge score for generation tasks, through any OpenAI-compatible endpoint.

The paper scored generation with a GPT-4 judge; here any chat model served behind
`/v1/chat/completions` will do (a bigger local vLLM, a hosted API). The judge sees the
source, the expert reference and the prediction, and answers a score from 1 to 10.
Calls go through the same client as the benchmark (retries, records, resume).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bioinstruct.eval.client import EvalClient, RequestItem

DEFAULT_PROMPT = (
    "You are grading a summary of a consumer health question.\n\n"
    "Question:\n{source}\n\nReference summary (written by an expert):\n{reference}\n\n"
    "Candidate summary:\n{prediction}\n\n"
    "Rate the candidate from 1 (useless or wrong) to 10 (as good as the reference): does it ask "
    "the same thing as the reference, keep the key medical facts, and stay short? "
    "Reply with the number only."
)
_SCORE = re.compile(r"\b(10|[1-9])(?:\s*/\s*10)?\b")


@dataclass
class JudgeConfig:
    url: str  # base URL ending in /v1 (OpenAI convention)
    model: str
    api_key: str | None = None
    concurrency: int = 4
    max_tokens: int = 8


def parse_score(text: str) -> int | None:
    match = _SCORE.search(text or "")
    return int(match.group(1)) if match else None


def judge_items(item: tuple[str, str, str, str], prompt: str | None, model: str, max_tokens: int) -> RequestItem:
    doc_id, source, reference, prediction = item
    content = (prompt or DEFAULT_PROMPT).format(source=source, reference=reference, prediction=prediction)
    body = {"model": model, "messages": [{"role": "user", "content": content}],
            "temperature": 0.0, "max_tokens": max_tokens}
    return RequestItem(id=doc_id, path="/chat/completions", body=body)


async def run_judge(config: JudgeConfig, items: list[tuple[str, str, str, str]], records_path: Path,
                    prompt: str | None = None, progress: bool = True) -> dict[str, int | None]:
    """id -> judge score (None when the judge failed or gave no number)."""
    client = EvalClient(config.url, api_key=config.api_key, concurrency=config.concurrency)
    requests = [judge_items(it, prompt, config.model, config.max_tokens) for it in items]
    records = await client.run(requests, records_path, progress=progress, description="judge")
    scores: dict[str, int | None] = {}
    for doc_id, rec in records.items():
        text = ""
        if rec.ok and rec.response:
            choices = rec.response.get("choices") or [{}]
            text = (choices[0].get("message") or {}).get("content") or choices[0].get("text") or ""
        scores[doc_id] = parse_score(text)
    return scores
