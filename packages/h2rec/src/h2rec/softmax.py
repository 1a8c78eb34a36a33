"""Full softmax cross-entropy over the catalogue, computed tile by tile (the ``ce`` loss).

Every model here scores an item as a sum of inner products, s[p, j] = Σ_f user_f[p] · items_f[j]
(SASRec: one factor, the user state against the ID table; H2Rec: the HID factor plus the SID one,
its per-code scores summed into items by the sparse item x code matrix). The loss needs, per
position p, lse_p = log Σ_j exp(s[p, j]) over items 1..n, and its gradient needs the softmax
exp(s - lse) of every (p, j). Written as the plain tensor expression, the (P, n) score matrix passes
through main memory about five times a step (product, log-sum-exp, saved for backward, softmax,
the two gradient products), and on a CPU those passes take about half of the time.

:class:`_TiledLogSumExp` never forms the matrix: its forward scores a tile of rows x items at a
time and keeps only lse (P,); its backward scores each tile again and turns it, while it is still
in the cache, into the softmax and both gradient products. Forward and backward of 1,500 positions,
d = 64, one AMD EPYC thread (``python -m benchmarks.tiles``): 390 ms for the plain expression and
188 ms in tiles at 12,101 items; 2,821 and 1,481 ms at 100,000 items. On an accelerator a tile is a
kernel launch, so there one tile holds every row and ``item_chunk`` items (which bounds memory at
10^6 items and more).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

# A CPU tile: at most 16,384 items (their rows, 4 MiB at d = 64, are read again for every row tile,
# so they must stay in the cache too) by as many rows as make 2^19 scores (2 MiB). benchmarks/tiles.py,
# 100,000 items: 1,399 ms in tiles 8,192 items wide, 1,481 ms at 16,384, 3,482 ms at 65,536 (8 rows a
# tile: the item rows come from main memory every tile). 16,384 keeps a catalogue of up to that size
# whole in a tile, which lets full-ranking evaluation read each target's score from its own tile
# (h2rec.evaluate.count_in_catalogue).
CPU_TILE_ELEMENTS = 1 << 19
CPU_TILE_ITEMS = 16384


@dataclass(frozen=True)
class ScoreFactor:
    """One term of a score that is a sum of inner products: s[p, j] += user[p] · items[j].

    ``user`` (P, k); ``items`` (n, k) for items 1..n, dense (gradients flow to it) or a sparse CSR
    matrix that takes no gradient (H2Rec's item x code incidence)."""

    user: Tensor
    items: Tensor

    @property
    def sparse(self) -> bool:
        return self.items.layout == torch.sparse_csr


def _csr_rows(m: Tensor, start: int, end: int) -> Tensor:
    """Rows start..end-1 of the CSR matrix ``m``, as a CSR matrix of their own."""
    if start == 0 and end == m.shape[0]:
        return m
    crow = m.crow_indices()
    lo, hi = int(crow[start]), int(crow[end])
    with warnings.catch_warnings():  # torch flags sparse CSR as beta; CSR @ dense is long stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow[start : end + 1] - lo, m.col_indices()[lo:hi], m.values()[lo:hi],
                                       (end - start, m.shape[1]))


def _csr_transpose(m: Tensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return m.to_sparse_coo().t().coalesce().to_sparse_csr()


@dataclass
class _Plan:
    """How :class:`_TiledLogSumExp` walks the (P, n) matrix, and what it holds besides the tensors."""

    n_items: int
    sparse: dict[int, Tensor]  # factor index -> its sparse item matrix (not an autograd input)
    tile_items: int
    tile_rows: int
    seen: tuple[Tensor, Tensor] | None  # (position, column) pairs left out of the softmax, by position
    with_total: bool  # also Σ_j s[p, j] (label smoothing)

    def chunks(self):
        for start in range(0, self.n_items, self.tile_items):
            yield start, min(start + self.tile_items, self.n_items)

    def tiles(self, n_rows: int):
        for start in range(0, n_rows, self.tile_rows):
            yield start, min(start + self.tile_rows, n_rows)

    def scores(self, users: list[Tensor], chunk: list[Tensor], rows: tuple[int, int]) -> Tensor:
        """The (rows, chunk) tile of s."""
        r0, r1 = rows
        s = None
        for u, v in sorted(zip(users, chunk), key=lambda uv: uv[1].layout == torch.sparse_csr):  # dense first
            if v.layout == torch.sparse_csr:
                part = (v @ u[r0:r1].T).T  # CSR @ dense, then a view
                s = part.contiguous() if s is None else s.add_(part)
            else:
                s = u[r0:r1] @ v.T if s is None else s.addmm_(u[r0:r1], v.T)
        return s

    def mask(self, s: Tensor, rows: tuple[int, int], columns: tuple[int, int]) -> None:
        """The seen pairs of the tile ``s`` at -inf, in place."""
        if self.seen is None:
            return
        position, column = self.seen
        lo, hi = torch.searchsorted(position, torch.tensor([rows[0], rows[1]], device=position.device)).tolist()
        position, column = position[lo:hi], column[lo:hi]
        inside = (column >= columns[0]) & (column < columns[1])
        s[position[inside] - rows[0], column[inside] - columns[0]] = float("-inf")


class _TiledLogSumExp(torch.autograd.Function):
    """(lse, total) of s = Σ_f users[f] items[f]^T over the items, tile by tile (see the module
    docstring); ``total`` is Σ_j s[p, j] when the plan asks for it, else zeros."""

    @staticmethod
    def forward(ctx, plan: _Plan, *tensors: Tensor | None) -> tuple[Tensor, Tensor]:
        n_factors = len(tensors) // 2
        users, dense = list(tensors[:n_factors]), list(tensors[n_factors:])
        items = [plan.sparse[f] if dense[f] is None else dense[f] for f in range(n_factors)]
        n_rows = users[0].shape[0]
        lse = users[0].new_full((n_rows,), float("-inf"))
        total = users[0].new_zeros(n_rows)
        for columns in plan.chunks():
            chunk = [_csr_rows(v, *columns) if v.layout == torch.sparse_csr else v[columns[0] : columns[1]]
                     for v in items]
            for rows in plan.tiles(n_rows):
                s = plan.scores(users, chunk, rows)
                plan.mask(s, rows, columns)
                lse[rows[0] : rows[1]] = torch.logaddexp(lse[rows[0] : rows[1]], torch.logsumexp(s, 1))
                if plan.with_total:
                    total[rows[0] : rows[1]] += s.sum(1)
        ctx.plan = plan
        ctx.save_for_backward(*tensors, lse)
        return lse, total

    @staticmethod
    def backward(ctx, grad_lse: Tensor, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        plan: _Plan = ctx.plan
        *tensors, lse = ctx.saved_tensors
        n_factors = len(tensors) // 2
        users, dense = tensors[:n_factors], tensors[n_factors:]
        items = [plan.sparse[f] if dense[f] is None else dense[f] for f in range(n_factors)]
        wants_user = ctx.needs_input_grad[1 : 1 + n_factors]
        wants_items = ctx.needs_input_grad[1 + n_factors :]
        grad_users = [torch.zeros_like(u) if wants else None for u, wants in zip(users, wants_user)]
        grad_items = [torch.zeros_like(v) if wants else None for v, wants in zip(dense, wants_items)]
        n_rows = users[0].shape[0]
        for columns in plan.chunks():
            chunk = [_csr_rows(v, *columns) if v.layout == torch.sparse_csr else v[columns[0] : columns[1]]
                     for v in items]
            chunk_t = [_csr_transpose(v) if v.layout == torch.sparse_csr and wants else None
                       for v, wants in zip(chunk, wants_user)]
            for rows in plan.tiles(n_rows):
                r0, r1 = rows
                s = plan.scores(users, chunk, rows)
                plan.mask(s, rows, columns)
                # d lse_p / d s[p, j] = softmax_pj; d total_p / d s[p, j] = 1 (seen pairs: excluded, 0)
                g = s.sub_(lse[r0:r1, None]).exp_().mul_(grad_lse[r0:r1, None])
                if plan.with_total:
                    g.add_(grad_total[r0:r1, None])
                for f in range(n_factors):
                    if grad_users[f] is not None:
                        if chunk_t[f] is not None:
                            grad_users[f][r0:r1] += (chunk_t[f] @ g.T).T
                        else:
                            grad_users[f][r0:r1].addmm_(g, chunk[f])
                    if grad_items[f] is not None:
                        grad_items[f][columns[0] : columns[1]].addmm_(g.T, users[f][r0:r1])
        return (None, *grad_users, *grad_items)


def tile_shape(device: torch.device, n_items: int, n_rows: int, item_chunk: int,
               tile_elements: int | None = None) -> tuple[int, int]:
    """(rows, items) of a tile. By default: off the CPU every row by ``item_chunk`` items; on the CPU at
    most ``CPU_TILE_ITEMS`` items, by as many rows as make ``CPU_TILE_ELEMENTS`` scores. Given
    ``tile_elements``: ``item_chunk`` items by as many rows as make that many scores."""
    items = max(1, min(item_chunk, n_items))
    if tile_elements is None:
        if device.type != "cpu":
            return max(n_rows, 1), items
        items, tile_elements = min(items, CPU_TILE_ITEMS), CPU_TILE_ELEMENTS
    return max(1, min(n_rows, tile_elements // items)), items


def softmax_cross_entropy(factors: list[ScoreFactor], n_items: int, target_scores: Tensor,
                          label_smoothing: float = 0.0, seen: tuple[Tensor, Tensor] | None = None,
                          item_chunk: int = 65536, tile_elements: int | None = None) -> Tensor:
    """Full softmax cross-entropy over items 1..n (item 0 is padding, never a class) of the score
    Σ_f factors[f].user · factors[f].items:

        loss = (1 - ε) (lse - s_target) + ε (lse - 1/n Σ_{j=1..n} s_j),   lse = log Σ_{j=1..n} exp(s_j),

    ε = ``label_smoothing`` spread uniformly over the n real items (Szegedy et al., CVPR 2016,
    "Rethinking the Inception Architecture"). ``target_scores`` (P,): each position's target score
    (differentiable, from the caller). ``seen``: (position, item) pairs that leave the softmax, as
    they leave the ranking when evaluation drops a user's seen items (not with label smoothing).
    At most ``item_chunk`` items and ``tile_elements`` scores at a time (see :func:`tile_shape`). -> (P,).
    """
    if item_chunk < 1:
        raise ValueError(f"item_chunk must be >= 1, got {item_chunk}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
    if seen is not None and label_smoothing > 0:
        raise ValueError("seen items cannot leave the softmax under label smoothing (their scores are in its mean)")
    if not factors:
        raise ValueError("a score needs at least one factor")
    rows, items = tile_shape(target_scores.device, n_items, len(target_scores), item_chunk, tile_elements)
    seen_columns = None
    if seen is not None:  # by position, so that a tile finds its pairs by binary search
        position, item = seen
        order = torch.argsort(position, stable=True)
        seen_columns = (position[order].contiguous(), item[order] - 1)
    plan = _Plan(n_items, {f: factor.items for f, factor in enumerate(factors) if factor.sparse}, items, rows,
                 seen_columns, with_total=label_smoothing > 0)
    dense = [None if factor.sparse else factor.items for factor in factors]
    lse, total = _TiledLogSumExp.apply(plan, *[factor.user for factor in factors], *dense)
    loss = lse - target_scores
    if label_smoothing > 0:
        loss = (1 - label_smoothing) * loss + label_smoothing * (lse - total / n_items)
    return loss
