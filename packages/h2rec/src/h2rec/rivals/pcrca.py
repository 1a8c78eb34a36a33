"""PCR-CA as a next-item model (Tan et al., "PCR-CA: Parallel Codebook Representations with Contrastive
Alignment for Multiple-Category App Recommendation", 2025, arXiv:2508.18166; no code of the authors is
public). The paper is a click-through-rate model; docs/model.md, section "PCR-CA", says how it is read
here as a sequential recommender and why.

Two representations of every item:

- the semantic one, from the item's codes in M parallel codebooks (the semid folder's; ``semid encode
  --quantizer pq`` or ``vq`` are parallel, as the paper's PC-AE): one trainable table per codebook,
  initialised from that codebook, the M code vectors concatenated and mapped to d, (P1);
- the ID one, a trainable hash-ID table, (P2).

Each representation's sequence goes through its own encoder, the "dual attention" (P3), and the score
of an item is the inner product of the two user states, concatenated, with the item's two
representations, concatenated (P4). The contrastive alignment of the two, at the item and the user
level, is training-only and lives in :mod:`.pcrca_align` ((P5)-(P7)).

Equation labels (P1)-(P7) are those of docs/model.md. Indices follow h2rec.model: item ``i`` in 1..n is
row ``i - 1`` of the semid folder, 0 is padding, ``n + 1`` is BERT4Rec's mask token; sequences are
right-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..model import at_last, id_table, sequence_encoder


@dataclass
class DualState:
    """The user side of (P4) at P positions: the two encoders' states."""

    u_id: Tensor  # (P, d) from the ID sequence
    u_sem: Tensor  # (P, d) from the semantic sequence


@dataclass
class DualEncoded:
    """Per-position outputs of a forward pass, each (B, N, d)."""

    padding_mask: Tensor  # (B, N)
    u_id: Tensor
    u_sem: Tensor

    def select(self, where: Tensor) -> DualState:
        """User states at the positions where ``where`` (B, N) is True, flattened to (P, d)."""
        return DualState(self.u_id[where], self.u_sem[where])

    def last(self) -> DualState:
        """User states at each row's last real position (the next-item prediction)."""
        return DualState(at_last(self.u_id, self.padding_mask), at_last(self.u_sem, self.padding_mask))


class PCRCA(nn.Module):
    """PCR-CA on any ``srs_backbones`` encoder; the interface of ``h2rec.model.H2Rec`` (forward, the
    scores, the serving vectors), so training, evaluation and export use it as they are."""

    score_equation = "(P4) of docs/model.md"  # the score an export's vectors reproduce, named in its manifest

    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int, code_embedding: nn.Module,
                 text_embeddings: Tensor | None = None):
        """``code_embedding``: a semid CodeEmbedding (combine="concat", padding_idx0=True) holding every
        item's M codes and one table per codebook, initialised from the codebooks. ``text_embeddings``
        (n, D) start the ID table from their principal components when ``cfg.pca_init`` (off by default)."""
        super().__init__()
        if code_embedding is None or code_embedding.combine != "concat":
            raise ValueError("pcrca needs the items' codes as a CodeEmbedding with combine='concat'")
        self.cfg = cfg
        self.n_items = n_items
        self.mask_token = n_items + 1
        d = cfg.dim
        g = torch.Generator().manual_seed(0)  # parameters themselves are seeded by the caller

        # (P1): the M parallel codebooks' tables, concatenated (M d) and mapped to d. A linear map of the
        # concatenation keeps each codebook's aspect in its own coordinates until the map mixes them; the
        # sum of the M vectors is the special case W_s = [I ... I]
        self.codes = code_embedding
        self.n_codebooks = code_embedding.n_columns
        self.w_sem = nn.Linear(self.n_codebooks * d, d, bias=False)  # no bias: padding stays the zero vector
        # the semantic vector of BERT4Rec's mask token, which has no codes
        self.sem_mask = nn.Parameter(torch.randn(d, generator=g) * cfg.init_std)

        # (P2): the hash-ID table
        self.id_table = id_table(cfg, n_items, text_embeddings, g)

        # (P3): one encoder per representation, the paper's two attention units (model.share_encoders:
        # one encoder for both)
        self.f_id = sequence_encoder(cfg, max_len)
        self.f_sem = self.f_id if cfg.share_encoders else sequence_encoder(cfg, max_len)
        self.causal = self.f_id.causal

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------- item side
    def semantic(self, items: Tensor) -> Tensor:
        """(P1) e^sem of ``items`` (...,) -> (..., d); zero for padding, a learned vector for the mask token."""
        is_mask = items == self.mask_token
        e_sem = self.w_sem(self.codes(items.masked_fill(is_mask, 0)))
        return torch.where(is_mask[..., None], self.sem_mask, e_sem) if is_mask.any() else e_sem

    def semantic_range(self, start: int, end: int) -> Tensor:
        """(P1) for the catalogue items start..end-1 (0 = padding), (end - start, d)."""
        return self.semantic(torch.arange(start, end, device=self.id_table.weight.device))

    # ----------------------------------------------------------------- user side
    def forward(self, items: Tensor, msg_level: Tensor | None = None) -> tuple[DualEncoded, None]:
        """(P3) on right-padded ``items`` (B, N). ``msg_level`` is H2Rec's (L_MSG) and must be None here;
        the second value is None, as H2Rec's without it."""
        if msg_level is not None:
            raise ValueError("pcrca has no masked-granularity view (msg_level)")
        pad = items == 0
        e_id, e_sem = self.id_table(items), self.semantic(items)  # (B, N, d) each
        if self.f_sem is self.f_id:  # one shared encoder: both sequences in one call
            u_id, u_sem = self.f_id(torch.cat([e_id, e_sem]), torch.cat([pad, pad])).chunk(2)
        else:
            u_id, u_sem = self.f_id(e_id, pad), self.f_sem(e_sem, pad)
        return DualEncoded(pad, u_id, u_sem), None

    # ----------------------------------------------------------------- scores, (P4)
    def score(self, state: DualState, items: Tensor) -> Tensor:
        """(P4) for given candidates: ``items`` (P, K) -> scores (P, K)."""
        return (torch.einsum("pd,pkd->pk", state.u_id, self.id_table(items))
                + torch.einsum("pd,pkd->pk", state.u_sem, self.semantic(items)))

    def score_shared(self, state: DualState, items: Tensor) -> Tensor:
        """(P4) for candidates shared by all positions: ``items`` (K,) -> (P, K)."""
        return state.u_id @ self.id_table(items).T + state.u_sem @ self.semantic(items).T

    def score_range(self, state: DualState, start: int, end: int) -> Tensor:
        """(P4) against items start..end-1 of the catalogue (0 = padding): (P, end - start), one matrix
        product of the concatenations [u^id : u^sem] [e^id : e^sem]^T."""
        items = torch.cat([self.id_table.weight[start:end], self.semantic_range(start, end)], 1)  # (n', 2d)
        return self.user_vectors(state) @ items.T

    def score_all(self, state: DualState) -> Tensor:
        """(P4) against the whole catalogue: (P, n + 1), column i for item i, column 0 = -inf."""
        scores = self.score_range(state, 0, self.n_items + 1)  # not the mask token's row
        scores[:, 0] = float("-inf")  # padding, never ranked
        return scores

    # ----------------------------------------------------------------- (P4) as one inner product
    def vector_parts(self) -> list[str]:
        """The blocks of ``user_vectors`` / ``item_vectors``, in order, each ``cfg.dim`` wide."""
        return ["id", "semantic"]

    def user_vectors(self, state: DualState) -> Tensor:
        """[u^id : u^sem], (P, 2d): its inner product with ``item_vectors`` is (P4)'s score."""
        return torch.cat([state.u_id, state.u_sem], 1)

    def item_vectors(self) -> Tensor:
        """[e^id : e^sem] of items 1..n, (n, 2d)."""
        return torch.cat([self.id_table.weight[1 : self.n_items + 1], self.semantic_range(1, self.n_items + 1)], 1)
