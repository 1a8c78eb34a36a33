"""Writes a prepared dataset: ``items.jsonl`` (what ``semid encode`` reads), ``interactions.csv``
(what ``h2rec train --interactions`` reads) and ``prepare_report.json``; each file goes to a
temporary name first and is renamed into place, the report last."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..errors import H2RecError
from .common import Prepared

ITEMS, INTERACTIONS, REPORT = "items.jsonl", "interactions.csv", "prepare_report.json"
CHUNK = 100_000  # interaction rows converted to Python objects at a time


def write(prepared: Prepared, out_dir: str | Path) -> dict[str, str]:
    """The three files in ``out_dir`` (created); returns their paths, also recorded in the report."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise H2RecError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise H2RecError(f"{out}: cannot create the output folder ({err.strerror or err})") from None
    files = {"items": str(out / ITEMS), "interactions": str(out / INTERACTIONS), "report": str(out / REPORT)}

    with _replacing(out / ITEMS) as handle:
        for item in prepared.items:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    with _replacing(out / INTERACTIONS) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", "item_id", "timestamp"])
        users, items = prepared.user_names, prepared.item_names
        for start in range(0, len(prepared.users), CHUNK):  # a chunk at a time: 10^7 rows as Python objects is GBs
            chunk = slice(start, start + CHUNK)
            writer.writerows((users[u], items[i], _time_text(t)) for u, i, t in zip(
                prepared.users[chunk].tolist(), prepared.item_codes[chunk].tolist(), prepared.times[chunk].tolist()))
    prepared.report["files"] = files
    with _replacing(out / REPORT) as handle:
        handle.write(json.dumps(prepared.report, indent=2, ensure_ascii=False) + "\n")
    return files


def _time_text(time: float) -> str:
    return str(int(time)) if time.is_integer() else repr(time)


class _replacing:
    """``with _replacing(path) as f``: writes ``path.tmp``, renamed onto ``path`` only on success."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")

    def __enter__(self):
        try:
            self.handle = open(self.tmp, "w", encoding="utf-8", newline="")
        except OSError as err:
            raise H2RecError(f"{self.tmp}: cannot be written ({err.strerror or err})") from None
        return self.handle

    def __exit__(self, kind, value, traceback) -> None:
        self.handle.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def summary(report: dict) -> str:
    """The report as a few lines for a person."""
    read, dropped, kept = report["read"], report["dropped"], report["kept"]
    keep_textless = report["options"]["keep_textless"]
    lines = [f"h2rec prepare {report['layout']}: " + ", ".join(Path(p).name for p in report["inputs"].values()),
             f"read     {_triple(read)}" + (f"; {read['metadata_records']:,} metadata records"
                                            if "metadata_records" in read else "")]
    drops = []
    if dropped["below_min_rating"]:
        drops.append(f"{dropped['below_min_rating']:,} interactions rated below {report['options']['min_rating']}")
    if dropped["duplicates"]:
        drops.append(f"{dropped['duplicates']:,} duplicate interactions (same user, item and time)")
    if dropped["repeats"]:
        drops.append(f"{dropped['repeats']:,} repeated interactions (--repeats first keeps a pair's earliest)")
    if dropped["unknown_items"]:
        drops.append(f"{dropped['unknown_items']:,} items without metadata "
                     f"({dropped['unknown_item_interactions']:,} interactions)")
    if dropped["items_without_text"]:
        drops.append(f"{dropped['items_without_text']:,} items whose text fields are all empty "
                     f"({dropped['items_without_text_interactions']:,} interactions)")
    core = dropped["k_core"]
    if core["interactions"]:
        drops.append(f"{report['options']['k_core']}-core: {core['users']:,} users, {core['items']:,} items, "
                     f"{core['interactions']:,} interactions")
    for k, text in enumerate(drops or ["nothing"]):
        lines.append(("dropped  " if k == 0 else "         ") + text)
    lines.append(f"kept     {_triple(kept)}")
    if keep_textless and kept.get("items_without_text"):
        lines.append(f"         of which {kept['items_without_text']:,} items have no text "
                     "(kept: --keep-textless; semid gives them codes from an empty text)")
    elif not keep_textless and (dropped["unknown_items"] or dropped["items_without_text"]):
        lines.append("         (--keep-textless keeps items without text)")
    if not report["timestamps"].startswith("Unix"):
        lines.append("times    the source has order only: timestamp = position in the user's sequence")
    files = report.get("files", {})
    if files:
        lines.append(f"wrote    {files['items']}, {files['interactions']}, {files['report']}")
        folder = Path(files["items"]).parent
        lines.append(f"next     semid encode {files['items']} -o {folder / 'semid'}")
        lines.append(f"         h2rec train --interactions {files['interactions']} --semid {folder / 'semid'} "
                     f"-o {folder / 'run'}")
    return "\n".join(lines)


def _triple(counts: dict) -> str:
    return f"{counts['users']:,} users, {counts['items']:,} items, {counts['interactions']:,} interactions"
