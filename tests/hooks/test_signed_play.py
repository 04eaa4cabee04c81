"""Signed playback (the push rule with the play keys) on every transport, and HLS sessions:
one admission per playback session, tokens bound to one stream, no token no segment."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from app.auth import sign_push
from tests.hooks.clients import PLAY_PROTOCOLS, try_play
from tests.hooks.receiver import Receiver
from tests.support.av_client import finish_client, start_client
from tests.support.relay_harness import RunningRelay

pytestmark = pytest.mark.slow

PRIMARY, BACKUP = "play-primary", "play-backup"


def signed(key: str, name: str, expires_in: float = 600) -> str:
    return urlencode(sign_push(key, name, time.time() + expires_in))


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    receiver = Receiver().start()  # allows everything; counts the asks
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, hook: Receiver) -> Iterator[RunningRelay]:
    running = RunningRelay(
        tmp_path_factory.mktemp("signed"),
        play_key=PRIMARY,
        play_backup_key=BACKUP,
        auth_hook_url=f"{hook.url}/hook",
        hls_segment_seconds=0.5,
    )
    pushers = [
        start_client("push", f"{running.rtmp_url}/live/{name}", "--seconds", "60", "--gop", "12")
        for name in ("sig", "other")
    ]
    running.stream_info("live", "sig")
    running.stream_info("live", "other")
    yield running
    for pusher in pushers:
        pusher.kill()
        pusher.wait()
    running.stop()


CASES = {
    "valid": (lambda: signed(PRIMARY, "sig"), True),
    "backup key": (lambda: signed(BACKUP, "sig"), True),
    "wrong secret": (lambda: signed("not-the-key", "sig"), False),
    "expired": (lambda: signed(PRIMARY, "sig", expires_in=-5), False),
    "another stream's secret": (lambda: signed(PRIMARY, "other"), False),
    "unsigned": (lambda: "", False),
}


@pytest.mark.parametrize("protocol", PLAY_PROTOCOLS)
@pytest.mark.parametrize("case", list(CASES))
def test_signed_play_on_every_transport(relay: RunningRelay, protocol: str, case: str) -> None:
    make_query, allowed = CASES[case]
    got, answer = try_play(protocol, relay, "live", "sig", make_query())
    assert got is allowed, f"{protocol}, {case}: {answer}"


def _media_url(relay: RunningRelay, master: str, app: str = "live") -> str:
    line = next(x for x in master.splitlines() if x and not x.startswith("#"))
    return f"{relay.http_url}/{app}/{line}"


def _segments(playlist: str) -> list[str]:
    return [x for x in playlist.splitlines() if x and not x.startswith("#")]


def test_hls_session_is_checked_once_for_many_segments(relay: RunningRelay, hook: Receiver) -> None:
    asks_before = len([b for b in hook.bodies() if b["protocol"] == "hls"])
    viewers = relay.relay.hls_viewers
    assert viewers is not None
    admissions_before = viewers.admissions
    with httpx.Client(base_url=relay.http_url, timeout=20) as http:
        master = http.get(f"/live/sig.m3u8?{signed(PRIMARY, 'sig')}")
        assert master.status_code == 200 and "#EXT-X-STREAM-INF" in master.text
        media_url = _media_url(relay, master.text)
        fetched: set[str] = set()
        deadline = time.monotonic() + 20
        while len(fetched) < 8:  # the playlist moves on: several refreshes
            assert time.monotonic() < deadline
            playlist = http.get(media_url)
            assert playlist.status_code == 200, playlist.text
            for uri in _segments(playlist.text):
                if uri not in fetched:
                    segment = http.get(f"/live/{uri}")
                    assert segment.status_code == 200
                    assert segment.content[:1] == b"G"  # MPEG-TS sync byte
                    fetched.add(uri)
            time.sleep(0.3)
        # The same segment without its session token is refused.
        bare = re.sub(r"\?session=[^&]+", "", next(iter(fetched)))
        assert http.get(f"/live/{bare}").status_code == 403
    assert viewers.admissions - admissions_before == 1
    hls_asks = [b for b in hook.bodies() if b["protocol"] == "hls"]
    assert len(hls_asks) - asks_before == 1


def test_hls_token_of_one_stream_fails_on_another(relay: RunningRelay) -> None:
    with httpx.Client(base_url=relay.http_url, timeout=20) as http:
        master = http.get(f"/live/sig.m3u8?{signed(PRIMARY, 'sig')}")
        token = re.search(r"session=([^&\s]+)", master.text)
        assert token is not None
        assert http.get(f"/live/sig.m3u8?session={token[1]}").status_code == 200
        assert http.get(f"/live/other.m3u8?session={token[1]}").status_code == 403
        playlist = http.get(f"/live/sig.m3u8?session={token[1]}").text
        uri = _segments(playlist)[0]
        stolen = uri.replace("sig/hls", "other/hls", 1)
        assert http.get(f"/live/{stolen}").status_code == 403
        assert http.get("/live/sig.m3u8?session=made-up").status_code == 403


def test_a_real_hls_player_plays_a_signed_url(relay: RunningRelay) -> None:
    player = start_client(
        "play", f"{relay.http_url}/live/sig.m3u8?{signed(PRIMARY, 'sig')}", "--max-frames", "30"
    )
    got = finish_client(player, timeout=60)
    assert got["video_frames"] >= 30


def test_hls_sessions_are_capped(relay: RunningRelay) -> None:
    viewers = relay.relay.hls_viewers
    assert viewers is not None
    saved = viewers.max_sessions
    viewers.max_sessions = len(viewers.sessions) + 1
    try:
        url = f"{relay.http_url}/live/sig.m3u8?{signed(PRIMARY, 'sig')}"
        assert httpx.get(url, timeout=10).status_code == 200
        full = httpx.get(url, timeout=10)
        assert full.status_code == 503 and full.headers["retry-after"] == "5"
    finally:
        viewers.max_sessions = saved
