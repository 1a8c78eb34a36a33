"""Atomic file output and the on-disk formats of an OUT_DIR.

Every file is written to a temp file in its destination folder (fsynced, mode as a plain open()
would give) and moved into place with `os.replace` (atomic on POSIX and Windows): a crash leaves
the old file or the new one, never half of one.

A whole OUT_DIR is more than one file, and no portable call renames several files at once, so
`StagedOutput.commit()` brackets its renames with a marker file, OUT_DIR/.commit-in-progress:

1. every file is staged as a temp file `.<name>.<random>.tmp` in OUT_DIR (nothing visible yet);
2. the marker is created and fsynced, and the folder fsynced, before the first rename;
3. the staged files are renamed into place one by one, stale semid files of an earlier run removed,
   and the folder fsynced;
4. the marker is removed (the commit point).

A kill before the marker exists leaves the old files untouched (plus temp files); a kill after it
exists and before step 4 leaves it, and `check_complete` (called by `semid.load`, `load_quantizer`
and `semid stats`) refuses such a folder with a SemidError naming it, instead of reading a mix of
two runs. The next successful write into the folder replaces every file and removes the marker.
`load` checks before and after reading, so a commit overlapping either end of a read is caught too
(readers take no lock; a whole commit inside one read would go unnoticed).

Why a marker: it costs one stat() to check, where a manifest of hashes written last would cost
reading every file at each load. Staging a hidden sibling folder and swapping it in is no better: a
folder swap is two renames (not atomic either), and it would move OUT_DIR/.lock from under its holder.

Writers hold `one_writer` (an OS lock on OUT_DIR/.lock) for their whole run, so a second writer
fails at once, and only a lock holder may delete temp files: any `.<output name>.*.tmp` it finds
is then a leftover of a killed run (`remove_stale_temps`). The `.lock` file itself stays (deleting a
lock file while others may open it lets two writers lock two different files); readers ignore it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO

import torch
from filelock import FileLock, Timeout
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from semid.errors import SemidError, fail

log = logging.getLogger(__name__)

# Files a semid run may leave in OUT_DIR. A new run removes the ones it did not write, so that a
# stale texts.jsonl (say) never describes codes made from other inputs.
SEMANTIC_IDS = "semantic_ids.jsonl"
CODES = "semid.safetensors"
QUANTIZER_WEIGHTS = "quantizer.safetensors"
QUANTIZER_CONFIG = "quantizer.json"
STATS = "stats.json"
EMBEDDINGS = "embeddings.safetensors"
TEXTS = "texts.jsonl"
RECBOLE_ITEM = "semid.item"
OUTPUT_FILES = (SEMANTIC_IDS, CODES, QUANTIZER_WEIGHTS, QUANTIZER_CONFIG, STATS, EMBEDDINGS, TEXTS, RECBOLE_ITEM)

CODES_FORMAT = "semid-codes/1"
EMBEDDINGS_FORMAT = "semid-embeddings/1"


LOCK_FILE = ".lock"
COMMIT_MARKER = ".commit-in-progress"  # present from before the first rename of a commit until after the last


@contextlib.contextmanager
def one_writer(folder: str | PathLike, what: str) -> Iterator[bool]:
    """Holds an OS lock on ``folder/.lock`` for the block: one writer per folder, on Linux, macOS and
    Windows (``filelock``). A second writer gets a SemidError at once rather than waiting. Yields
    whether this call created ``folder``; a folder it created and left holding only the lock file is
    removed on the way out, so a start that fails leaves nothing behind."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise fail(folder, None, None, "exists and is not a folder")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise fail(folder, None, None, f"cannot be created ({error.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise fail(folder, None, None, "is not writable")
    lock = FileLock(folder / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise fail(folder, None, None, f"another {what} is writing to this folder; wait for it to finish, "
                                       "or choose another folder") from None
    try:
        yield created
    finally:
        lock.release()
        if created and [p.name for p in folder.iterdir()] in ([], [LOCK_FILE]):
            (folder / LOCK_FILE).unlink(missing_ok=True)
            folder.rmdir()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_temp(folder: Path, name: str, write: Callable[[BinaryIO], object]) -> Path:
    """A fsynced temp file `.<name>.<random>.tmp` in `folder`, filled by `write(handle)`."""
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the final file the mode a plain open() would have.
        os.chmod(temp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


def _fsync_folder(folder: Path) -> None:
    """Make renames and unlinks in `folder` durable. POSIX only: Windows cannot open a folder, and
    NTFS journals metadata changes itself."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_complete(folder: str | PathLike) -> None:
    """Refuse an OUT_DIR whose last commit was interrupted (its files may come from two runs)."""
    folder = Path(folder)
    if (folder / COMMIT_MARKER).exists():
        raise fail(folder, None, None, f"holds {COMMIT_MARKER}: a semid run was stopped while replacing its files, "
                                       "so they may mix two runs; run `semid encode` (or `semid embed`) into it again")


def remove_stale_temps(folder: str | PathLike, names: Sequence[str] = OUTPUT_FILES) -> None:
    """Delete `.<name>.*.tmp` staging files of `names` left in `folder` by a killed run.

    Call it only while holding `one_writer(folder)`: the lock proves that no other semid run is
    staging into this folder right now, so every such file is a leftover.
    """
    folder = Path(folder)
    stale = [temp for name in names for temp in folder.glob(f".{name}.*.tmp") if temp.is_file()]
    for temp in stale:
        temp.unlink(missing_ok=True)
    if stale:
        log.info("%s: removed %d staging file(s) left by an interrupted run", folder, len(stale))


def atomic_write(path: str | PathLike, write: Callable[[Path], None]) -> None:
    """Calls ``write(temp_path)`` on a temp file beside ``path``, flushes it to disk, gives it the
    permissions a plain open() would, and renames it over ``path``: a crash leaves the old file or
    the new one, never half of one. For writers that want a path (safetensors' save_model)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(temp))
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp creates 0600
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _write_temp(path.parent, path.name, lambda handle: handle.write(data))
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors serialisation (contiguous CPU copies; safetensors refuses views and shared storage),
    with a canonical header, so equal tensors and metadata give equal bytes in every process."""
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    return _canonical_header(safetensors_bytes(plain, metadata=metadata))


def _canonical_header(data: bytes) -> bytes:
    """Rewrite a safetensors header as JSON with sorted keys.

    safetensors keeps the metadata in a Rust HashMap, whose iteration order is seeded per process,
    so the same metadata comes out in another order in each run. The header is the 8-byte
    little-endian length, then JSON, padded with spaces to a multiple of 8 (as safetensors itself
    pads: tensor data stays aligned); the data offsets count from the end of the header, so a new
    header of another length leaves them valid.
    """
    size = int.from_bytes(data[:8], "little")
    return b"".join((_header_bytes(json.loads(data[8:8 + size])), memoryview(data)[8 + size:]))


def _header_bytes(header: dict[str, Any]) -> bytes:
    """The 8-byte length and the JSON of a safetensors header, keys sorted, padded as _canonical_header says."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def matrix_header(name: str, shape: tuple[int, int], metadata: dict[str, str] | None = None) -> bytes:
    """The header of a safetensors file holding one float32 matrix `name` [rows, cols], for writers that
    stream the rows after it: header + rows are byte for byte tensors_to_bytes({name: matrix}, metadata)."""
    rows, cols = shape
    header: dict[str, Any] = {name: {"dtype": "F32", "shape": [rows, cols], "data_offsets": [0, rows * cols * 4]}}
    if metadata:
        header["__metadata__"] = metadata
    return _header_bytes(header)


def read_header(path: str | PathLike) -> tuple[dict[str, Any], int]:
    """(the JSON header of a .safetensors file, where its data begins); a SemidError names a file that is none."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size > os.fstat(handle.fileno()).st_size - 8:
                raise ValueError(f"header length {size} exceeds the file")
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise fail(path, None, None, f"cannot be read as safetensors ({error})") from None
    if not isinstance(header, dict):
        raise fail(path, None, None, "cannot be read as safetensors (its header is not a JSON object)")
    return header, 8 + size


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def jsonl_bytes(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


class StagedOutput:
    """Stage an OUT_DIR's files, then rename them all into place at `commit()`.

    Used as a context manager: leaving the block by an exception deletes the staged temp files
    (and OUT_DIR itself if this run created it and it is still empty).
    """

    def __init__(self, out_dir: str | PathLike):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise fail(self.out_dir, None, None, "exists and is not a folder")
        self._created = not self.out_dir.exists()
        self._staged: dict[str, Path] = {}

    def __enter__(self) -> StagedOutput:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for temp in self._staged.values():
            temp.unlink(missing_ok=True)
        self._staged.clear()
        if exc_type is not None and self._created and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()

    def add(self, name: str, data: bytes) -> None:
        """Stage `data` as OUT_DIR/name (not visible under that name until commit)."""
        self.add_streamed(name, lambda handle: handle.write(data))

    def add_streamed(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        """Stage what `write(handle)` writes as OUT_DIR/name: for files too big to hold as bytes."""
        if name in self._staged:
            self._staged.pop(name).unlink(missing_ok=True)
        self._staged[name] = _write_temp(self.out_dir, name, write)

    def commit(self, known: Sequence[str] = OUTPUT_FILES) -> None:
        """Move every staged file into place; remove files in `known` that this run did not write.

        Bracketed by COMMIT_MARKER (see the module docstring): if this is interrupted, the marker
        stays and `check_complete` refuses the folder.
        """
        marker = self.out_dir / COMMIT_MARKER
        # Written in place, not renamed in: a half-written marker still marks the folder.
        with open(marker, "w", encoding="utf-8") as handle:
            json.dump({"pid": os.getpid(), "files": sorted(self._staged)}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_folder(self.out_dir)  # the marker is on disk before any rename can be
        for name, temp in self._staged.items():
            os.replace(temp, self.out_dir / name)
        for name in known:
            if name not in self._staged:
                (self.out_dir / name).unlink(missing_ok=True)
        self._staged.clear()
        _fsync_folder(self.out_dir)  # every rename is on disk before the marker goes
        marker.unlink()
        _fsync_folder(self.out_dir)


def read_tensor_file(path: str | PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a .safetensors file; a SemidError names the file if it is unreadable."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            metadata = dict(handle.metadata() or {})
    except SemidError:
        raise
    except Exception as error:  # safetensors raises its own SafetensorError / OSError types
        raise fail(path, None, None, f"cannot be read as safetensors ({error})") from None
    return tensors, metadata


def read_json(path: str | PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise fail(path, error.lineno, None, f"malformed JSON ({error.msg})") from None
    except OSError as error:
        raise fail(path, None, None, f"cannot be read ({error.strerror})") from None


def metadata_json(path: str | PathLike, metadata: dict[str, str], key: str) -> Any:
    """Decode one JSON-valued metadata entry of a safetensors file."""
    if key not in metadata:
        raise fail(path, None, key, "is missing from the safetensors metadata")
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError:
        raise fail(path, None, key, "metadata is not valid JSON") from None
