"""Seeded sampling on the CPU engine without the crash under chunked prefill.

A request with `seed` gets its own `torch.Generator`. When only part of its prompt was
prefilled in a step, vLLM samples a token for it anyway and throws it away, then rewinds the
generator so that the thrown-away sample consumed nothing
(`gen.set_offset(gen.get_offset() - 4)` in `GPUModelRunner`, which the CPU runner inherits).
That offset is the CUDA Philox counter; a CPU generator has none and raises
"CPU Generator does not use offset", which kills the engine for every caller.

The CPU equivalent of "rewind the last sample" is "restore the state from before it": each
seeded request's generator becomes a `RewindableGenerator` (same seed, same stream) that
snapshots its state right before the sampler draws from it, and `set_offset` restores that
snapshot. Seeded output then depends on the seed only, not on how the prompt was chunked.
"""

from __future__ import annotations

import functools

import torch


class RewindableGenerator(torch.Generator):
    """A CPU generator whose offset API rewinds to the state before the last sampling step."""

    def snapshot(self) -> None:
        self._before = self.get_state()

    def get_offset(self) -> int:  # only ever used as get_offset() - n, passed back to set_offset
        return 0

    def set_offset(self, offset: int) -> None:
        before = getattr(self, "_before", None)
        if before is not None:
            self.set_state(before)

    @classmethod
    def like(cls, gen: torch.Generator) -> RewindableGenerator:
        new = cls(device="cpu")
        new.set_state(gen.get_state())
        return new


def _rewindable(request) -> None:
    gen = getattr(request, "generator", None)
    if gen is not None and not isinstance(gen, RewindableGenerator) and gen.device.type == "cpu":
        request.generator = RewindableGenerator.like(gen)


def _snapshotting(forward):
    @functools.wraps(forward)
    def wrapper(self, logits, generators, k, p):
        for gen in generators.values():
            if isinstance(gen, RewindableGenerator):
                gen.snapshot()
        return forward(self, logits, generators, k, p)

    wrapper.__bioinstruct__ = True
    return wrapper


def install() -> None:
    """Idempotent: wraps InputBatch.add_request and the CPU sampler paths once."""
    from vllm.v1.sample.ops.topk_topp_sampler import TopKTopPSampler
    from vllm.v1.worker.gpu_input_batch import InputBatch

    if getattr(InputBatch.add_request, "__bioinstruct__", False):
        return
    original_add = InputBatch.add_request

    @functools.wraps(original_add)
    def add_request(self, request, *args, **kwargs):
        _rewindable(request)
        return original_add(self, request, *args, **kwargs)

    add_request.__bioinstruct__ = True
    InputBatch.add_request = add_request
    for name in ("forward_cpu", "forward_native"):
        setattr(TopKTopPSampler, name, _snapshotting(getattr(TopKTopPSampler, name)))
