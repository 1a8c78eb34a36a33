"""--threads and the one-line warning when the cores are already busy."""

from __future__ import annotations

import os

import pytest
import torch
from semid.devices import set_threads


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    threads = torch.get_num_threads()
    yield lambda load: monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    torch.set_num_threads(threads)


def test_busy_cores_give_a_warning_that_names_the_flag(two_cores):
    two_cores(3.4)
    warning = set_threads(2)
    assert warning is not None and "load average 3.4 on 2 cores" in warning and "--threads 1" in warning
    assert torch.get_num_threads() == 2


def test_no_warning_on_idle_cores_or_when_the_threads_fit(two_cores):
    two_cores(0.1)
    assert set_threads(2) is None
    two_cores(1.0)
    assert set_threads(1) is None  # one other job, one thread: nothing to gain
    two_cores(3.4)
    assert set_threads(1) is None  # already the least it can use
