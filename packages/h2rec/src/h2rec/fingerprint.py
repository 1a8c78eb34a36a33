"""The fingerprint of an input file: its size and the SHA-256 of its content. A run folder's
data.json records it (``runfolder.py``) and the dataset cache is keyed by it (``dataset_cache.py``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def file_digest(path: str | Path) -> dict[str, Any]:
    """Size and SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}
