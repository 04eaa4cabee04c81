"""A short run of the live fuzz campaign (bench/fuzz_live.py): mutated captured ffmpeg sessions
against a real ``roi-relay serve`` with a healthy publisher and player alongside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "bench" / "fuzz_live.py"


def _campaign(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--report-every", "25", "--warmup", "5", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _check(result: dict[str, Any], sessions: int) -> None:
    assert result["sessions_sent"] == sessions
    assert result["server_alive"]
    assert result["leftover_streams"] == 0, result["leftover_stream_names"]
    assert result["leftover_players"] == 0
    assert result["tracebacks"] == 0, result["distinct"]
    assert result["fatal_errors"] == 0
    assert result["healthy_player_alive"] and result["healthy_publisher_alive"]
    assert result["healthy_video_tags"] > 0
    assert result["healthy_player_longest_gap_s"] < 2.0


def test_mutated_rtmp_sessions_leave_nothing_behind() -> None:
    result = _campaign("--sessions", "50", "--concurrency", "4", "--seed", "7")
    _check(result, 50)
    assert sum(result["mutations"].values()) >= 50


def test_mutated_media_on_a_stream_with_an_active_template() -> None:
    result = _campaign("--media", "--sessions", "20", "--concurrency", "2", "--seed", "7")
    _check(result, 20)
    assert any(k.startswith("media_") for k in result["mutations"])
