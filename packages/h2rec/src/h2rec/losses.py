"""The training objective of Eq. 11: a ranking loss (Eq. 10 or an alternative) plus L_CA and L_MSG."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


# Ranking losses return one value per position, (P,); `reduce_positions` turns them into the batch loss.
def bpr(pos: Tensor, neg: Tensor, hits: Tensor | None = None) -> Tensor:
    """Eq. 10: -log σ(s+ - s-), averaged over the K negatives of a position. (P,), (P, K) -> (P,).

    ``hits`` (P, K) bool marks accidental hits (negative == the positive item): they are left out
    of the average, and a position whose negatives are all hits contributes 0.
    """
    per_negative = -F.logsigmoid(pos[:, None] - neg)
    if hits is None:
        return per_negative.mean(1)
    kept = (~hits).sum(1).clamp(min=1)  # clamp: an all-hit row is 0 / 1, not 0 / 0
    return per_negative.masked_fill(hits, 0.0).sum(1) / kept


def bce(pos: Tensor, neg: Tensor, hits: Tensor | None = None) -> Tensor:
    """SASRec's binary cross-entropy: -log σ(s+) - Σ_k log(1 - σ(s-_k)), accidental hits
    (``hits`` (P, K) bool) left out of the sum. -> (P,)."""
    negative_terms = F.logsigmoid(-neg)  # log(1 - σ(x)) = log σ(-x), finite for large x
    if hits is not None:
        negative_terms = negative_terms.masked_fill(hits, 0.0)
    return -(F.logsigmoid(pos) + negative_terms.sum(1))


def gbce(pos: Tensor, neg: Tensor, sampling_rate: float, t: float = 0.75, hits: Tensor | None = None) -> Tensor:
    """gBCE of gSASRec (Petrov & Macdonald, RecSys 2023, "gSASRec: Reducing Overconfidence in
    Sequential Recommendation Trained with Negative Sampling"):

        β = α (t (1 - 1/α) + 1/α),   loss = -β log σ(s+) - Σ_k log(1 - σ(s-_k)),

    with α = ``sampling_rate`` = K / (n_items - 1), the share of the negatives that is sampled, and
    calibration ``t`` ∈ [0, 1]: t = 0 gives β = 1 (plain ``bce``), t = 1 gives β = α. Accidental
    hits (``hits`` (P, K) bool) are left out of the sum. (P,), (P, K) -> (P,).
    """
    if not 0.0 < sampling_rate <= 1.0:
        raise ValueError(f"sampling_rate must lie in (0, 1], got {sampling_rate}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    beta = sampling_rate * (t * (1.0 - 1.0 / sampling_rate) + 1.0 / sampling_rate)
    negative_terms = F.logsigmoid(-neg)
    if hits is not None:
        negative_terms = negative_terms.masked_fill(hits, 0.0)
    # -log(σ(s+)^β) = -β log σ(s+): the log-sigmoid form stays finite where σ(s+)^β would underflow
    return -(beta * F.logsigmoid(pos) + negative_terms.sum(1))


def sampled_softmax_shared(pos: Tensor, neg: Tensor, log_q_pos: Tensor | None = None,
                           log_q_neg: Tensor | None = None, hits: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy of each position's positive against K negatives shared by all P
    positions of the batch, with the logQ correction (Bengio & Senécal 2008; Jean et al. 2015;
    Yi et al., RecSys 2019, "Sampling-bias-corrected neural modeling for large corpus item
    recommendations"):

        a_0 = s+ - log q(i+),   a_k = s-_k - log q(i_k),   loss = -log( exp(a_0) / Σ_{k=0..K} exp(a_k) ),

    where q is the probability of drawing an item from the proposal. ``pos`` (P,) positive scores,
    ``neg`` (P, K) the scores of the K shared negative items, ``log_q_pos`` (P,) and ``log_q_neg``
    (K,) their log q (None: no correction), ``hits`` (P, K) bool the accidental hits (negative ==
    that position's positive), removed from the denominator. -> (P,).

    The same function serves in-batch negatives: the negatives are the batch's distinct target
    items, q ∝ item popularity, and each position's own target among them is marked in ``hits``.
    log q(i+) must be finite (a positive the proposal can never draw makes the loss NaN).
    """
    if log_q_pos is not None:
        pos = pos - log_q_pos
    if log_q_neg is not None:
        neg = neg - log_q_neg[None, :]
    if hits is not None:
        neg = neg.masked_fill(hits, float("-inf"))
    logits = torch.cat([pos[:, None], neg], 1)
    return torch.logsumexp(logits, 1) - pos


def proposal_log_probs(popularity: Tensor, alpha: float) -> Tensor:
    """log q(i) of the shared-negative proposal q(i) ∝ popularity[i] ** alpha over items 1..n.

    ``popularity`` (n + 1,) per-item counts (index 0 = padding) -> (n + 1,): index 0 is -inf (never
    drawn); alpha = 0 is uniform over 1..n; with alpha > 0 an item of zero popularity has q = 0,
    log q = -inf, and is never drawn (nor may it be a positive under the logQ correction).
    A float ``popularity`` keeps its dtype, an integer one gives the default float dtype.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    dtype = popularity.dtype if popularity.is_floating_point() else torch.get_default_dtype()
    counts = popularity[1:].to(torch.float64)  # float64: alpha * log(count) and the normaliser lose nothing
    if (counts < 0).any():
        raise ValueError("popularity must be >= 0")
    if alpha == 0:
        weights = torch.zeros_like(counts)  # not 0 * log(0) = nan for unseen items
    else:
        if not (counts > 0).any():
            raise ValueError("popularity must be positive for some item when alpha > 0")
        weights = alpha * counts.log()
    log_q = weights - torch.logsumexp(weights, 0)
    padding = torch.full((1,), float("-inf"), dtype=torch.float64, device=popularity.device)
    return torch.cat([padding, log_q]).to(dtype)


def sample_shared(log_q: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` item indices drawn with replacement from the proposal ``log_q`` (n + 1,) (as from
    ``proposal_log_probs``; -inf entries, padding included, are never drawn), with the CPU
    ``generator`` for reproducibility. -> (k,) long, on ``log_q``'s device."""
    probs = log_q.detach().to("cpu", torch.float64).exp()  # drawn on the CPU, where the generator lives
    return torch.multinomial(probs, k, replacement=True, generator=generator).to(log_q.device)


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
    if code_match > 0:  # level by level, B x B comparisons: cheaper than grouping the prefixes (a sort)
        same_prefix = codes[:, None, 0] == codes[None, :, 0]
        for level in range(1, min(code_match, codes.shape[1])):
            same_prefix &= codes[:, None, level] == codes[None, :, level]
        positives |= same_prefix
    if window > 0:
        same_row = rows[:, None] == rows[None, :]
        positives |= same_row & ((positions[:, None] - positions[None, :]).abs() <= window)
    return positives
