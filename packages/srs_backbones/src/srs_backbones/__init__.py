"""Sequence encoders for sequential recommendation: SASRec, GRU4Rec and BERT4Rec.

Each maps item embeddings (B, N, d) plus a padding mask (B, N) to states (B, N, d); see
:mod:`srs_backbones.protocol` for the contract and the padding convention (right padding).
"""

from __future__ import annotations

from .bert4rec import BERT4Rec, BERT4RecConfig, append_mask_token, cloze_mask
from .gru4rec import GRU4Rec, GRU4RecConfig
from .layers import attention_mask
from .protocol import SequenceEncoder, last_states, split_states
from .sasrec import SASRec, SASRecConfig

# name -> (encoder class, its config class); the one place a name is looked up.
ENCODERS = {
    "sasrec": (SASRec, SASRecConfig),
    "gru4rec": (GRU4Rec, GRU4RecConfig),
    "bert4rec": (BERT4Rec, BERT4RecConfig),
}


def build_encoder(name: str, **config) -> SequenceEncoder:
    """``build_encoder("sasrec", dim=64, num_layers=2)``: the encoder with that config."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    encoder_cls, config_cls = ENCODERS[name]
    fields = config_cls.__dataclass_fields__
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ValueError(f"unknown {name} config key(s) {unknown}; valid keys: {sorted(fields)}")
    return encoder_cls(config_cls(**config))


__all__ = [
    "BERT4Rec", "BERT4RecConfig", "ENCODERS", "GRU4Rec", "GRU4RecConfig", "SASRec", "SASRecConfig",
    "SequenceEncoder", "append_mask_token", "attention_mask", "build_encoder", "cloze_mask", "last_states",
    "split_states",
]
