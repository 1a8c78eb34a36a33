"""``train.compile``: torch.compile of the modules where a training step runs many small kernels.

A Transformer block (attention, norms, feed-forward, dropout) and H2Rec's granularity fusion and
cross attention launch a dozen kernels each for little work at batch 256 and d = 64, so a GPU step is
bound by launches, not arithmetic (benchmarks/results/gpu/: 8.9 ms a SASRec step on an H100). Each is
compiled in place (``nn.Module.compile``): the parameters, the state dict, checkpoints and the
encoders' other entry points (``forward_last``, ``forward_split``, which call the blocks) stay as they
are, and a deep copy (the weight average's) is an eager module again. A GRU is one cuDNN kernel already
and the catalogue-wide losses are large products, so both are left alone. Dynamo recompiles when a
batch has a new shape (a shorter last batch, trimmed padding) and then marks the sizes dynamic.
"""

from __future__ import annotations

import logging

from srs_backbones.layers import TransformerBlock
from torch import nn

from .model import GranularityFusion, MultiGranularityCrossAttention

log = logging.getLogger(__name__)

COMPILED = (TransformerBlock, GranularityFusion, MultiGranularityCrossAttention)


def compile_blocks(model: nn.Module, **options) -> int:
    """Compiles, in place, every submodule of ``model`` of a ``COMPILED`` type (``options`` go to
    ``torch.compile``: the default backend, inductor, unless one is named); returns how many."""
    compiled = 0
    for module in model.modules():
        if isinstance(module, COMPILED):
            module.compile(**options)
            compiled += 1
    log.info("train.compile: %d modules compiled (%s)", compiled, ", ".join(t.__name__ for t in COMPILED))
    return compiled
