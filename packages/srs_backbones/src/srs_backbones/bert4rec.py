"""BERT4Rec: a bidirectional Transformer trained with the cloze task (Sun et al., CIKM 2019, arXiv:1904.06690).

The cloze-masking helpers live here because they are part of the model's definition: BERT4Rec
is trained to recover masked items and predicts the next item from a mask token appended to the
history.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .layers import Activation, NormPlacement, TransformerStack


@dataclass(frozen=True)
class BERT4RecConfig:
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    inner_dim: int | None = None  # None = 4 * dim, as in BERT
    dropout: float = 0.2  # hidden dropout (FFN inner activation, residual branches)
    emb_dropout: float | None = None  # on the input (items + positions) before the first block; None = dropout
    attn_dropout: float | None = None  # on the attention weights (SDPA dropout_p); None = dropout
    max_len: int = 50
    activation: Activation = "gelu"
    norm: NormPlacement = "post"  # BERT's post-LN with a normed input
    layer_norm_eps: float = 1e-12
    scale_input: bool = False


class BERT4Rec(nn.Module):
    """Bidirectional Transformer encoder: every position sees every real item of the sequence."""

    causal = False

    def __init__(self, config: BERT4RecConfig = BERT4RecConfig()):
        super().__init__()
        self.config = config
        self.dim, self.max_len = config.dim, config.max_len
        self.stack = TransformerStack.from_config(config, causal=False, default_inner=4 * config.dim)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        return self.stack(x, padding_mask)  # (B, N, d)

    def forward_last(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        """The output at each row's last real position, (B, d), at a fraction of ``forward``'s cost."""
        return self.stack.forward_last(x, padding_mask)

    def forward_split(self, x: Tensor, padding_mask: Tensor, n_full: int) -> tuple[Tensor, Tensor]:
        """``forward``'s states of rows ``:n_full`` and the last real position's of the others, in one pass."""
        return self.stack.forward_split(x, padding_mask, n_full)


def cloze_mask(
    items: Tensor,
    *,
    mask_token: int,
    mask_prob: float = 0.2,
    num_items: int | None = None,
    random_replace: bool = False,
    padding_idx: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Masks real items for the cloze objective; returns ``(inputs, labels)``.

    ``labels`` holds the original item where a position was chosen and ``padding_idx`` elsewhere
    (use it as the ignore index). Every sequence with at least one item gets at least one masked
    position: its last item (which also trains the next-item case used at inference).

    With ``random_replace`` (BERT's 80/10/10 rule), a chosen position becomes the mask token with
    probability 0.8, a random item from ``1..num_items`` with 0.1, and stays unchanged with 0.1.
    The original BERT4Rec code masks only (no 80/10/10), hence the default.
    """
    if not 0.0 < mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
    if random_replace and not num_items:
        raise ValueError("random_replace needs num_items (the largest item id)")
    real = items != padding_idx
    chosen = (torch.rand(items.shape, generator=generator, device=items.device) < mask_prob) & real
    lengths = real.sum(1)
    last = (lengths - 1).clamp(min=0)
    rows = torch.arange(items.shape[0], device=items.device)
    chosen[rows, last] |= lengths > 0
    labels = torch.where(chosen, items, torch.full_like(items, padding_idx))

    inputs = items.clone()
    if random_replace:
        roll = torch.rand(items.shape, generator=generator, device=items.device)
        random_items = torch.randint(1, num_items + 1, items.shape, generator=generator, device=items.device)
        inputs = torch.where(chosen & (roll < 0.8), torch.full_like(items, mask_token), inputs)
        inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_items, inputs)
    else:
        inputs = torch.where(chosen, torch.full_like(items, mask_token), inputs)
    return inputs, labels


def append_mask_token(items: Tensor, *, mask_token: int, padding_idx: int = 0) -> Tensor:
    """Puts the mask token right after each history (right padding), for next-item prediction.

    A full row drops its oldest item to make room, so the output keeps the input's width.
    """
    lengths = (items != padding_idx).sum(1)
    full = lengths == items.shape[1]
    shifted = torch.where(full[:, None], torch.roll(items, -1, dims=1), items)
    position = torch.where(full, lengths - 1, lengths)
    out = shifted.clone()
    out[torch.arange(items.shape[0], device=items.device), position] = mask_token
    return out
