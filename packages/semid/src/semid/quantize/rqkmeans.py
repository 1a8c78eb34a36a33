"""rqkmeans: residual k-means, residual quantization whose codebooks are plain k-means centroids.

Level l runs k-means (K_l centroids) on the residuals that levels < l left over, and an item's code
at level l is the centroid nearest its residual; reconstruction = sum of the L centroids on its path.
No autoencoder, no gradients, no EMA. This is the residual k-means of OneRec (Deng et al. 2025,
arXiv:2502.18965) and the default Semantic-ID tokenizer of GRID (Ju et al., CIKM 2025,
arXiv:2507.22224; github.com/snap-research/GRID). k-means itself lives in quantize/kmeans.py.
With `pca_dim` (off by default) the levels cluster the embeddings' leading principal coordinates and
a reconstruction is brought back to the embedding space.
"""

from __future__ import annotations

import logging
import sys

import torch
from torch import nn
from tqdm.auto import tqdm

from semid.errors import fail
from semid.principal import principal_axes
from semid.quantize.base import TorchQuantizer
from semid.quantize.kmeans import kmeans, nearest, resolve_backend

log = logging.getLogger(__name__)


class Codebooks(nn.Module):
    """L codebooks as buffers `codebook_<l>` [K_l, w]: set by k-means, saved and loaded with the state dict.

    With `pca_dim` the codebooks live in the fit items' first pca_dim principal components (w = pca_dim):
    buffers `mean` [d] and `axes` [d, pca_dim] project an embedding there and bring a reconstruction back."""

    def __init__(self, dim: int, sizes: tuple[int, ...], pca_dim: int = 0):
        super().__init__()
        self.levels = len(sizes)
        self.pca_dim = pca_dim
        for level, size in enumerate(sizes):
            self.register_buffer(f"codebook_{level}", torch.zeros(size, pca_dim or dim))
        if pca_dim:
            self.register_buffer("mean", torch.zeros(dim))
            self.register_buffer("axes", torch.zeros(dim, pca_dim))

    def books(self) -> list[torch.Tensor]:
        return [getattr(self, f"codebook_{level}") for level in range(self.levels)]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, d] -> what k-means clusters: a float copy, or its principal coordinates [n, pca_dim]."""
        return (x.float() - self.mean) @ self.axes if self.pca_dim else x.float().clone()

    def unproject(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.axes.T + self.mean if self.pca_dim else z


class RQKMeans(TorchQuantizer):
    kind = "rqkmeans"

    def fit(self, x: torch.Tensor, progress: bool = False, source=None) -> RQKMeans:
        width = x.shape[1] if getattr(x, "ndim", 0) == 2 else None  # other shapes: the shared checks say why
        if width is not None and self.config.pca_dim > width:
            raise fail(source, None, "pca_dim", f"is {self.config.pca_dim}, more than the embeddings' {width} "
                       f"dimensions; use a smaller --pca-dim")
        return super().fit(x, progress, source)

    def _build(self, dim: int) -> nn.Module:
        return Codebooks(dim, self.config.codebook_sizes, self.config.pca_dim)

    @torch.no_grad()
    def _fit(self, x: torch.Tensor, progress: bool) -> None:
        c = self.config
        backend = resolve_backend(c.kmeans_backend)
        self.fit_info["kmeans_backend"] = backend
        if c.pca_dim:
            # the codes' quality tracks the width k-means works in more than its seeding (docs/semid.md 3.1):
            # a 32-d space is the RQ-VAE's latent width
            mean, axes, kept = principal_axes(x.float().cpu(), c.pca_dim)
            self.module.mean.copy_(mean)
            self.module.axes.copy_(axes)
            self.fit_info["pca_variance_kept"] = round(kept, 4)
            log.info("rqkmeans: %d principal components hold %.1f%% of the variance", c.pca_dim, 100 * kept)
        log.info("rqkmeans: %d levels of k-means (%s) on %d items", c.levels, backend, x.shape[0])
        generator = torch.Generator().manual_seed(c.seed)  # k-means++ draws: part of "same seed, same codes"
        residual = self.module.project(x)
        levels = tqdm(self.module.books(), desc="fit rqkmeans", unit="level", disable=not progress, file=sys.stderr)
        for book in levels:
            book.copy_(kmeans(residual, book.shape[0], c.lloyd_iters, generator, backend))
            codes, _ = nearest(residual, book)
            residual -= book[codes]  # level l + 1 quantizes what level l left over

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.module.project(x)
        codes = []
        for book in self.module.books():
            level_codes, _ = nearest(residual, book)
            residual -= book[level_codes]
            codes.append(level_codes)
        return torch.stack(codes, dim=1)  # (n, L)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.module.unproject(sum(book[codes[:, level]] for level, book in enumerate(self.module.books())))

    def _codebooks(self) -> list[torch.Tensor]:
        return self.module.books()
