"""k-means for rqkmeans: k-means++ seeding, then Lloyd iterations in faiss when it is installed (the
optional `semid[faiss]` extra), else in torch.

- Seeding is always semid's k-means++ (Arthur & Vassilvitskii, SODA 2007) under an explicit
  `torch.Generator`, so the same data and seed give the same start whichever backend runs. It also
  keeps faiss out of the local optima its own random-sample start falls into (two of four
  well-separated clusters picked: tests/semid/test_rqkmeans.py).
- torch: Lloyd iterations; every distance is computed over `DISTANCE_CHUNK` rows at a time, so memory
  grows with chunk x K, never with N x K (10^6 items x 256 codes would be 1 GB of float32 distances).
- faiss: `faiss.Kmeans` from that start, on all rows it is given (`max_points_per_centroid` is raised so
  that faiss does not subsample behind our back: semid samples itself, under its seed, `fit_sample`).

The backends handle empty clusters differently and round differently, so their centroids may differ
slightly for one seed; stats.json records which ran. Assignment (`nearest`) is always torch, so the
codes of a saved quantizer do not depend on faiss.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from semid.devices import threads_for_rows
from semid.errors import fail

DISTANCE_CHUNK = 8192  # rows per distance block: 8192 x 256 float32 = 8 MiB


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def resolve_backend(name: str) -> str:
    """'faiss' or 'torch' for a QuantizerConfig.kmeans_backend; 'faiss' without faiss is a user error."""
    if name == "auto":
        return "faiss" if faiss_available() else "torch"
    if name == "faiss" and not faiss_available():
        raise fail(None, None, "kmeans_backend", "is 'faiss' but faiss is not installed; "
                   "pip install 'semid[faiss]', or use --kmeans-backend torch")
    return name


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the nearest centroid LongTensor [n], its squared distance [n]), DISTANCE_CHUNK rows at a time."""
    c_norms = centroids.pow(2).sum(1)  # (K,)
    codes, dists = [], []
    for chunk in x.split(DISTANCE_CHUNK):
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 is the same for every c, so it is added after the argmin
        with threads_for_rows(chunk.shape[0]):  # the last chunk may be short: semid.devices.threads_for_rows
            partial = torch.addmm(c_norms, chunk, centroids.T, alpha=-2.0)  # (rows, K)
        best, index = partial.min(1)
        codes.append(index)
        dists.append((best + chunk.pow(2).sum(1)).clamp_min(0.0))
    return torch.cat(codes), torch.cat(dists)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k starting centroids: the first uniformly, each next one with probability proportional to D(x)^2."""
    n = x.shape[0]
    x_norms = x.pow(2).sum(1)  # (n,)

    def distances_to(row: int) -> torch.Tensor:  # (n,) squared distances to x[row], without an [n, d] temporary
        return (x_norms - 2.0 * (x @ x[row]) + x_norms[row]).clamp_min(0.0)

    picks = [int(torch.randint(n, (1,), generator=generator))]
    closest = distances_to(picks[0])  # (n,) squared distance to the nearest chosen centroid
    for _ in range(1, k):
        # inverse-CDF sampling in float64: torch.multinomial stops at 2^24 categories, catalogues need not
        cdf = closest.double().cumsum(0)
        if float(cdf[-1]) <= 0.0:  # fewer distinct points than k: every point is already a centroid
            pick = int(torch.randint(n, (1,), generator=generator))
        else:
            u = torch.rand(1, generator=generator, dtype=torch.float64).to(cdf.device) * cdf[-1]
            pick = min(int(torch.searchsorted(cdf, u, right=True)), n - 1)
        picks.append(pick)
        closest = torch.minimum(closest, distances_to(pick))
    return x[torch.tensor(picks)].clone()


def lloyd(x: torch.Tensor, centroids: torch.Tensor, iters: int) -> torch.Tensor:
    """Up to `iters` Lloyd steps (assign, then move each centroid to its cluster's mean); stops when no item moves.

    An emptied cluster takes the item farthest from its centroid, the next emptied one the next farthest
    (scikit-learn's rule; deterministic, and it gives the worst-fitted item a code of its own).
    """
    k = centroids.shape[0]
    previous = None
    for _ in range(iters):
        codes, dists = nearest(x, centroids)
        if previous is not None and torch.equal(codes, previous):
            break
        previous = codes
        sums = torch.zeros_like(centroids).index_add_(0, codes, x)  # (K, d)
        counts = torch.bincount(codes, minlength=k)  # (K,)
        centroids = sums / counts.clamp_min(1).unsqueeze(1).to(sums.dtype)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            farthest = torch.argsort(dists, descending=True, stable=True)[: empty.numel()]
            centroids[empty] = x[farthest]
    return centroids


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator, backend: str) -> torch.Tensor:
    """Centroids [k, d] of x [n, d] (float32): k-means++ start, then `iters` Lloyd iterations in `backend`."""
    start = kmeans_plus_plus(x, k, generator)
    if backend == "faiss":
        return faiss_lloyd(x, start, iters)
    return lloyd(x, start, iters)


def faiss_lloyd(x: torch.Tensor, start: torch.Tensor, iters: int) -> torch.Tensor:
    """faiss.Kmeans from the centroids `start` [k, d], on every row of x."""
    import faiss

    data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    n, d = data.shape
    k = start.shape[0]
    # min_points_per_centroid=1 silences faiss's "please provide at least 39*k points" warning
    km = faiss.Kmeans(d, k, niter=iters, max_points_per_centroid=max(n, 1), min_points_per_centroid=1, verbose=False)
    # faiss has its own OpenMP pool; it follows torch's thread count (--threads), since oversubscribed
    # threads on a shared machine are many times slower (docs/semid.md, section 8)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(torch.get_num_threads())
    try:
        km.train(data, init_centroids=np.ascontiguousarray(start.detach().cpu().numpy(), dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    return torch.from_numpy(np.array(km.centroids, dtype=np.float32)).to(x.device)
