"""Collision statistics of a code table, and the dedup level that makes every tuple unique.

Definitions (also in docs/semid.md):
- collision rate = 1 - unique tuples / items (the paper's "Coll.", Table 8);
- utilisation = unique tuples / prod(K_l) (the paper's "Util.", Table 8);
- per level: codes used, usage = used / K_l, and perplexity = exp(entropy of the level's code
  distribution), which reads K_l for a uniform level and 1 for a collapsed one (usage alone can read
  100% on a level where one code takes almost every item).
Everything comes from one stable lexicographic sort of the rows (numpy lexsort), no Python loop over
items: groups of equal tuples, their sizes, the dedup ranks and the distinct prefixes of every depth.
10^6 rows take well under a second (benchmarks/semid_scale.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from semid.errors import fail


def _check_codes(codes: torch.Tensor, codebook_sizes: Sequence[int]) -> np.ndarray:
    codes = torch.as_tensor(codes, dtype=torch.long).cpu()
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise fail(None, None, "codes", f"must be a non-empty [items, levels] matrix, got {tuple(codes.shape)}")
    if codes.shape[1] != len(codebook_sizes):
        raise fail(None, None, "codebook_sizes", f"has {len(codebook_sizes)} sizes for {codes.shape[1]} columns")
    sizes = torch.tensor(list(codebook_sizes))
    if bool((codes < 0).any()) or bool((codes >= sizes).any()):
        raise fail(None, None, "codes", f"must lie in [0, K) per column, K = {list(codebook_sizes)}")
    return codes.numpy()


def sorted_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, changes) of a code table [n, L] (n >= 1, L >= 1).

    order: the rows sorted by tuple; lexsort is stable, so rows sharing a tuple keep their row order.
    changes[i, l]: sorted row i differs from sorted row i - 1 in its first l + 1 codes (row 0: True).
    A column of `changes` marks where a new prefix of that depth starts; the last column, a new tuple.
    """
    n, levels = codes.shape
    order = np.lexsort(codes.T[::-1])  # lexsort sorts by its LAST key first: reversed, column 0 leads
    ordered = codes[order]
    changes = np.empty((n, levels), dtype=bool)
    changes[0] = True
    np.logical_or.accumulate(ordered[1:] != ordered[:-1], axis=1, out=changes[1:])
    return order, changes


def perplexity(column: np.ndarray | torch.Tensor, size: int) -> float:
    """exp(entropy) of the code distribution of one column (natural log)."""
    p = np.bincount(np.asarray(column), minlength=size).astype(np.float64)
    p = p[p > 0] / p.sum()
    return math.exp(float(-(p * np.log(p)).sum()))


def collision_stats(
    codes: torch.Tensor,
    codebook_sizes: Sequence[int],
    *,
    reconstruction_error: float | None = None,
) -> dict[str, Any]:
    """Statistics of a code table [items, levels] (see the module docstring for definitions)."""
    codes = _check_codes(codes, codebook_sizes)
    n, levels = codes.shape
    _, changes = sorted_rows(codes)
    starts = np.flatnonzero(changes[:, -1])  # sorted position of each tuple group's first row
    counts = np.diff(np.append(starts, n))  # group sizes
    unique = int(starts.size)
    capacity = math.prod(int(k) for k in codebook_sizes)  # exact Python int: 512**4 overflows nothing
    per_level = []
    for level, size in enumerate(codebook_sizes):
        column = codes[:, level]
        used = int(np.count_nonzero(np.bincount(column, minlength=int(size))))
        per_level.append({
            "level": level + 1,
            "codebook_size": int(size),
            "used": used,
            "usage": used / int(size),
            "perplexity": perplexity(column, int(size)),
        })
    stats: dict[str, Any] = {
        "items": n,
        "levels": levels,
        "codebook_sizes": [int(k) for k in codebook_sizes],
        "unique_tuples": unique,
        "collision_rate": 1.0 - unique / n,
        "colliding_items_share": int(counts[counts > 1].sum()) / n,
        "largest_group": int(counts.max()),
        "utilisation": unique / capacity,
        "per_level": per_level,
        "distinct_prefixes": [int(c) for c in changes.sum(axis=0)],
    }
    if reconstruction_error is not None:
        stats["reconstruction_error"] = reconstruction_error
    return stats


def dedup_codes(codes: torch.Tensor) -> torch.Tensor:
    """Append a column that numbers the items sharing a tuple in row order (0 for the first): [n, L + 1]."""
    codes = torch.as_tensor(codes, dtype=torch.long).cpu()
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise fail(None, None, "codes", f"must be a non-empty [items, levels] matrix, got {tuple(codes.shape)}")
    n = codes.shape[0]
    order, changes = sorted_rows(codes.numpy())
    new_group = changes[:, -1]
    starts = np.flatnonzero(new_group)  # sorted position of each group's first row
    group = np.cumsum(new_group) - 1  # group number of each sorted row
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[group]  # position inside the group = row-order rank (stable sort)
    return torch.cat([codes, torch.from_numpy(rank).unsqueeze(1)], dim=1)


def format_stats(stats: dict[str, Any]) -> str:
    """A terminal table of one collision_stats dict."""
    lines = [
        f"items                  {stats['items']:,}",
        f"levels x codebook      {stats['levels']} x {stats['codebook_sizes']}",
        f"unique tuples          {stats['unique_tuples']:,}",
        f"collision rate         {100 * stats['collision_rate']:.2f} %",
        f"items in a collision   {100 * stats['colliding_items_share']:.2f} %",
        f"largest group          {stats['largest_group']}",
        f"utilisation            {100 * stats['utilisation']:.3g} %  (distinct tuples / all possible tuples)",
        f"distinct prefixes      {' / '.join(f'{p:,}' for p in stats['distinct_prefixes'])}",
    ]
    if stats.get("reconstruction_error") is not None:
        lines.append(f"relative recon. error  {stats['reconstruction_error']:.4f}")
    # per level: codes used at least once, their share of K, and the perplexity (the number of equally
    # used codes that would give the same entropy: K when all are used evenly)
    lines.append("level  K      used   usage    perplexity (codes in effective use)")
    for row in stats["per_level"]:
        lines.append(
            f"{row['level']:<6} {row['codebook_size']:<6} {row['used']:<6} {100 * row['usage']:6.1f} %  "
            f"{row['perplexity']:9.1f}"
        )
    return "\n".join(lines)
