"""The web player on a stream that is not live: it says why, polls cheaply, and starts within
about 2 s of the stream coming (back) up, over the transport it played before."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from app.auth import sign_push
from app.hub import StreamKey
from app.media.packet import MediaPacket
from tests.outputs.conftest import PlayerServer
from tests.outputs.test_player_browser import face_clip  # noqa: F401 - a fixture
from tests.support.av_client import face_push, start_client

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# The player polls once a second; the stream then needs its first picture.
START_WITHIN_S = 2.5


def status(page: Any) -> str:
    return page.evaluate("roiPlayer.status")


def open_waiting(browser: Any, url: str) -> tuple[Any, list[str], list[str]]:
    page = browser.new_page(viewport={"width": 800, "height": 560})
    errors: list[str] = []
    polls: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/status") else None)
    page.goto(url)
    page.wait_for_function("roiPlayer.status.startsWith('waiting for the stream')", timeout=10_000)
    return page, errors, polls


def seconds_until_playing(page: Any, transport: str, since: float) -> float:
    page.wait_for_function(
        f"roiPlayer.status === 'playing ({transport})' && roiPlayer.frames > 0", timeout=20_000
    )
    return time.monotonic() - since


def test_page_opened_before_the_stream_waits_then_starts(
    browser: Any,
    face_clip: list[MediaPacket],  # noqa: F811
    tmp_path: Path,
) -> None:
    server = PlayerServer()
    try:
        page, errors, polls = open_waiting(
            browser, f"{server.http_url}/play/live/face?transport=flv&regions=1"
        )
        assert page.evaluate("roiPlayer.waiting") == "not-live"
        banner = page.locator("#waiting")
        assert banner.is_visible()
        assert "not live yet: nobody is pushing to live/face" in banner.inner_text()
        assert "waiting for the stream…" in banner.inner_text()
        page.screenshot(path=str(tmp_path / "player-waiting.png"))
        before = len(polls)
        page.wait_for_timeout(3000)  # (Playwright delivers request events while it waits)
        assert 2 <= len(polls) - before <= 5, "about one small request a second while waiting"
        assert status(page).startswith("waiting"), "no transport tried on a stream not live"

        server.feed("live", "face", face_clip)
        server.wait_live("live", "face")
        took = seconds_until_playing(page, "flv", time.monotonic())
        print(f"flv started {took:.2f} s after the stream went live")
        assert took <= START_WITHIN_S
        assert not banner.is_visible()
        assert not errors, errors
        page.close()
    finally:
        server.stop()


@pytest.mark.parametrize("transport", ["auto", "flv"])
def test_stream_that_ends_and_comes_back_restarts_on_the_same_transport(
    browser: Any,
    face_clip: list[MediaPacket],  # noqa: F811
    transport: str,
) -> None:
    played = "whep" if transport == "auto" else transport
    server = PlayerServer()
    try:
        first = server.feed("live", "face", face_clip[: len(face_clip) // 4])
        server.wait_live("live", "face")
        page = browser.new_page(viewport={"width": 800, "height": 560})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.http_url}/play/live/face?transport={transport}")
        seconds_until_playing(page, played, time.monotonic())
        first.result(20)
        page.wait_for_function("roiPlayer.waiting === 'ended'", timeout=10_000)
        assert "the stream ended" in page.locator("#waiting-why").inner_text()
        time.sleep(2)  # waiting a while costs nothing: no transport timeout runs meanwhile
        server.feed("live", "face", face_clip)
        server.wait_live("live", "face")
        took = seconds_until_playing(page, played, time.monotonic())
        print(f"{played} restarted {took:.2f} s after the stream came back")
        assert took <= START_WITHIN_S + (1.0 if played == "whep" else 0.0)
        assert not errors, errors
        page.close()
    finally:
        server.stop()


def test_status_says_why_in_words(face_clip: list[MediaPacket]) -> None:  # noqa: F811
    server = PlayerServer()
    try:
        url = f"{server.http_url}/play/live/x/status"
        assert httpx.get(url).json() == {
            "live": False,
            "state": "not-live",
            "why": "not live yet: nobody is pushing to live/x",
            "since_s": None,
        }
        server.feed("live", "x", face_clip[:10], realtime=False).result(10)
        ended = httpx.get(url).json()
        assert ended["state"] == "ended" and ended["why"] == "the stream ended just now"
        # A refused push after the end is the newer news, and vice versa.
        server.loop.call_soon_threadsafe(
            server.hub.counters.refused, "auth", StreamKey("live", "x")
        )
        time.sleep(0.1)
        refused = httpx.get(url).json()
        assert refused["state"] == "refused" and "push signature" in refused["why"]
        server.feed("live", "x", face_clip[:10], realtime=False).result(10)
        assert httpx.get(url).json()["state"] == "ended"
    finally:
        server.stop()


def signed(key: str, stream: str, valid_s: int = 600) -> str:
    return urlencode(sign_push(key, stream, time.time() + valid_s))


def test_refused_push_then_relay_restart_on_a_real_relay(
    relay_factory: Any,
    browser: Any,
    tmp_path: Path,
) -> None:
    """A push with a bad signature: the page says the relay refused it. A signed push plays;
    the relay restarts: the page waits (no 20 s timeout) and plays again when the push does."""
    relay = relay_factory(push_key="k3y")
    page, errors, _ = open_waiting(browser, f"{relay.http_url}/play/live/cam?transport=flv")
    bad = start_client("push", f"{relay.rtmp_url}/live/cam?txSecret=0&txTime=FFFFFFFF")
    bad.wait(30)
    assert bad.returncode != 0, "the relay took an unsigned push"
    page.wait_for_function("roiPlayer.waiting === 'refused'", timeout=10_000)
    why = page.locator("#waiting-why").inner_text()
    assert "the relay refused the last push to live/cam" in why and "signature" in why, why
    page.screenshot(path=str(tmp_path / "player-refused.png"))

    pusher = face_push(f"{relay.rtmp_url}/live/cam?{signed('k3y', 'cam')}", 30)
    try:
        relay.stream_info("live", "cam")
        seconds_until_playing(page, "flv", time.monotonic())
        relay.restart(down_s=1.0)
        pusher.wait(30)  # the publisher's connection broke with the relay
        page.wait_for_function("roiPlayer.status.startsWith('waiting')", timeout=10_000)
    finally:
        if pusher.poll() is None:
            pusher.kill()
    pusher = face_push(f"{relay.rtmp_url}/live/cam?{signed('k3y', 'cam')}", 8)
    try:
        relay.stream_info("live", "cam")
        took = seconds_until_playing(page, "flv", time.monotonic())
        print(f"flv restarted {took:.2f} s after the stream came back on the restarted relay")
        assert took <= START_WITHIN_S
        assert not errors, errors
        page.close()
    finally:
        pusher.kill()
