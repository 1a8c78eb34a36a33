"""PCR-CA's contrastive alignment of the ID and semantic representations (arXiv:2508.18166), training only:

- item level (P5): each of the batch's items, its ID embedding and its semantic embedding are a
  positive pair, the batch's other items are negatives;
- user level (P6): each training window's two user states (the ID encoder's and the semantic encoder's,
  at the window's last position) are a positive pair, the batch's other windows are negatives;
- (P7): ``L = L_rec + λ_I L_item + λ_U L_user`` (in :func:`h2rec.step.training_step`).

Both are the symmetric InfoNCE of cosine similarities at temperature τ, the mean of its two directions.
Only the batch's rows enter, which are training items (docs/model.md, section "PCR-CA").
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import TrainConfig
from ..distributed import Shard, gather_rows
from ..losses import contrastive_pair
from .pcrca import PCRCA, DualEncoded


def batch_items(rows: Tensor, max_items: int, gen: torch.Generator) -> Tensor:
    """The distinct items of a batch's training ``rows`` (B, W), ascending; when there are more than
    ``max_items``, that many of them drawn without replacement from ``gen`` (the loss is quadratic in
    their number)."""
    items = rows.unique()
    items = items[items > 0]
    if len(items) > max_items:
        items = items[torch.randperm(len(items), generator=gen)[:max_items]].sort().values
    return items


def symmetric_infonce(a: Tensor, b: Tensor, tau: float) -> Tensor:
    """½ (−1/B Σ_i log softmax_j(cos(a_i, b_j)/τ)_i − 1/B Σ_i log softmax_j(cos(b_i, a_j)/τ)_i): row i
    of ``a`` and of ``b`` (B, d) are a positive pair, every other row a negative."""
    eye = torch.eye(len(a), dtype=torch.bool, device=a.device)
    a_to_b, b_to_a = contrastive_pair(a, b, eye, tau)
    return (a_to_b + b_to_a) / 2


def item_contrast(model: PCRCA, items: Tensor, tau: float) -> Tensor:
    """(P5) L_item over ``items`` (I,): e^id_i and e^sem_i are a positive pair."""
    items = items.to(model.device)
    return symmetric_infonce(model.id_table(items), model.semantic(items), tau)


def user_contrast(u_id: Tensor, u_sem: Tensor, tau: float) -> Tensor:
    """(P6) L_user over B windows' user states (B, d) each: u^id_b and u^sem_b are a positive pair."""
    return symmetric_infonce(u_id, u_sem, tau)


def contrastive_losses(model: PCRCA, encoded: DualEncoded, items: Tensor | None, cfg: TrainConfig,
                       shard: Shard | None = None, batch_rows: int = 0) -> dict[str, Tensor]:
    """The parts of (P7) whose weight is not 0: ``item_contrast`` over ``items`` (:func:`batch_items`
    of the whole batch), ``user_contrast`` over the batch's windows. Under torchrun every process
    computes the item part whole (the same items and tables in each, so DDP's mean of the gradients is
    that gradient) and gathers the batch's ``batch_rows`` windows' states for the user part, as H2Rec's
    L_MSG (h2rec.distributed)."""
    parts = {}
    if cfg.item_contrast_weight > 0:
        parts["item_contrast"] = item_contrast(model, items, cfg.contrast_tau)
    if cfg.user_contrast_weight > 0:
        state = encoded.last()
        u_id, u_sem = state.u_id, state.u_sem
        if shard is not None:  # the batch's windows, each from the process that holds its row
            holders = shard.holders(torch.arange(batch_rows))
            held = len(holders[shard.group.rank])  # a ghost holds none
            u_id = gather_rows(u_id[:held], holders, shard.group)
            u_sem = gather_rows(u_sem[:held], holders, shard.group)
        parts["user_contrast"] = user_contrast(u_id, u_sem, cfg.contrast_tau)
    return parts
