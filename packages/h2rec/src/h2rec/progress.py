"""Progress bars for long loops: live on a terminal, a line every half minute in a log file."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm


def progress_bar(iterable: Iterable, desc: str, enabled: bool, total: int | None = None, unit: str = "batch"):
    """``tqdm`` on stderr with its rate and ETA, or the bare iterable when ``enabled`` is False (--quiet).
    It appears only once the loop has run a moment (2 s), so short loops print nothing; redirected to
    a file, after 30 s and then every 30 s, so a log shows progress inside a long epoch without
    filling up."""
    if not enabled:
        return iterable
    interactive = sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, file=sys.stderr,
                mininterval=0.2 if interactive else 30, delay=2 if interactive else 30, dynamic_ncols=interactive)
