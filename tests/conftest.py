"""Shared by every test: a quiet machine.

The CLIs warn on stderr when the load average says the cores are busy (semid.devices.set_threads).
Whether that line appears depends on what else the machine runs, so every test sees a load average
of 0; tests/semid/test_threads.py sets the load it needs.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def idle_machine(monkeypatch):
    if hasattr(os, "getloadavg"):
        monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
