"""With play authentication on, a recording's VOD files need the recorded stream's play
signature, as its live playback does: nothing, a wrong, expired or other stream's signature
is 403 with the reason; the right one plays."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from app.auth import sign_push
from app.hub import StreamKey
from tests.outputs.media import feed_live
from tests.record.helpers import wait_recordings
from tests.support.clips import encode_flv, flv_packets
from tests.support.relay_harness import RunningRelay

PLAY_KEY = "vod-play-key"


def test_vod_files_need_the_recorded_streams_play_signature(tmp_path: Path) -> None:
    relay = RunningRelay(
        tmp_path / "data", record="live/*", record_min_free_mb=0, play_key=PLAY_KEY
    )
    try:
        relay.run(feed_live(relay.relay.hub, StreamKey("live", "cam"), flv_packets(
            encode_flv(seconds=3, gop=25)), False))  # fmt: skip
        (recording,) = wait_recordings(relay.http_url, "cam")
        base = f"{relay.http_url}/vod/{recording['id']}"
        now = time.time()
        signed = sign_push(PLAY_KEY, "cam", now + 60)
        refusals = {
            "none": {},
            "wrong key": sign_push("another-key", "cam", now + 60),
            "expired": sign_push(PLAY_KEY, "cam", now - 60),
            "other stream": sign_push(PLAY_KEY, "other", now + 60),
        }
        for path in ("media", "regions.jsonl"):
            for what, query in refusals.items():
                answer = httpx.get(f"{base}/{path}", params=query, timeout=10)
                assert answer.status_code == 403, (path, what, answer.text)
                assert answer.json()["detail"], (path, what)
        media = httpx.get(f"{base}/media", params=signed, timeout=10)
        assert media.status_code == 200 and media.content[4:8] == b"ftyp"  # an MP4
        regions = httpx.get(f"{base}/regions.jsonl", params=signed, timeout=10)
        assert regions.status_code == 200, regions.text
        # The REST download stays under the API token, not the play signature.
        assert httpx.get(f"{relay.http_url}/api/v1/recordings/{recording['id']}/media").is_success
    finally:
        relay.stop()
