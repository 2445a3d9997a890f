"""Option scoring over the token trie (the engine's next-token distribution is stubbed here)."""

import asyncio

from bioinstruct.service.scoring import score_options


def run(coro):
    return asyncio.get_event_loop_policy().new_event_loop().run_until_complete(coro)


def test_one_request_when_first_tokens_differ():
    calls = []

    async def top(ids):
        calls.append(ids)
        return {10: -0.5, 20: -1.5, 30: -3.0}

    scores = run(score_options([1, 2], [[10, 99], [20, 98], [30]], top))
    assert scores == [-0.5, -1.5, -3.0]
    assert calls == [[1, 2]]


def test_shared_prefix_is_walked_and_missing_tokens_get_the_floor():
    calls = []

    async def top(ids):
        calls.append(list(ids))
        if ids == [1]:
            return {5: -0.1, 6: -2.0}
        if ids == [1, 5]:
            return {7: -0.2, 8: -0.9}
        raise AssertionError(ids)

    # options: [5,7], [5,8], [9] (9 not in the top-k: floor = -2.0 - 1.0)
    scores = run(score_options([1], [[5, 7], [5, 8], [9]], top))
    assert scores == [-0.1 + -0.2, -0.1 + -0.9, -3.0]
    assert sorted(calls) == [[1], [1, 5]]


def test_common_leading_tokens_cost_no_request():
    calls = []

    async def top(ids):
        calls.append(list(ids))
        return {3: -1.0, 4: -0.5}

    scores = run(score_options([0], [[2, 2, 3], [2, 2, 4]], top))
    assert scores == [-1.0, -0.5]
    assert calls == [[0, 2, 2]]
