"""The training objective of Eq. 11: a ranking loss (Eq. 10 or an alternative) plus L_CA and L_MSG."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


# Ranking losses return one value per position, (P,); `reduce_positions` turns them into the batch loss.
def bpr(pos: Tensor, neg: Tensor) -> Tensor:
    """Eq. 10: -log σ(s+ - s-), averaged over the K negatives of a position. (P,), (P, K) -> (P,)."""
    return -F.logsigmoid(pos[:, None] - neg).mean(1)


def bce(pos: Tensor, neg: Tensor) -> Tensor:
    """SASRec's binary cross-entropy: -log σ(s+) - Σ_k log(1 - σ(s-_k)). -> (P,)."""
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(1))


def sampled_softmax(pos: Tensor, neg: Tensor, accidental_hits: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy over the positive and K sampled negatives (negatives that equal the
    positive, ``accidental_hits`` (P, K), are left out). -> (P,)."""
    if accidental_hits is not None:
        neg = neg.masked_fill(accidental_hits, float("-inf"))
    logits = torch.cat([pos[:, None], neg], 1)
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device), reduction="none")


def full_cross_entropy(scores: Tensor, targets: Tensor) -> Tensor:
    """Softmax cross-entropy over the whole catalogue: (P, n + 1) scores, (P,) item targets -> (P,)."""
    return F.cross_entropy(scores, targets, reduction="none")


def reduce_positions(losses: Tensor, user_of: Tensor, how: str) -> Tensor:
    """The batch's ranking loss from per-position losses (P,).

    ``"mean"``: the mean over positions. ``"user_sum"``: Eq. 10 as written, Σ_u Σ_j, as a per-user
    sum over positions averaged over the batch's users (a long history weighs more, and the loss
    is larger next to the batch-averaged L_CA and L_MSG than with "mean").
    """
    if how == "mean":
        return losses.mean()
    per_user = torch.zeros(int(user_of.max()) + 1, dtype=losses.dtype, device=losses.device)
    per_user = per_user.index_add(0, user_of, losses)
    return per_user.sum() / user_of.unique().numel()


# exp((cos - 1) / tau) lies in [exp(-2 / tau), 1]: it never overflows, and in float32 it does not
# underflow while -2 / tau > -87, i.e. tau > 2 / 87. Below that the log-sum-exp form is used.
_DIRECT_EXP_MIN_TAU = 2 / 87


def contrastive_pair(a: Tensor, b: Tensor, positives: Tensor, tau: float,
                     exclude_positives: bool = False) -> tuple[Tensor, Tensor]:
    """Both directions of Eq. 6-8 from one cosine-similarity matrix, for a symmetric ``positives``:

        rows: -1/B Σ_i log( Σ_{k ∈ P(i)} exp(cos(a_i, b_k)/τ) / Σ_j exp(cos(a_i, b_j)/τ) )
        cols: the same with the roles of ``a`` and ``b`` exchanged.

    Eq. 7 and Eq. 8 sum the denominator over all j; Eq. 6 sums it over j != i, which is
    ``exclude_positives=True`` with P(i) = {i}.
    """
    cos = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (B, B)
    denominator_mask = ~positives if exclude_positives else torch.ones_like(positives)
    if tau > _DIRECT_EXP_MIN_TAU:
        e = torch.exp((cos - 1) / tau)  # the constant shift 1/tau cancels in each ratio
        pos, den = e * positives, e * denominator_mask
        rows = (den.sum(1).log() - pos.sum(1).log()).mean()
        cols = (den.sum(0).log() - pos.sum(0).log()).mean()
        return rows, cols
    sim = cos / tau
    pos = sim.masked_fill(~positives, float("-inf"))
    den = sim.masked_fill(~denominator_mask, float("-inf"))
    rows = (torch.logsumexp(den, 1) - torch.logsumexp(pos, 1)).mean()
    cols = (torch.logsumexp(den, 0) - torch.logsumexp(pos, 0)).mean()
    return rows, cols


def contrastive(anchor: Tensor, other: Tensor, positives: Tensor, tau: float,
                exclude_positives: bool = False) -> Tensor:
    """One direction of Eq. 6-8: ``anchor`` items against the ``other`` view."""
    return contrastive_pair(anchor, other, positives, tau, exclude_positives)[0]


def align_one_to_one(e_sid: Tensor, e_hid: Tensor, tau: float) -> Tensor:
    """Eq. 6: the 1-to-1 alignment of each item's SID and HID embeddings (one direction)."""
    eye = torch.eye(len(e_sid), dtype=torch.bool, device=e_sid.device)
    return contrastive(e_sid, e_hid, eye, tau, exclude_positives=True)


def code_guided_alignment(e_sid: Tensor, e_hid: Tensor, positives: Tensor, tau: float) -> Tensor:
    """L_CA = L_CA^1 + L_CA^2 (Eq. 7 and its mirror): SID anchors against HID positives, then the
    roles exchanged. ``positives`` must be symmetric (it is: P(i) is a symmetric relation)."""
    sid_to_hid, hid_to_sid = contrastive_pair(e_sid, e_hid, positives, tau)
    return sid_to_hid + hid_to_sid


def masked_granularity(u_sid: Tensor, u_masked: Tensor, tau: float) -> Tensor:
    """L_MSG = L_MSG^1 + L_MSG^2 (Eq. 8): each user's global and granularity-masked SID
    representations are a positive pair, the other users of the batch are negatives."""
    eye = torch.eye(len(u_sid), dtype=torch.bool, device=u_sid.device)
    global_to_masked, masked_to_global = contrastive_pair(u_sid, u_masked, eye, tau)
    return global_to_masked + masked_to_global


def alignment_positives(items: Tensor, codes: Tensor, rows: Tensor, positions: Tensor,
                        code_match: int, window: int) -> Tensor:
    """P(i) of Eq. 7 for B sampled sequence positions, as a (B, B) boolean matrix:
    the item itself (any position holding the same item), items sharing the first ``code_match``
    code levels (P_C; 0 = off), and items within ``window`` positions in the same sequence (P_H; 0 = off).

    ``items`` (B,) item indices, ``codes`` (B, L) their codes, ``rows``/``positions`` (B,) where they sit.
    """
    positives = items[:, None] == items[None, :]
    if code_match > 0:
        # one group id per distinct prefix, so the B x B comparison is of integers, not of tuples
        _, prefix_group = torch.unique(codes[:, :code_match], dim=0, return_inverse=True)
        positives |= prefix_group[:, None] == prefix_group[None, :]
    if window > 0:
        same_row = rows[:, None] == rows[None, :]
        positives |= same_row & ((positions[:, None] - positions[None, :]).abs() <= window)
    return positives
