"""Building blocks shared by the Transformer encoders: attention, feed-forward, positions, block, stack.

SASRec and BERT4Rec differ only in the mask (causal or bidirectional), the layer-norm placement
and a few sizes, so both are a :class:`TransformerStack` with a different configuration.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NormPlacement = Literal["sasrec", "pre", "post"]
Activation = Literal["relu", "gelu"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {sorted(choices)}")


def check_dropout(name: str, value: float) -> None:
    # [0, 1): p = 1 would zero every activation (torch itself accepts it), never a useful setting.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value!r} must be a number in [0, 1)")


def attention_mask(padding_mask: Tensor, causal: bool) -> Tensor | None:
    """The boolean ``attn_mask`` for SDPA (True = may attend), or None when ``is_causal`` suffices.

    With right padding a causal encoder never needs a mask: padding keys lie after every real
    query. Returning None there is what keeps the Flash kernel eligible (it accepts no attn_mask).
    """
    if causal:
        return None
    visible = ~padding_mask
    # Right padding puts a real item at position 0 of every non-empty row; keeping that key
    # visible for an all-padding row too avoids a fully masked softmax (NaN) and changes nothing else.
    visible[:, 0] = True
    return visible[:, None, None, :]  # (B, 1, 1, N): every query sees every real key


class MultiHeadAttention(nn.Module):
    """Multi-head attention through ``F.scaled_dot_product_attention`` (fused kernels on CUDA).

    ``dropout`` acts on the attention weights only (SDPA's ``dropout_p``), not on the output.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, h, N, d/h)

    def forward(self, query: Tensor, key_value: Tensor, *, causal: bool, attn_mask: Tensor | None) -> Tensor:
        q = self._split(self.q_proj(query))
        k, v = self._split(self.k_proj(key_value)), self._split(self.v_proj(key_value))
        out = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal and attn_mask is None,
        )  # (B, h, N, d/h)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    """Position-wise feed-forward: Linear -> activation -> dropout -> Linear."""

    def __init__(self, dim: int, inner_dim: int, dropout: float, activation: Activation):
        super().__init__()
        check_choice("activation", activation, _ACTIVATIONS)
        self.net = nn.Sequential(
            nn.Linear(dim, inner_dim), _ACTIVATIONS[activation](), nn.Dropout(dropout), nn.Linear(inner_dim, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """One self-attention + feed-forward block, with three layer-norm placements.

    - ``"sasrec"``: Kang & McAuley's original. Only the *queries* are layer-normed, the residual
      starts from the normed queries, and the feed-forward input is normed (the TF code and
      pmixer/SASRec.pytorch do the same). A final layer norm closes the stack.
    - ``"pre"``: standard pre-LN (norm, sublayer, residual), final layer norm.
    - ``"post"``: BERT / RecBole post-LN (sublayer, residual, norm).

    ``dropout`` is the hidden dropout (feed-forward inner activation and residual branches);
    ``attn_dropout`` acts on the attention weights, and None means ``dropout``.
    """

    def __init__(self, dim: int, num_heads: int, inner_dim: int, dropout: float, activation: Activation,
                 norm: NormPlacement, eps: float, *, attn_dropout: float | None = None):
        super().__init__()
        check_choice("norm", norm, ("sasrec", "pre", "post"))
        self.norm = norm
        # separate from the hidden dropout because tuned SASRec setups set the two apart
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.attn = MultiHeadAttention(dim, num_heads, dropout=attn_dropout)
        self.ffn = FeedForward(dim, inner_dim, dropout, activation)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, *, causal: bool, attn_mask: Tensor | None, keys: Tensor | None = None) -> Tensor:
        """``x`` (B, M, d) -> (B, M, d). ``keys`` (B, N, d): the states ``x``'s positions attend to,
        when ``x`` holds the queries of some positions only (None: ``x`` itself, self-attention)."""
        if self.norm == "post":
            x = self.norm1(x + self.drop(self.attn(x, x if keys is None else keys, causal=causal, attn_mask=attn_mask)))
            return self.norm2(x + self.drop(self.ffn(x)))
        if self.norm == "pre":
            h = self.norm1(x)
            x = x + self.drop(self.attn(h, h if keys is None else self.norm1(keys), causal=causal, attn_mask=attn_mask))
            return x + self.drop(self.ffn(self.norm2(x)))
        # "sasrec": keys and values stay un-normed and the attention output has no dropout of its
        # own (only the attention weights do), as in the original.
        q = self.norm1(x)
        x = q + self.attn(q, x if keys is None else keys, causal=causal, attn_mask=attn_mask)
        x = self.norm2(x)
        return x + self.drop(self.ffn(x))


class TransformerStack(nn.Module):
    """Learned positions + ``num_layers`` blocks; the body of SASRec and BERT4Rec.

    Three dropouts: ``emb_dropout`` on the input (items + positions) before the first block,
    ``attn_dropout`` on the attention weights, ``dropout`` on the hidden states (feed-forward inner
    activation and residual branches). None for either of the first two means ``dropout``.
    """

    def __init__(self, *, dim: int, num_layers: int, num_heads: int, inner_dim: int, dropout: float,
                 max_len: int, activation: Activation, norm: NormPlacement, eps: float, causal: bool,
                 scale_input: bool, emb_dropout: float | None = None, attn_dropout: float | None = None):
        super().__init__()
        # None = the hidden dropout: one number still configures everything, as before these knobs.
        emb_dropout = dropout if emb_dropout is None else emb_dropout
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        for name, value in (("dropout", dropout), ("emb_dropout", emb_dropout), ("attn_dropout", attn_dropout)):
            check_dropout(name, value)
        self.dim, self.max_len, self.causal, self.norm = dim, max_len, causal, norm
        self.scale = math.sqrt(dim) if scale_input else 1.0
        self.positions = nn.Embedding(max_len, dim)
        # N(0, 0.02) as BERT: torch's default N(0, 1) would drown item embeddings of that scale
        nn.init.normal_(self.positions.weight, std=0.02)
        # post-LN (BERT, RecBole) normalises the input; pre-LN and "sasrec" normalise the output.
        self.in_norm = nn.LayerNorm(dim, eps=eps) if norm == "post" else nn.Identity()
        self.out_norm = nn.Identity() if norm == "post" else nn.LayerNorm(dim, eps=eps)
        self.drop = nn.Dropout(emb_dropout)  # input dropout: tuned apart from the hidden one in strong setups
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, inner_dim, dropout, activation, norm, eps, attn_dropout=attn_dropout)
            for _ in range(num_layers)
        )

    @classmethod
    def from_config(cls, c, *, causal: bool, default_inner: int) -> TransformerStack:
        """From a SASRecConfig or BERT4RecConfig (they share these fields)."""
        return cls(dim=c.dim, num_layers=c.num_layers, num_heads=c.num_heads, inner_dim=c.inner_dim or default_inner,
                   dropout=c.dropout, max_len=c.max_len, activation=c.activation, norm=c.norm, eps=c.layer_norm_eps,
                   causal=causal, scale_input=c.scale_input,
                   # passed as given (None included): the stack resolves None to ``dropout`` in one place
                   emb_dropout=c.emb_dropout, attn_dropout=c.attn_dropout)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        check_inputs(x, padding_mask, self.dim, self.max_len)
        keep = (~padding_mask).unsqueeze(-1).to(x.dtype)  # (B, N, 1)
        positions = torch.arange(x.shape[1], device=x.device)  # right padding: index == position
        h = self.drop(self.in_norm(x * self.scale + self.positions(positions))) * keep
        attn_mask = attention_mask(padding_mask, self.causal)
        for block in self.blocks:
            h = block(h, causal=self.causal, attn_mask=attn_mask) * keep
        return self.out_norm(h) * keep

    def forward_last(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        """``forward(x, padding_mask)`` at each row's last real position only, (B, d) (zero for a row
        of padding only); see :meth:`forward_split`."""
        return self.forward_split(x, padding_mask, 0)[1]

    def forward_split(self, x: Tensor, padding_mask: Tensor, n_full: int) -> tuple[Tensor, Tensor]:
        """One pass for rows that need every position and rows that need their last one only:
        ``forward``'s states of rows ``:n_full`` (n_full, N, d), and of rows ``n_full:`` at their last
        real position (B - n_full, d; zero for a row of padding only).

        The blocks before the last run on all B rows together; the last block computes the second
        group's one query per row (its attention over the row's states, its feed-forward and its
        norms on one position instead of N). Equal to ``forward``'s values up to rounding; in
        training mode the dropout draws differ from ``forward``'s."""
        check_inputs(x, padding_mask, self.dim, self.max_len)
        if not 0 <= n_full <= len(x):
            raise ValueError(f"n_full={n_full} must lie in [0, {len(x)}]")
        if not self.blocks:  # no block to cut short
            states = self.forward(x, padding_mask)
            return states[:n_full], at_last(states[n_full:], padding_mask[n_full:])
        keep = (~padding_mask).unsqueeze(-1).to(x.dtype)  # (B, N, 1)
        positions = torch.arange(x.shape[1], device=x.device)  # right padding: index == position
        h = self.drop(self.in_norm(x * self.scale + self.positions(positions))) * keep
        attn_mask = attention_mask(padding_mask, self.causal)
        for block in self.blocks[:-1]:
            h = block(h, causal=self.causal, attn_mask=attn_mask) * keep
        last_block = self.blocks[-1]
        full = h[:n_full]
        if n_full:
            full = last_block(full, causal=self.causal, attn_mask=None if attn_mask is None else attn_mask[:n_full])
            full = self.out_norm(full * keep[:n_full]) * keep[:n_full]
        tail, tail_padding = h[n_full:], padding_mask[n_full:]
        if not len(tail):
            return full, tail[:, 0]
        rows = torch.arange(len(tail), device=h.device)
        last = last_positions(tail_padding)
        kept = keep[n_full:][rows, last]  # (B - n_full, 1): 0 for a row of padding only
        # the last position sees every real position of its row, causal or not (right padding)
        out = last_block(tail[rows, last, None], causal=False, attn_mask=attention_mask(tail_padding, False),
                         keys=tail)[:, 0]
        return full, self.out_norm(out * kept) * kept


def last_positions(padding_mask: Tensor) -> Tensor:
    """(B,) each right-padded row's last real position (0 for a row of padding only)."""
    return ((~padding_mask).sum(1) - 1).clamp(min=0)


def at_last(states: Tensor, padding_mask: Tensor) -> Tensor:
    """``states`` (B, N, ...) at each row's last real position -> (B, ...)."""
    return states[torch.arange(len(states), device=states.device), last_positions(padding_mask)]


def check_inputs(x: Tensor, padding_mask: Tensor, dim: int, max_len: int) -> None:
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"expected item embeddings of shape (B, N, {dim}), got {tuple(x.shape)}")
    if padding_mask.shape != x.shape[:2] or padding_mask.dtype != torch.bool:
        raise ValueError(f"padding_mask must be a bool tensor of shape {tuple(x.shape[:2])}, "
                         f"got {padding_mask.dtype} {tuple(padding_mask.shape)}")
    if x.shape[1] > max_len:
        raise ValueError(f"sequence length {x.shape[1]} exceeds max_len={max_len}")
