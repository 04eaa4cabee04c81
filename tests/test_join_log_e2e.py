"""Players joining a stream that has been live for a while: nothing is logged as a skip and
nothing is dropped (the hub used to log "fell behind" once per cached packet on each join)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.support.av_client import finish_client, start_client

pytestmark = pytest.mark.slow


def test_late_joiners_over_rtmp_and_http_flv_log_no_skip(
    relay_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="app.hub")
    relay = relay_factory()
    # A keyframe every 5 s: a late joiner's cached GOP holds up to 5 s (over the 4 s queue).
    pusher = start_client(
        "push", f"{relay.rtmp_url}/live/long", "--seconds", "30", "--gop", "125",
        "--width", "320", "--height", "240",
    )  # fmt: skip
    try:
        relay.stream_info("live", "long")
        time.sleep(9)  # live for 9 s: 4 s into its second GOP
        players = [
            start_client("play", f"{relay.http_url}/live/long.flv", "--max-frames", "150"),
            start_client("play", f"{relay.rtmp_url}/live/long", "--max-frames", "150"),
        ]
        for player in players:
            got = finish_client(player)
            assert got["keyframe_first"] and got["video_frames"] >= 150
            assert got["decode_errors"] == 0
        info = httpx.get(f"{relay.http_url}/api/v1/streams/live/long").json()
        assert info["dropped_frames"] == 0
    finally:
        pusher.kill()
        pusher.wait(10)
    assert [r.getMessage() for r in caplog.records if "fell behind" in r.getMessage()] == []
