"""End to end through the whole relay: real RTMP publishers, HTTP-FLV players, the REST API."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import av
import httpx
import pytest

from app.hub import StreamKey
from tests.media_clients import PlayResult, play, push

pytestmark = pytest.mark.slow


def wait_live(relay, app: str, name: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.call(relay.hub.get, StreamKey(app, name)) is not None:
            return
        time.sleep(0.02)
    raise AssertionError(f"{app}/{name} never went live")


def push_in_background(url: str, **kwargs):
    pool = ThreadPoolExecutor(1)
    return pool.submit(push, url, **kwargs), pool


def test_pyav_push_reads_back_over_http_flv_and_rtmp(relay) -> None:
    future, pool = push_in_background(f"{relay.rtmp_url}/live/cam", seconds=2.0)
    wait_live(relay, "live", "cam")
    with ThreadPoolExecutor(2) as players:
        flv = players.submit(play, f"{relay.http_url}/live/cam.flv")
        rtmp = players.submit(play, f"{relay.rtmp_url}/live/cam")
        pushed = future.result(30)
        results: list[PlayResult] = [flv.result(30), rtmp.result(30)]
    pool.shutdown()
    for got in results:
        # One GOP for the whole clip: a player joining at any time gets every frame.
        assert got.video_frames == pushed.video_frames
        assert got.audio_frames >= pushed.audio_frames * 0.9
        assert got.keyframe_first
        assert got.video_dts == sorted(got.video_dts)
        assert (got.width, got.height) == (320, 240)


def test_ffmpeg_cli_push_and_ffmpeg_flv_player(relay, tmp_path) -> None:
    url = f"{relay.rtmp_url}/live/cli"
    pusher = subprocess.Popen(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=3",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=3",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "25",
            "-c:a",
            "aac",
            "-f",
            "flv",
            url,
        ],
    )
    try:
        wait_live(relay, "live", "cli")
        out = tmp_path / "out.flv"
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-i",
                f"{relay.http_url}/live/cli.flv",
                "-c",
                "copy",
                str(out),
            ],
            check=True,
            timeout=30,
        )
        assert pusher.wait(30) == 0
    finally:
        pusher.kill()
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,codec_name",
            "-of",
            "csv=p=0",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    codec, frames = probe.stdout.strip().split(",")
    assert codec == "h264"
    assert int(frames) >= 25  # joined late: from the GOP cache of the last keyframe onwards


def test_streams_api_metrics_and_kick(relay) -> None:
    future, pool = push_in_background(f"{relay.rtmp_url}/live/api", seconds=6.0)
    wait_live(relay, "live", "api")
    reader = threading.Thread(
        target=lambda: play(f"{relay.http_url}/live/api.flv", timeout=15), daemon=True
    )
    reader.start()
    time.sleep(1.5)
    with httpx.Client(base_url=relay.http_url, timeout=10) as client:
        listed = client.get("/api/v1/streams").json()
        assert [(s["app"], s["stream"]) for s in listed] == [("live", "api")]
        one = client.get("/api/v1/streams/live/api").json()
        assert one["codec"] == "avc1" and one["audio_codec"] == "aac"
        assert (one["width"], one["height"]) == (320, 240)
        assert one["players"] == 1
        assert one["bitrate_kbps"] > 0 and 20 <= one["fps"] <= 30
        assert client.get("/api/v1/streams/live/nope").status_code == 404
        metrics = client.get("/metrics").text
        assert "roi_relay_streams 1.0" in metrics
        assert "roi_relay_players 1.0" in metrics
        assert client.delete("/api/v1/streams/live/api").status_code == 204
        deadline = time.monotonic() + 5
        while client.get("/api/v1/streams").json() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/api/v1/streams").json() == []
        assert client.get("/healthz").json()["status"] == "ok"
    reader.join(10)
    assert not reader.is_alive(), "the player got a clean end of stream after the kick"
    with pytest.raises((av.error.FFmpegError, OSError)):
        future.result(30)  # the kicked publisher sees its connection closed
    pool.shutdown()


def test_unknown_stream_is_404_over_http_flv(relay) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{relay.http_url}/live/missing.flv", timeout=5)
    assert err.value.code == 404
