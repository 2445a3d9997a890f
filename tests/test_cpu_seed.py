"""The plugin's rewindable CPU generator: what vLLM's rewind of a discarded sample needs on CPU."""

from __future__ import annotations

import pytest
import torch

from bioinstruct.vllm_plugin.cpu_seed import RewindableGenerator, _rewindable


def test_plain_cpu_generators_have_no_offset_which_is_the_crash():
    with pytest.raises(RuntimeError, match="does not use offset"):
        torch.Generator().get_offset()


def test_rewind_after_a_discarded_sample_replays_the_same_stream():
    plain = torch.Generator().manual_seed(1234)
    expected = [torch.randint(0, 2**31, (1,), generator=plain).item() for _ in range(3)]

    gen = RewindableGenerator.like(torch.Generator().manual_seed(1234))
    got = []
    for step in range(4):
        gen.snapshot()  # the sampler is about to draw
        value = torch.randint(0, 2**31, (1,), generator=gen).item()
        if step == 1:  # a partial-prefill step: vLLM discards the token and rewinds
            gen.set_offset(gen.get_offset() - 4)
            continue
        got.append(value)
    assert got == expected


def test_requests_get_a_rewindable_copy_with_the_same_state():
    class Request:
        generator = torch.Generator().manual_seed(7)

    req = Request()
    reference = torch.rand(4, generator=torch.Generator().manual_seed(7))
    _rewindable(req)
    assert isinstance(req.generator, RewindableGenerator)
    assert torch.equal(torch.rand(4, generator=req.generator), reference)
