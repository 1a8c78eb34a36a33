"""Collision statistics of a code table, and the dedup level that makes every tuple unique.

Definitions (also in docs/semid.md):
- collision rate = 1 - unique tuples / items (the paper's "Coll.", Table 8);
- utilisation = unique tuples / prod(K_l) (the paper's "Util.", Table 8);
- per level: codes used, usage = used / K_l, and perplexity = exp(entropy of the level's code
  distribution), which reads K_l for a uniform level and 1 for a collapsed one (usage alone can read
  100% on a level where one code takes almost every item).
All counting is vectorised torch (torch.unique over rows), no Python loops over items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from semid.errors import fail


def _check_codes(codes: torch.Tensor, codebook_sizes: Sequence[int]) -> torch.Tensor:
    codes = torch.as_tensor(codes, dtype=torch.long)
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise fail(None, None, "codes", f"must be a non-empty [items, levels] matrix, got {tuple(codes.shape)}")
    if codes.shape[1] != len(codebook_sizes):
        raise fail(None, None, "codebook_sizes", f"has {len(codebook_sizes)} sizes for {codes.shape[1]} columns")
    sizes = torch.tensor(list(codebook_sizes))
    if bool((codes < 0).any()) or bool((codes >= sizes).any()):
        raise fail(None, None, "codes", f"must lie in [0, K) per column, K = {list(codebook_sizes)}")
    return codes


def group_sizes(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inverse, counts): the tuple group of each row, and the size of each group."""
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return inverse, counts


def perplexity(column: torch.Tensor, size: int) -> float:
    """exp(entropy) of the code distribution of one column (natural log)."""
    p = torch.bincount(column, minlength=size).double()
    p = p[p > 0] / p.sum()
    return math.exp(float(-(p * p.log()).sum()))


def collision_stats(
    codes: torch.Tensor,
    codebook_sizes: Sequence[int],
    *,
    reconstruction_error: float | None = None,
) -> dict[str, Any]:
    """Statistics of a code table [items, levels] (see the module docstring for definitions)."""
    codes = _check_codes(codes, codebook_sizes)
    n, levels = codes.shape
    _, counts = group_sizes(codes)
    unique = int(counts.numel())
    capacity = math.prod(int(k) for k in codebook_sizes)  # exact Python int: 512**4 overflows nothing
    per_level = []
    for level, size in enumerate(codebook_sizes):
        column = codes[:, level]
        used = int(torch.unique(column).numel())
        per_level.append({
            "level": level + 1,
            "codebook_size": int(size),
            "used": used,
            "usage": used / int(size),
            "perplexity": perplexity(column, int(size)),
        })
    prefixes = [int(torch.unique(codes[:, : depth + 1], dim=0).shape[0]) for depth in range(levels)]
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
        "distinct_prefixes": prefixes,
    }
    if reconstruction_error is not None:
        stats["reconstruction_error"] = reconstruction_error
    return stats


def dedup_codes(codes: torch.Tensor) -> torch.Tensor:
    """Append a column that numbers the items sharing a tuple in row order (0 for the first): [n, L + 1]."""
    codes = torch.as_tensor(codes, dtype=torch.long)
    inverse, counts = group_sizes(codes)
    n = codes.shape[0]
    order = torch.argsort(inverse, stable=True)  # rows grouped by tuple, row order kept inside a group
    starts = torch.cumsum(counts, 0) - counts  # position of each group's first row in `order`
    rank_sorted = torch.arange(n) - starts[inverse[order]]
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = rank_sorted
    return torch.cat([codes, rank.unsqueeze(1)], dim=1)


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
