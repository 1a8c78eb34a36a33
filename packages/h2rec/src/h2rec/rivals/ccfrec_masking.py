"""CCFRec's code masking and its two objectives (Liu et al., KDD 2025, arXiv:2503.12183), (C7)-(C10) of
docs/model.md, section "CCFRec".

Each training batch is encoded twice: as it is, and with some of its items' code tokens masked (C7).
The masked view serves two losses:

- masked code modeling (C8): the SFM output at a masked code token must point to the code that was
  there, among all codes, by cosine similarity over a temperature: code correlations within an item;
- masked sequence alignment (C9): the state of the masked sequence and that of the original one are
  a positive pair, the batch's other sequences negatives (InfoNCE in both directions).

L = L_rec + λ_MCM L_MCM + λ_MSA L_MSA (C10, in ``training_step``). The draws come from the run's
generator, for the whole batch before torchrun splits it, so a resumed run and N processes draw
what one uninterrupted process does. Only the batch's own input items are masked: nothing here
reads data beyond the training windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..distributed import Shard, gather_rows
from ..losses import contrastive_pair
from .ccfrec import CCFRec, CCFRecEncoded

# (C7): of the selected code tokens, this share becomes [MASK], the next share a random code, the rest
# stays as it is: BERT's 80-10-10 rule, as the authors' data.py
TO_MASK, TO_RANDOM = 0.8, 0.9


@dataclass
class CodeMask:
    """(C7) the draws of one batch, on the CPU: which code tokens are selected and what each becomes."""

    selected: Tensor  # (B, N, C) bool: selected tokens of real items (not padding, not BERT4Rec's mask token)
    choice: Tensor  # (B, N, C) float in [0, 1): < TO_MASK -> [MASK], < TO_RANDOM -> a random code, else kept
    random_codes: Tensor  # (B, N, C) long: the random code of a token that gets one, over all levels' codes
    count: int  # selected tokens in the whole batch (the mean of (C8) is over them)

    def rows(self, mine: Tensor, width: int) -> CodeMask:
        """This process's rows of the batch (torchrun), cut to ``width`` columns; ``count`` stays the batch's."""
        return CodeMask(*(t[mine, :width] for t in (self.selected, self.choice, self.random_codes)), self.count)


def draw_code_mask(items: Tensor, model: CCFRec, ratio: float, gen: torch.Generator) -> CodeMask:
    """(C7) for right-padded ``items`` (B, N): each code token of each real item is selected with
    probability ``ratio``, independently (the same item at two positions is masked apart)."""
    shape = (*items.shape, model.n_levels)
    real = (items > 0) & (items != model.mask_token)
    selected = (torch.rand(shape, generator=gen) < ratio) & real[..., None]
    choice = torch.rand(shape, generator=gen)
    random_codes = torch.randint(0, model.n_codes, shape, generator=gen)
    return CodeMask(selected, choice, random_codes, int(selected.sum()))


def masked_codes(model: CCFRec, items: Tensor, mask: CodeMask) -> tuple[Tensor, Tensor, Tensor]:
    """(C7) applied: the code tokens (B, N, C) of the masked view, the selected tokens (B, N, C) and
    their original codes (S,), on ``items``' device."""
    device = items.device
    selected, choice = mask.selected.to(device), mask.choice.to(device)
    original = model.item_codes(items.masked_fill(items == model.mask_token, 0))  # (B, N, C)
    codes = torch.where(selected & (choice < TO_MASK), model.n_codes, original)
    codes = torch.where(selected & (choice >= TO_MASK) & (choice < TO_RANDOM), mask.random_codes.to(device), codes)
    return codes, selected, original[selected]


def code_prediction_losses(model: CCFRec, fused: Tensor, selected: Tensor, targets: Tensor) -> Tensor:
    """(C8) per selected token: -log softmax_k(cos(h̃, z_k) / τ)[c] over every code z_k of every level,
    with h̃ the masked view's SFM output at the token and c its original code, (S,)."""
    h = F.normalize(fused[selected], dim=-1)  # (S, d)
    z = F.normalize(model.code_table()[: model.n_codes], dim=-1)  # (n_codes, d): not the [MASK] row
    return F.cross_entropy(h @ z.T / model.tau, targets, reduction="none")


def sequence_alignment(r: Tensor, r_masked: Tensor, tau: float) -> Tensor:
    """(C9) L_MSA = (InfoNCE(r -> r̃) + InfoNCE(r̃ -> r)) / 2 over the batch's sequences: each one's
    original and masked states are a positive pair, the other sequences' masked (original) states
    negatives; cosine similarity over τ, as the authors' ContrastiveLoss in both directions."""
    eye = torch.eye(len(r), dtype=torch.bool, device=r.device)
    original_to_masked, masked_to_original = contrastive_pair(r, r_masked, eye, tau)
    return (original_to_masked + masked_to_original) / 2


def code_masking_losses(model: CCFRec, items: Tensor, encoded: CCFRecEncoded, mask: CodeMask,
                        shard: Shard | None = None, batch_rows: int = 0, ghost: bool = False) -> tuple[Tensor, Tensor]:
    """(L_MCM, L_MSA) of a batch: ``items`` (B, N) the inputs as encoded in ``encoded`` (on the model's
    device), ``mask`` their draws. Under torchrun (``shard``, the batch's ``batch_rows``), L_MCM is
    this process's share of the batch's mean and L_MSA is computed on every process from the
    gathered states of the batch's rows, as H2Rec's L_MSG (h2rec.step)."""
    codes, selected, targets = masked_codes(model, items, mask)
    masked, _ = model(items, codes=codes)  # the masked view through the same SFM and encoder
    mcm = code_prediction_losses(model, masked.fused, selected, targets).sum()
    r, r_masked = encoded.last().r, masked.last().r
    if shard is None:
        return mcm / max(mask.count, 1), sequence_alignment(r, r_masked, model.tau)
    holders = shard.holders(torch.arange(batch_rows))
    held = len(holders[shard.group.rank])  # a ghost holds none
    r, r_masked = (gather_rows(x[:held], holders, shard.group) for x in (r, r_masked))
    return shard.share(mcm, mask.count, ghost), sequence_alignment(r, r_masked, model.tau)


def uses_code_masking(model: torch.nn.Module, mcm_weight: float, msa_weight: float) -> bool:
    """Whether a training step of ``model`` draws the code masks: a ccfrec model with either loss on."""
    return isinstance(model, CCFRec) and (mcm_weight > 0 or msa_weight > 0)
