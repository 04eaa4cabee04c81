"""A recording in the web player (/play/vod/{id}), headless Debian Chromium: the MP4 plays,
the ROI sidecar drives the overlay and the danmaku mask exactly as live, so no comment pixel
lands on the recorded face region (the clip and the checks of the live player test). Play
authentication is on: the page's signed query reaches the VOD files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from app.auth import sign_push
from app.hub import StreamKey
from app.media.packet import MediaPacket
from tests.outputs.conftest import browser  # noqa: F401 (the Chromium fixture)
from tests.outputs.media import face_box, face_frame, feed_live, with_roi
from tests.outputs.test_player_browser import check_player, state
from tests.record.helpers import wait_recordings
from tests.support.clips import encode_flv, flv_packets
from tests.support.relay_harness import RunningRelay

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def face_clip() -> list[MediaPacket]:
    packets = flv_packets(encode_flv(seconds=12, gop=50, draw=face_frame))
    return with_roi(packets, lambda i: [face_box(i)], 320, 240)


def test_a_recording_plays_with_its_regions_masking_the_danmaku(
    browser: Any,  # noqa: F811
    face_clip: list[MediaPacket],
    tmp_path: Path,
) -> None:
    relay = RunningRelay(
        tmp_path / "data", record="live/*", record_min_free_mb=0, play_key="vod-key"
    )
    try:
        relay.run(feed_live(relay.relay.hub, StreamKey("live", "face"), face_clip, False))
        (recording,) = wait_recordings(relay.http_url, "face")
        page = browser.new_page(viewport={"width": 800, "height": 640})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        signed = urlencode(sign_push("vod-key", "face", time.time() + 600))
        page.goto(
            f"{relay.http_url}{recording['player_url']}"
            f"?regions=1&demo=1&color=ff00ff&shadow=0&{signed}"
        )
        page.wait_for_function("window.roiPlayer && roiPlayer.frames > 10", timeout=30_000)
        assert not errors, errors
        assert page.evaluate("roiPlayer.regionSource") == "sidecar"
        check_player(page, tmp_path, "vod-sidecar")
        assert state(page)["transport"] == "vod"
        page.close()
    finally:
        relay.stop()
