"""GRU4Rec: a recurrent session encoder (Hidasi et al., ICLR 2016, arXiv:1511.06939).

Used, as in SASRec's and RecBole's comparisons, as an encoder over item embeddings:
embedding dropout, a stacked GRU, and a linear projection back to the item dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .layers import check_dropout, check_inputs, last_positions


@dataclass(frozen=True)
class GRU4RecConfig:
    dim: int = 64
    hidden_dim: int | None = None  # GRU state size; None = dim
    num_layers: int = 1
    dropout: float = 0.2  # between GRU layers (num_layers > 1 only); also the input dropout when emb_dropout is None
    emb_dropout: float | None = None  # on the input embeddings; None = dropout
    max_len: int = 50


class GRU4Rec(nn.Module):
    """Causal by construction: a left-to-right GRU. Right padding comes after every real item, so
    the outputs at real positions are exactly those of the unpadded sequence, without packing."""

    causal = True

    def __init__(self, config: GRU4RecConfig = GRU4RecConfig()):
        super().__init__()
        self.config = config
        self.dim, self.max_len = config.dim, config.max_len
        hidden = config.hidden_dim or config.dim
        # None = dropout, so the one-knob default (input and inter-layer dropout alike) stays as it was.
        emb_dropout = config.dropout if config.emb_dropout is None else config.emb_dropout
        check_dropout("dropout", config.dropout)
        check_dropout("emb_dropout", emb_dropout)
        self.emb_dropout = nn.Dropout(emb_dropout)
        # a single-layer GRU has no inter-layer dropout (torch warns when given one)
        self.gru = nn.GRU(config.dim, hidden, num_layers=config.num_layers, batch_first=True,
                          dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.proj = nn.Linear(hidden, config.dim)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        check_inputs(x, padding_mask, self.dim, self.max_len)
        h, _ = self.gru(self.emb_dropout(x))  # (B, N, hidden)
        return self.proj(h) * (~padding_mask).unsqueeze(-1).to(h.dtype)

    def forward_last(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        """The output at each row's last real position, (B, d): the GRU runs over every position, the
        projection only there. The same values, and the same dropout draws, as ``forward``'s."""
        return self.forward_split(x, padding_mask, 0)[1]

    def forward_split(self, x: Tensor, padding_mask: Tensor, n_full: int) -> tuple[Tensor, Tensor]:
        """``forward``'s states of rows ``:n_full`` (n_full, N, d) and of rows ``n_full:`` at their last
        real position (B - n_full, d), from one GRU pass; the same values and dropout draws as ``forward``."""
        check_inputs(x, padding_mask, self.dim, self.max_len)
        if not 0 <= n_full <= len(x):
            raise ValueError(f"n_full={n_full} must lie in [0, {len(x)}]")
        h, _ = self.gru(self.emb_dropout(x))  # (B, N, hidden)
        full = self.proj(h[:n_full]) * (~padding_mask[:n_full]).unsqueeze(-1).to(h.dtype)
        tail, tail_padding = h[n_full:], padding_mask[n_full:]
        rows = torch.arange(len(tail), device=h.device)
        last = last_positions(tail_padding)
        return full, self.proj(tail[rows, last]) * (~tail_padding[rows, last]).unsqueeze(-1).to(h.dtype)
