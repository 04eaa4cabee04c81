from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.relay_harness import RunningRelay


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RunningRelay]:
    running = RunningRelay(tmp_path / "data")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator:
    """Starts relays with custom settings; all are stopped at teardown."""
    started: list[RunningRelay] = []

    def start(**overrides: object) -> RunningRelay:
        running = RunningRelay(tmp_path / f"data{len(started)}", **overrides)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
