"""H2Rec (paper §3): a SID branch and a HID branch over any ``srs_backbones`` encoder.

Built bottom-up: the granularity fusion (Eq. 2-3), the multi-granularity cross attention
(Eq. 4-5), then the two-branch model with its scores (Eq. 9). The baselines are the same class
with one branch: ``kind="hid"`` (hash IDs only: plain SASRec / GRU4Rec / BERT4Rec) and
``kind="sid"`` (semantic IDs only).

Indices: item ``i`` in 1..n is row ``i - 1`` of the semid folder, 0 is padding and ``n + 1`` is
BERT4Rec's mask token. Sequences are right-padded (see ``srs_backbones.protocol``).

Intent weights are computed per position from the item at that position (``alpha_t`` from
``e_t``), not once from the last item as in the paper: with a loss at every position, the
paper's ``alpha(e_N)`` would show each position a later item. At the last position, the one used
for inference, the two agree. See docs/model.md for this and the other choices.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from srs_backbones import attention_mask, build_encoder, split_states
from torch import Tensor, nn

from .config import ModelConfig
from .softmax import ScoreFactor


class GranularityFusion(nn.Module):
    """Eq. 2-3: importance weights over the L code levels from an anchor embedding."""

    def __init__(self, dim: int, levels: int, hidden: int, prior_decay: float):
        super().__init__()
        # b_prior: coarse levels start with more weight, respecting the residual structure (§3.2.1)
        self.prior = nn.Parameter(-prior_decay * torch.arange(levels, dtype=torch.float32))
        self.w1 = nn.Linear(dim + levels, hidden)
        self.w2 = nn.Linear(hidden, levels)

    def forward(self, anchor: Tensor) -> Tensor:
        prior = self.prior.expand(*anchor.shape[:-1], -1)
        # Eq. 2: s = W2 σ(W1 [e; b_prior] + b1) + b2 + b_prior, with σ = ReLU
        s = self.w2(F.relu(self.w1(torch.cat([anchor, prior], -1)))) + self.prior
        return torch.softmax(s, -1)  # Eq. 3: alpha_l = exp(s_l) / Σ_k exp(s_k)


class MultiGranularityCrossAttention(nn.Module):
    """Eq. 4-5: the HID sequence queries each level's SID sequence; all L levels in two matrix products.

    Causal when the backbone is (position t attends to positions <= t), padding-masked otherwise.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.w_q = nn.Linear(dim, dim, bias=False)  # W^Q, W^K, W^V of Eq. 4, shared by all levels
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)

    def forward(self, e_hid: Tensor, levels: Tensor, alpha: Tensor, padding_mask: Tensor, causal: bool) -> Tensor:
        """``e_hid`` (B, N, d), ``levels`` (B, N, L, d) (cheapest as the transpose of a contiguous
        (B, L, N, d)), ``alpha`` (B, N, L) -> E^f (B, N, d).

        Computed without projecting the L levels: since W^K and W^V are shared by the levels,
        Q K_l^T = (Q W^K) E_g^l^T, and Σ_l alpha_l A_l V_l = (Σ_l alpha_l A_l E_g^l) W^V with A_l the
        attention weights of level l. One product scores every level's keys, (B, N, L·N), and one
        sums the alpha-weighted attention over every level's values: 3 (d x d) projections of N
        rows instead of 2L + 1, and no (B, L, N, d) tensor of per-level outputs."""
        b, n, n_levels, d = levels.shape
        keys = levels.transpose(1, 2).reshape(b, n_levels * n, d)  # (B, L·N, d), key l·N + m; a view when
        # ``levels`` is a transposed (B, L, N, d)
        q = self.w_q(e_hid) @ self.w_k.weight * (1.0 / math.sqrt(d))  # Eq. 4's Q W^K / sqrt(d), (B, N, d)
        scores = (q @ keys.transpose(1, 2)).view(b, n, n_levels, n)  # (B, N, L, N): Q K_l^T / sqrt(d)
        if causal:
            visible = torch.ones(n, n, dtype=torch.bool, device=levels.device).tril()[None, :, None, :]
        else:
            visible = attention_mask(padding_mask, causal)  # (B, 1, 1, N)
        weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), -1)  # A_l, per level
        # Eq. 5: E^f = Σ_l alpha_l · A_l V_l + E^hid
        mixed = (weights * alpha[..., None]).view(b, n, n_levels * n) @ keys  # Σ_l alpha_l A_l E_g^l, (B, N, d)
        return self.w_v(mixed) + e_hid


def weighted_levels(table: Tensor, rows: Tensor, weights: Tensor | None = None) -> Tensor:
    """Σ_l weights_l table[rows_l] for ``rows`` (..., L) and ``weights`` (..., L) (None: all ones) ->
    (..., d): one embedding bag, without the (..., L, d) tensor of the vectors it sums."""
    flat = rows.reshape(-1, rows.shape[-1])
    per_sample = None if weights is None else weights.reshape(flat.shape)
    return F.embedding_bag(flat, table, per_sample_weights=per_sample, mode="sum").view(*rows.shape[:-1], -1)


def at_last(x: Tensor, padding_mask: Tensor) -> Tensor:
    """``x`` (B, N, ...) at each row's last real position (right padding) -> (B, ...)."""
    lengths = (~padding_mask).sum(1)
    return x[torch.arange(len(x), device=x.device), (lengths - 1).clamp(min=0)]


@dataclass
class Encoded:
    """Per-position outputs of a forward pass, each (B, N, ...); ``None`` where a branch is absent."""

    padding_mask: Tensor  # (B, N)
    u_sid: Tensor | None  # f_θ1 output, (B, N, d)
    u_hid: Tensor | None  # f_θ2 output, (B, N, d)
    alpha: Tensor | None  # Eq. 3 weights, (B, N, L)
    e_sid: Tensor | None  # Eq. 3 fused SID item embeddings, (B, N, d)
    e_hid: Tensor | None  # HID item embeddings, (B, N, d)

    def select(self, where: Tensor) -> UserState:
        """User states at the positions where ``where`` (B, N) is True, flattened to (P, ...)."""
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[where]

        return UserState(pick(self.u_sid), pick(self.u_hid), pick(self.alpha))

    def last(self) -> UserState:
        """User states at each row's last real position (the next-item prediction)."""

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else at_last(t, self.padding_mask)

        return UserState(pick(self.u_sid), pick(self.u_hid), pick(self.alpha))


@dataclass
class UserState:
    """The user side of Eq. 9 at P positions: [u^sid : u^hid] and the intent weights."""

    u_sid: Tensor | None  # (P, d)
    u_hid: Tensor | None  # (P, d)
    alpha: Tensor | None  # (P, L)


def pca_init(text: Tensor, dim: int, std: float, generator: torch.Generator) -> Tensor:
    """Algorithm 1 line 6: the text embeddings' top principal components, scaled to ``std``."""
    centred = text.double() - text.double().mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    k = min(dim, vh.shape[0])
    rows = (centred @ vh[:k].T).float()  # (n, k)
    rows = rows * (std / rows.std().clamp_min(1e-12))
    if k < dim:
        rows = torch.cat([rows, torch.randn(len(rows), dim - k, generator=generator) * std], 1)
    return rows


def id_table(cfg: ModelConfig, n_items: int, text_embeddings: Tensor | None,
             generator: torch.Generator) -> nn.Embedding:
    """An item ID table of n + 2 rows (row 0: padding, zero; row n + 1: BERT4Rec's mask token), drawn
    from N(0, init_std), with the items' rows from the text embeddings' principal components when
    ``cfg.pca_init`` (Algorithm 1 line 6; ``generator`` fills what PCA leaves short of d)."""
    table = nn.Embedding(n_items + 2, cfg.dim, padding_idx=0)
    nn.init.normal_(table.weight, std=cfg.init_std)
    with torch.no_grad():
        if cfg.pca_init:
            if text_embeddings is None:
                raise ValueError("pca_init needs the items' text embeddings (semid folder without embeddings)")
            table.weight[1 : n_items + 1] = pca_init(text_embeddings, cfg.dim, cfg.init_std, generator)
        table.weight[0].zero_()
    return table


def sequence_encoder(cfg: ModelConfig, max_len: int) -> nn.Module:
    """The ``srs_backbones`` encoder ``cfg.backbone`` names, with the model's sizes and dropouts."""
    options = {"dim": cfg.dim, "dropout": cfg.dropout, "emb_dropout": cfg.emb_dropout, "max_len": max_len,
               "num_layers": cfg.num_layers}
    if cfg.backbone != "gru4rec":  # a GRU has no attention heads
        options.update(num_heads=cfg.num_heads, attn_dropout=cfg.attn_dropout)
    options.update(cfg.backbone_options)
    return build_encoder(cfg.backbone, **options)


class H2Rec(nn.Module):
    score_equation = "Eq. 9"  # the score an export's vectors reproduce, named in its manifest

    def __init__(self, cfg: ModelConfig, n_items: int, max_len: int, code_embedding: nn.Module | None = None,
                 text_embeddings: Tensor | None = None):
        """``code_embedding``: a ``semid`` CodeEmbedding (combine="levels", padding_idx0=True) holding
        every item's codes and one table per level, initialised from the codebooks (Algorithm 1
        line 7). Required unless ``cfg.kind == "hid"``. ``text_embeddings`` (n, D) feed the PCA
        initialisation of the HID table when ``cfg.pca_init``."""
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.mask_token = n_items + 1  # BERT4Rec's cloze token
        d = cfg.dim
        self.has_sid = cfg.kind in ("h2rec", "sid")
        self.has_hid = cfg.kind in ("h2rec", "hid")
        g = torch.Generator().manual_seed(0)  # parameters themselves are seeded by the caller

        if self.has_hid:
            self.hid = id_table(cfg, n_items, text_embeddings, g)

        if self.has_sid:
            if code_embedding is None:
                raise ValueError(f"model kind {cfg.kind!r} needs the items' semantic IDs")
            self.codes = code_embedding
            self.n_levels = code_embedding.n_columns
            # learned stand-ins for the code embeddings of BERT4Rec's mask token (it has no codes)
            self.cloze_levels = nn.Parameter(torch.randn(self.n_levels, d, generator=g) * cfg.init_std)
            # L_MSG's granularity mask token, one per level (§3.3.2)
            self.msg_mask = nn.Parameter(torch.randn(self.n_levels, d, generator=g) * cfg.init_std)
            self.fusion = (GranularityFusion(d, self.n_levels, cfg.fusion_hidden or d, cfg.prior_decay)
                           if cfg.fusion else None)

        self.mca = MultiGranularityCrossAttention(d) if cfg.kind == "h2rec" and cfg.mca else None
        self.f_sid = sequence_encoder(cfg, max_len) if self.has_sid else None  # f_θ1
        self.f_hid = None  # f_θ2
        if self.has_hid:
            share = cfg.share_encoders and self.has_sid
            self.f_hid = self.f_sid if share else sequence_encoder(cfg, max_len)
        self.causal = (self.f_sid or self.f_hid).causal

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------- item side
    def level_lookup(self, items: Tensor, msg: bool = False) -> tuple[Tensor, Tensor]:
        """The per-level vectors of ``items`` (...,) as rows of one table: (table, rows (..., L)).

        The table stacks the L level tables end to end, then the zero row of padding, then (only
        when ``items`` hold BERT4Rec's mask token) its L learned stand-ins ``cloze_levels``, then
        (only with ``msg``) L_MSG's L granularity mask tokens (their rows: :meth:`msg_rows`).
        ``table[rows]`` is E_g^1 .. E_g^L. A parameter left out of the table gets no gradient, as
        when it was not used."""
        is_mask = items == self.mask_token
        cloze = not self.causal and bool(is_mask.any())  # only BERT4Rec inputs hold mask tokens
        n_codes = self.codes.n_codes
        parts = [table.weight for table in self.codes.levels] + [self.msg_mask.new_zeros(1, self.cfg.dim)]
        rows = self.codes.stacked_codes(items.masked_fill(is_mask, 0) if cloze else items)
        rows = rows.masked_fill((items == 0)[..., None], n_codes)  # padding: the zero row
        if cloze:
            parts.append(self.cloze_levels)
            rows = torch.where(is_mask[..., None], torch.arange(n_codes + 1, n_codes + 1 + self.n_levels,
                                                                  device=rows.device), rows)
        if msg:
            parts.append(self.msg_mask)
        return torch.cat(parts), rows

    def msg_rows(self, table: Tensor) -> Tensor:
        """(L,) rows of L_MSG's mask tokens in a table of :meth:`level_lookup` made with ``msg``."""
        return torch.arange(len(table) - self.n_levels, len(table), device=table.device)

    def code_levels(self, items: Tensor) -> Tensor:
        """Per-level code embeddings E_g^l of ``items`` (...,) -> (..., L, d); zero for padding."""
        table, rows = self.level_lookup(items)
        return F.embedding(rows, table)

    def intent(self, anchor: Tensor) -> Tensor:
        """Eq. 2-3 weights (..., L) from the ``anchor`` (..., d): the HID embedding e_t, or for the
        ``sid`` baseline, which has no HID table, the item's summed code embeddings."""
        if self.fusion is None:  # "w/o FN": fixed equal weights
            return anchor.new_full((*anchor.shape[:-1], self.n_levels), 1.0 / self.n_levels)
        return self.fusion(anchor)

    # ----------------------------------------------------------------- user side
    def forward(self, items: Tensor, msg_level: Tensor | None = None) -> tuple[Encoded, Tensor | None]:
        """Encodes right-padded ``items`` (B, N). With ``msg_level`` (B,) it also encodes the
        granularity-masked view of L_MSG (level ``msg_level[b]`` replaced by a mask token) and
        returns its f_θ1 state at each row's last real position (B, d) as the second value."""
        pad = items == 0
        e_hid = self.hid(items) if self.has_hid else None
        u_sid = u_hid = alpha = e_sid = masked = levels = None
        if self.has_sid:
            # every level's rows of one table: the weighted sums of Eq. 3 are embedding bags, and no
            # (B, N, L, d) tensor is made unless the cross attention reads one
            table, rows = self.level_lookup(items, msg=msg_level is not None)
            if self.mca is not None:
                levels = F.embedding(rows.transpose(1, 2), table).transpose(1, 2)  # (B, N, L, d): E_g^1 .. E_g^L
            alpha = self.intent(e_hid if e_hid is not None else weighted_levels(table, rows))  # (B, N, L)
            e_sid = weighted_levels(table, rows, alpha)  # Eq. 3: E^sid = Σ_l alpha_l E_g^l
            if msg_level is None:
                u_sid = self.f_sid(e_sid, pad)
            else:
                hide = F.one_hot(msg_level, self.n_levels).bool()[:, None, :]  # (B, 1, L)
                e_masked = weighted_levels(table, torch.where(hide, self.msg_rows(table), rows), alpha)
                # both views through f_θ1 in one call (half the per-call overhead); L_MSG reads the
                # masked view at the last position only, so the last block computes that position alone
                u_sid, masked = split_states(self.f_sid, torch.cat([e_sid, e_masked]), torch.cat([pad, pad]),
                                             len(items))
        if self.has_hid:
            fused = self.mca(e_hid, levels, alpha, pad, self.causal) if self.mca is not None else e_hid
            u_hid = self.f_hid(fused, pad)
        return Encoded(pad, u_sid, u_hid, alpha, e_sid, e_hid), masked

    # ----------------------------------------------------------------- scores, Eq. 9
    def candidate_weights(self, state: UserState) -> Tensor:
        """How a candidate's SID embedding weighs its levels: the user's current intent (the
        paper's alpha at inference) or uniform (the authors' code averages code embeddings)."""
        if self.cfg.candidate_weights == "intent":
            return state.alpha
        return state.alpha.new_full(state.alpha.shape, 1.0 / self.n_levels)

    def score(self, state: UserState, items: Tensor) -> Tensor:
        """Eq. 9 for given candidates: ``items`` (P, K) -> scores (P, K)."""
        total = 0.0
        if self.has_hid:
            total = total + torch.einsum("pd,pkd->pk", state.u_hid, self.hid(items))
        if self.has_sid:
            w = self.candidate_weights(state)  # (P, L)
            table, rows = self.level_lookup(items)  # rows (P, K, L)
            e_sid = weighted_levels(table, rows, w[:, None, :].expand(rows.shape))  # each candidate's e^sid, (P, K, d)
            total = total + (state.u_sid[:, None, :] * e_sid).sum(-1)
        return total

    def score_shared(self, state: UserState, items: Tensor) -> Tensor:
        """Eq. 9 for candidates shared by all positions (sampled negatives): ``items`` (K,) -> (P, K).
        One matrix product per branch and level, no (P, K, d) gather."""
        total = 0.0
        if self.has_hid:
            total = total + state.u_hid @ self.hid(items).T
        if self.has_sid:
            w = self.candidate_weights(state)  # (P, L)
            levels = self.code_levels(items)  # (K, L, d)
            for level in range(self.n_levels):
                total = total + w[:, level, None] * (state.u_sid @ levels[:, level].T)
        return total

    def code_incidence(self, start: int, end: int) -> Tensor:
        """(end - start, ΣK_l) sparse CSR matrix for items start..end-1: row r has a one at item
        start + r's code on each level (level l's codes counted from the end of level l-1's table);
        item 0, the padding item, has an empty row."""
        items = torch.arange(max(start, 1), end, device=self.device)
        cols = self.codes.stacked_codes(items).reshape(-1)
        crow = torch.arange(0, cols.numel() + 1, self.n_levels, device=cols.device)
        if start == 0:
            crow = F.pad(crow, (1, 0))
        size = (end - start, self.codes.n_codes)
        with warnings.catch_warnings():  # torch flags sparse CSR as beta; CSR @ dense is long stable
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, cols, torch.ones(cols.numel(), device=cols.device), size)

    def score_range(self, state: UserState, start: int, end: int) -> Tensor:
        """Eq. 9 against items start..end-1 of the catalogue (0 is padding): (P, end - start).

        The SID part is factorised per level: u^sid against every code of every level (P, ΣK_l),
        weighted by the level weights, then summed into items through the sparse item x code matrix
        (L ones per item). That is n·L·P work with no (P, n, d) tensor of candidate embeddings and
        no L gathers of a (P, n) matrix. CSR @ dense gives (n, P); its one transposing copy is the
        output, and the HID part is added into it in place.
        """
        hid = self.hid.weight[start:end] if self.has_hid else None
        if not self.has_sid:
            return state.u_hid @ hid.T
        scores = (self.code_incidence(start, end) @ self.per_code_scores(state).T.contiguous()).T.contiguous()
        if self.has_hid:
            scores.addmm_(state.u_hid, hid.T)
        return scores

    def per_code_scores(self, state: UserState) -> Tensor:
        """u^sid against every code of every level, each level weighted as candidates weigh it: (P, ΣK_l)."""
        w = self.candidate_weights(state)  # (P, L)
        return torch.cat([w[:, level, None] * (state.u_sid @ table.weight.T)
                          for level, table in enumerate(self.codes.levels)], dim=1)

    def score_factors(self, state: UserState) -> list[ScoreFactor]:
        """Eq. 9 over items 1..n as a sum of inner products, for the tiled softmax (h2rec.softmax):
        u^hid against the ID table, and the per-code scores against the sparse item x code matrix (as
        ``score_range`` factorises the SID part)."""
        factors = []
        if self.has_hid:
            factors.append(ScoreFactor(state.u_hid, self.hid.weight[1 : self.n_items + 1]))
        if self.has_sid:
            factors.append(ScoreFactor(self.per_code_scores(state), self.code_incidence(1, self.n_items + 1)))
        return factors

    def score_all(self, state: UserState) -> Tensor:
        """Eq. 9 against the whole catalogue: (P, n + 1), column i for item i, column 0 = -inf."""
        scores = self.score_range(state, 0, self.n_items + 1)  # not the mask token's row
        scores[:, 0] = float("-inf")  # padding, never ranked; in place, so no second (P, n + 1) copy
        return scores

    # ----------------------------------------------------------------- Eq. 9 as one inner product
    @property
    def levels_follow_the_user(self) -> bool:
        """Whether a candidate's level weights in Eq. 9 are the user's intent (Eq. 3, from the fusion
        network), so differ per user. Uniform weights, or "w/o FN" (alpha fixed at 1/L), do not."""
        return self.has_sid and self.cfg.candidate_weights == "intent" and self.fusion is not None

    def vector_parts(self) -> list[str]:
        """The blocks of ``user_vectors`` / ``item_vectors``, in order, each ``cfg.dim`` wide."""
        parts = ["hid"] if self.has_hid else []
        if self.has_sid:
            parts += ([f"sid_level_{level + 1}" for level in range(self.n_levels)] if self.levels_follow_the_user
                      else ["sid"])
        return parts

    def user_vectors(self, state: UserState) -> Tensor:
        """The user side of Eq. 9 as one vector per position, (P, D), such that
        ``user_vectors(state) @ item_vectors().T == score_all(state)[:, 1:]`` (up to rounding).

        [u^hid ⊕ alpha_1 u^sid ⊕ ... ⊕ alpha_L u^sid] when the level weights follow the user: the
        weighted sum over levels moves to the user side, since u^sid · Σ_l alpha_l E^l[c_j^l] =
        Σ_l (alpha_l u^sid) · E^l[c_j^l]. Otherwise [u^hid ⊕ u^sid]; absent branches drop out."""
        parts = []
        if self.has_hid:
            parts.append(state.u_hid)
        if self.has_sid:
            if self.levels_follow_the_user:
                w = self.candidate_weights(state)  # (P, L)
                parts.append((w[:, :, None] * state.u_sid[:, None, :]).flatten(1))  # (P, L·d)
            else:
                parts.append(state.u_sid)
        return torch.cat(parts, 1)

    def item_vectors(self) -> Tensor:
        """The item side of ``user_vectors`` for items 1..n, (n, D): [e^hid ⊕ E^1[c^1] ⊕ ... ⊕ E^L[c^L]]
        when the level weights follow the user, else [e^hid ⊕ e^sid] with e^sid the mean of the levels
        (the fixed weights are 1/L)."""
        items = torch.arange(1, self.n_items + 1, device=self.device)
        parts = []
        if self.has_hid:
            parts.append(self.hid(items))
        if self.has_sid:
            levels = self.code_levels(items)  # (n, L, d)
            parts.append(levels.flatten(1) if self.levels_follow_the_user else levels.mean(1))
        return torch.cat(parts, 1)
