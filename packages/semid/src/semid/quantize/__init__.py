"""Quantizers behind one interface (`Quantizer`): rqvae, rq, pq, vq (built on vector-quantize-pytorch) and
rqkmeans (plain residual k-means: faiss when installed, else torch)."""

from __future__ import annotations

from os import PathLike

from semid.config import QuantizerConfig
from semid.io import check_complete
from semid.quantize.base import (
    Quantizer,
    TorchQuantizer,
    check_embeddings,
    read_quantizer_info,
    reconstruction_error,
    relative_error,
)
from semid.quantize.flat import ProductQuantizer, ResidualQuantizer, VectorQuantizer
from semid.quantize.rqkmeans import RQKMeans
from semid.quantize.rqvae import RQVAE

# kind -> class: the one place a quantizer name is resolved.
QUANTIZER_CLASSES: dict[str, type[TorchQuantizer]] = {
    "rqvae": RQVAE,
    "rq": ResidualQuantizer,
    "pq": ProductQuantizer,
    "vq": VectorQuantizer,
    "rqkmeans": RQKMeans,
}


def build_quantizer(config: QuantizerConfig | None = None) -> Quantizer:
    """An unfitted quantizer of `config.kind` (default: QuantizerConfig()); weights are made in `fit` under its seed."""
    config = config or QuantizerConfig()
    return QUANTIZER_CLASSES[config.kind](config)


def load_quantizer(directory: str | PathLike, device: str | None = None) -> Quantizer:
    """A fitted quantizer from directory/quantizer.json + quantizer.safetensors, whatever its kind."""
    check_complete(directory)  # an interrupted commit may have left the json of one run, the weights of another
    config, _ = read_quantizer_info(directory)
    return QUANTIZER_CLASSES[config.kind].load(directory, device=device)


__all__ = [
    "QUANTIZER_CLASSES",
    "Quantizer",
    "build_quantizer",
    "check_embeddings",
    "load_quantizer",
    "reconstruction_error",
    "relative_error",
]
