"""rqkmeans: residual k-means, residual quantization whose codebooks are plain k-means centroids.

Level l runs k-means (K_l centroids) on the residuals that levels < l left over, and an item's code
at level l is the centroid nearest its residual; reconstruction = sum of the L centroids on its path.
No autoencoder, no gradients, no EMA. This is the residual k-means of OneRec (Deng et al. 2025,
arXiv:2502.18965) and the default Semantic-ID tokenizer of GRID (Ju et al., CIKM 2025,
arXiv:2507.22224; github.com/snap-research/GRID). k-means itself lives in quantize/kmeans.py.
"""

from __future__ import annotations

import logging
import sys

import torch
from torch import nn
from tqdm.auto import tqdm

from semid.quantize.base import TorchQuantizer
from semid.quantize.kmeans import kmeans, nearest, resolve_backend

log = logging.getLogger(__name__)


class Codebooks(nn.Module):
    """L codebooks as buffers `codebook_<l>` [K_l, d]: set by k-means, saved and loaded with the state dict."""

    def __init__(self, dim: int, sizes: tuple[int, ...]):
        super().__init__()
        self.levels = len(sizes)
        for level, size in enumerate(sizes):
            self.register_buffer(f"codebook_{level}", torch.zeros(size, dim))

    def books(self) -> list[torch.Tensor]:
        return [getattr(self, f"codebook_{level}") for level in range(self.levels)]


class RQKMeans(TorchQuantizer):
    kind = "rqkmeans"

    def _build(self, dim: int) -> nn.Module:
        return Codebooks(dim, self.config.codebook_sizes)

    @torch.no_grad()
    def _fit(self, x: torch.Tensor, progress: bool) -> None:
        c = self.config
        backend = resolve_backend(c.kmeans_backend)
        self.fit_info["kmeans_backend"] = backend
        log.info("rqkmeans: %d levels of k-means (%s) on %d items", c.levels, backend, x.shape[0])
        generator = torch.Generator().manual_seed(c.seed)  # k-means++ draws: part of "same seed, same codes"
        residual = x.float().clone()
        levels = tqdm(self.module.books(), desc="fit rqkmeans", unit="level", disable=not progress, file=sys.stderr)
        for book in levels:
            book.copy_(kmeans(residual, book.shape[0], c.lloyd_iters, generator, backend))
            codes, _ = nearest(residual, book)
            residual -= book[codes]  # level l + 1 quantizes what level l left over

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        residual = x.float().clone()
        codes = []
        for book in self.module.books():
            level_codes, _ = nearest(residual, book)
            residual -= book[level_codes]
            codes.append(level_codes)
        return torch.stack(codes, dim=1)  # (n, L)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return sum(book[codes[:, level]] for level, book in enumerate(self.module.books()))

    def _codebooks(self) -> list[torch.Tensor]:
        return self.module.books()
