"""LLM-ESR's retrieval-augmented self-distillation (Liu et al., NeurIPS 2024, arXiv:2405.20646), (L6)-(L8)
of docs/model.md, section "LLM-ESR".

A user with few interactions borrows from users like them: each user is described by a text-derived
vector (L6), the N most similar users are retrieved once per run, and during training the model's
own representation of those users, without gradient, is the teacher that the user's representation
is pulled towards (L7); the loss joins the ranking loss with weight α (L8, in ``training_step``).

Everything here reads the users' TRAINING items only (``Dataset.train``): the user vectors, the
retrieval and the teachers' histories. No validation or test item enters, so moving one changes
nothing that training sees (a test checks it).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import Config
from ..data import Dataset, TrainingWindows, training_windows
from ..evaluate import in_length_batches, next_item_states
from .llmesr import LLMESR, DualViewEncoded

logger = logging.getLogger(__name__)

TEACHER_ROWS = 256  # histories per forward pass of the teachers


def text_user_vectors(train: list[np.ndarray], text: Tensor) -> Tensor:
    """(L6) r_u = mean of the unit-length text embeddings of u's training items, (U, D); zero for a user
    without any. ``text`` (n + 1, D) has row i for item i (row 0: padding)."""
    unit = F.normalize(text.float().cpu(), dim=1)
    lengths = torch.tensor([len(s) for s in train], dtype=torch.long)
    items = torch.from_numpy(np.concatenate(train).astype(np.int64))
    owner = torch.repeat_interleave(torch.arange(len(train)), lengths)  # (sum of lengths,)
    sums = unit.new_zeros(len(train), unit.shape[1]).index_add_(0, owner, unit[items])
    return sums / lengths.clamp(min=1)[:, None]


def similar_users(vectors: Tensor, candidates: Tensor, n: int, chunk: int = 2048) -> Tensor:
    """(L6) N(u): the ``n`` users of highest cosine similarity to each user, among ``candidates`` (U,) bool
    and never the user itself, most similar first; -1 where fewer than ``n`` exist. (U, n) long.

    Computed ``chunk`` users at a time: a U x U similarity matrix would not fit at 10^5 users."""
    unit = F.normalize(vectors.float(), dim=1)
    n_users = len(unit)
    out = torch.full((n_users, n), -1, dtype=torch.long)
    k = min(n, n_users)
    for start in range(0, n_users, chunk):
        sims = unit[start : start + chunk] @ unit.T  # (c, U) cosine similarities
        sims[:, ~candidates] = float("-inf")
        rows = torch.arange(len(sims))
        sims[rows, start + rows] = float("-inf")  # not oneself
        values, index = sims.topk(k, dim=1)
        out[start : start + len(sims), :k] = torch.where(values > float("-inf"), index, -1)
    return out


def window_owners(train: list[np.ndarray], windows: TrainingWindows, max_len: int, causal: bool, scheme: str,
                  stride: int | None, phase_state: Tensor | None = None) -> Tensor:
    """The user of each training window when it is that user's latest window (the one ending at the
    user's last training item), else -1; (R,) long.

    ``training_windows`` does not say whose a window is, so the same tiling is cut again from
    sequences that hold their user's number: the rows come out in the same order and shape. For the
    ``random`` scheme the window phases are redrawn from ``phase_state``, the run generator's state
    before ``windows`` were drawn (a copy: the run's generator is not touched)."""
    owner_seqs = [np.full(len(s), u + 1, dtype=np.int64) for u, s in enumerate(train)]
    generator = None
    if scheme == "random":
        generator = torch.Generator()
        generator.set_state(phase_state)
    tiled = training_windows(owner_seqs, max_len, causal, scheme, stride, generator).rows
    assert torch.equal(tiled != 0, windows.rows != 0), "the owners' tiling differs from the training windows"
    owner = tiled.max(1).values - 1
    # a user's windows are contiguous, its latest first (data.cut_windows, data.window_ends)
    latest = torch.ones(len(owner), dtype=torch.bool)
    latest[1:] = owner[1:] != owner[:-1]
    return torch.where(latest, owner, -1)


class RetrievalDistillation:
    """(L6)-(L7) for one run: the similar users of every user, retrieved once, and the loss of a batch."""

    def __init__(self, train: list[np.ndarray], text: Tensor, n_similar: int, max_len: int):
        start = time.perf_counter()
        self.train = train
        self.max_len = max_len
        # a teacher is encoded on its training history without the last item: the state that predicts
        # that item, as the student's latest window does; a user with one training item has no such state
        candidates = torch.tensor([len(s) >= 2 for s in train], dtype=torch.bool)
        self.similar = similar_users(text_user_vectors(train, text), candidates, n_similar)  # (U, N)
        self.histories = [s[:-1] for s in train]
        logger.info("llmesr: retrieved %d similar users for each of %d users from their training items in %.1f s",
                    n_similar, len(train), time.perf_counter() - start)

    def owners(self, windows: TrainingWindows, causal: bool, scheme: str, stride: int | None,
               phase_state: Tensor | None) -> Tensor:
        """:func:`window_owners` of this run's training sequences."""
        return window_owners(self.train, windows, self.max_len, causal, scheme, stride, phase_state)

    def similar_of(self, owners: Tensor) -> Tensor:
        """(B, N) the similar users of each row's owner, -1 for none (and for rows that are no user's
        latest window, ``owners`` -1)."""
        similar = self.similar[owners.clamp(min=0)]
        similar[owners < 0] = -1
        return similar

    def students(self, owners: Tensor) -> Tensor:
        """(B,) bool: the rows that :meth:`loss` averages over (a latest window whose user has similar users)."""
        return (self.similar_of(owners) >= 0).any(1)

    def teacher_vectors(self, model: LLMESR, histories: list[np.ndarray]) -> Tensor:
        """[u^co : u^se] after each history, (T, 2d). The histories are encoded in groups of
        ``TEACHER_ROWS`` of similar length, each as wide as its longest: one group as wide as the
        longest of B·N histories spent most of an epoch on padding (Scientific, 7 items a user on
        average: 85% of the step in the teachers' forward before)."""
        return in_length_batches(histories, TEACHER_ROWS,
                                 lambda batch: model.user_vectors(next_item_states(model, batch, self.max_len)))

    def loss(self, model: LLMESR, encoded: DualViewEncoded, owners: Tensor) -> Tensor:
        """(L7) L_sd of a batch: the mean squared difference between each latest window's user
        representation [u^co : u^se] and the mean representation of its user's similar users, computed by
        the same model without gradient (a teacher, not a target that moves with the student). Rows that
        are no user's latest window (``owners`` -1, (B,)) and users without similar users take no part."""
        similar = self.similar_of(owners)  # (B, N)
        found = similar >= 0
        rows = found.any(1)
        if not rows.any():
            return encoded.u_co.new_zeros(())
        teachers, slot = similar[found].unique(return_inverse=True)  # each similar user encoded once
        with torch.no_grad():
            represented = self.teacher_vectors(model, [self.histories[u] for u in teachers.tolist()])  # (T, 2d)
        device = represented.device
        # (L7) t_u = mean over v in N(u) of [u^co_v : u^se_v]
        sums = represented.new_zeros(len(owners), represented.shape[1])
        sums.index_add_(0, found.nonzero()[:, 0].to(device), represented[slot.to(device)])
        teacher = sums[rows.to(device)] / found.sum(1)[rows].to(device, represented.dtype)[:, None]
        student = model.user_vectors(encoded.last())[rows.to(device)]  # (B', 2d)
        return F.mse_loss(student, teacher)  # mean over users and the 2d dimensions, as the authors' nn.MSELoss


def build_distillation(config: Config, ds: Dataset, model: torch.nn.Module) -> RetrievalDistillation | None:
    """LLM-ESR's self-distillation for a run, or None (other models, or ``train.distill_weight`` 0)."""
    if config.model.kind != "llmesr" or config.train.distill_weight == 0:
        return None
    return RetrievalDistillation(ds.train, model.text, config.train.similar_users, config.data.max_len)
