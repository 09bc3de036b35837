"""The program server under sustained concurrency: no unexpected errors, memory flat.

The default run uses 64 clients for 6 s; ``tests/reliability/run.py`` runs 256 clients for
60 s (``LMFORGE_RELIABILITY_FULL=1`` makes this test use that size too)."""

from __future__ import annotations

import pytest

from ._support import record, scaled
from .load import run_load

pytestmark = pytest.mark.reliability


def test_program_server_under_sustained_concurrency() -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("aiohttp")
    report = run_load(clients=scaled(64, 256), seconds=scaled(6, 60), latency=0.05)
    print(report.summary())
    record("test_program_server_under_sustained_concurrency", summary=report.summary())
    assert report.errors == {}, report.summary()
    assert report.requests >= report.clients, report.summary()
    # Every call waits 50 ms on the model; the server adds its own time on top of it.
    assert 50 <= report.p50_ms <= report.p99_ms
    assert report.rss_samples >= 3 and report.memory_flat, report.summary()
