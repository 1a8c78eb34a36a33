"""The training objective of Eq. 11: a ranking loss (Eq. 10 or an alternative) plus L_CA and L_MSG."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bpr(pos: Tensor, neg: Tensor) -> Tensor:
    """Eq. 10: -log σ(s+ - s-), averaged over positions (and negatives). (P,), (P, K) -> ()."""
    return -F.logsigmoid(pos[:, None] - neg).mean()


def bce(pos: Tensor, neg: Tensor) -> Tensor:
    """SASRec's binary cross-entropy: -log σ(s+) - Σ_k log(1 - σ(s-_k)), averaged over positions."""
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(1)).mean()


def sampled_softmax(pos: Tensor, neg: Tensor, accidental_hits: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy over the positive and K sampled negatives (negatives that equal the
    positive, ``accidental_hits`` (P, K), are left out)."""
    if accidental_hits is not None:
        neg = neg.masked_fill(accidental_hits, float("-inf"))
    logits = torch.cat([pos[:, None], neg], 1)
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device))


def full_cross_entropy(scores: Tensor, targets: Tensor) -> Tensor:
    """Softmax cross-entropy over the whole catalogue: (P, n + 1) scores, (P,) item targets."""
    return F.cross_entropy(scores, targets)


def contrastive(anchor: Tensor, other: Tensor, positives: Tensor, tau: float,
                exclude_positives: bool = False) -> Tensor:
    """One direction of Eq. 6-8 with cosine similarities:

        -1/B Σ_i log( Σ_{k ∈ P(i)} exp(cos(a_i, o_k)/τ) / Σ_j exp(cos(a_i, o_j)/τ) )

    ``positives`` (B, B) marks P(i). Eq. 7 and Eq. 8 sum the denominator over all j; Eq. 6 sums
    it over j != i, which is ``exclude_positives=True`` with P(i) = {i}.
    """
    sim = F.normalize(anchor, dim=-1) @ F.normalize(other, dim=-1).T / tau  # (B, B)
    numerator = torch.logsumexp(sim.masked_fill(~positives, float("-inf")), 1)
    denominator = torch.logsumexp(sim.masked_fill(positives, float("-inf")) if exclude_positives else sim, 1)
    return (denominator - numerator).mean()


def align_one_to_one(e_sid: Tensor, e_hid: Tensor, tau: float) -> Tensor:
    """Eq. 6: the 1-to-1 alignment of each item's SID and HID embeddings (one direction)."""
    eye = torch.eye(len(e_sid), dtype=torch.bool, device=e_sid.device)
    return contrastive(e_sid, e_hid, eye, tau, exclude_positives=True)


def code_guided_alignment(e_sid: Tensor, e_hid: Tensor, positives: Tensor, tau: float) -> Tensor:
    """L_CA = L_CA^1 + L_CA^2 (Eq. 7 and its mirror): SID anchors against HID positives, then the
    roles exchanged. ``positives`` is symmetric, so it serves both directions."""
    return contrastive(e_sid, e_hid, positives, tau) + contrastive(e_hid, e_sid, positives.T, tau)


def masked_granularity(u_sid: Tensor, u_masked: Tensor, tau: float) -> Tensor:
    """L_MSG = L_MSG^1 + L_MSG^2 (Eq. 8): each user's global and granularity-masked SID
    representations are a positive pair, the other users of the batch are negatives."""
    eye = torch.eye(len(u_sid), dtype=torch.bool, device=u_sid.device)
    return contrastive(u_sid, u_masked, eye, tau) + contrastive(u_masked, u_sid, eye, tau)


def alignment_positives(items: Tensor, codes: Tensor, rows: Tensor, positions: Tensor,
                        code_match: int, window: int) -> Tensor:
    """P(i) of Eq. 7 for B sampled sequence positions, as a (B, B) boolean matrix:
    the item itself (any position holding the same item), items sharing the first ``code_match``
    code levels (P_C; 0 = off), and items within ``window`` positions in the same sequence (P_H; 0 = off).

    ``items`` (B,) item indices, ``codes`` (B, L) their codes, ``rows``/``positions`` (B,) where they sit.
    """
    positives = items[:, None] == items[None, :]
    if code_match > 0:
        prefix = codes[:, :code_match]
        positives |= (prefix[:, None, :] == prefix[None, :, :]).all(-1)
    if window > 0:
        same_row = rows[:, None] == rows[None, :]
        positives |= same_row & ((positions[:, None] - positions[None, :]).abs() <= window)
    return positives
