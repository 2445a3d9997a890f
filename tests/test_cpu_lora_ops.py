"""The plugin's grouped CPU LoRA ops give vLLM's own results (vllm/lora/ops/torch_ops).

Shapes as the punica wrapper passes them: stacked weights (slots, 1, out, in), per-token
adapter indices with -1 for "no LoRA", the fused qkv layer's three slices, add_inputs on and
off, and sgmv's per-run metadata from vLLM's own `compute_meta`.
"""

from __future__ import annotations

import pytest
import torch

from bioinstruct.vllm_plugin import cpu_lora

SLOTS, RANK, HIDDEN = 4, 16, 576
QKV = (576, 192, 192)  # SmolLM2: 9 query heads, 3 KV heads of 64


def _weights(out: int, inp: int, seed: int, free_last_slot: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(SLOTS, 1, out, inp, generator=g) * 0.05
    if free_last_slot:
        w[-1] = 0  # vLLM resets a free slot to zeros; its torch ops read slot -1 for "no LoRA"
    return w


def _indices(kind: str, tokens: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(tokens)
    if kind == "one":
        return torch.zeros(tokens, dtype=torch.long)
    if kind == "base":
        return torch.full((tokens,), -1, dtype=torch.long)
    if kind == "runs":  # prefill: sequences of different adapters, base among them, in runs
        lengths = [37, 5, 120, 64, tokens - 226]
        slots = [0, -1, 2, 0, 1]
        return torch.cat([torch.full((n,), s, dtype=torch.long) for n, s in zip(lengths, slots, strict=True)])
    return torch.randint(-1, SLOTS - 1, (tokens,), generator=g)  # decode: interleaved


@pytest.mark.parametrize("kind", ["one", "base", "runs", "mixed"])
def test_linear_layer_shrink_then_expand_matches_vllm(kind):
    ops = cpu_lora.originals()
    tokens = 300
    x = torch.randn(tokens, HIDDEN, generator=torch.Generator().manual_seed(1))
    idx = _indices(kind, tokens)
    a = [_weights(RANK, HIDDEN, 10 + i) for i in range(3)]
    b = [_weights(out, RANK, 20 + i) for i, out in enumerate(QKV)]
    results = []
    for shrink, expand_slice in ((ops["bgmv_shrink"], ops["bgmv_expand_slice"]),
                                 (cpu_lora.bgmv_shrink, cpu_lora.bgmv_expand_slice)):
        y = torch.randn(tokens, sum(QKV), generator=torch.Generator().manual_seed(2))  # the base output
        buffers = [torch.full((tokens, RANK), 7.0) for _ in range(3)]  # stale contents must not leak
        offset = 0
        for i, out in enumerate(QKV):
            shrink(x, a[i], buffers[i], idx, 0.5)
            expand_slice(buffers[i], b[i], y, idx, offset, out, True)
            offset += out
        results.append((y, buffers))
    (y_ref, buf_ref), (y_new, buf_new) = results
    torch.testing.assert_close(y_new, y_ref, rtol=1e-5, atol=1e-5)
    for new, ref in zip(buf_new, buf_ref, strict=True):
        torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("add_inputs", [True, False])
@pytest.mark.parametrize("kind", ["runs", "mixed"])
def test_expand_with_and_without_add_inputs(kind, add_inputs):
    ops = cpu_lora.originals()
    tokens = 300
    x = torch.randn(tokens, RANK, generator=torch.Generator().manual_seed(3))
    idx = _indices(kind, tokens)
    b = _weights(HIDDEN, RANK, 30)
    y_ref = torch.randn(tokens, HIDDEN, generator=torch.Generator().manual_seed(4))
    y_new = y_ref.clone()
    ops["bgmv_expand"](x, b, y_ref, idx, add_inputs)
    cpu_lora.bgmv_expand(x, b, y_new, idx, add_inputs)
    torch.testing.assert_close(y_new, y_ref, rtol=1e-5, atol=1e-5)


def test_sgmv_with_vllm_prefill_metadata_matches_vllm():
    from vllm.lora.punica_wrapper.utils import compute_meta

    ops = cpu_lora.originals()
    tokens = 300
    idx = _indices("runs", tokens)
    start, lengths, slots, batches, max_len, n, _ = compute_meta(idx)
    meta = (start, lengths, slots, batches, max_len, n)
    x = torch.randn(tokens, HIDDEN, generator=torch.Generator().manual_seed(5))
    a, b = _weights(RANK, HIDDEN, 40), _weights(QKV[1], RANK, 41)
    outs = []
    for shrink, expand_slice in ((ops["sgmv_shrink"], ops["sgmv_expand_slice"]),
                                 (cpu_lora.sgmv_shrink, cpu_lora.sgmv_expand_slice)):
        buf = torch.zeros(tokens, RANK)
        y = torch.ones(tokens, sum(QKV))
        shrink(x, a, buf, *meta, 2.0)
        expand_slice(buf, b, y, *meta, QKV[0], QKV[1], True)
        outs.append(y)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_no_lora_rows_get_no_delta_even_when_every_slot_is_in_use():
    # With every slot holding an adapter, vLLM's torch ops give "no LoRA" tokens (index -1) the
    # last slot's delta; the grouped ops give them none, as the index means.
    x = torch.randn(8, HIDDEN)
    a = _weights(RANK, HIDDEN, 50, free_last_slot=False)
    idx = torch.tensor([-1, 0, -1, 3, 3, -1, 1, 2])
    buf = torch.full((8, RANK), 3.0)
    cpu_lora.bgmv_shrink(x, a, buf, idx, 1.0)
    assert torch.count_nonzero(buf[idx == -1]) == 0
    assert torch.all(buf[idx >= 0].abs().sum(dim=1) > 0)


def test_cached_groups_follow_the_wrappers_buffer_between_steps():
    # The punica wrapper rewrites one persistent buffer each step; a view of it keeps its
    # pointer and length, so the grouping cache must notice the new contents.
    buffer = torch.zeros(64, dtype=torch.long)
    x = torch.randn(16, HIDDEN)
    a = _weights(RANK, HIDDEN, 60)
    ref = cpu_lora.originals()["bgmv_shrink"]
    for step_slots in ([0] * 16, [1] * 8 + [2] * 8, [-1] * 4 + [0] * 12):
        buffer[:16].copy_(torch.tensor(step_slots))
        view = buffer[:16]
        got, want = torch.zeros(16, RANK), torch.zeros(16, RANK)
        cpu_lora.bgmv_shrink(x, a, got, view, 1.0)
        ref(x, a, want, view, 1.0)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_plugin_installs_into_vllms_cpu_punica_wrapper_only_when_enabled(monkeypatch):
    import vllm.lora.ops.torch_ops as torch_ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    from bioinstruct import vllm_plugin

    before = {name: getattr(punica_cpu, name) for name in cpu_lora.OPS}
    try:
        monkeypatch.setenv(vllm_plugin.FAST_CPU_LORA_ENV, "0")
        vllm_plugin.register()
        assert punica_cpu.bgmv_shrink is before["bgmv_shrink"]
        monkeypatch.setenv(vllm_plugin.FAST_CPU_LORA_ENV, "1")
        vllm_plugin.register()
        vllm_plugin.register()  # vLLM may call it more than once per process
        assert all(getattr(punica_cpu, name) is getattr(cpu_lora, name) for name in cpu_lora.OPS)
    finally:
        for name, fn in before.items():
            setattr(punica_cpu, name, fn)
        for name, fn in cpu_lora.originals().items():
            setattr(torch_ops, name, fn)
