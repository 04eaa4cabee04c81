"""The web player passes its page's query to the transport it picks: on a relay with a play
key, a signed player page plays (HTTP-FLV and WHEP in headless Chromium), an unsigned one
does not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from app.auth import sign_push
from tests.support.av_client import start_client
from tests.support.browser import CHROMIUM, chromium
from tests.support.relay_harness import RunningRelay

pytestmark = [pytest.mark.slow, pytest.mark.browser]

KEY = "play-key"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed")
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRelay]:
    running = RunningRelay(tmp_path_factory.mktemp("player"), play_key=KEY)
    pusher = start_client(
        "push", f"{running.rtmp_url}/live/cam", "--seconds", "60", "--gop", "25",
        "--width", "320", "--height", "240",
    )  # fmt: skip
    running.stream_info("live", "cam")
    yield running
    pusher.kill()
    pusher.wait()
    running.stop()


@pytest.mark.parametrize("transport", ["flv", "whep"])
def test_signed_player_page_plays_and_unsigned_does_not(
    relay: RunningRelay, browser: Any, transport: str
) -> None:
    signed = urlencode(sign_push(KEY, "cam", time.time() + 600))
    page = browser.new_page()
    try:
        page.goto(f"{relay.http_url}/play/live/cam?transport={transport}&{signed}")
        page.wait_for_function("window.roiPlayer && roiPlayer.frames > 10", timeout=30_000)
        assert page.evaluate("roiPlayer.transport") == transport
        page.goto(f"{relay.http_url}/play/live/cam?transport={transport}")
        time.sleep(4)
        assert page.evaluate("window.roiPlayer ? roiPlayer.frames : 0") == 0
    finally:
        page.close()
