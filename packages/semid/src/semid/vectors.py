"""Embedding matrices on disk: semid's embeddings.safetensors, and precomputed `.safetensors` / `.npy` inputs.

A precomputed matrix (1536-d API embeddings, LLaMA embeddings made elsewhere) needs an id per row:
from an `--ids` file (one id per line, or a JSON list), from the `ids` metadata entry of a
.safetensors file (what `semid embed` writes), or, when an item file is given too, from that file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from semid.errors import fail
from semid.io import EMBEDDINGS_FORMAT, metadata_json, read_tensor_file
from semid.matrix_file import ROWS_PER_WRITE, write_matrix
from semid.quantize.base import check_embeddings


@dataclass(frozen=True)
class EmbeddingFile:
    """A checked embedding matrix [n, d] (float32, finite) and its row ids (None if the file has none)."""

    path: Path
    matrix: torch.Tensor
    ids: list[str] | None
    metadata: dict[str, str]


def embeddings_bytes(ids: list[str], matrix: torch.Tensor, info: dict[str, str] | None = None) -> bytes:
    """embeddings.safetensors: tensor `embeddings` [n, d] and metadata `ids` (JSON list) plus `info`."""
    buffer = io.BytesIO()
    stream_embeddings(buffer, ids, matrix, info)
    return buffer.getvalue()


def stream_embeddings(
    handle: BinaryIO, ids: list[str], matrix: torch.Tensor, info: dict[str, str] | None = None
) -> None:
    """embeddings_bytes written a block of rows at a time (a memory-mapped matrix is never read whole)."""
    metadata = {"format": EMBEDDINGS_FORMAT, "ids": json.dumps(ids, ensure_ascii=False), **(info or {})}
    write_matrix(handle, matrix.split(ROWS_PER_WRITE), (int(matrix.shape[0]), int(matrix.shape[1])), metadata)


def load_matrix(path: str | PathLike) -> tuple[torch.Tensor, dict[str, str]]:
    """The matrix of a .npy or .safetensors file (tensor `embeddings`, or its only tensor) and the file's
    metadata ({} for .npy), not yet checked: read_embeddings and semid.collab check it their way."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, None, None, "no such file")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise fail(path, None, None, f"cannot be read as .npy ({error})") from None
        if array.dtype.kind not in "biufc":  # strings, dates, structured records: torch cannot take them
            raise fail(path, None, "embeddings", f"must hold floats, got numpy dtype {array.dtype}")
        return torch.from_numpy(np.ascontiguousarray(array)), {}
    if path.suffix == ".safetensors":
        tensors, metadata = read_tensor_file(path)
        return _pick_matrix(path, tensors), metadata
    raise fail(path, None, None, "embeddings must be a .safetensors or .npy file")


def metadata_ids(path: str | PathLike, metadata: dict[str, str]) -> list[str] | None:
    """The checked `ids` entry of a .safetensors file's metadata (what `semid embed` writes), if any."""
    return _check_ids(Path(path), metadata_json(path, metadata, "ids")) if "ids" in metadata else None


def read_embeddings(path: str | PathLike, ids_file: str | PathLike | None = None) -> EmbeddingFile:
    """Read and check a .safetensors or .npy matrix; ids from `ids_file`, else from the file's metadata."""
    path = Path(path)
    matrix, metadata = load_matrix(path)
    ids = metadata_ids(path, metadata)
    matrix = check_embeddings(matrix, path)
    if ids_file is not None:
        ids = read_ids(ids_file)
        source = ids_file
    else:
        source = path
    if ids is not None and len(ids) != matrix.shape[0]:
        raise fail(source, None, "ids", f"lists {len(ids)} ids but {path} has {matrix.shape[0]} embedding rows")
    return EmbeddingFile(path=path, matrix=matrix, ids=ids, metadata=metadata)


def _pick_matrix(path: Path, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    if "embeddings" in tensors:
        return tensors["embeddings"]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    raise fail(path, None, "embeddings", f"is not among the tensors {sorted(tensors)}")


def read_ids(path: str | PathLike) -> list[str]:
    """Ids from a text file (one per line) or a .json list."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, None, None, "no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise fail(path, line, "ids", "holds invalid UTF-8") from None
    if path.suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise fail(path, error.lineno, "ids", f"malformed JSON ({error.msg})") from None
        return _check_ids(path, values)
    lines = text.splitlines()
    for line_no, value in enumerate(lines, start=1):
        if not value.strip():
            raise fail(path, line_no, "ids", "is empty (one id per line, no blank lines)")
    return _check_ids(path, lines, line_numbers=True)


def _check_ids(path: Path, values: object, line_numbers: bool = False) -> list[str]:
    if not isinstance(values, list):
        raise fail(path, None, "ids", f"must be a list, got {type(values).__name__}")
    ids = [str(v).strip() for v in values]
    seen: dict[str, int] = {}
    for row, item_id in enumerate(ids, start=1):
        if not item_id:
            raise fail(path, row if line_numbers else None, "ids", f"entry {row} is empty")
        if item_id in seen:
            raise fail(path, row if line_numbers else None, "ids",
                       f"repeats id {item_id!r} (entries {seen[item_id]} and {row})")
        seen[item_id] = row
    return ids
