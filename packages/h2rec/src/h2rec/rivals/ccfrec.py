"""CCFRec's model (Liu, Zheng, Zhao and Wen, "Bridging Textual-Collaborative Gap through Semantic Codes
for Sequential Recommendation", KDD 2025, arXiv:2503.12183; the authors' code read for reference:
github.com/RUCAIBox/CCFRec, as mirrored at github.com/BishopLiu/CCFRec at 69907e3: model.py, layers.py,
data.py, main.py, vq/generate_faiss_multi_emb.py, run.sh, asset/model.png).

An item is its semantic codes and its text; it has no ID embedding of its own:

- the text views: frozen text embeddings, one per view, each reduced by a whitened PCA to ``d``
  dimensions, (C1). The paper's views are item attributes (title, brand, ...), each embedded on its
  own; a semid folder holds one text embedding per item, so the views here are its ``V`` contiguous
  slices (docs/model.md, "CCFRec", says why);
- the code tokens: one trainable embedding per semantic code, (C2);
- the semantic-fusion module (SFM): layers of self-attention among the item's code tokens,
  cross-attention from the code tokens (queries) to the text views (keys and values), and a
  feed-forward network, (C3); its outputs, mean-pooled, are the item's representation in a
  sequence, (C4).

The sequence of item representations goes through any ``srs_backbones`` encoder, (C5); the score of a
candidate is the cosine of the user state with the candidate's pooled SFM output plus its mean code
embedding, over a temperature, (C6). The code-masking objectives (C7)-(C10) are training-only and
live in :mod:`.ccfrec_masking`.

Equation labels (C1)-(C10) are those of docs/model.md, section "CCFRec". Indices follow h2rec.model:
item ``i`` in 1..n is row ``i - 1`` of the semid folder, 0 is padding, ``n + 1`` is BERT4Rec's mask
token; sequences are right-padded. Codes are numbered as semid's ``CodeEmbedding.stacked_codes``: the
levels' tables end to end, ``n_codes`` in all; index ``n_codes`` is the zero vector, the [MASK] code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from ..model import at_last, sequence_encoder


# ----------------------------------------------------------------------------- (C1): the text views
def whitened_pca(x: Tensor, dim: int) -> Tensor:
    """(C1) for one view: the rows of ``x`` (n, w) on their top principal directions, each scaled to
    unit variance (scikit-learn's ``PCA(whiten=True)``, as the authors'), zero-padded to ``dim``
    columns when fewer directions exist. Each direction's sign is fixed (its largest entry positive),
    so that a model rebuilt elsewhere sees the same views: they are recomputed, not saved."""
    centred = x.double() - x.double().mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    keep = int((s > s[0] * 1e-6).sum()) if len(s) and s[0] > 0 else 0  # directions of nonzero variance
    k = min(dim, keep)
    directions = vh[:k].T  # (w, k)
    largest = directions.abs().argmax(0)
    directions = directions * torch.sign(directions[largest, torch.arange(k)])
    std = s[:k] / math.sqrt(max(len(x) - 1, 1))  # each component's standard deviation
    return F.pad((centred @ directions) / std, (0, dim - k)).float()


def text_views(text: Tensor, n_views: int, dim: int) -> Tensor:
    """(C1) T_i: the ``n_views`` contiguous slices of each item's text embedding (n, D), each through
    :func:`whitened_pca`, (n, V, d)."""
    if not 1 <= n_views <= text.shape[1]:
        raise ValueError(f"model.ccfrec_views (--ccfrec-views) is {n_views}: the views are slices of the "
                         f"{text.shape[1]}-dimensional text embeddings, so between 1 and {text.shape[1]}")
    return torch.stack([whitened_pca(part, dim) for part in torch.tensor_split(text, n_views, dim=1)], 1)


# ----------------------------------------------------------------------------- (C3): the semantic-fusion module
class Attention(nn.Module):
    """Multi-head attention without a mask (an item's code tokens and text views are all real), with
    an output projection: softmax(X W_Q (Y W_K)^T / sqrt(d/h)) Y W_V W_O, per head."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(dim, dim) for _ in range(4))

    def _heads(self, x: Tensor) -> Tensor:
        m, t, d = x.shape
        return x.view(m, t, self.num_heads, d // self.num_heads).transpose(1, 2)  # (M, h, T, d/h)

    def forward(self, queries: Tensor, keys: Tensor, dropout: float) -> Tensor:
        q, k, v = self._heads(self.w_q(queries)), self._heads(self.w_k(keys)), self._heads(self.w_v(keys))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        m, _, t, _ = out.shape
        return self.w_o(out.transpose(1, 2).reshape(m, t, -1))


class FusionLayer(nn.Module):
    """One layer of (C3), post-norm as the authors' layers: X <- LN(X + SA(X)); X <- LN(X + CA(X, T));
    X <- LN(X + FFN(X)), with dropout on the attention weights and on each branch (when training and
    ``stochastic``)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.self_attention = Attention(dim, num_heads, dropout)
        self.cross_attention = Attention(dim, num_heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-12) for _ in range(3))
        self.dropout = dropout

    def forward(self, x: Tensor, views: Tensor, stochastic: bool = True) -> Tensor:
        p = self.dropout if self.training and stochastic else 0.0
        x = self.norms[0](x + F.dropout(self.self_attention(x, x, p), p))  # the codes of one item read each other
        x = self.norms[1](x + F.dropout(self.cross_attention(x, views, p), p))  # ... and pick from the text views
        return self.norms[2](x + F.dropout(self.ffn(x), p))


class SemanticFusion(nn.Module):
    """(C3) H = SFM(Z^c, T): code tokens (M, C, d) fused with text views (M, V, d) -> (M, C, d)."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(FusionLayer(dim, num_heads, dropout) for _ in range(num_layers))

    def forward(self, tokens: Tensor, views: Tensor, stochastic: bool = True) -> Tensor:
        for layer in self.layers:
            tokens = layer(tokens, views, stochastic)
        return tokens


# ----------------------------------------------------------------------------- the model
@dataclass
class CCFRecState:
    """The user side of (C6) at P positions."""

    r: Tensor  # (P, d): the encoder's state


@dataclass
class CCFRecEncoded:
    """Per-position outputs of a forward pass."""

    padding_mask: Tensor  # (B, N)
    r: Tensor  # (B, N, d): the encoder's states, (C5)
    fused: Tensor  # (B, N, C, d): the SFM outputs H of each input item, (C3); zero at padding and mask tokens

    def select(self, where: Tensor) -> CCFRecState:
        """States at the positions where ``where`` (B, N) is True, flattened to (P, d)."""
        return CCFRecState(self.r[where])

    def last(self) -> CCFRecState:
        """The state at each row's last real position (the next-item prediction)."""
        return CCFRecState(at_last(self.r, self.padding_mask))


class CCFRec(nn.Module):
    """CCFRec on any ``srs_backbones`` encoder, with the interface of ``h2rec.model.H2Rec`` (forward,
    the scores, the serving vectors), so that training, evaluation and export use it as they are."""

    score_equation = "(C6) of docs/model.md"  # the score an export's vectors reproduce, named in its manifest

    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int, code_embedding: nn.Module,
                 text_embeddings: Tensor):
        """``code_embedding``: a semid ``CodeEmbedding`` (padding_idx0=True) holding every item's codes and
        one table per level; its tables are re-drawn here (the authors' code table starts at random).
        ``text_embeddings`` (n, D): the semid folder's item embeddings, row i - 1 for item i."""
        super().__init__()
        if text_embeddings is None or len(text_embeddings) != n_items:
            raise ValueError("ccfrec needs one text embedding per item (the semid folder's embeddings)")
        self.cfg = cfg
        self.n_items = n_items
        self.mask_token = n_items + 1
        self.tau = cfg.ccfrec_tau
        d = cfg.dim

        # (C2): Z^c, one vector per code of every level, N(0, init_std) as the authors' initialiser
        self.codes = code_embedding
        with torch.no_grad():
            for table in self.codes.levels:
                nn.init.normal_(table.weight, std=cfg.init_std)
        self.n_codes = self.codes.n_codes
        self.n_levels = self.codes.n_columns
        # (C1): frozen, a buffer that is not saved (every build recomputes it from the semid folder); row 0 padding
        views = text_views(text_embeddings.float(), cfg.ccfrec_views, d)
        self.register_buffer("views", torch.cat([views.new_zeros(1, *views.shape[1:]), views]), persistent=False)
        self.fusion = SemanticFusion(d, cfg.num_heads, cfg.ccfrec_layers, cfg.ccfrec_dropout)  # (C3)
        # BERT4Rec's mask token is no item: it has no codes and no text, so it gets a learned input vector
        self.cloze_item = nn.Parameter(torch.randn(d, generator=torch.Generator().manual_seed(0)) * cfg.init_std)

        self.encoder = sequence_encoder(cfg, max_len)  # (C5)
        self.causal = self.encoder.causal
        self._table: tuple[tuple, Tensor] | None = None  # the candidate table of the last evaluation

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------- item side
    def code_table(self) -> Tensor:
        """Z^c: every code's vector, the levels' tables end to end, then the zero [MASK] row: (n_codes + 1, d)."""
        weights = [table.weight for table in self.codes.levels]
        return torch.cat([*weights, weights[0].new_zeros(1, weights[0].shape[1])])

    def item_codes(self, items: Tensor) -> Tensor:
        """The codes of ``items`` (...,) in the stacked numbering, (..., C); padding's are [MASK] (n_codes)."""
        codes = self.codes.stacked_codes(items)
        return codes.masked_fill(items[..., None] == 0, self.n_codes)

    def fuse(self, items: Tensor, codes: Tensor, stochastic: bool = True) -> Tensor:
        """(C2)-(C3) H of ``items`` (M,) (real items only) with ``codes`` (M, C) as their code tokens: (M, C, d).
        ``stochastic`` False: without dropout, also in training."""
        return self.fusion(F.embedding(codes, self.code_table()), self.views[items], stochastic)

    def candidates(self, items: Tensor) -> Tensor:
        """(C6) ê_i = normalise(mean_j H_ij + mean_j Z^c[c_ij]) of ``items`` (...,), each distinct item
        computed once: (..., d). The authors' candidate representation adds the mean code embedding
        to the pooled SFM output (their ``get_item_embedding``). Without dropout, also in training:
        a step asks for a candidate more than once (the target's score, then the softmax over the
        catalogue, whose chunks backward may recompute), and each must be the same vector."""
        distinct, where = items.unique(return_inverse=True)
        codes = self.item_codes(distinct)
        e = self.fuse(distinct, codes, stochastic=False).mean(1) + F.embedding(codes, self.code_table()).mean(1)
        e = torch.where((distinct == 0)[:, None], 0.0, e)  # padding: no item, a zero vector
        return F.normalize(e, dim=-1)[where]

    def candidate_table(self, start: int, end: int) -> Tensor:
        """(C6) for items start..end-1, (end - start, d). In evaluation without gradient the whole
        catalogue is computed once and kept, since evaluation asks for it once per batch of users.

        It is dropped by every ``train()`` / ``eval()`` call (evaluation calls ``eval()`` before each
        pass; training calls ``train()`` before each epoch) and whenever a parameter's version changes
        (in-place edits by ordinary ops: a loaded checkpoint, the weight average's update). The version
        alone is not enough: torch's fused AdamW (h2rec.optim, on CPU and CUDA) updates the weights
        without counting a version, and a table kept on versions alone outlived every optimizer step,
        so each validation after the first scored the users of the new weights against the items of
        the first (runs trained from 2026-11-30 23:30, fused AdamW's commit, to this fix)."""
        if self.training or torch.is_grad_enabled():
            return self.candidates(torch.arange(start, end, device=self.device))
        key = tuple((id(p), p._version) for p in self.parameters())
        if self._table is None or self._table[0] != key:
            self._table = (key, self.candidates(torch.arange(0, self.n_items + 1, device=self.device)))
        return self._table[1][start:end]

    def train(self, mode: bool = True) -> CCFRec:
        self._table = None  # see candidate_table: parameters may have moved without a version count
        return super().train(mode)

    # ----------------------------------------------------------------- user side
    def forward(self, items: Tensor, msg_level: Tensor | None = None,
                codes: Tensor | None = None) -> tuple[CCFRecEncoded, None]:
        """Encodes right-padded ``items`` (B, N). ``codes`` (B, N, C): the code tokens of each position
        (the code-masked view of (C7)); None: the items' own. ``msg_level`` is H2Rec's (L_MSG) and must
        be None; the second value is None, as H2Rec's without it."""
        if msg_level is not None:
            raise ValueError("ccfrec has no masked-granularity view (msg_level)")
        pad, is_mask = items == 0, items == self.mask_token
        real = ~pad & ~is_mask
        if codes is None:
            codes = self.item_codes(items.masked_fill(is_mask, 0))
        fused = self.fuse(items[real], codes[real])  # (M, C, d): the SFM on the real positions only
        e = fused.new_zeros(*items.shape, self.cfg.dim)
        e[real] = fused.mean(1)  # (C4) ẽ = mean_j H_j
        if is_mask.any():  # only BERT4Rec inputs hold mask tokens; others leave the vector without a gradient
            e[is_mask] = self.cloze_item
        h = fused.new_zeros(*items.shape, *fused.shape[1:])
        h[real] = fused
        return CCFRecEncoded(pad, self.encoder(e, pad), h), None  # (C5)

    def user(self, state: CCFRecState) -> Tensor:
        """(C6)'s user side: r / (‖r‖ τ), (P, d)."""
        return F.normalize(state.r, dim=-1) / self.tau

    # ----------------------------------------------------------------- scores, (C6)
    def score(self, state: CCFRecState, items: Tensor) -> Tensor:
        """(C6) cos(r, ê_i) / τ for given candidates: ``items`` (P, K) -> (P, K)."""
        return torch.einsum("pd,pkd->pk", self.user(state), self.candidates(items))

    def score_shared(self, state: CCFRecState, items: Tensor) -> Tensor:
        """(C6) for candidates shared by all positions: ``items`` (K,) -> (P, K)."""
        return self.user(state) @ self.candidates(items).T

    def score_range(self, state: CCFRecState, start: int, end: int) -> Tensor:
        """(C6) against items start..end-1 of the catalogue (0 = padding): (P, end - start)."""
        return self.user(state) @ self.candidate_table(start, end).T

    def score_all(self, state: CCFRecState) -> Tensor:
        """(C6) against the whole catalogue: (P, n + 1), column i for item i, column 0 = -inf."""
        scores = self.score_range(state, 0, self.n_items + 1)  # not the mask token's row
        scores[:, 0] = float("-inf")  # padding, never ranked
        return scores

    # ----------------------------------------------------------------- (C6) as one inner product
    def vector_parts(self) -> list[str]:
        """The blocks of ``user_vectors`` / ``item_vectors``, each ``cfg.dim`` wide."""
        return ["fused"]

    def user_vectors(self, state: CCFRecState) -> Tensor:
        """r / (‖r‖ τ), (P, d): its inner product with ``item_vectors`` is (C6)'s score."""
        return self.user(state)

    def item_vectors(self) -> Tensor:
        """ê of items 1..n, (n, d)."""
        return self.candidate_table(1, self.n_items + 1)
