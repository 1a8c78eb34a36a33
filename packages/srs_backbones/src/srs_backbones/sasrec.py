"""SASRec: causal self-attention over the item sequence (Kang & McAuley, ICDM 2018, arXiv:1808.09781)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .layers import Activation, NormPlacement, TransformerStack


@dataclass(frozen=True)
class SASRecConfig:
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 1  # the paper's best setting uses a single head
    inner_dim: int | None = None  # feed-forward width; None = dim, as in the original
    # hidden dropout (FFN inner activation, residual branches; with norm="sasrec" the FFN branch only, as the
    # original); the original used 0.2 on MovieLens-1M and 0.5 on the sparser Amazon and Steam data
    dropout: float = 0.2
    emb_dropout: float | None = None  # on the input (items + positions) before the first block; None = dropout
    attn_dropout: float | None = None  # on the attention weights (SDPA dropout_p); None = dropout
    max_len: int = 50
    activation: Activation = "relu"
    norm: NormPlacement = "sasrec"  # "post" gives the RecBole variant (with gelu, inner_dim=4*dim)
    layer_norm_eps: float = 1e-8  # the original's epsilon
    scale_input: bool = True  # multiply item embeddings by sqrt(dim) before adding positions


class SASRec(nn.Module):
    """Causal Transformer encoder: the output at position t sees items 0..t only."""

    causal = True

    def __init__(self, config: SASRecConfig = SASRecConfig()):
        super().__init__()
        self.config = config
        self.dim, self.max_len = config.dim, config.max_len
        self.stack = TransformerStack.from_config(config, causal=True, default_inner=config.dim)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        return self.stack(x, padding_mask)  # (B, N, d)

    def forward_last(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        """The output at each row's last real position, (B, d), at a fraction of ``forward``'s cost."""
        return self.stack.forward_last(x, padding_mask)

    def forward_split(self, x: Tensor, padding_mask: Tensor, n_full: int) -> tuple[Tensor, Tensor]:
        """``forward``'s states of rows ``:n_full`` and the last real position's of the others, in one pass."""
        return self.stack.forward_split(x, padding_mask, n_full)
