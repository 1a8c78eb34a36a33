"""Quantizers that work on the embeddings themselves, without an autoencoder: rq, pq, vq.

All three are vector-quantize-pytorch codebooks with EMA updates: a k-means initialisation on all
items (the library runs k-means on the first forward call's data, and semid passes it the whole
set), then `refine_iters` full-batch EMA passes, during which codes whose EMA usage falls below
`dead_code_threshold` are re-seeded from the data.

- rq: residual quantization (Juang & Gray 1982; SoundStream Algorithm 1, arXiv:2107.03312): level l
  quantizes what levels < l left over. Reconstruction = sum of the L code vectors.
- pq: product quantization (Jégou et al., TPAMI 2011): the d dimensions are split into L contiguous
  sub-spaces (sizes differ by at most one when L does not divide d), one codebook each.
  Reconstruction = concatenation of the L code vectors.
- vq: one codebook over the whole vector. With L > 1 levels, L independent VQs of the whole vector,
  each with its own codebook and its own k-means initialisation (seed + level): neither residual
  nor product, the "L-level VQ" the paper's Table 6 compares. Reconstruction = mean of the L code vectors.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from tqdm.auto import trange
from vector_quantize_pytorch import ResidualVQ, VectorQuantize

from semid.errors import fail
from semid.quantize.base import TorchQuantizer, library_kwargs


def _refine(step, iters: int, desc: str, progress: bool) -> None:
    """Full-batch EMA passes (no gradients: the codebooks are EMA buffers)."""
    for _ in trange(iters, desc=desc, disable=not progress, file=sys.stderr, leave=False):
        step()


class ResidualQuantizer(TorchQuantizer):
    """rq: ResidualVQ on the embeddings."""

    kind = "rq"

    def _build(self, dim: int) -> nn.Module:
        return ResidualVQ(dim=dim, codebook_size=self.config.codebook_sizes, **library_kwargs(self.config))

    @torch.no_grad()
    def _fit(self, x: torch.Tensor, progress: bool) -> None:
        rq = self.module
        rq(x, freeze_codebook=True)  # k-means init of every level on all items (level l on level-l residuals)
        _refine(lambda: rq(x), self.config.refine_iters, "fit rq", progress)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)[1]  # (n, L)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.module.get_output_from_indices(codes)

    def _codebooks(self) -> list[torch.Tensor]:
        return list(self.module.codebooks)


class _LevelwiseQuantizer(TorchQuantizer):
    """L separate VectorQuantize modules, level l seeing `self._views(x)[l]`."""

    def _level_dims(self, dim: int) -> list[int]:
        raise NotImplementedError

    def _views(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def _build(self, dim: int) -> nn.Module:
        kwargs = library_kwargs(self.config)
        return nn.ModuleList(
            VectorQuantize(dim=d, codebook_size=k, **kwargs)
            for d, k in zip(self._level_dims(dim), self.config.codebook_sizes)
        )

    @torch.no_grad()
    def _fit(self, x: torch.Tensor, progress: bool) -> None:
        views = self._views(x)
        for level, (vq, view) in enumerate(zip(self.module, views)):
            torch.manual_seed(self.config.seed + level)  # vq: each level gets its own k-means start
            vq(view, freeze_codebook=True)  # k-means init on all items

        def step() -> None:
            for vq, view in zip(self.module, views):
                vq(view)

        _refine(step, self.config.refine_iters, f"fit {self.kind}", progress)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([vq(view)[1] for vq, view in zip(self.module, self._views(x))], dim=1)  # (n, L)

    def _level_vectors(self, codes: torch.Tensor) -> list[torch.Tensor]:
        return [vq.codebook[codes[:, level]] for level, vq in enumerate(self.module)]

    def _codebooks(self) -> list[torch.Tensor]:
        return [vq.codebook for vq in self.module]


class ProductQuantizer(_LevelwiseQuantizer):
    """pq: one codebook per contiguous sub-space of the embedding."""

    kind = "pq"

    def _level_dims(self, dim: int) -> list[int]:
        if self.config.levels > dim:
            raise fail(None, None, "levels",
                       f"is {self.config.levels}, more than the {dim} embedding dimensions pq splits")
        return [len(part) for part in torch.arange(dim).tensor_split(self.config.levels)]

    def _views(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(x.tensor_split(self.config.levels, dim=1))

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._level_vectors(codes), dim=1)


class VectorQuantizer(_LevelwiseQuantizer):
    """vq: L independent codebooks over the whole vector (L = 1: classic single-codebook VQ)."""

    kind = "vq"

    def _level_dims(self, dim: int) -> list[int]:
        return [dim] * self.config.levels

    def _views(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x] * self.config.levels

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.stack(self._level_vectors(codes)).mean(0)
