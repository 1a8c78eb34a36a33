"""rqvae: the paper's Semantic-ID generator (§2.2), an RQ-VAE as in TIGER (Rajput et al., NeurIPS 2023, §3.1).

MLP encoder (d -> 512 -> 256 -> 128 -> 32) -> ResidualVQ over the 32-d latent -> mirrored MLP decoder.
Loss = ||x - x_hat||^2 (summed over dimensions, averaged over items) + β * commitment loss per level
(VQ-VAE, van den Oord et al. 2017, Eq. 3; the codebook term is replaced by EMA updates, ibid. App. A.1).
Trained with Adam for `epochs` passes over all items in shuffled batches; before the first step the
codebooks are k-means-initialised on the latents of ALL items.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from tqdm.auto import trange
from vector_quantize_pytorch import ResidualVQ

from semid.devices import threads_for_rows
from semid.quantize.base import TorchQuantizer, library_kwargs


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAEModule(nn.Module):
    def __init__(self, dim: int, hidden: tuple[int, ...], latent: int, rq: ResidualVQ):
        super().__init__()
        self.encoder = mlp([dim, *hidden, latent])
        self.rq = rq
        self.decoder = mlp([latent, *reversed(hidden), dim])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction [B, d], codes [B, L], commitment loss per level [L])."""
        quantized, codes, commit = self.rq(self.encoder(x))  # (B, latent), (B, L), (L,)
        return self.decoder(quantized), codes, commit


class RQVAE(TorchQuantizer):
    kind = "rqvae"

    def _build(self, dim: int) -> nn.Module:
        c = self.config
        rq = ResidualVQ(dim=c.latent_dim, codebook_size=c.codebook_sizes, **library_kwargs(c))
        return RQVAEModule(dim, c.hidden_dims, c.latent_dim, rq)

    def _fit(self, x: torch.Tensor, progress: bool) -> None:
        model, c = self.module, self.config
        with torch.no_grad():
            model.rq(model.encoder(x), freeze_codebook=True)  # k-means init on the latents of all items
        optimizer = torch.optim.Adam(model.parameters(), lr=c.lr)
        order = torch.Generator().manual_seed(c.seed)  # batch order: part of "same seed, same codes"
        bar = trange(c.epochs, desc="fit rqvae", unit="epoch", disable=not progress, file=sys.stderr)
        for _ in bar:
            total = 0.0
            for index in torch.randperm(x.shape[0], generator=order).split(c.batch_size):
                batch = x[index.to(x.device)]
                with threads_for_rows(len(index)):  # an epoch's short last batch: the bits of one thread
                    x_hat, _, commit = model(batch)
                    loss = (x_hat - batch).pow(2).sum(-1).mean() + commit.sum()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                total += loss.item() * len(index)
            bar.set_postfix(loss=f"{total / x.shape[0]:.4f}")

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.rq(self.module.encoder(x))[1]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.module.decoder(self.module.rq.get_output_from_indices(codes))

    def _codebooks(self) -> list[torch.Tensor]:
        return list(self.module.rq.codebooks)
