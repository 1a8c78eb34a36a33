"""The Quantizer interface and what every quantizer shares: input checks, seeding, batching, save/load.

A quantizer turns embeddings [n, d] into L codes per item. Its torch module is built inside `fit`
(the input dimension is known only then) under the config's seed, so the same seed and data give
the same weights and the same codes on the CPU.
"""

from __future__ import annotations

import dataclasses
import logging
from os import PathLike
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from semid.config import QuantizerConfig, config_from_dict, config_to_dict
from semid.devices import resolve_device, threads_for_rows, warn_unless_reproducible
from semid.errors import SemidError, fail
from semid.io import (
    QUANTIZER_CONFIG,
    QUANTIZER_WEIGHTS,
    atomic_write_bytes,
    json_bytes,
    read_json,
    read_tensor_file,
    tensors_to_bytes,
)

log = logging.getLogger(__name__)

QUANTIZER_FORMAT = "semid-quantizer/1"
ENCODE_BATCH = 8192  # rows per encode/decode step: bounds the [rows, K] distance matrix


@runtime_checkable
class Quantizer(Protocol):
    """What the pipeline (and anyone else) needs from a quantizer."""

    config: QuantizerConfig
    fit_info: dict  # how the last fit ran: items it saw (fit_sample), and kind-specific facts; stats.json keeps it

    def fit(self, x: torch.Tensor, progress: bool = False, source: str | PathLike | None = None) -> Quantizer:
        """Learn codebooks (and weights) from x [n, d] (a seeded sample of config.fit_sample rows when n is
        larger); `source` names the input in errors."""
        ...

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes, LongTensor [n, L]."""
        ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstruction of x from codes, float32 [n, d]."""
        ...

    @property
    def codebooks(self) -> list[torch.Tensor]:
        """Per level, float32 [K_l, d_l]: code vectors in the space this quantizer quantizes."""
        ...

    def save(self, directory: str | PathLike) -> None:
        """Write quantizer.json and quantizer.safetensors into `directory`."""
        ...

    def state_files(self) -> dict[str, bytes]:
        """{file name: bytes} that `save` writes; the pipeline stages them with the rest of OUT_DIR."""
        ...


def library_kwargs(config: QuantizerConfig) -> dict:
    """vector-quantize-pytorch options every semid quantizer shares: EMA codebooks, k-means init, dead codes."""
    return dict(
        kmeans_init=True,  # k-means on the first forward call's data: semid feeds it ALL items
        kmeans_iters=config.kmeans_iters,
        decay=config.ema_decay,
        threshold_ema_dead_code=config.dead_code_threshold,
        commitment_weight=config.commitment_weight,
    )


def relative_error(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean over items of ||x - x_hat|| / ||x|| (rows with ||x|| = 0 are left out)."""
    norms = x.norm(dim=-1)
    keep = norms > 0
    if not bool(keep.any()):
        return float("nan")
    return float(((x - x_hat).norm(dim=-1)[keep] / norms[keep]).mean())


def check_embeddings(x: torch.Tensor, source: str | PathLike | None = None) -> torch.Tensor:
    """x as float32 [n, d]; NaN/inf rows are user errors naming the (1-based) row."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise fail(source, None, "embeddings", f"must be a non-empty 2-D matrix, got shape {tuple(x.shape)}")
    if not (x.is_floating_point()):
        raise fail(source, None, "embeddings", f"must hold floats, got {x.dtype}")
    x = x.float()
    # In blocks: a memory-mapped catalogue is checked without an [n, d] mask beside it.
    bad = torch.cat([~torch.isfinite(rows).all(dim=1) for rows in x.split(ENCODE_BATCH)])
    if bool(bad.any()):
        row = int(bad.nonzero()[0]) + 1
        kind = "NaN" if bool(torch.isnan(x[row - 1]).any()) else "an infinite value"
        raise fail(source, row, "embeddings", f"row {row} holds {kind} ({int(bad.sum())} bad row(s) in all)")
    return x


def reconstruction_error(quantizer: Quantizer, x: torch.Tensor, codes: torch.Tensor) -> float:
    """relative_error(x, quantizer.decode(codes)), ENCODE_BATCH rows at a time: no second [n, d] matrix."""
    total, kept = 0.0, 0
    for rows, row_codes in zip(x.split(ENCODE_BATCH), codes.split(ENCODE_BATCH)):
        norms = rows.norm(dim=-1)
        keep = norms > 0
        errors = (rows - quantizer.decode(row_codes)).norm(dim=-1)
        total += float((errors[keep] / norms[keep]).double().sum())
        kept += int(keep.sum())
    return total / kept if kept else float("nan")


def sample_rows(n: int, sample: int, seed: int) -> torch.Tensor | None:
    """Row indices (ascending) of a seeded random sample of `sample` of n rows; None when sample is 0 or >= n.

    None means "fit on x as it is": a sample covering every row must give exactly the full fit, so it is
    not a permutation of the rows (the order of rows steers k-means starts and rqvae batches).
    """
    if sample == 0 or sample >= n:
        return None
    generator = torch.Generator().manual_seed(seed)  # its own stream: the fit's draws stay those of a full fit
    return torch.randperm(n, generator=generator)[:sample].sort().values


def _cuda_indices(device: torch.device) -> list[int]:
    """The CUDA device whose RNG state fork_rng must save and restore (none on CPU)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


class TorchQuantizer:
    """Shared machinery; a subclass defines `kind`, `_build`, `_fit`, `_encode`, `_decode`, `_codebooks`."""

    kind: str = ""

    def __init__(self, config: QuantizerConfig):
        if config.kind != self.kind:
            raise SemidError(f"{type(self).__name__} needs kind {self.kind!r}, got {config.kind!r}")
        self.config = config
        self.dim: int | None = None
        self.module: nn.Module | None = None
        self.fit_info: dict = {}
        self.device = resolve_device(config.device)

    # -- subclass hooks -------------------------------------------------------------------------
    def _build(self, dim: int) -> nn.Module:
        raise NotImplementedError

    def _fit(self, x: torch.Tensor, progress: bool) -> None:
        raise NotImplementedError

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _codebooks(self) -> list[torch.Tensor]:
        raise NotImplementedError

    # -- public API -----------------------------------------------------------------------------
    def fit(self, x: torch.Tensor, progress: bool = False, source: str | PathLike | None = None) -> TorchQuantizer:
        x = check_embeddings(x, source)
        largest = max(self.config.codebook_sizes)
        if largest > x.shape[0]:
            raise fail(source, None, "codebook_size",
                       f"is {largest}, more codes than the {x.shape[0]} items; use a smaller --codebook-size")
        rows = sample_rows(x.shape[0], self.config.fit_sample, self.config.seed)
        if rows is not None:
            log.info("%s: fitting on a seeded sample of %d of %d items (fit_sample)", self.kind, len(rows), x.shape[0])
            x = x[rows]
        self.fit_info = {"items": int(x.shape[0]), "sampled": rows is not None}
        if self.device.type == "cpu" and torch.get_num_threads() > 1:
            warn_unless_reproducible()
        # fork_rng: seeding must not change the caller's global RNG stream. threads_for_rows: a fit on few
        # items gives the codes it gives on one thread (rqvae also caps each short batch: rqvae.py).
        with torch.random.fork_rng(devices=_cuda_indices(self.device)), threads_for_rows(int(x.shape[0])):
            torch.manual_seed(self.config.seed)
            self.dim = int(x.shape[1])
            self.module = self._build(self.dim).to(self.device)
            self.module.train()
            self._fit(x.to(self.device), progress)
        self.module.eval()
        return self

    def _require_fitted(self) -> nn.Module:
        if self.module is None:
            raise SemidError(f"the {self.kind} quantizer is not fitted yet: call fit(x) or load a saved one")
        return self.module

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        x = check_embeddings(x)
        if x.shape[1] != self.dim:
            raise fail(None, None, "embeddings", f"have dimension {x.shape[1]}, the quantizer was fitted on {self.dim}")
        parts = []
        for chunk in x.split(ENCODE_BATCH):
            with threads_for_rows(chunk.shape[0]):  # the last chunk may be short: devices.threads_for_rows
                parts.append(self._encode(chunk.to(self.device)).cpu())
        return torch.cat(parts).long()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        codes = torch.as_tensor(codes, dtype=torch.long)
        sizes = torch.tensor(self.config.codebook_sizes)
        if codes.ndim != 2 or codes.shape[1] != self.config.levels:
            raise fail(None, None, "codes", f"must be [n, {self.config.levels}], got {tuple(codes.shape)}")
        if bool((codes < 0).any()) or bool((codes >= sizes).any()):
            raise fail(None, None, "codes", f"must lie in [0, K_l) with K = {list(self.config.codebook_sizes)}")
        parts = []
        for chunk in codes.split(ENCODE_BATCH):
            with threads_for_rows(chunk.shape[0]):
                parts.append(self._decode(chunk.to(self.device)).float().cpu())
        return torch.cat(parts)

    @property
    def codebooks(self) -> list[torch.Tensor]:
        self._require_fitted()
        return [c.detach().float().cpu().clone() for c in self._codebooks()]

    def state_files(self) -> dict[str, bytes]:
        """{file name: bytes} of quantizer.json and quantizer.safetensors (for staged writes)."""
        module = self._require_fitted()
        info = {"format": QUANTIZER_FORMAT, "dim": self.dim, "config": config_to_dict(self.config)}
        return {
            QUANTIZER_CONFIG: json_bytes(info),
            QUANTIZER_WEIGHTS: tensors_to_bytes(module.state_dict(), {"format": QUANTIZER_FORMAT}),
        }

    def save(self, directory: str | PathLike) -> None:
        for name, data in self.state_files().items():
            atomic_write_bytes(Path(directory) / name, data)

    @classmethod
    def load(cls, directory: str | PathLike, device: str | None = None) -> TorchQuantizer:
        """Rebuild a fitted quantizer of this class from quantizer.json + quantizer.safetensors."""
        config, dim = read_quantizer_info(directory)
        if device is not None:
            config = dataclasses.replace(config, device=device)
        quantizer = cls(config)
        weights_path = Path(directory) / QUANTIZER_WEIGHTS
        tensors, _ = read_tensor_file(weights_path)
        with torch.random.fork_rng(devices=[]):
            module = quantizer._build(dim)
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as error:
            raise fail(weights_path, None, None, f"does not match quantizer.json ({error})") from None
        quantizer.dim = dim
        quantizer.module = module.to(quantizer.device).eval()
        return quantizer


def read_quantizer_info(directory: str | PathLike) -> tuple[QuantizerConfig, int]:
    """(config, input dim) from directory/quantizer.json."""
    path = Path(directory) / QUANTIZER_CONFIG
    info = read_json(path)
    if not isinstance(info, dict) or info.get("format") != QUANTIZER_FORMAT:
        raise fail(path, None, "format", f"is not {QUANTIZER_FORMAT!r}")
    dim = info.get("dim")
    if not isinstance(dim, int) or dim < 1:
        raise fail(path, None, "dim", f"must be a positive integer, got {dim!r}")
    return config_from_dict(QuantizerConfig, info.get("config"), source=str(path)), dim

