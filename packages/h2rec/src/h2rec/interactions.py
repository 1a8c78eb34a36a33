"""The interaction log as a compressed sparse row (CSR) table: every reader produces one, the dataset
cache stores one, and ``data.build_dataset`` splits one.

User row ``u`` holds item codes ``items[offsets[u]:offsets[u + 1]]``, oldest first; code ``c`` is item
``item_ids[c]``. Two flat arrays instead of a list of arrays per user (or a dict of lists): at 10^7
interactions that is 40 MB of codes and 8 bytes a user, where Python lists cost ~10x as much, and
every step below is a handful of numpy calls instead of a Python loop over rows.

Ordering rule (the readers' contract): users in order of first appearance in the file; each user's
items by time, ties (and files without times) in file order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interactions:
    user_ids: list[str]  # row u -> id, in order of first appearance in the file
    item_ids: list[str]  # code c -> id (codes a k-core removed may be left unused)
    offsets: np.ndarray  # (U + 1,) int64: row u's items are items[offsets[u]:offsets[u + 1]]
    items: np.ndarray  # (N,) int32 item codes, each row oldest first
    users_in_file: int  # rows before any k-core filter

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def from_columns(cls, users: np.ndarray, items: np.ndarray, times: np.ndarray | None,
                     user_ids: list[str], item_ids: list[str]) -> Interactions:
        """One row per interaction, in file order: ``users``/``items`` are codes into the id lists, user
        codes numbered by first appearance; ``times`` None means file order is time order."""
        users = np.asarray(users, dtype=np.int64)
        if times is None:
            order = np.argsort(users, kind="stable")
        else:  # lexsort is stable: the last key (user) first, then time, then file order
            order = np.lexsort((np.asarray(times, dtype=np.float64), users))
        counts = np.bincount(users, minlength=len(user_ids))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(list(user_ids), list(item_ids), offsets, np.asarray(items, dtype=np.int32)[order], len(user_ids))

    @classmethod
    def from_sequences(cls, sequences: dict[str, Sequence[str]]) -> Interactions:
        """From ``{user: [item, ...]}`` (oldest first)."""
        item_code: dict[str, int] = {}
        items = np.fromiter((item_code.setdefault(i, len(item_code)) for seq in sequences.values() for i in seq),
                            dtype=np.int32)
        counts = np.fromiter((len(seq) for seq in sequences.values()), dtype=np.int64, count=len(sequences))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(list(sequences), list(item_code), offsets, items, len(sequences))

    def to_dict(self) -> dict[str, list[str]]:
        """``{user: [item, ...]}`` oldest first (what ``readers.read_interactions`` returns)."""
        ids = np.array(self.item_ids, dtype=object)
        bounds = self.offsets.tolist()
        names = ids[self.items].tolist() if len(self.items) else []
        return {user: names[bounds[u]:bounds[u + 1]] for u, user in enumerate(self.user_ids)}

    def row_of_each(self) -> np.ndarray:
        """(N,) the user row of each interaction."""
        return np.repeat(np.arange(len(self.user_ids), dtype=np.int64), self.lengths)

    def k_core(self, k: int) -> Interactions:
        """Drops items, then users, with fewer than ``k`` interactions, and repeats until none is left
        to drop (each pass as the dict version did: item counts over what is kept, then user lengths
        after the items are gone). User order, item order and the item codes are kept."""
        rows, items = self.row_of_each(), self.items
        keep = np.ones(len(items), dtype=bool)
        while True:
            item_counts = np.bincount(items[keep], minlength=len(self.item_ids))
            kept = keep & (item_counts[items] >= k)
            user_lengths = np.bincount(rows[kept], minlength=len(self.user_ids))
            kept &= user_lengths[rows] >= k
            if np.array_equal(kept, keep):
                break
            keep = kept
        lengths = np.bincount(rows[keep], minlength=len(self.user_ids))
        survivors = np.flatnonzero(lengths >= k)
        offsets = np.concatenate([[0], np.cumsum(lengths[survivors])]).astype(np.int64)
        return Interactions([self.user_ids[u] for u in survivors.tolist()], self.item_ids, offsets,
                            items[keep], self.users_in_file)
