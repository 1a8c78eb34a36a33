"""Two byte-level checks that decide whether pyarrow may parse a delimited file: where both pass,
pyarrow reads the same values as the line readers (Python's ``csv`` with ``strict=True``), and where
one fails, the line readers read the file and name the line that is wrong.

pyarrow's parser is lenient where Python's strict one refuses: text after a closing quote (``"u1"x``
becomes ``u1x``) and a quote never closed (the field runs to the end of the file). It also only
validates UTF-8 in the columns it converts. Both checks run in C or numpy over the file's bytes.
"""

from __future__ import annotations

import codecs
import mmap
from pathlib import Path

import numpy as np

BLOCK = 1 << 20  # bytes checked at a time: a quote scan block's arrays hold at most 1 Mi quotes
QUOTE, LF, CR = ord('"'), ord("\n"), ord("\r")
BOM = b"\xef\xbb\xbf"


def is_utf8(path: Path) -> bool:
    """Whether the whole file decodes as UTF-8 (the line readers decode every byte, every column)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as f:
        try:
            for block in iter(lambda: f.read(BLOCK), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def quoting_is_strict(path: Path, delimiter: str) -> bool:
    """Whether Python's csv reader with ``strict=True`` accepts every quote in the file. A file
    without a quote character needs no more than one memchr."""
    if path.stat().st_size == 0:
        return True
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm.find(b'"') < 0:
            return True
        data = np.frombuffer(mm, dtype=np.uint8)
        try:
            return _strict(data, ord(delimiter), data[:3].tobytes() == BOM)
        finally:
            del data  # the mmap cannot close while an array still exports its buffer


def _strict(data: np.ndarray, delimiter: int, bom: bool) -> bool:
    """Python's csv state machine, run over runs of adjacent quotes instead of bytes, a block of the
    file at a time (memory: a few arrays of the block's quote count).

    A run of L quotes that starts a field (after a delimiter, a line break or the file start) opens a
    quoted field and, L even, closes it again; inside a quoted field, pairs are escaped quotes and an
    odd L closes the field; elsewhere (mid-field, outside quotes) quotes are literal text. So each run
    maps the state (inside quotes or not) by one of three functions: at a field start with L odd it
    flips it, mid-field with L odd it sets "outside", and with L even it keeps it. The state after a
    run is then the parity of the flips since the last "outside" (or since the block's start, from the
    state the block starts in). Strict mode refuses a closing quote followed by anything but a
    delimiter, a line break or the end, and a field still open at the end.
    """
    size, inside, start = len(data), False, 0
    while start < size:
        end = min(start + BLOCK, size)
        while end < size and data[end - 1] == QUOTE and data[end] == QUOTE:  # a run ends inside its block
            end += 1
        quotes = np.flatnonzero(data[start:end] == QUOTE) + start
        start = end
        if not len(quotes):
            continue
        first = np.diff(quotes, prepend=-2) != 1
        starts = quotes[first]
        lengths = np.diff(np.append(np.flatnonzero(first), len(quotes)))
        before = data[np.maximum(starts - 1, 0)]
        at_field_start = (starts == 0) | np.isin(before, [delimiter, LF, CR]) | ((starts == 3) & bom)
        odd = lengths % 2 == 1
        flips = np.cumsum(odd & at_field_start)
        outside = np.flatnonzero(odd & ~at_field_start)
        last_outside = np.full(len(starts), -1)
        last_outside[outside] = outside
        last_outside = np.maximum.accumulate(last_outside)
        since_outside = flips - flips[np.maximum(last_outside, 0)]
        inside_after = np.where(last_outside >= 0, since_outside % 2 == 1, (flips % 2 == 1) ^ inside)
        inside_before = np.concatenate([[inside], inside_after[:-1]])
        closes = (inside_before & odd) | (~inside_before & at_field_start & ~odd)
        after = (starts + lengths)[closes]  # the byte after each closing quote
        follows = data[np.minimum(after, size - 1)]
        if not np.all((after >= size) | np.isin(follows, [delimiter, LF, CR])):
            return False
        inside = bool(inside_after[-1])
    return not inside
