"""The one error type semid raises for user mistakes, and the `path:line: field 'x'` prefix it carries.

Asserts stay for internal invariants; anything a user can cause (a bad file, a bad option) is a
`SemidError`, which the CLI turns into exit code 2.
"""

from __future__ import annotations

from os import PathLike


class SemidError(ValueError):
    """A user mistake: bad input file, bad option, inconsistent OUT_DIR."""


def where(path: str | PathLike | None, line: int | None = None, field: str | None = None) -> str:
    """Location prefix for messages: `items.jsonl:7: field 'title'` (parts that are unknown are left out).

    For embedding files `line` is the 1-based row of the matrix.
    """
    parts = []
    if path is not None:
        parts.append(str(path) if line is None else f"{path}:{line}")
    elif line is not None:
        parts.append(f"line {line}")
    head = ":".join(parts)
    if field is None:
        return head
    return f"{head}: field '{field}'" if head else f"field '{field}'"


def fail(path: str | PathLike | None, line: int | None, field: str | None, message: str) -> SemidError:
    """Build (not raise) a SemidError whose message starts with the location: `raise fail(...)`."""
    prefix = where(path, line, field)
    if not prefix:
        return SemidError(message)
    # "items.jsonl:7: field 'title' is empty" reads as one sentence; without a field: "items.jsonl:7: message".
    return SemidError(f"{prefix} {message}" if field is not None else f"{prefix}: {message}")
