"""Multiple choice with the context scored once: an item's choices packed into one row.

Every choice of an item repeats the item's context, and the plain path runs the context once per choice.
Here an item becomes one row: the tokens the choices share (the context), then each choice's own tokens
as a segment that sees the context and itself but not the other choices (a 4D attention mask), with the
position ids it has in its own row. A segment begins with the last token it shares with the context
(copied), so that the token before each choice's first scored token is its own: the shift of the
causal-LM convention holds inside the packed row, and head-at-labels and shared layer prefixes work on it
unchanged. Each scored position remembers the choice (row) it belongs to, so the metrics see rows as
before. A context of ``C`` tokens with ``k`` choices of ``n`` tokens costs ``C + k (n + 1)`` positions
instead of ``k (C + n)``.
"""

from __future__ import annotations

import torch

from .benchmarks import IGNORE_INDEX, Batch

__all__ = ["pack_choices"]


def _real(ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A row's tokens and labels without padding (on either side)."""
    if mask is None:
        return ids, labels
    keep = mask.bool()
    return ids[keep], labels[keep]


def pack_choices(batch: Batch, items: torch.Tensor) -> Batch | None:
    """``batch`` (rows grouped by ``items``, one row per choice) with each item's choices packed into one row,
    or None when no item has a context to share (one choice each, or nothing in common)."""
    rows = [_real(batch.input_ids[r], batch.labels[r], None if batch.attention_mask is None else
                  batch.attention_mask[r]) for r in range(batch.input_ids.shape[0])]
    groups: list[list[int]] = []
    for r, item in enumerate(items.tolist()):
        if groups and items[groups[-1][0]] == item:
            groups[-1].append(r)
        else:
            groups.append([r])
    packed = []
    for group in groups:
        first_scored = [int((labels[1:] != IGNORE_INDEX).nonzero()[0]) for _, labels in (rows[r] for r in group)]
        limit = min(first_scored)  # the context ends before every choice's first predicting position
        shared = 0
        reference = rows[group[0]][0]
        while shared < limit and all(rows[r][0][shared] == reference[shared] for r in group[1:]):
            shared += 1
        packed.append((group, shared))
    if all(len(group) == 1 or shared == 0 for group, shared in packed):
        return None
    tokens, labels, positions, segments, owners = [], [], [], [], []
    for group, shared in packed:
        if shared == 0:  # nothing to share: each choice its own packed row
            for r in group:
                ids, lab = rows[r]
                tokens.append(ids)
                labels.append(lab)
                positions.append(torch.arange(len(ids)))
                segments.append(torch.zeros(len(ids), dtype=torch.long))
                owners.append(torch.full((len(ids),), r))
            continue
        ids0 = rows[group[0]][0]
        parts_t, parts_l, parts_p, parts_s, parts_o = [ids0[:shared - 1]], \
            [torch.full((shared - 1,), IGNORE_INDEX)], [torch.arange(shared - 1)], \
            [torch.zeros(shared - 1, dtype=torch.long)], [torch.full((shared - 1,), -1)]
        for k, r in enumerate(group, start=1):
            ids, lab = rows[r]
            seg = ids[shared - 1:]
            seg_labels = lab[shared - 1:].clone()
            seg_labels[0] = IGNORE_INDEX  # the copied context token: nothing in this segment predicts it
            parts_t.append(seg)
            parts_l.append(seg_labels)
            parts_p.append(torch.arange(shared - 1, len(ids)))
            parts_s.append(torch.full((len(seg),), k))
            parts_o.append(torch.full((len(seg),), r))
        tokens.append(torch.cat(parts_t))
        labels.append(torch.cat(parts_l))
        positions.append(torch.cat(parts_p))
        segments.append(torch.cat(parts_s))
        owners.append(torch.cat(parts_o))
    length = max(len(t) for t in tokens)
    count = len(tokens)
    device = batch.input_ids.device
    input_ids = torch.zeros((count, length), dtype=torch.long)
    packed_labels = torch.full((count, length), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((count, length), dtype=torch.long)
    segment = torch.full((count, length), -2, dtype=torch.long)  # -2: padding
    owner = torch.full((count, length), -1, dtype=torch.long)
    for i, (t, lab, pos, seg, own) in enumerate(zip(tokens, labels, positions, segments, owners)):
        n = len(t)
        input_ids[i, :n], packed_labels[i, :n], position_ids[i, :n] = t.cpu(), lab.cpu(), pos
        segment[i, :n], owner[i, :n] = seg, own.cpu()
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    query, key = segment.unsqueeze(2), segment.unsqueeze(1)
    visible = causal & ((key == 0) | (key == query)) & (key != -2)
    visible |= torch.eye(length, dtype=torch.bool)  # padding sees itself: no row without a key
    scored = packed_labels[:, 1:] != IGNORE_INDEX
    scored_rows = owner[:, 1:][scored]
    return Batch(batch.rows, input_ids.to(device), packed_labels.to(device), visible.unsqueeze(1).to(device),
                 position_ids.to(device), scored_rows.to(device))
