"""The one contract every sequence encoder meets.

Padding convention (used everywhere in this package and by its callers): sequences are
**right-padded**. Row ``b`` holds the user's items oldest first at positions ``0 .. len_b - 1``;
positions ``len_b .. N - 1`` are padding, marked ``True`` in ``padding_mask``.

Why right padding: for a causal encoder every padding position lies in the future of every real
position, so the causal mask alone already keeps padding out of real outputs. Attention then needs
no explicit mask at all (``is_causal=True``), which keeps PyTorch's fused Flash kernel eligible on
CUDA, and a GRU needs no packing. Position ``t`` is also the item's position counted from the
oldest item of the window, so adding padding changes no position index.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from .layers import at_last


@runtime_checkable
class SequenceEncoder(Protocol):
    """Maps item embeddings ``x`` (B, N, d) to contextual states (B, N, d).

    ``padding_mask`` (B, N) is ``True`` at padding positions. Outputs at padding positions are zero.
    ``causal`` says whether the output at position t depends only on positions <= t (SASRec,
    GRU4Rec) or on the whole sequence (BERT4Rec).

    The three encoders here also have ``forward_last(x, padding_mask)`` -> (B, d), the output at
    each row's last real position, and ``forward_split(x, padding_mask, n_full)`` -> (``forward``'s
    states of rows ``:n_full``, the last position's of the others), computed without the outputs no
    one reads where that is cheaper (the last Transformer block's queries). They are optional:
    callers fall back to ``forward`` (see :func:`last_states`, :func:`split_states`).
    """

    causal: bool
    dim: int
    max_len: int

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor: ...

    def __call__(self, x: Tensor, padding_mask: Tensor) -> Tensor: ...


def last_states(encoder, x: Tensor, padding_mask: Tensor) -> Tensor:
    """``encoder``'s outputs at each row's last real position, (B, d): its ``forward_last`` when it has
    one, else ``forward``'s outputs there."""
    if hasattr(encoder, "forward_last"):
        return encoder.forward_last(x, padding_mask)
    return at_last(encoder(x, padding_mask), padding_mask)


def split_states(encoder, x: Tensor, padding_mask: Tensor, n_full: int) -> tuple[Tensor, Tensor]:
    """``encoder``'s outputs of rows ``:n_full`` at every position and of rows ``n_full:`` at their last
    real position, from one call: its ``forward_split`` when it has one, else ``forward``'s outputs."""
    if hasattr(encoder, "forward_split"):
        return encoder.forward_split(x, padding_mask, n_full)
    states = encoder(x, padding_mask)
    return states[:n_full], at_last(states[n_full:], padding_mask[n_full:])
