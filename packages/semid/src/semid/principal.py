"""Principal directions with fixed signs, so that a result does not depend on which sign the SVD or
eigensolver picked: each direction is turned so that its largest entry (in absolute value) is positive."""

from __future__ import annotations

import torch


def fixed_signs(directions: torch.Tensor) -> torch.Tensor:
    """Directions as columns [d, r], each multiplied by the sign of its largest-magnitude entry."""
    largest = directions.abs().argmax(dim=0)
    return directions * torch.sign(directions[largest, torch.arange(directions.shape[1])])


def principal_axes(x: torch.Tensor, dim: int, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mean [d], axes [d, dim], share of the variance the axes hold) of the rows of x [n, d].

    Exact: an eigendecomposition of the d x d scatter matrix, summed in float64 over chunks of rows
    (memory d^2 + chunk x d, whatever n). Axes in order of falling variance, signs fixed."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for rows in x.split(chunk):
        total += rows.double().sum(0)
    mean = total / x.shape[0]
    scatter = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for rows in x.split(chunk):
        centred = rows.double() - mean
        scatter += centred.T @ centred
    values, vectors = torch.linalg.eigh(scatter)  # ascending eigenvalues
    axes = fixed_signs(vectors[:, -dim:].flip(1))
    kept = float(values[-dim:].sum() / values.sum()) if float(values.sum()) > 0 else 1.0
    return mean.float(), axes.float(), kept
