"""Every user's top-k next items in one table file: ``h2rec recommend RUN --all-users -o recs.parquet``.

Users are scored a batch at a time, as the single-user ``recommend`` scores one (the same history,
the same seen-item rule, through ``evaluate.top_items``). The table is written a window of
``WINDOW_BATCHES`` batches at a time, in user order; inside a window the batches are cut from its
users sorted by history length, so each pads only to its own longest. Memory holds one batch's
(B, n + 1) scores and one window's top-k, never all users'. The rows go to a
temp file beside the output, renamed over it at the end (``semid.io.atomic_write``), so a run that
is killed or fails leaves no partial table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from semid.io import atomic_write

from .data import Dataset
from .evaluate import in_length_batches, top_items
from .model import H2Rec
from .progress import progress_bar
from .tables import Rows, check_table_path, open_table

log = logging.getLogger(__name__)

WINDOW_BATCHES = 16  # batches sorted by length together, and written together


def batch_rows(values: torch.Tensor, indices: torch.Tensor, users: list[str], item_ids: list[str]) -> Rows:
    """Rows of one batch's top-k (B, k): the -inf entries (seen items, when fewer than k are left) dropped."""
    keep = torch.isfinite(values).cpu().numpy()  # (B, k); -inf only after every finite score, as topk sorts
    per_user = keep.sum(1)
    ranks = np.broadcast_to(np.arange(1, keep.shape[1] + 1, dtype=np.int32), keep.shape)[keep]
    return Rows(user_id=np.repeat(np.asarray(users, dtype=object), per_user).tolist(), rank=ranks,
                item_id=[item_ids[i - 1] for i in indices.cpu().numpy()[keep].tolist()],
                score=values.cpu().numpy()[keep].astype(np.float32))


def write_recommendations(model: H2Rec, ds: Dataset, max_len: int, path: str | Path, k: int,
                          exclude_history: bool = True, batch_size: int = 512, overwrite: bool = False,
                          progress: bool = False) -> int:
    """Writes every user's top-``k`` (user_id, rank, item_id, score) to ``path``, in the data's user
    order, ranks from 1; ``exclude_history`` leaves each user's own items out. Returns the rows written."""
    path = Path(path)
    check_table_path(path, overwrite)
    was_training = model.training
    model.eval()
    written = 0

    def write(temp: Path) -> None:
        nonlocal written
        writer = open_table(temp, path.suffix)
        try:
            window = batch_size * WINDOW_BATCHES
            starts = range(0, len(ds.user_ids), window)
            for start in progress_bar(starts, "recommend", progress, total=len(starts), unit="window"):
                users = range(start, min(start + window, len(ds.user_ids)))
                values, indices = in_length_batches([ds.sequences[r] for r in users], batch_size,
                                                    lambda batch: top_items(model, batch, max_len, k, exclude_history))
                batch = batch_rows(values, indices, [ds.user_ids[r] for r in users], ds.item_ids)
                writer.write(batch)
                written += len(batch.user_id)
        finally:
            writer.close()

    try:
        atomic_write(path, write)
    finally:
        model.train(was_training)
    log.debug("%s: top-%d of %d users, %d rows", path, k, len(ds.user_ids), written)
    return written
