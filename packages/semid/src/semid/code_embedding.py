"""CodeEmbedding: a torch module that embeds item indices through their Semantic-ID codes.

One table per code column ([K_l, dim]), initialised from that level's codebook, so that (for RQ
codes) the sum of an item's level embeddings starts as its quantized vector: the paper's SID branch
looks up e_{C_i}^l per level (§2.2, §3.2.1) and then fuses the levels. The fusion is left to the
caller: `combine` gives the sum, the concatenation, or the per-level stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semid.errors import fail
from semid.principal import fixed_signs

COMBINES = ("sum", "concat", "levels")
DEDUP_INIT_STD = 0.02  # the dedup column has no codebook: BERT-style normal(0, 0.02) init


def project_codebook(codebook: torch.Tensor, dim: int) -> torch.Tensor:
    """Codebook [K, d] -> [K, dim]: copied when d == dim, zero-padded when dim > d, else projected
    onto its top `dim` principal directions (SVD of the centred codebook, signs fixed so that each
    direction's largest entry is positive: the result does not depend on the SVD's sign choice)."""
    k, d = codebook.shape
    codebook = codebook.double()
    if d == dim:
        return codebook.float().clone()
    if dim > d:
        return F.pad(codebook, (0, dim - d)).float()
    _, _, vh = torch.linalg.svd(codebook - codebook.mean(0), full_matrices=False)  # vh: (min(K, d), d)
    directions = fixed_signs(vh[:dim].T)  # (d, r), r = min(dim, K, d)
    projected = codebook @ directions  # (K, r)
    return F.pad(projected, (0, dim - projected.shape[1])).float()


class CodeEmbedding(nn.Module):
    """Embeds item indices from their codes: forward(item_index[...]) -> [..., dim] ("sum"),
    [..., n_columns * dim] ("concat") or [..., n_columns, dim] ("levels").

    With `padding_idx0`, index 0 is a padding item whose output is exactly zero (also after
    training: it is masked, not a learned row), and index i >= 1 is item row i - 1.
    """

    def __init__(
        self,
        codes: torch.Tensor,
        codebook_sizes: Sequence[int],
        codebooks: Sequence[torch.Tensor | None],
        dim: int | None = None,
        combine: str = "sum",
        padding_idx0: bool = False,
        init_std: float | None = None,
    ):
        super().__init__()
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.ndim != 2 or codes.shape[1] != len(codebook_sizes) or len(codebooks) != len(codebook_sizes):
            raise fail(None, None, "codes", f"shape {tuple(codes.shape)} does not match {len(codebook_sizes)} "
                       f"codebook sizes and {len(codebooks)} codebooks")
        if combine not in COMBINES:
            raise fail(None, None, "combine", f"is {combine!r}; choose one of {', '.join(COMBINES)}")
        known_dims = [cb.shape[1] for cb in codebooks if cb is not None]
        if dim is None:
            if not known_dims:
                raise fail(None, None, "dim", "must be given when no column has a codebook")
            dim = max(known_dims)
        if dim < 1:
            raise fail(None, None, "dim", f"must be >= 1, got {dim}")
        self.dim = dim
        self.combine = combine
        self.padding_idx0 = padding_idx0
        if padding_idx0:
            codes = torch.cat([codes.new_full((1, codes.shape[1]), -1), codes])  # row 0: padding, no codes
        self.register_buffer("codes", codes)
        self.levels = nn.ModuleList(nn.Embedding(int(k), dim) for k in codebook_sizes)
        # forward looks all levels up at once in the stacked tables: level l's codes start at
        # offsets[l], and the row after the last table is the zero vector of padding
        sizes = torch.tensor([int(k) for k in codebook_sizes])
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.register_buffer("zero_row", torch.zeros(1, dim), persistent=False)
        with torch.no_grad():
            for level, (table, codebook) in enumerate(zip(self.levels, codebooks)):
                if codebook is None:
                    table.weight.normal_(0.0, DEDUP_INIT_STD)
                else:
                    if codebook.shape[0] != table.num_embeddings:
                        raise fail(None, None, "codebooks", f"level {level + 1} has {codebook.shape[0]} rows, "
                                   f"codebook size {table.num_embeddings}")
                    table.weight.copy_(project_codebook(codebook, dim))
                if init_std is not None:
                    std = table.weight.std()
                    if std > 0:
                        table.weight.mul_(init_std / std)

    @property
    def n_columns(self) -> int:
        return len(self.levels)

    @property
    def n_codes(self) -> int:
        """Codes over all levels, ΣK_l: the rows of the level tables stacked end to end."""
        return sum(table.num_embeddings for table in self.levels)

    def item_codes(self, item_index: torch.Tensor) -> torch.Tensor:
        """Codes [..., n_columns] of item indices (with padding_idx0, index 0 gives -1 in every column)."""
        return self.codes[item_index]

    def stacked_codes(self, item_index: torch.Tensor) -> torch.Tensor:
        """Codes [..., n_columns] as rows of the level tables stacked end to end (level l's codes
        start after level l-1's): one index space of size n_codes, e.g. for an item x code matrix."""
        return self.item_codes(item_index) + self.offsets

    def forward(self, item_index: torch.Tensor) -> torch.Tensor:
        codes = self.item_codes(item_index)  # (..., C); -1 in the padding row
        stacked = torch.cat([table.weight for table in self.levels] + [self.zero_row])  # (sum K_l + 1, dim)
        rows = (codes + self.offsets).masked_fill(codes < 0, stacked.shape[0] - 1)
        vectors = F.embedding(rows, stacked)  # (..., C, dim): one lookup for all levels
        if self.combine == "sum":
            return vectors.sum(dim=-2)  # (..., dim)
        if self.combine == "concat":
            return vectors.flatten(-2)  # (..., C * dim)
        return vectors  # (..., C, dim)
