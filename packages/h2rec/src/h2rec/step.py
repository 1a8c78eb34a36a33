"""One optimizer step's loss (Algorithm 1, lines 9-14): the batch's targets, negatives drawn from
the run's generator, the ranking loss (Eq. 10 or its replacements in h2rec.losses) and, for H2Rec,
Eq. 11's alignment losses; the rivals' extra terms (LLM-ESR's self-distillation, MELT's branches,
CCFRec's code masking).
Under torchrun each process computes its share of a batch (h2rec.distributed).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from srs_backbones import cloze_mask

from .config import TrainConfig
from .distributed import Shard, gather_rows
from .losses import (
    alignment_positives,
    bce,
    bpr,
    code_guided_alignment,
    gbce,
    masked_granularity,
    proposal_log_probs,
    reduce_positions,
    sample_shared,
    sampled_softmax_shared,
)
from .model import H2Rec
from .rivals.ccfrec_masking import code_masking_losses, draw_code_mask, uses_code_masking
from .rivals.llmesr_distill import RetrievalDistillation
from .rivals.melt_branches import BilateralBranches
from .rivals.pcrca_align import batch_items, contrastive_losses
from .softmax import ScoreFactor, softmax_cross_entropy


def sample_negatives(gen: torch.Generator, n_items: int, exclude: torch.Tensor, k: int) -> torch.Tensor:
    """(P, k) items uniform over 1..n, re-drawn (a few rounds) where they hit ``exclude`` (P, W),
    the user's own items."""
    neg = torch.randint(1, n_items + 1, (len(exclude), k), generator=gen)
    for _ in range(5):
        hit = (neg[:, :, None] == exclude[:, None, :]).any(-1)
        if not hit.any():
            break
        neg[hit] = torch.randint(1, n_items + 1, (int(hit.sum()),), generator=gen)
    return neg


def sampler_log_q(cfg: TrainConfig, popularity: np.ndarray) -> torch.Tensor | None:
    """(n + 1,) log-probabilities of the sampled-softmax proposal (None for other losses): uniform,
    training popularity ** alpha, or, for in-batch negatives, popularity itself (an item is a
    batch's target in proportion to its training count)."""
    if cfg.loss != "sampled_softmax":
        return None
    alpha = {"uniform": 0.0, "popularity": cfg.popularity_alpha, "in_batch": 1.0}[cfg.sampler]
    return proposal_log_probs(torch.as_tensor(popularity, dtype=torch.float64), alpha).float()


def seen_pairs(items: torch.Tensor, targets: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(position, item) pairs of the items each target position has already seen: the inputs of its
    row up to and including its own column, except the target itself (a repeat stays a class).
    Positions are numbered as ``targets[where]``; only the past is read."""
    rows, cols = where.nonzero(as_tuple=True)
    history = items[rows]  # (P, W - 1)
    past = torch.arange(items.shape[1])[None, :] <= cols[:, None]
    keep = past & (history > 0) & (history != targets[rows, cols][:, None])
    position, column = keep.nonzero(as_tuple=True)
    return position, history[position, column]


def score_factors(model, state) -> list[ScoreFactor]:
    """The model's score over items 1..n as inner products (h2rec.softmax): its own factorisation
    where it has one (H2Rec: the SID part through the item x code matrix), else the vectors an
    export writes, whose inner product is the score (``user_vectors`` / ``item_vectors``)."""
    if hasattr(model, "score_factors"):
        return model.score_factors(state)
    return [ScoreFactor(model.user_vectors(state), model.item_vectors())]


def draw_negatives(model: H2Rec, targets: torch.Tensor, exclude: torch.Tensor, cfg: TrainConfig,
                   gen: torch.Generator, log_q: torch.Tensor | None = None) -> torch.Tensor | None:
    """The negatives of the positive ``targets`` (P,), from ``gen``: None for ``ce`` (the whole
    catalogue), the (K,) items shared by the batch for ``sampled_softmax`` (its distinct targets for
    the in-batch sampler; ``log_q`` is the proposal of :func:`sampler_log_q`), else (P, K) items per
    position outside ``exclude`` (P, W), the user's items."""
    if cfg.loss == "ce":
        return None
    if cfg.loss == "sampled_softmax":
        if log_q is None:
            raise ValueError("sampled_softmax needs the proposal's log-probabilities (sampler_log_q)")
        return targets.unique() if cfg.sampler == "in_batch" else sample_shared(log_q, cfg.sampled_negatives, gen)
    return sample_negatives(gen, model.n_items, exclude, cfg.num_negatives)


def ranking_loss(model: H2Rec, state, targets: torch.Tensor, exclude: torch.Tensor, cfg: TrainConfig,
                 gen: torch.Generator, log_q: torch.Tensor | None = None,
                 seen: tuple[torch.Tensor, torch.Tensor] | None = None,
                 negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Per-position ranking losses (P,) of the positive ``targets`` (P,): against the whole
    catalogue (``ce``), negatives shared by the batch (``sampled_softmax``; ``log_q`` is the
    proposal of :func:`sampler_log_q`), or negatives sampled per position outside ``exclude``
    (P, W), the user's items (``bpr``, ``bce``, ``gbce``). Accidental hits never count as negatives.
    ``seen`` (ce): (position, item) pairs left out of the softmax (:func:`seen_pairs`).
    ``negatives``: drawn already (:func:`draw_negatives`); None: drawn here."""
    device = model.device
    targets_d = targets.to(device)
    if cfg.loss == "ce":
        target_scores = model.score(state, targets_d[:, None])[:, 0]
        seen_d = None if seen is None else (seen[0].to(device), seen[1].to(device))
        return softmax_cross_entropy(score_factors(model, state), model.n_items, target_scores, cfg.label_smoothing,
                                     seen_d, cfg.ce_chunk_items)
    if negatives is None:
        negatives = draw_negatives(model, targets, exclude, cfg, gen, log_q)
    if cfg.loss == "sampled_softmax":
        shared_d = negatives.to(device)
        pos = model.score(state, targets_d[:, None])[:, 0]
        neg = model.score_shared(state, shared_d)  # (P, K)
        log_q = log_q.to(device)
        return sampled_softmax_shared(pos, neg, log_q[targets_d] if cfg.logq else None,
                                      log_q[shared_d] if cfg.logq else None, targets_d[:, None] == shared_d[None, :])
    scores = model.score(state, torch.cat([targets[:, None], negatives], 1).to(device))  # (P, 1 + K)
    pos, neg = scores[:, 0], scores[:, 1:]
    hits = (negatives == targets[:, None]).to(device)
    if cfg.loss == "bpr":
        return bpr(pos, neg, hits)
    if cfg.loss == "bce":
        return bce(pos, neg, hits)
    return gbce(pos, neg, sampling_rate=cfg.num_negatives / max(model.n_items - 1, 1), t=cfg.gbce_t, hits=hits)


def next_item_targets(rows: torch.Tensor, first_target: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-item targets (B, W - 1) of right-padded causal rows (B, W); target 0 = none.
    Positions before ``first_target`` (B,) keep their input but lose their target, which another
    window trains (see :class:`~h2rec.data.TrainingWindows`)."""
    items = rows[:, :-1] * (rows[:, 1:] != 0)
    targets = rows[:, 1:]
    if first_target is not None:
        targets = targets * (torch.arange(targets.shape[1])[None, :] >= first_target[:, None])
    return items, targets


def training_step(model: H2Rec, rows: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
                  first_target: torch.Tensor | None = None, log_q: torch.Tensor | None = None,
                  distill: RetrievalDistillation | None = None, owners: torch.Tensor | None = None,
                  melt: BilateralBranches | None = None, shard: Shard | None = None) -> dict[str, torch.Tensor]:
    """Eq. 11 on one batch of right-padded training rows (CPU); returns the loss parts.
    ``first_target`` (B,): causal input positions before it only give context (see
    :class:`~h2rec.data.TrainingWindows`); ``log_q``: the sampled-softmax proposal; ``distill`` and
    ``owners`` (B,): LLM-ESR's self-distillation and the user of each row that is its user's latest
    window (-1 otherwise; see h2rec.rivals.llmesr_distill); ``melt``: MELT's branches, the epoch's next
    batch of head users and items (see h2rec.rivals.melt_branches). A ccfrec model's code masks and
    their losses need nothing from the caller (see h2rec.rivals.ccfrec_masking).

    ``shard`` (under torchrun): this process computes its rows of the batch, and each part is its
    share, such that DistributedDataParallel's mean of the gradients is one process's gradient
    (h2rec.distributed). The random draws are made for the whole batch either way, in one order."""
    # the batch's random draws, all from ``gen`` and for all of its rows
    if model.causal:
        items, targets = next_item_targets(rows, first_target)
    else:  # BERT4Rec's cloze task, in both branches (cloze windows do not overlap)
        items, targets = cloze_mask(rows, mask_token=model.mask_token, mask_prob=cfg.mask_prob, generator=gen)
    use_ca = model.cfg.kind == "h2rec" and cfg.beta > 0
    use_msg = model.cfg.kind == "h2rec" and cfg.gamma > 0
    msg_level = torch.randint(0, model.n_levels, (len(rows),), generator=gen) if use_msg else None
    where = targets > 0
    row_of = torch.arange(len(rows))[:, None].expand_as(targets)[where]
    negatives = draw_negatives(model, targets[where], rows[row_of], cfg, gen, log_q)
    if use_ca:  # L_CA's item positions (row, column), at most ca_max_items of them
        b, t = (items > 0).logical_and(items != model.mask_token).nonzero(as_tuple=True)
        if len(b) > cfg.ca_max_items:
            keep = torch.randperm(len(b), generator=gen)[: cfg.ca_max_items]
            b, t = b[keep], t[keep]
        sampled = items[b, t]
    # PCR-CA's item-level contrast (P5): the whole batch's items, drawn before the batch is shared out
    use_contrast = model.cfg.kind == "pcrca"
    contrast_items = (batch_items(rows, cfg.contrast_max_items, gen)
                      if use_contrast and cfg.item_contrast_weight > 0 else None)
    # CCFRec's code masks (C7), for every row of the batch
    code_mask = draw_code_mask(items, model, cfg.code_mask_ratio, gen) \
        if uses_code_masking(model, cfg.mcm_weight, cfg.msa_weight) else None

    ghost = False
    if shard is not None:  # this process's rows of the batch; what it draws follows its rows
        batch = {"rows": len(rows), "targets": len(row_of), "users": row_of.unique().numel(),
                 "students": 0 if distill is None else int(distill.students(owners).sum())}
        mine, ghost = shard.rows(len(rows))
        width = int(rows[mine].ne(0).sum(1).max())  # its own right padding only
        items, targets, rows = items[mine, :width], targets[mine, :width], rows[mine, :width]
        msg_level = None if msg_level is None else msg_level[mine]
        code_mask = None if code_mask is None else code_mask.rows(mine, width)
        owners = None if owners is None else owners[mine]
        if negatives is not None and cfg.loss != "sampled_softmax":  # (P, K): its rows' positions
            negatives = negatives[torch.isin(row_of, mine)]
        where = targets > 0
        row_of = torch.arange(len(rows))[:, None].expand_as(targets)[where]

    device = model.device
    encoded, masked = model(items.to(device), None if msg_level is None else msg_level.to(device))
    seen = seen_pairs(items, targets, where) if cfg.exclude_seen and model.causal else None
    losses = ranking_loss(model, encoded.select(where.to(device)), targets[where], rows[row_of], cfg, gen, log_q,
                          seen, negatives)
    if shard is None:
        parts = {"rec": reduce_positions(losses, row_of.to(device), cfg.rec_reduction)}  # Eq. 10
    else:  # Eq. 10's mean over the batch's positions (or users): this process's sum over their count
        parts = {"rec": shard.share(losses.sum(), batch["targets" if cfg.rec_reduction == "mean" else "users"],
                                    ghost)}
    total = parts["rec"]

    if use_ca:
        sampled, b_d, t_d = sampled.to(device), b.to(device), t.to(device)
        positives = alignment_positives(sampled, model.codes.item_codes(sampled), b_d, t_d, cfg.code_match, cfg.window)
        if shard is None:
            e_sid, e_hid = encoded.e_sid[b_d, t_d], encoded.e_hid[b_d, t_d]
        else:  # the batch's sampled positions, each from the process that holds its row
            holders = shard.holders(b)
            own = holders[shard.group.rank]
            local_b, local_t = shard.local(b[own]).to(device), t[own].to(device)
            e_sid = gather_rows(encoded.e_sid[local_b, local_t], holders, shard.group)
            e_hid = gather_rows(encoded.e_hid[local_b, local_t], holders, shard.group)
        parts["ca"] = code_guided_alignment(e_sid, e_hid, positives, cfg.tau)
        total = total + cfg.beta * parts["ca"]  # Eq. 11
    if use_msg:
        u_sid, u_masked = encoded.last().u_sid, masked
        if shard is not None:  # the batch's users, each from the process that holds its row
            holders = shard.holders(torch.arange(batch["rows"]))
            held = len(holders[shard.group.rank])  # a ghost holds none
            u_sid = gather_rows(u_sid[:held], holders, shard.group)
            u_masked = gather_rows(u_masked[:held], holders, shard.group)
        parts["msg"] = masked_granularity(u_sid, u_masked, cfg.tau)
        total = total + cfg.gamma * parts["msg"]  # Eq. 11
    if distill is not None:
        parts["distill"] = distill.loss(model, encoded, owners)
        if shard is not None:  # a mean over the batch's students: this process's sum over their count
            students = int(distill.students(owners).sum())
            parts["distill"] = shard.share(parts["distill"] * students, batch["students"], ghost)
        total = total + cfg.distill_weight * parts["distill"]  # LLM-ESR (L8): L = L_rec + α L_sd
    if melt is not None:
        parts["user_branch"], parts["item_branch"] = melt.losses(model, gen)
        # MELT (M8): L = L_rec + λ_U L_u + λ_I L_i
        total = total + cfg.user_branch_weight * parts["user_branch"] + cfg.item_branch_weight * parts["item_branch"]
    if use_contrast:
        contrast = contrastive_losses(model, encoded, contrast_items, cfg, shard,
                                      batch["rows"] if shard is not None else 0)
        parts.update(contrast)
        # PCR-CA (P7): L = L_rec + λ_I L_item + λ_U L_user
        total = (total + cfg.item_contrast_weight * contrast.get("item_contrast", 0.0)
                 + cfg.user_contrast_weight * contrast.get("user_contrast", 0.0))
    if code_mask is not None:
        parts["mcm"], parts["msa"] = code_masking_losses(model, items.to(device), encoded, code_mask, shard,
                                                         len(rows) if shard is None else batch["rows"], ghost)
        # CCFRec (C10): L = L_rec + λ_MCM L_MCM + λ_MSA L_MSA
        total = total + cfg.mcm_weight * parts["mcm"] + cfg.msa_weight * parts["msa"]
    if ghost:  # DDP expects a gradient for every parameter from every process: the ghost's are zero
        total = total + 0.0 * sum(output.sum() for output in forward_outputs(encoded, masked))
    parts["total"] = total
    return parts


def forward_outputs(*values) -> list[torch.Tensor]:
    """The floating-point tensors among ``values`` and their dataclass fields (a forward pass's outputs)."""
    found = []
    for value in values:
        fields = [getattr(value, f.name) for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value) \
            else [value]
        found += [t for t in fields if torch.is_tensor(t) and t.is_floating_point()]
    return found
