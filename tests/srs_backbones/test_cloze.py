"""BERT4Rec's cloze-masking helpers."""

from __future__ import annotations

import torch
from srs_backbones import append_mask_token, cloze_mask

MASK = 99


def batch():
    items = torch.zeros(64, 20, dtype=torch.long)
    for b in range(64):
        n = 1 + b % 20
        items[b, :n] = torch.randint(1, 50, (n,))
    return items


def test_cloze_masks_only_real_items_and_always_the_last():
    items = batch()
    g = torch.Generator().manual_seed(0)
    inputs, labels = cloze_mask(items, mask_token=MASK, mask_prob=0.3, generator=g)
    real = items != 0
    chosen = labels != 0
    assert not (chosen & ~real).any(), "padding was masked"
    assert torch.equal(labels[chosen], items[chosen])
    assert torch.all(inputs[chosen] == MASK) and torch.equal(inputs[~chosen], items[~chosen])
    last = real.sum(1) - 1
    assert chosen[torch.arange(64), last].all()
    rate = chosen.sum() / real.sum()
    assert 0.3 < rate < 0.5  # 0.3 plus the forced last items


def test_cloze_is_reproducible_with_a_generator():
    items = batch()
    a = cloze_mask(items, mask_token=MASK, generator=torch.Generator().manual_seed(3))
    b = cloze_mask(items, mask_token=MASK, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_80_10_10_rule():
    items = torch.randint(1, 50, (400, 50))
    g = torch.Generator().manual_seed(0)
    inputs, labels = cloze_mask(items, mask_token=MASK, mask_prob=0.5, num_items=49,
                                random_replace=True, generator=g)
    chosen = labels != 0
    as_mask = (inputs[chosen] == MASK).float().mean()
    unchanged = (inputs[chosen] == items[chosen]).float().mean()
    assert abs(as_mask - 0.8) < 0.02
    assert 0.09 < unchanged < 0.14  # 10% kept plus random draws that hit the same item
    assert inputs.max() <= MASK and inputs[chosen & (inputs != MASK)].max() <= 49


def test_append_mask_token():
    items = torch.tensor([[5, 6, 0, 0], [1, 2, 3, 4]])
    out = append_mask_token(items, mask_token=MASK)
    assert out.tolist() == [[5, 6, MASK, 0], [2, 3, 4, MASK]]
