"""From interaction sequences to a leave-one-out split, popularity groups and padded tensors.

Item index ``i`` (1..n) is row ``i - 1`` of the ``semid`` folder; 0 is padding. Sequences are
right-padded (the convention of ``srs_backbones``): oldest item first, padding after the last.
Every user's sequence lives in one flat array; the split's parts are :class:`Ragged` views of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .config import DataConfig
from .dataset_cache import cached_interactions
from .errors import H2RecError
from .interactions import Interactions
from .ragged import Ragged


@dataclass
class EvalSplit:
    """One evaluation case per user: predict ``targets[u]`` from ``histories[u]`` (oldest first)."""

    users: np.ndarray  # (U,) user rows
    histories: Sequence[np.ndarray]  # a Ragged view of the sequences, or any list of arrays
    targets: np.ndarray  # (U,) item indices

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Dataset:
    user_ids: list[str]
    item_ids: list[str]  # item index i -> item_ids[i - 1]
    sequences: Ragged  # every user's full sequence (train + valid + test items)
    train: Ragged  # the part each user's training sees (views of the same array)
    valid: EvalSplit
    test: EvalSplit
    popularity: np.ndarray  # (n + 1,) training interactions per item; validation and test items not counted
    head: np.ndarray  # (n + 1,) bool
    groups: np.ndarray  # (n + 1,) popularity group 0 (rarest) .. 4 (most popular)
    group_labels: list[str]
    stats: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def k_core(sequences: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    """Drops users and items with fewer than ``k`` interactions until none is left."""
    return Interactions.from_sequences(sequences).k_core(k).to_dict()


def popularity_groups(popularity: np.ndarray, bounds: tuple[int, ...] | None) -> tuple[np.ndarray, list[str]]:
    """Five groups by training count: explicit count ``bounds`` (4 ascending cut points) or item quintiles.

    Quintiles rank items by count (ties by index) so group 4 is exactly the Head of a 20% split.
    """
    counts = popularity[1:]
    n = len(counts)
    if bounds is None:
        order = np.argsort(-counts, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        groups = 4 - np.minimum(rank * 5 // max(n, 1), 4)
        labels = []
        for g in range(5):
            c = counts[groups == g]
            labels.append(f"G{g + 1} ({int(c.min()) if len(c) else 0}-{int(c.max()) if len(c) else 0})")
    else:
        if len(bounds) != 4 or list(bounds) != sorted(bounds):
            raise H2RecError(f"group_bounds must be 4 ascending counts, got {bounds}")
        groups = np.searchsorted(np.asarray(bounds), counts, side="right")
        edges = [0, *bounds]
        labels = [f"G{g + 1} ({edges[g]}-{edges[g + 1] - 1})" for g in range(4)] + [f"G5 (>={bounds[-1]})"]
    return np.concatenate([[0], groups]).astype(np.int64), labels


def head_items(popularity: np.ndarray, share: float) -> np.ndarray:
    """The top ``share`` of catalogue items by training count (ties broken by index) are Head."""
    counts = popularity[1:]
    order = np.argsort(-counts, kind="stable")
    head = np.zeros(len(popularity), dtype=bool)
    head[order[: math.ceil(share * len(counts))] + 1] = True
    return head


def build_dataset(cfg: DataConfig, item_ids: list[str]) -> Dataset:
    """Reads ``cfg.interactions`` (through the prepared copy in the cache unless ``cfg.cache`` is
    off), maps items onto the semantic-ID catalogue and splits leave-one-out.

    Users with at least 3 items get a test case (last item), a validation case (second last) and
    train on the rest. Shorter users are kept for training only; ``stats`` counts them.
    """
    table = cached_interactions(cfg)
    if not table.user_ids:
        raise H2RecError(f"{cfg.interactions}: no user is left after the {cfg.k_core}-core filter")
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    lookup = np.fromiter((index.get(item, 0) for item in table.item_ids), dtype=np.int64, count=len(table.item_ids))
    used = np.bincount(table.items, minlength=len(table.item_ids)) > 0
    unknown = sorted(table.item_ids[c] for c in np.flatnonzero(used & (lookup == 0)).tolist())
    if unknown:
        raise H2RecError(
            f"{cfg.interactions}: {len(unknown)} item id(s) have no semantic ID in {cfg.semid} "
            f"(e.g. {unknown[:5]}); encode them with `semid encode` or filter the interactions"
        )
    values = lookup[table.items]  # (N,) item indices, each user's oldest first
    starts, ends = table.offsets[:-1], table.offsets[1:]
    evaluated = ends - starts >= 3  # a training item, a validation item and a test item
    users = np.flatnonzero(evaluated).astype(np.int64)
    last = ends[users]
    sequences = Ragged(values, starts, ends)
    train = Ragged(values, starts, ends - 2 * evaluated)
    valid = EvalSplit(users, Ragged(values, starts[users], last - 2), values[last - 2])
    test = EvalSplit(users, Ragged(values, starts[users], last - 1), values[last - 1])

    n = len(item_ids)
    in_train = np.ones(len(values), dtype=bool)
    in_train[last - 1] = in_train[last - 2] = False
    popularity = np.bincount(values[in_train], minlength=n + 1).astype(np.int64)
    popularity[0] = 0
    head = head_items(popularity, cfg.head_share)
    groups, labels = popularity_groups(popularity, cfg.group_bounds)
    lengths = ends - starts
    stats = {
        "interactions_file": str(Path(cfg.interactions)),
        "users_in_file": table.users_in_file,
        "users": len(table.user_ids),
        "users_evaluated": len(users),
        "users_train_only": len(table.user_ids) - len(users),  # fewer than 3 items: no validation/test case
        "catalogue_items": n,
        "items_interacted": int(np.count_nonzero(np.bincount(values, minlength=n + 1)[1:])),
        "interactions": int(lengths.sum()),
        "mean_length": round(float(lengths.mean()), 2),
        "k_core": cfg.k_core,
        "head_items": int(head.sum()),
        "test_targets_head": int(head[test.targets].sum()),
        "test_targets_tail": int((~head[test.targets]).sum()),
        "groups": labels,
    }
    return Dataset(table.user_ids, list(item_ids), sequences, train, valid, test, popularity, head, groups, labels,
                   stats)


def pad_right(seqs: list[np.ndarray], width: int) -> torch.Tensor:
    """The last ``width`` items of each sequence, oldest first, right-padded with 0: (len(seqs), width)."""
    out = np.zeros((len(seqs), width), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = seq[-width:]
        out[row, : len(tail)] = tail
    return torch.from_numpy(out)


WindowScheme = Literal["sliding", "random", "last"]


@dataclass
class TrainingWindows:
    """One epoch's training rows: windows cut from the users' training sequences.

    ``rows`` (R, W) holds right-padded item windows, oldest first. Causal rows predict item t + 1
    from items 0..t; input positions before ``first_target[r]`` only give context (their targets are
    trained by another window), so every training target is trained exactly once per epoch. Cloze
    rows (BERT4Rec) do not overlap, and ``first_target`` is 0.
    """

    rows: torch.Tensor  # (R, W) int64
    first_target: torch.Tensor  # (R,) int64

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> torch.Tensor:
        return (self.rows != 0).sum(1)


def window_ends(n: int, width: int, stride: int, first_stride: int, min_end: int) -> list[int]:
    """Exclusive ends of the windows over a sequence of ``n`` items, latest first: ``n``, then
    ``n - first_stride``, then every ``stride`` items back, down to ``min_end`` (the shortest
    prefix that holds a target). A sequence that fits in one window gets one."""
    if n <= width:
        return [n]
    return [n, *range(n - first_stride, min_end - 1, -stride)]


def cut_windows(seqs: list[np.ndarray], width: int, stride: int, causal: bool,
                first_strides: np.ndarray | None = None) -> TrainingWindows:
    """Every window of every sequence (see :func:`window_ends`), with the position of its first
    trained target. Window [a, e) trains targets j in [max(a + 1, next end), e) (causal: item j is
    predicted from items < j) or items [max(a, next end), e) (cloze)."""
    rows, first = [], []
    for i, seq in enumerate(seqs):
        first_stride = stride if first_strides is None else int(first_strides[i])
        ends = window_ends(len(seq), width, stride, first_stride, min_end=2 if causal else 1)
        for k, end in enumerate(ends):
            start = max(0, end - width)
            next_end = ends[k + 1] if k + 1 < len(ends) else 0
            rows.append(seq[start:end])
            first.append(max(next_end - start - 1, 0) if causal else max(next_end - start, 0))
    return TrainingWindows(pad_right(rows, width), torch.tensor(first, dtype=torch.int64))


def training_windows(train: list[np.ndarray], max_len: int, causal: bool, scheme: WindowScheme,
                     stride: int | None, gen: torch.Generator | None = None) -> TrainingWindows:
    """The training rows of one epoch under ``scheme``:

    - ``"sliding"``: windows of ``max_len + 1`` items ending at the last item, then every ``stride``
      items back (default ``max_len``). Each training target is trained once per epoch; a smaller
      stride gives every target at least ``max_len - stride`` items of context, at the price of
      encoding ``max_len / stride`` times as many positions.
    - ``"random"``: the same tiling with a random phase per sequence and epoch (drawn from ``gen``),
      so window borders, and the context a target sees, change from epoch to epoch.
    - ``"last"``: the last window only, as SASRec's reference code does: older targets are never
      trained (kept to measure what that costs).

    Cloze rows (``causal=False``) are ``max_len`` wide and never overlap. Sequences too short to
    train on (one item, causal) are skipped.
    """
    width = max_len + 1 if causal else max_len
    seqs = [s for s in train if len(s) >= (2 if causal else 1)]
    step = max_len if (stride is None or not causal) else stride
    if not 1 <= step <= max_len:
        raise H2RecError(f"train.window_stride must lie in 1..max_len ({max_len}), got {stride}")
    if scheme == "last":
        return cut_windows(seqs, width, step, causal, np.full(len(seqs), 10**12))
    if scheme == "sliding":
        return cut_windows(seqs, width, step, causal)
    if gen is None:
        raise ValueError("the random scheme needs a generator")
    phases = torch.randint(1, step + 1, (len(seqs),), generator=gen).numpy()
    return cut_windows(seqs, width, step, causal, phases)


def sample_candidates(ds: Dataset, split: EvalSplit, k: int, seed: int) -> np.ndarray:
    """``k`` negatives per evaluation user, uniform over items the user never touched (the paper's
    1 + 100 protocol). Depends only on the data and ``seed``, so every model sees the same ones."""
    rng = np.random.default_rng(seed)
    n = ds.n_items
    out = np.empty((len(split), k), dtype=np.int64)
    for row, u in enumerate(split.users):
        touched = np.unique(ds.sequences[u])
        if n - len(touched) < k:
            raise H2RecError(f"eval.negatives (--eval-negatives) is {k}, but user {ds.user_ids[u]!r} touched "
                             f"{len(touched)} of the {n} items: only {n - len(touched)} remain to sample from")
        picked = np.empty(0, dtype=np.int64)
        while len(picked) < k:
            draw = rng.integers(1, n + 1, size=2 * k)
            draw = draw[~np.isin(draw, touched)]
            picked = np.concatenate([picked, draw])
            _, first = np.unique(picked, return_index=True)
            picked = picked[np.sort(first)]  # drop repeats, keep draw order
        out[row] = picked[:k]
    return out
