"""MELT's model (Kim et al., "MELT: Mutual Enhancement of Long-Tailed User and Item for Sequential
Recommendation", SIGIR 2023, arXiv:2304.08382; the authors' code read for reference:
github.com/rlqja1107/MELT at dd7542f, models/MELT_SASRec.py, embedder.py, figure/*_algo.png).

MELT keeps its backbone as it is: an item ID table ``q`` and a sequence encoder ``f_θ`` whose state
after a history is the user representation ``p_u``, scored against ``q_j`` by an inner product. It
adds two linear maps:

- ``G^U`` (the user branch's): from the representation of a short history to that of a long one.
  At inference a tail user's representation is enhanced with it, (M3);
- ``G^I`` (the item branch's): from the mean representation of the histories an item closes to the
  item's embedding. Training refreshes the tail items' embeddings with it, (M6).

The branch losses, the curriculum and the refresh are training-only and live in
:mod:`.melt_branches`. Equation labels (M1)-(M8) are those of docs/model.md, section "MELT". Indices
follow h2rec.model: item ``i`` in 1..n, 0 is padding, ``n + 1`` is BERT4Rec's mask token;
sequences are right-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..model import at_last, id_table, sequence_encoder

# (M3), (M5): p̂ = G^U(p) + β p. The authors' code adds the representation itself (β = 1), in
# inference and in the item branch alike; the paper's figure writes β without a value.
BETA = 1.0


@dataclass
class MELTState:
    """The user side of the score at P positions."""

    p: Tensor  # (P, d): f_θ's state, or (M3)'s enhanced one for a tail user's next-item state


@dataclass
class MELTEncoded:
    """Per-position outputs of a forward pass."""

    padding_mask: Tensor  # (B, N)
    p: Tensor  # (B, N, d): f_θ at every position, as trained by the ranking loss
    p_last: Tensor  # (B, d): each row's next-item state, (M3) applied where the row is a tail user's

    def select(self, where: Tensor) -> MELTState:
        """f_θ at the positions where ``where`` (B, N) is True, flattened to (P, d): L_rec trains the
        backbone's own states, as the paper's."""
        return MELTState(self.p[where])

    def last(self) -> MELTState:
        """Each row's next-item state with (M3): what evaluation, ``recommend`` and export score."""
        return MELTState(self.p_last)


class MELT(nn.Module):
    """MELT on any ``srs_backbones`` encoder, with the interface of ``h2rec.model.H2Rec`` (forward,
    the scores, the serving vectors), so that evaluation and export use it as they are."""

    score_equation = "(M3) of docs/model.md"  # the score an export's vectors reproduce, named in its manifest

    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int, text_embeddings: Tensor | None = None):
        """``text_embeddings`` (n, D): the PCA initialisation of the item table when ``cfg.pca_init``
        (off by default: the authors' table starts at random)."""
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.mask_token = n_items + 1
        d = cfg.dim
        g = torch.Generator().manual_seed(0)  # parameters themselves are seeded by the caller

        self.item = id_table(cfg, n_items, text_embeddings, g)  # q_i; row n + 1: BERT4Rec's mask token
        self.encoder = sequence_encoder(cfg, max_len)  # f_θ
        self.causal = self.encoder.causal
        # G^U and G^I: one linear map each, Xavier-normal weights, as the authors' W_U and W_I
        self.g_user = nn.Linear(d, d)
        self.g_item = nn.Linear(d, d)
        for layer in (self.g_user, self.g_item):
            nn.init.xavier_normal_(layer.weight, generator=g)
        # T_U of (M1): a history of at most this many items is a tail user's. Read from the training data
        # when a run starts (melt_branches.build_branches) and saved with the weights, so that a model
        # loaded without its data enhances the same users; -1 until then (no user is enhanced).
        self.register_buffer("user_threshold", torch.tensor(-1, dtype=torch.long))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------- user side
    def enhance(self, p: Tensor) -> Tensor:
        """(M3) p̂ = G^U(p) + β p, (..., d)."""
        return self.g_user(p) + BETA * p

    def forward(self, items: Tensor, msg_level: Tensor | None = None) -> tuple[MELTEncoded, None]:
        """Encodes right-padded ``items`` (B, N). ``msg_level`` is H2Rec's (L_MSG) and must be None;
        the second value is None, as H2Rec's without it."""
        if msg_level is not None:
            raise ValueError("melt has no masked-granularity view (msg_level)")
        pad = items == 0
        p = self.encoder(self.item(items), pad)  # (B, N, d)
        p_last = at_last(p, pad)  # (B, d)
        # (M3): a row whose history holds at most T_U items (BERT4Rec's mask token is no item) is a tail
        # user's. Its length is the window's: exact while T_U < data.max_len - 1, which build_branches checks
        history = ((items > 0) & (items != self.mask_token)).sum(1)  # (B,)
        tail = history <= self.user_threshold
        if tail.any():
            p_last = torch.where(tail[:, None], self.enhance(p_last), p_last)
        return MELTEncoded(pad, p, p_last), None

    # ----------------------------------------------------------------- scores: p̂_u · q_j
    def score(self, state: MELTState, items: Tensor) -> Tensor:
        """Scores of given candidates: ``items`` (P, K) -> (P, K)."""
        return torch.einsum("pd,pkd->pk", state.p, self.item(items))

    def score_shared(self, state: MELTState, items: Tensor) -> Tensor:
        """Scores of candidates shared by all positions: ``items`` (K,) -> (P, K)."""
        return state.p @ self.item(items).T

    def score_range(self, state: MELTState, start: int, end: int) -> Tensor:
        """Scores against items start..end-1 of the catalogue (0 = padding): (P, end - start)."""
        return state.p @ self.item.weight[start:end].T

    def score_all(self, state: MELTState) -> Tensor:
        """Scores against the whole catalogue: (P, n + 1), column i for item i, column 0 = -inf."""
        scores = self.score_range(state, 0, self.n_items + 1)  # not the mask token's row
        scores[:, 0] = float("-inf")  # padding, never ranked
        return scores

    # ----------------------------------------------------------------- the score as one inner product
    def vector_parts(self) -> list[str]:
        """The blocks of ``user_vectors`` / ``item_vectors``, each ``cfg.dim`` wide."""
        return ["id"]

    def user_vectors(self, state: MELTState) -> Tensor:
        """p̂_u, (P, d)."""
        return state.p

    def item_vectors(self) -> Tensor:
        """q_j of items 1..n, (n, d)."""
        return self.item.weight[1 : self.n_items + 1]
