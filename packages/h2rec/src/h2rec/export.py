"""A run's best checkpoint as vectors for a nearest-neighbour server: ``h2rec export RUN -o DIR``.

Eq. 9's score is one inner product: ``user_vectors[u] @ item_vectors[i]`` is the model's score of
item ``i`` for user ``u`` after the user's whole history (what ``recommend`` ranks), because
``H2Rec.user_vectors`` moves the per-user level weights of the SID part to the user side (see there
and docs/model.md, "Serving"). DIR holds:

- ``item_vectors.npy`` (n, D, float32) and ``item_ids.json`` (a list: entry i is the id of row i);
- ``user_vectors.npy`` (U, D, float32) and ``user_ids.json``;
- ``items.faiss``, a faiss ``IndexFlatIP`` over the item vectors, when faiss is installed
  (``h2rec[faiss]``); its ids are the rows of ``item_vectors.npy``;
- ``manifest.json``: the dimension and the vector layout, the model, the checkpoint, the run's data
  fingerprint (data.json), the files.

Seen items are not left out: a server filters them, as ``recommend`` does by default. The user
vectors are filled a batch at a time into a memory-mapped file, so memory holds one batch. DIR is
written as a hidden sibling folder and renamed into place at the end: a killed export leaves DIR as
it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import read_json, write_json
from .data import Dataset
from .errors import H2RecError
from .evaluate import by_length, next_item_states
from .model import H2Rec
from .progress import progress_bar
from .version import __version__

log = logging.getLogger(__name__)

FORMAT = "h2rec-export/1"
MANIFEST = "manifest.json"
FAISS_INDEX = "items.faiss"


def vector_layout(model: H2Rec) -> list[dict[str, Any]]:
    """Which columns of a vector hold which part of the score, in ``user_vectors``' order."""
    d = model.cfg.dim
    return [{"part": name, "columns": [i * d, (i + 1) * d]} for i, name in enumerate(model.vector_parts())]


def check_export_dir(out_dir: Path, overwrite: bool, flag: str | None = None) -> None:
    """Refuses, before any work, a DIR that is a file or holds other files; an earlier export is
    replaced only with ``overwrite`` (and only an export: its manifest says so)."""
    where = f"{flag} {out_dir}" if flag else str(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise H2RecError(f"{where}: exists and is not a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    manifest = out_dir / MANIFEST
    if not (manifest.is_file() and read_json(manifest).get("format") == FORMAT):
        raise H2RecError(f"{where}: the folder holds files and is not an h2rec export; choose an empty or new folder")
    if not overwrite:
        raise H2RecError(f"{where}: holds an earlier export; pass --overwrite to replace it, or choose another folder")


@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A hidden sibling folder to write into, renamed to ``out_dir`` when the block succeeds (an
    earlier folder there moved aside first, then deleted); deleted when it fails."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; give what a plain mkdir would
        yield staging
        old = None
        if out_dir.exists():
            old = staging.with_name(staging.name[:-len(".tmp")] + ".old")
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_faiss_index(path: Path, items: np.ndarray) -> bool:
    """An exact inner-product index (``IndexFlatIP``) over ``items``, when faiss is installed."""
    try:
        import faiss
    except ImportError:
        log.info("faiss is not installed, so no %s (pip install 'h2rec[faiss]')", path.name)
        return False
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    faiss.write_index(index, str(path))
    return True


@torch.no_grad()
def export_vectors(model: H2Rec, ds: Dataset, max_len: int, out_dir: str | Path, record: dict[str, Any],
                   batch_size: int = 512, overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Writes the folder described in the module docstring for every user of ``ds``; ``record`` goes
    into the manifest as it is (run folder, checkpoint, data fingerprint). Returns the manifest."""
    out_dir = Path(out_dir)
    check_export_dir(out_dir, overwrite)
    was_training = model.training
    model.eval()
    try:
        with staged_folder(out_dir) as staging:
            items = model.item_vectors().float().cpu().numpy()  # (n, D)
            np.save(staging / "item_vectors.npy", items)
            write_json(staging / "item_ids.json", ds.item_ids)  # JSON: an id may hold a newline
            # one batch of users in memory at a time; the rows go straight to the file
            users = np.lib.format.open_memmap(staging / "user_vectors.npy", mode="w+", dtype=np.float32,
                                              shape=(len(ds.user_ids), items.shape[1]))
            order = by_length(ds.sequences)  # batches of similar length; each row goes to its user's index
            starts = range(0, len(ds.user_ids), batch_size)
            for start in progress_bar(starts, "export", progress, total=len(starts)):
                rows = order[start : start + batch_size]
                state = next_item_states(model, [ds.sequences[r] for r in rows], max_len)
                users[rows] = model.user_vectors(state).float().cpu().numpy()
            users.flush()
            del users  # closes the map before the folder is renamed
            write_json(staging / "user_ids.json", ds.user_ids)
            has_faiss = write_faiss_index(staging / FAISS_INDEX, items)
            manifest = {
                "format": FORMAT, "h2rec_version": __version__,
                "model": {key: getattr(model.cfg, key) for key in ("kind", "backbone", "dim", "candidate_weights")},
                **record,
                "score": f"user_vectors[u] @ item_vectors[i] is the model's score ({model.score_equation}) of "
                         "item i after user u's whole history; the user's own items are not left out",
                "dimension": int(items.shape[1]), "layout": vector_layout(model),
                "users": len(ds.user_ids), "items": len(ds.item_ids),
                "files": {"item_vectors": "item_vectors.npy", "item_ids": "item_ids.json",
                          "user_vectors": "user_vectors.npy", "user_ids": "user_ids.json",
                          "faiss_index": FAISS_INDEX if has_faiss else None},
            }
            write_json(staging / MANIFEST, manifest)
    finally:
        model.train(was_training)
    log.debug("%s: %d user and %d item vectors of dimension %d%s", out_dir, len(ds.user_ids), len(ds.item_ids),
             items.shape[1], " and a faiss index" if has_faiss else "")
    return manifest
