"""Batch plans: which examples go together, so that little compute goes to padding.

A plan for one epoch is a list of micro-batches; a micro-batch is a list of rows; a row
is a list of example indices (one example per row, except with packing). Every plan is
a pure function of (example lengths, settings, seed, epoch), so a resumed run sees the
same batches in the same order as an uninterrupted one.

- ``bucket`` (default): shuffle, cut into large chunks, sort each chunk by length and
  batch neighbours; padding only up to the longest example of a batch.
- ``pack``: several examples share one row of up to max_length tokens; position ids
  restart at 0 for each example and the attention mask is left to the model, which
  (transformers >= 4.5x) derives a block-diagonal causal mask from the position ids, so
  examples do not attend to each other.
- ``naive``: shuffle and batch in order (the baseline that the others are measured against).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from bioinstruct.training.data import IGNORE_INDEX, Example

Row = list[int]
MicroBatch = list[Row]

BUCKET_CHUNK_BATCHES = 32  # a chunk holds this many micro-batches' worth of examples
PACK_CHUNK = 1024  # examples considered together when packing


def epoch_rng(seed: int, epoch: int, salt: int = 0) -> random.Random:
    return random.Random((seed * 1_000_003 + epoch) * 7 + salt)


def plan_epoch(
    lengths: Sequence[int], *, mode: str, batch_size: int, max_length: int, seed: int, epoch: int
) -> list[MicroBatch]:
    rng = epoch_rng(seed, epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if mode == "naive":
        return [[[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    if mode == "bucket":
        batches: list[MicroBatch] = []
        chunk = batch_size * BUCKET_CHUNK_BATCHES
        for s in range(0, len(order), chunk):
            part = sorted(order[s : s + chunk], key=lambda i: (-lengths[i], i))
            batches.extend([[i] for i in part[b : b + batch_size]] for b in range(0, len(part), batch_size))
        rng.shuffle(batches)
        return batches
    if mode == "pack":
        rows: list[Row] = []
        for s in range(0, len(order), PACK_CHUNK):
            rows.extend(_first_fit_decreasing(order[s : s + PACK_CHUNK], lengths, max_length))
        rng.shuffle(rows)
        # rows of similar total length together, like bucketing (most rows are nearly full)
        return [rows[b : b + batch_size] for b in range(0, len(rows), batch_size)]
    raise ValueError(f"unknown batching mode {mode!r}")


def _first_fit_decreasing(indices: list[int], lengths: Sequence[int], capacity: int) -> list[Row]:
    bins: list[Row] = []
    space: list[int] = []
    for i in sorted(indices, key=lambda i: (-lengths[i], i)):
        need = lengths[i]
        for b, free in enumerate(space):
            if need <= free:
                bins[b].append(i)
                space[b] -= need
                break
        else:
            bins.append([i])
            space.append(capacity - need)
    return bins


def batch_shape(batch: MicroBatch, lengths: Sequence[int]) -> tuple[int, int]:
    """(real tokens, padded tokens) of a micro-batch once collated."""
    row_lengths = [sum(lengths[i] for i in row) for row in batch]
    width = max(row_lengths)
    real = sum(row_lengths)
    return real, width * len(batch) - real


def padding_fraction(plan: list[MicroBatch], lengths: Sequence[int]) -> float:
    real = pad = 0
    for batch in plan:
        r, p = batch_shape(batch, lengths)
        real += r
        pad += p
    return pad / max(1, real + pad)


def target_tokens(batch: MicroBatch, examples: Sequence[Example]) -> int:
    """Tokens the loss is computed on (shifted labels that are not ignored)."""
    return sum(examples[i].n_target for row in batch for i in row)


def collate(batch: MicroBatch, examples: Sequence[Example], pad_id: int, packed: bool) -> dict[str, torch.Tensor]:
    """Right-padded tensors. Packed rows get position ids that restart per example and no mask."""
    ids_rows: list[list[int]] = []
    label_rows: list[list[int]] = []
    pos_rows: list[list[int]] = []
    for row in batch:
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        for i in row:
            ex = examples[i]
            ids += ex.input_ids
            # the first token of an example is never a target of the previous one
            labels += ex.labels
            pos += list(range(ex.length))
        ids_rows.append(ids)
        label_rows.append(labels)
        pos_rows.append(pos)
    width = max(len(r) for r in ids_rows)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels_t = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    position_ids = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (ids, labels, pos) in enumerate(zip(ids_rows, label_rows, pos_rows, strict=True)):
        n = len(ids)
        input_ids[r, :n] = torch.tensor(ids)
        labels_t[r, :n] = torch.tensor(labels)
        mask[r, :n] = 1
        position_ids[r, :n] = torch.tensor(pos)
        # padding forms its own sequence (positions 0..k), so it never joins a real one
        position_ids[r, n:] = torch.arange(width - n)
    out = {"input_ids": input_ids, "labels": labels_t}
    if packed:
        out["position_ids"] = position_ids
    else:
        out["attention_mask"] = mask
    return out
