"""Grouped LoRA shrink/expand for vLLM's CPU punica wrapper (`PunicaWrapperCPU`).

vLLM's torch ops (`vllm/lora/ops/torch_ops/lora_ops.py`) index the stacked LoRA weights with
one adapter index per token (`lora_b_weights[lora_indices_tensor]`) and einsum: every token
materialises its own copy of an (out x rank) matrix, for every LoRA layer, every step. A
300-token prefill copies hundreds of MB per layer; that copy, not the LoRA arithmetic, is why an
adapter ran at a quarter of the base model's speed on CPU (docs/BENCHMARKS.md).

These functions have the same signatures and results, but group the tokens by adapter: for
each adapter present in the batch, one matmul over its rows (a plain slice when the rows are
contiguous, as they are for a prefill, else `index_select`/`index_add_`). Index -1 means "no
LoRA" (vLLM's `convert_mapping`): those rows get no delta. (The torch ops read slot -1, i.e.
the last slot, which is all zeros only while that slot is free.)
"""

from __future__ import annotations

import torch

# One-entry cache: within a step every LoRA layer sees the same index tensors, views of the
# punica wrapper's persistent buffers. Views share their base's version counter, which `copy_`
# bumps when the wrapper writes the next step's indices, so (base, offset, length, version)
# identifies the contents. The entry holds the base, so its memory cannot be reused while
# cached. Fresh tensors (not views) are never cached.
_cache: tuple[list, list[tuple[int, slice | torch.Tensor]], bool] | None = None


def _key(tensors: tuple[torch.Tensor, ...]) -> list | None:
    if any(t._base is None for t in tensors):
        return None
    return [(t._base, t.storage_offset(), t.shape[0], t.stride(0), t._version) for t in tensors]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x[0] is y[0] and x[1:] == y[1:] for x, y in zip(a, b, strict=True))


def _groups(indices: torch.Tensor, sources: tuple[torch.Tensor, ...]) -> tuple[list, bool]:
    """[(lora slot, rows)] for every slot >= 0 in `indices`, and whether they cover every token.
    `sources`: the tensors `indices` was computed from (the cache key)."""
    global _cache
    key = _key(sources)
    if key is not None and _cache is not None and _same(_cache[0], key):
        return _cache[1], _cache[2]
    groups: list[tuple[int, slice | torch.Tensor]] = []
    covered = 0
    for slot in torch.unique(indices).tolist():
        if slot < 0:
            continue
        rows = torch.nonzero(indices == slot).squeeze(1)
        first, last, count = int(rows[0]), int(rows[-1]), rows.shape[0]
        groups.append((slot, slice(first, last + 1) if last - first + 1 == count else rows))
        covered += count
    full = covered == indices.shape[0]
    if key is not None:
        _cache = (key, groups, full)
    return groups, full


def _weights(stacked: torch.Tensor, slot: int, dtype: torch.dtype) -> torch.Tensor:
    w = stacked[slot]
    if w.dim() == 3:  # (1, out, in) in the stacked layout
        w = w.squeeze(0)
    return w.to(dtype=dtype)


def _take(x: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
    return x[rows] if isinstance(rows, slice) else x.index_select(0, rows)


def _put(out: torch.Tensor, rows: slice | torch.Tensor, values: torch.Tensor, add: bool) -> None:
    if isinstance(rows, slice):
        if add:
            out[rows] += values
        else:
            out[rows] = values
    elif add:
        out.index_add_(0, rows, values)
    else:
        out.index_copy_(0, rows, values)


def _apply(inputs, stacked, out, indices, sources, scale: float | None, add: bool) -> None:
    """out[rows of slot s] (+)= scale * inputs[rows] @ stacked[s].T, for each slot s in indices."""
    groups, covered = _groups(indices, sources)
    x = inputs.to(dtype=out.dtype)
    if not covered and not add:
        out.zero_()  # rows without LoRA (-1) get no delta
    for slot, rows in groups:
        w = _weights(stacked, slot, out.dtype)
        values = _take(x, rows) @ w[: out.shape[1]].t()
        if scale is not None and scale != 1.0:
            values.mul_(scale)
        _put(out, rows, values, add)


def _mismatch(inputs: torch.Tensor, out: torch.Tensor, indices: torch.Tensor) -> bool:
    # Shapes the grouped path does not handle are left to vLLM's own op (same behaviour).
    return inputs.shape[0] != indices.shape[0] or out.shape[0] != indices.shape[0]


def _shrink(inputs, weights, out, indices, sources, scaling):
    if _mismatch(inputs, out, indices):
        return _original["bgmv_shrink"](inputs, weights, out, indices, scaling)
    rank = weights.shape[-2]
    _apply(inputs, weights, out[:, :rank], indices, sources, scaling, add=False)


def _expand(inputs, weights, out, indices, sources, add_inputs):
    if _mismatch(inputs, out, indices):
        return _original["bgmv_expand"](inputs, weights, out, indices, add_inputs)
    common = min(weights.shape[-2], out.shape[1])
    _apply(inputs, weights, out[:, :common], indices, sources, None, add=add_inputs)


def _expand_slice(inputs, weights, out, indices, sources, offset, size, add_inputs):
    if _mismatch(inputs, out, indices) or weights.shape[-2] != size:
        return _original["bgmv_expand_slice"](inputs, weights, out, indices, offset, size, add_inputs)
    _apply(inputs, weights, out[:, offset: offset + size], indices, sources, None, add=add_inputs)


# vLLM's signatures (vllm/lora/ops/torch_ops/lora_ops.py). bgmv: one adapter index per token;
# sgmv: one per run of tokens (`compute_meta` merges neighbouring sequences of one adapter).

def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
    _shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, (lora_indices_tensor,), scaling)


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):
    _expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, (lora_indices_tensor,), add_inputs)


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int,
                      slice_size: int, add_inputs: bool = True):
    _expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, (lora_indices_tensor,),
                  slice_offset, slice_size, add_inputs)


def sgmv_shrink(inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, scaling):
    _shrink(inputs, lora_a_weights, output_tensor, torch.repeat_interleave(lora_indices_tensor, seq_len_tensor),
            (lora_indices_tensor, seq_len_tensor), scaling)


def sgmv_expand(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, add_inputs=False):
    _expand(inputs, lora_b_weights, output_tensor, torch.repeat_interleave(lora_indices_tensor, seq_len_tensor),
            (lora_indices_tensor, seq_len_tensor), add_inputs)


def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                      batches, max_seq_length, token_nums, slice_offset, slice_size, add_inputs=False):
    _expand_slice(inputs, lora_b_weights, output_tensor,
                  torch.repeat_interleave(lora_indices_tensor, seq_len_tensor),
                  (lora_indices_tensor, seq_len_tensor), slice_offset, slice_size, add_inputs)


OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice", "sgmv_shrink", "sgmv_expand", "sgmv_expand_slice")
_original: dict = {}


def install() -> bool:
    """Point vLLM's CPU punica wrapper (and the torch_ops module) at the grouped ops. Idempotent."""
    import vllm.lora.ops.torch_ops as torch_ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    if not _original:
        _original.update({name: getattr(torch_ops, name) for name in OPS})
    for name in OPS:
        setattr(punica_cpu, name, globals()[name])
        setattr(torch_ops, name, globals()[name])
    return True


def originals() -> dict:
    """vLLM's own ops (for comparisons); loads them without installing anything."""
    if not _original:
        import vllm.lora.ops.torch_ops as torch_ops

        _original.update({name: getattr(torch_ops, name) for name in OPS})
    return dict(_original)
