"""LLM-ESR's dual-view model (Liu et al., "Large Language Models Enhanced Sequential Recommendation for
Long-tail User and Item", NeurIPS 2024, arXiv:2405.20646; the authors' code read for reference:
github.com/Applied-Machine-Learning-Lab/LLM-ESR at e5dc388, models/DualLLMSRS.py).

Two views of every item go through one shared sequence encoder:

- the semantic view: the item's frozen text embedding (the semid folder's, from any Hugging Face
  encoder) through a trainable two-layer adapter, (L1);
- the collaborative view: a trainable ID embedding table initialised from the top principal
  components of the same text embeddings, (L2).

Each view's sequence can be mixed with the other's by a cross-view attention (sequence-level fusion, (L3);
``model.llmesr_cross``, off by default: under causal masks it measured worse than no mixing) before the
shared encoder (L4); the score of an item is the inner product of the concatenated user
views with the concatenated item views (logit-level fusion, (L5)). The retrieval-augmented
self-distillation of the paper's second module is training-only and lives in :mod:`.llmesr_distill`.

Equation labels (L1)-(L8) are those of docs/model.md, section "LLM-ESR", where each is written out
with the choices the paper leaves open. Indices follow h2rec.model: item ``i`` in 1..n is row ``i - 1``
of the semid folder, 0 is padding, ``n + 1`` is BERT4Rec's mask token; sequences are right-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from srs_backbones import attention_mask
from torch import Tensor, nn

from ..config import ModelConfig
from ..model import at_last, id_table, sequence_encoder


class CrossViewAttention(nn.Module):
    """(L3): one view's sequence re-read through the other's eyes. The queries come from the other
    view and the keys and values from this one, so the output stays in this view's space (the
    authors' ``llm2id(llm_seqs, id_seqs)`` feeds the ID view), followed by an output projection.
    Causal when the backbone is, as the encoder itself; padding-masked otherwise."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)
        self.w_o = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, h, N, d/h)

    def forward(self, other: Tensor, own: Tensor, padding_mask: Tensor, causal: bool) -> Tensor:
        q, k, v = self._heads(self.w_q(other)), self._heads(self.w_k(own)), self._heads(self.w_v(own))
        mask = attention_mask(padding_mask, causal)
        # softmax(Q K^T / sqrt(d / h) + causal mask) V, then W_O: (B, h, N, d/h) -> (B, N, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        b, _, n, _ = out.shape
        return self.w_o(out.transpose(1, 2).reshape(b, n, -1))


@dataclass
class DualViewState:
    """The user side of (L5) at P positions: the two views' encoder states."""

    u_co: Tensor  # (P, d) collaborative view
    u_se: Tensor  # (P, d) semantic view


@dataclass
class DualViewEncoded:
    """Per-position outputs of a forward pass, each (B, N, d)."""

    padding_mask: Tensor  # (B, N)
    u_co: Tensor
    u_se: Tensor

    def select(self, where: Tensor) -> DualViewState:
        """User states at the positions where ``where`` (B, N) is True, flattened to (P, d)."""
        return DualViewState(self.u_co[where], self.u_se[where])

    def last(self) -> DualViewState:
        """User states at each row's last real position (the next-item prediction)."""
        return DualViewState(at_last(self.u_co, self.padding_mask), at_last(self.u_se, self.padding_mask))


class LLMESR(nn.Module):
    """LLM-ESR on any ``srs_backbones`` encoder; the same interface as ``h2rec.model.H2Rec`` (forward,
    the Eq. 9-style scores, the serving vectors), so training, evaluation and export use it as they are."""

    score_equation = "(L5) of docs/model.md"  # the score an export's vectors reproduce, named in its manifest

    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int, text_embeddings: Tensor):
        """``text_embeddings`` (n, D): the semid folder's item embeddings, row i - 1 for item i."""
        super().__init__()
        if text_embeddings is None or len(text_embeddings) != n_items:
            raise ValueError("llmesr needs one text embedding per item (the semid folder's embeddings)")
        self.cfg = cfg
        self.n_items = n_items
        self.mask_token = n_items + 1
        d, width = cfg.dim, text_embeddings.shape[1]
        g = torch.Generator().manual_seed(0)  # parameters themselves are seeded by the caller

        # frozen (L1): a buffer, not a parameter, so no optimiser sees it; not saved with the weights either,
        # since every build reads it from the semid folder (row 0: padding)
        text = torch.cat([text_embeddings.new_zeros(1, width), text_embeddings.float()])
        self.register_buffer("text", text, persistent=False)
        # (L1)'s adapter: two linear maps D -> D/2 -> d with no activation between them, as the authors'
        # code; the paper's ablation replaces it by one layer
        self.adapter = nn.Sequential(nn.Linear(width, max(width // 2, 1)), nn.Linear(max(width // 2, 1), d))
        # the semantic view of BERT4Rec's mask token, which has no text
        self.se_mask = nn.Parameter(torch.randn(d, generator=g) * cfg.init_std)

        # (L2): the collaborative view's ID table, initialised from the text embeddings' principal components
        # (pca_init False: random initialisation, the paper's ablation)
        self.co = id_table(cfg, n_items, text_embeddings, g)
        self.encoder = sequence_encoder(cfg, max_len)  # f_θ of (L4), shared by both views
        self.causal = self.encoder.causal
        # (L3) in both directions, each with its own weights (the authors' llm2id and id2llm)
        self.cross = cfg.llmesr_cross
        if self.cross != "off":
            self.cross_co = CrossViewAttention(d, cfg.num_heads)  # semantic queries, collaborative keys and values
            self.cross_se = CrossViewAttention(d, cfg.num_heads)  # collaborative queries, semantic keys and values

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------- item side
    def semantic(self, items: Tensor) -> Tensor:
        """(L1) e^se of ``items`` (...,) -> (..., d); the mask token gets its learned vector."""
        is_mask = items == self.mask_token
        e_se = self.adapter(self.text[items.masked_fill(is_mask, 0)])
        return torch.where(is_mask[..., None], self.se_mask, e_se) if is_mask.any() else e_se

    def semantic_range(self, start: int, end: int) -> Tensor:
        """(L1) for the catalogue items start..end-1 (0 = padding), (end - start, d)."""
        return self.adapter(self.text[start:end])

    # ----------------------------------------------------------------- user side
    def forward(self, items: Tensor, msg_level: Tensor | None = None) -> tuple[DualViewEncoded, None]:
        """Encodes right-padded ``items`` (B, N). ``msg_level`` is H2Rec's (L_MSG) and must be None here;
        the second value is None, as H2Rec's without it."""
        if msg_level is not None:
            raise ValueError("llmesr has no masked-granularity view (msg_level)")
        pad = items == 0
        e_co, e_se = self.co(items), self.semantic(items)  # (B, N, d) each
        fused_co, fused_se = e_co, e_se
        if self.cross != "off":
            fused_co = self.cross_co(e_se, e_co, pad, self.causal)  # (L3): collaborative view, read by the semantic one
            fused_se = self.cross_se(e_co, e_se, pad, self.causal)  # (L3): semantic view, read by the collaborative one
            if self.cross == "residual":
                fused_co, fused_se = e_co + fused_co, e_se + fused_se
        # (L4): both views through the one shared encoder, in one call
        u_co, u_se = self.encoder(torch.cat([fused_co, fused_se]), torch.cat([pad, pad])).chunk(2)
        return DualViewEncoded(pad, u_co, u_se), None

    # ----------------------------------------------------------------- scores, (L5)
    def score(self, state: DualViewState, items: Tensor) -> Tensor:
        """(L5) for given candidates: ``items`` (P, K) -> scores (P, K)."""
        return (torch.einsum("pd,pkd->pk", state.u_co, self.co(items))
                + torch.einsum("pd,pkd->pk", state.u_se, self.semantic(items)))

    def score_shared(self, state: DualViewState, items: Tensor) -> Tensor:
        """(L5) for candidates shared by all positions: ``items`` (K,) -> (P, K)."""
        return state.u_co @ self.co(items).T + state.u_se @ self.semantic(items).T

    def score_range(self, state: DualViewState, start: int, end: int) -> Tensor:
        """(L5) against items start..end-1 of the catalogue (0 = padding): (P, end - start). One matrix
        product of the concatenated views: [u^co : u^se] [e^co : e^se]^T."""
        items = torch.cat([self.co.weight[start:end], self.semantic_range(start, end)], 1)  # (n', 2d)
        return self.user_vectors(state) @ items.T

    def score_all(self, state: DualViewState) -> Tensor:
        """(L5) against the whole catalogue: (P, n + 1), column i for item i, column 0 = -inf."""
        scores = self.score_range(state, 0, self.n_items + 1)  # not the mask token's row
        scores[:, 0] = float("-inf")  # padding, never ranked
        return scores

    # ----------------------------------------------------------------- (L5) as one inner product
    def vector_parts(self) -> list[str]:
        """The blocks of ``user_vectors`` / ``item_vectors``, in order, each ``cfg.dim`` wide."""
        return ["collaborative", "semantic"]

    def user_vectors(self, state: DualViewState) -> Tensor:
        """[u^co : u^se], (P, 2d): its inner product with ``item_vectors`` is (L5)'s score."""
        return torch.cat([state.u_co, state.u_se], 1)

    def item_vectors(self) -> Tensor:
        """[e^co : e^se] of items 1..n, (n, 2d)."""
        return torch.cat([self.co.weight[1 : self.n_items + 1], self.semantic_range(1, self.n_items + 1)], 1)
