"""The prepared interactions of a file, kept on disk: a second ``train``, ``evaluate`` or ``recommend``
on the same file maps two arrays instead of parsing, sorting and k-core filtering it again.

An entry is a folder ``<cache>/interactions/<key>/``: ``offsets.npy`` and ``items.npy`` (the CSR table
of :class:`Interactions`, opened memory-mapped), the user and item ids as UTF-8 text plus offsets,
and ``meta.json``. The key hashes what decides the table:

- the file's fingerprint, size and SHA-256 of its content (``fingerprint.file_digest``, what a run's
  data.json records). Content, not the modification time: hashing costs ~0.2 s per 300 MB, and a
  file rewritten within one mtime tick, or copied with its old mtime, is still told apart;
- the data settings the readers use: the resolved format, the user/item/time field names, k_core;
- the entry layout (``FORMAT``) and the h2rec version (another version may read files differently).

An entry is written into a hidden staging folder beside it and renamed into place, one atomic rename
(the name is new: content addressed, never replaced), so a reader, who takes no lock, sees a whole
entry or none. Builders of one key take a lock (``filelock``, as ``semid.io.one_writer``): a second
process waits for the first and reads its entry instead of parsing the file too. A cache that cannot
be written (read-only, disk full) or an entry that cannot be read costs a warning, never the run.

The folder is ``$H2REC_CACHE_DIR`` when set, else the user cache folder (platformdirs:
``~/.cache/h2rec`` on Linux); entries may be deleted at any time (``h2rec cache list`` / ``clear``:
:func:`cache_entries`, :func:`remove_entries`). ``data.cache: false`` (``--no-cache``) neither reads
nor writes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from .config import DataConfig
from .fingerprint import file_digest
from .interactions import Interactions
from .readers import detect_format, load_interactions
from .version import __version__

log = logging.getLogger(__name__)

CACHE_ENV = "H2REC_CACHE_DIR"
FORMAT = "h2rec-interactions/1"  # bump when the entry's files or their meaning change
META = "meta.json"
ARRAYS = ("offsets", "items", "user_text", "user_ends", "item_text", "item_ends")


def default_cache_dir() -> Path:
    """$H2REC_CACHE_DIR when set (and not empty), else the platform's user cache folder. Read at each call."""
    from_env = os.environ.get(CACHE_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("h2rec", appauthor=False))


def cache_key(cfg: DataConfig, fmt: str, digest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The entry name and what it was computed from (recorded in meta.json)."""
    source = {"file": {"bytes": digest["bytes"], "sha256": digest["sha256"]}, "format": fmt,
              "user_field": cfg.user_field, "item_field": cfg.item_field, "time_field": cfg.time_field,
              "k_core": cfg.k_core, "entry_format": FORMAT, "h2rec": __version__}
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode("utf-8")).hexdigest()[:32]
    return key, source


def read_prepared(cfg: DataConfig) -> Interactions:
    """The file's interactions after the k-core filter: what ``data.build_dataset`` splits."""
    table = load_interactions(cfg)
    if cfg.k_core:
        table = table.k_core(cfg.k_core)
    return table


def cached_interactions(cfg: DataConfig, cache_dir: str | Path | None = None) -> Interactions:
    """:func:`read_prepared` through the cache (``cache_dir``: default :func:`default_cache_dir`);
    with ``cfg.cache`` off, straight from the file."""
    path = Path(cfg.interactions)
    if not cfg.cache or not path.is_file():  # a missing file: the readers' error
        return read_prepared(cfg)
    key, source = cache_key(cfg, detect_format(path, cfg.format), file_digest(path))
    root = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "interactions"
    entry = root / key
    if entry.is_dir():
        table = _read_or_none(entry)
        if table is not None:
            log.debug("%s: prepared interactions from %s", path, entry)
            return table
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(root / f".{key}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("%s: waiting for another h2rec process that is preparing the same file", path)
            lock.acquire()
    except OSError as err:
        log.warning("%s: cannot use the cache folder %s (%s); reading the file without it", path, root, err)
        return read_prepared(cfg)
    try:
        if entry.is_dir():  # written while this process waited, or unreadable (then replaced)
            table = _read_or_none(entry)
            if table is not None:
                return table
            shutil.rmtree(entry, ignore_errors=True)
        for leftover in root.glob(f".{key}.*.tmp"):  # staged by a killed run: the lock says none is live
            shutil.rmtree(leftover, ignore_errors=True)
        table = read_prepared(cfg)
        try:
            _write(root, key, table, {**source, "path": str(path.resolve())})
            log.info("%s: prepared interactions cached in %s (--no-cache reads the file afresh)", path, entry)
        except OSError as err:
            log.warning("%s: cannot write the cache entry %s (%s); continuing without it", path, entry, err)
        return table
    finally:
        lock.release()


def _write(root: Path, key: str, table: Interactions, source: dict[str, Any]) -> None:
    stage = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}.", suffix=".tmp"))
    try:
        user_text, user_ends = _pack(table.user_ids)
        item_text, item_ends = _pack(table.item_ids)
        arrays = {"offsets": table.offsets, "items": table.items, "user_text": user_text, "user_ends": user_ends,
                  "item_text": item_text, "item_ends": item_ends}
        for name, array in arrays.items():
            _durable(stage / f"{name}.npy", lambda handle, a=array: np.save(handle, np.ascontiguousarray(a)))
        meta = {**source, "users": len(table.user_ids), "items": len(table.item_ids),
                "interactions": len(table.items), "users_in_file": table.users_in_file}
        _durable(stage / META, lambda handle: handle.write(json.dumps(meta, indent=2).encode("utf-8")))
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes it 0700; the entry gets a plain mkdir's mode
        os.rename(stage, root / key)  # the commit point: a new name, so one atomic rename
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _durable(path: Path, write) -> None:
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())  # on disk before the rename that makes the entry visible


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pack(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Ids as one UTF-8 text and the end of each in characters (ids may hold any character)."""
    text = "".join(ids)
    ends = np.cumsum(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8), ends


def _unpack(text: np.ndarray, ends: np.ndarray) -> list[str]:
    decoded = text.tobytes().decode("utf-8")
    bounds = [0, *ends.tolist()]
    return [decoded[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _read_or_none(entry: Path) -> Interactions | None:
    """The entry's table, or None (with a warning) when it is damaged: it is then rebuilt."""
    try:
        meta = json.loads((entry / META).read_text(encoding="utf-8"))
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ARRAYS}
        table = Interactions(_unpack(arrays["user_text"], arrays["user_ends"]),
                             _unpack(arrays["item_text"], arrays["item_ends"]),
                             arrays["offsets"], arrays["items"], int(meta["users_in_file"]))
        offsets = table.offsets
        if not (meta["entry_format"] == FORMAT and len(offsets) == len(table.user_ids) + 1 == meta["users"] + 1
                and offsets[0] == 0 and offsets[-1] == len(table.items) == meta["interactions"]
                and len(table.item_ids) == meta["items"]):
            raise ValueError("the arrays do not match meta.json")
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as err:
        log.warning("%s: damaged cache entry (%s); it is rebuilt", entry, err)
        return None
    return table


# ----------------------------------------------------------------------------- keeping the folder in bounds
def cache_entries(cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The entries of the cache folder, oldest first: ``key``, ``path`` (the file it was made from),
    ``source_present`` (that file is still there), ``interactions``, ``bytes`` on disk and ``created``
    (seconds since the epoch). Entries whose meta.json cannot be read are listed with what is known."""
    root = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "interactions"
    if not root.is_dir():
        return []
    entries = []
    for entry in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            meta = json.loads((entry / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        path = meta.get("path")
        entries.append({"key": entry.name, "path": path, "source_present": bool(path) and Path(path).is_file(),
                        "interactions": meta.get("interactions"), "created": entry.stat().st_mtime,
                        "bytes": sum(f.stat().st_size for f in entry.iterdir() if f.is_file())})
    return sorted(entries, key=lambda e: e["created"])


def remove_entries(keys: list[str], cache_dir: str | Path | None = None) -> list[str]:
    """Deletes the entries ``keys``; returns the ones deleted. An entry that a process is building
    (its lock held) is left alone. A process reading an entry keeps what it has mapped: the entry is
    renamed out of sight first (one atomic rename), then deleted, so a reader opens a whole entry or
    none, never part of one."""
    root = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "interactions"
    removed = []
    for key in keys:
        lock = FileLock(root / f".{key}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("%s: being built by another process; left alone", root / key)
            continue
        try:
            gone = root / f".{key}.removed.tmp"
            shutil.rmtree(gone, ignore_errors=True)  # a removal killed halfway leaves one
            os.rename(root / key, gone)
            shutil.rmtree(gone, ignore_errors=True)
            removed.append(key)
        except FileNotFoundError:
            pass
        finally:
            lock.release()  # the lock file stays, as a builder's does: deleting it could give two locks
    return removed
