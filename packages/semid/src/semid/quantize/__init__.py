"""Quantizers behind one interface (`Quantizer`): rqvae, rq, pq, vq (built on vector-quantize-pytorch) and
rqkmeans (plain residual k-means: faiss when installed, else torch)."""

from __future__ import annotations

import importlib
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

# kind -> "module:class": the one place a quantizer name is resolved. A class is imported when first
# asked for: vector-quantize-pytorch pulls in einx and torch._dynamo, ~1.8 s that every `import semid`,
# and so every h2rec command reading a semid folder, paid before (it needs the codes, not a quantizer).
QUANTIZER_CLASSES: dict[str, str] = {
    "rqvae": "semid.quantize.rqvae:RQVAE",
    "rq": "semid.quantize.flat:ResidualQuantizer",
    "pq": "semid.quantize.flat:ProductQuantizer",
    "vq": "semid.quantize.flat:VectorQuantizer",
    "rqkmeans": "semid.quantize.rqkmeans:RQKMeans",
}


def quantizer_class(kind: str) -> type[TorchQuantizer]:
    module, name = QUANTIZER_CLASSES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def build_quantizer(config: QuantizerConfig | None = None) -> Quantizer:
    """An unfitted quantizer of `config.kind` (default: QuantizerConfig()); weights are made in `fit` under its seed."""
    config = config or QuantizerConfig()
    return quantizer_class(config.kind)(config)


def load_quantizer(directory: str | PathLike, device: str | None = None) -> Quantizer:
    """A fitted quantizer from directory/quantizer.json + quantizer.safetensors, whatever its kind."""
    check_complete(directory)  # an interrupted commit may have left the json of one run, the weights of another
    config, _ = read_quantizer_info(directory)
    return quantizer_class(config.kind).load(directory, device=device)


__all__ = [
    "QUANTIZER_CLASSES",
    "Quantizer",
    "build_quantizer",
    "check_embeddings",
    "load_quantizer",
    "quantizer_class",
    "reconstruction_error",
    "relative_error",
]
