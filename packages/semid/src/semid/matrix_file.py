"""One float32 matrix in a safetensors file, written and read a block of rows at a time.

A catalogue's embeddings can outgrow memory (10^6 items x 384 floats is 1.5 GB, and
`safetensors.torch.save` holds two more copies while it serialises). `write_matrix` writes the
header and then the rows block by block, giving the same bytes as semid.io.tensors_to_bytes;
`open_matrix` maps such a file into memory instead of reading it, so rows are paged in when a reader
touches them (the quantizer's sample, an 8,192-row encode step) and can be dropped again by the OS.
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from semid.errors import fail
from semid.io import atomic_write, matrix_header, read_header, read_tensor_file

ROWS_PER_WRITE = 8192  # rows per write call: 12 MiB at 384 dims, whatever the catalogue's size


def write_matrix(
    handle: BinaryIO,
    blocks: Iterable[torch.Tensor],
    shape: tuple[int, int],
    metadata: dict[str, str] | None = None,
    name: str = "embeddings",
) -> None:
    """Write a safetensors file of one float32 matrix `name` of `shape`, whose rows come as `blocks`."""
    rows, cols = shape
    handle.write(matrix_header(name, shape, metadata))
    written = 0
    for block in blocks:
        block = block.detach().to("cpu", torch.float32).contiguous()  # (b, cols)
        if block.ndim != 2 or block.shape[1] != cols:
            raise AssertionError(f"a block of shape {tuple(block.shape)} in a [{rows}, {cols}] matrix")
        # safetensors stores little-endian bytes, as every platform torch runs on holds them in memory.
        handle.write(memoryview(block.numpy()).cast("B"))
        written += block.shape[0]
    if written != rows:
        raise AssertionError(f"{written} rows written for a [{rows}, {cols}] matrix")


def save_matrix(path: str | PathLike, matrix: torch.Tensor, metadata: dict[str, str] | None = None) -> None:
    """`matrix` [n, d] as `path`, through a temp file and a rename (semid.io.atomic_write)."""

    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            write_matrix(handle, matrix.split(ROWS_PER_WRITE), tuple(matrix.shape), metadata)

    atomic_write(path, write)


def open_matrix(path: str | PathLike) -> torch.Tensor:
    """The float32 matrix of a one-tensor safetensors file (tensor `embeddings`, or the only one), memory-mapped.

    Copy-on-write: writing into the tensor never changes the file. Any other layout (another dtype, several
    tensors) is read into memory as semid.io.read_tensor_file reads it.
    """
    header, start = read_header(path)
    specs = {name: spec for name, spec in header.items() if name != "__metadata__"}
    name = "embeddings" if "embeddings" in specs or len(specs) != 1 else next(iter(specs))
    spec = specs.get(name)
    if not _plain_matrix(spec):
        return _read_whole(path)
    rows, cols = spec["shape"]
    begin, end = spec["data_offsets"]
    if end - begin != rows * cols * 4 or start + end > Path(path).stat().st_size:
        raise fail(path, None, name, "is cut short: its data ends before the header says (an interrupted copy?)")
    array = np.memmap(path, dtype="<f4", mode="c", offset=start + begin, shape=(rows, cols))
    return torch.from_numpy(array)


def _plain_matrix(spec: object) -> bool:
    """Whether a header entry describes a non-empty 2-D float32 tensor (what can be mapped as it is)."""
    return (isinstance(spec, dict) and spec.get("dtype") == "F32" and len(spec.get("shape", ())) == 2
            and 0 not in spec["shape"] and len(spec.get("data_offsets", ())) == 2)


def _read_whole(path: str | PathLike) -> torch.Tensor:
    tensors, _ = read_tensor_file(path)
    matrix = tensors.get("embeddings")
    if matrix is None and len(tensors) == 1:
        matrix = next(iter(tensors.values()))
    if matrix is None:
        raise fail(path, None, "embeddings", f"is not among the tensors {sorted(tensors)}")
    return matrix.float()
