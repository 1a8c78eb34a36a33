"""Where reading a log's time goes as it grows (issue 22, the linearity target): CPU seconds of each
phase of h2rec's CSV path on ``scale.py``'s synthetic logs, and of the cheaper sorts one might try.

    OMP_NUM_THREADS=1 python -m benchmarks.ingest_phases --interactions 1e6 1e7

Phases, as ``h2rec.columnar.read_delimited`` and ``Interactions.from_columns`` run them: pyarrow's
CSV parse, factorising the user ids and the item ids (``dictionary_encode`` and the id list), the
stable sort by (user, time) (``np.lexsort``), and the whole ``build_dataset`` without the cache (the
rest is the split and the catalogue lookup). Sorts tried against that one, each giving the same order
on these logs (written in time order): a stable argsort of the user codes alone, as int64 and as
int32, and Arrow's ``sort_indices`` on the user codes, and on (user, time). CPU seconds
(``time.process_time``, one thread): other jobs on the machine inflate them far less than wall
seconds. Logs come from ``benchmarks/work/scale/`` (generated there when missing). Writes
results/ingest_phases.{json,md} with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from benchmarks.machine import machine
from benchmarks.scale import WORK, generate

OUT = Path(__file__).parent / "results" / "ingest_phases"


def timed(fn):
    start = time.process_time()
    value = fn()
    return value, round(time.process_time() - start, 3)


def measure(folder: Path) -> dict:
    from h2rec.columnar import _codes, _numpy
    from h2rec.config import DataConfig
    from h2rec.data import build_dataset

    file = folder / "interactions.csv"
    read = pacsv.ReadOptions(column_names=None, skip_rows=0)  # the generated file is quoted, with a header
    parse = pacsv.ParseOptions(delimiter=",", quote_char='"', newlines_in_values=True)
    types = {"user_id": pa.string(), "item_id": pa.string(), "timestamp": pa.float64()}
    convert = pacsv.ConvertOptions(include_columns=list(types), column_types=types)
    table, parse_s = timed(lambda: pacsv.read_csv(file, read_options=read, parse_options=parse,
                                                  convert_options=convert))
    (users, _), users_s = timed(lambda: _codes(table.column("user_id")))
    _, items_s = timed(lambda: _codes(table.column("item_id")))
    times = _numpy(table.column("timestamp"), np.float64)
    order, sort_s = timed(lambda: np.lexsort((times, users)))
    alternatives = {
        "argsort(users, stable), int64": lambda: np.argsort(users, kind="stable"),
        "argsort(users, stable), int32": lambda: np.argsort(users.astype(np.int32), kind="stable"),
        "arrow sort_indices(users)": lambda: pc.sort_indices(pa.array(users)).to_numpy(),
        "arrow sort_indices(users, time)": lambda: pc.sort_indices(
            pa.table({"u": users, "t": times}), sort_keys=[("u", "ascending"), ("t", "ascending")]).to_numpy(),
    }
    tried = {}
    for name, sort in alternatives.items():
        got, seconds = timed(sort)
        tried[name] = {"cpu_seconds": seconds, "same_order": bool(np.array_equal(got, order))}
    item_ids = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    _, total_s = timed(lambda: build_dataset(DataConfig(interactions=str(file), cache=False), item_ids))
    return {"rows": table.num_rows, "users": int(users.max()) + 1,
            "phases_cpu_seconds": {"parse": parse_s, "user ids": users_s, "item ids": items_s,
                                   "sort (user, time)": sort_s, "build_dataset in all": total_s},
            "sorts_tried": tried}


def markdown(result: dict) -> str:
    sizes = result["sizes"]
    lines = ["# CPU seconds of reading a log, by phase", "",
             f"`python -m benchmarks.ingest_phases` ({result['machine']}; load average {result['load_average']} at "
             "the start). One thread; `scale.py`'s synthetic CSV logs (n / 10 users, n / 100 items).", "",
             "| phase | " + " | ".join(f"{s['interactions']:.0e}" for s in sizes) + " | growth, last / first |",
             "|---|" + "---|" * (len(sizes) + 1)]
    for phase in sizes[0]["phases_cpu_seconds"]:
        cells = [s["phases_cpu_seconds"][phase] for s in sizes]
        growth = cells[-1] / max(cells[0], 1e-9)
        lines.append(f"| {phase} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | x{growth:.1f} |")
    lines += ["", "Sorts tried against `np.lexsort((time, user))` (the phase above):", "",
              "| sort | " + " | ".join(f"{s['interactions']:.0e}" for s in sizes) + " | same order |",
              "|---|" + "---|" * (len(sizes) + 1)]
    for name in sizes[0]["sorts_tried"]:
        cells = [s["sorts_tried"][name] for s in sizes]
        lines.append(f"| {name} | " + " | ".join(f"{c['cpu_seconds']:.2f}" for c in cells)
                     + f" | {'yes' if all(c['same_order'] for c in cells) else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interactions", nargs="+", type=lambda s: int(float(s)), default=[1_000_000, 10_000_000])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    result = {"benchmark": "ingest_phases", "machine": machine(), "load_average": round(os.getloadavg()[0], 1),
              "sizes": []}
    for n in args.interactions:
        folder = WORK / f"n{n}"
        generate(n, folder, args.seed)
        result["sizes"].append({"interactions": n, **measure(folder)})
        print(json.dumps(result["sizes"][-1]), flush=True)
    from semid.io import atomic_write_bytes

    atomic_write_bytes(OUT.with_suffix(".json"), (json.dumps(result, indent=2) + "\n").encode())
    atomic_write_bytes(OUT.with_suffix(".md"), markdown(result).encode())
    print(markdown(result))


if __name__ == "__main__":
    main()
