"""benchmarks.scale's linearity check: slopes on the log-log plot, from wall and from CPU seconds."""

from __future__ import annotations

import pytest

from benchmarks.scale import slopes


def run(n: int, seconds: float, cpu: float | None, items: int | None = None) -> dict:
    measured = {"mode": "no_cache", "seconds": seconds, **({"cpu_seconds": cpu} if cpu is not None else {})}
    return {"interactions": n, "data": {"items": items or n // 100}, "measurements": {"csv": [measured]}}


def test_slopes_between_consecutive_sizes_of_the_default_catalogue():
    record = {"runs": [run(10**6, 1.0, 0.8), run(10**7, 10.0, 8.0), run(10**7, 99.0, 99.0, items=10**6),
                       run(2 * 10**7, 40.0, 16.0)]}
    found = slopes(record)
    # 10^6 items left out; the last row is the line fitted through all three sizes
    assert [(r["from"], r["to"], r.get("fit", False)) for r in found] == [
        (10**6, 10**7, False), (10**7, 2 * 10**7, False), (10**6, 2 * 10**7, True)]
    assert found[0]["wall"] == pytest.approx(1.0) and found[0]["cpu"] == pytest.approx(1.0)
    assert found[1]["wall"] == pytest.approx(2.0) and found[1]["cpu"] == pytest.approx(1.0)  # a loaded wall clock
    assert found[2]["cpu"] == pytest.approx(1.0) and 1.0 < found[2]["wall"] < 2.0


def test_a_measurement_without_cpu_seconds_has_no_cpu_slope():
    found = slopes({"runs": [run(10**6, 1.0, None), run(10**7, 10.0, 8.0)]})
    assert found == [{"part": "read csv", "from": 10**6, "to": 10**7, "wall": 1.0, "cpu": None}]
