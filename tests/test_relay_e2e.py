"""End to end through the whole relay: real RTMP publishers, HTTP-FLV players, the REST API."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request

import httpx
import pytest

from tests.support.av_client import finish_client, run_client, start_client

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("write_merge_ms", [0, 20], ids=["per-read-writes", "merged-writes"])
def test_pyav_push_reads_back_over_http_flv_and_rtmp(relay_factory, write_merge_ms) -> None:
    relay = relay_factory(write_merge_ms=write_merge_ms)
    pusher = start_client("push", f"{relay.rtmp_url}/live/cam", "--seconds", "3")
    relay.stream_info("live", "cam")
    players = [
        start_client("play", f"{relay.http_url}/live/cam.flv"),
        start_client("play", f"{relay.rtmp_url}/live/cam"),
    ]
    pushed = finish_client(pusher)
    for got in (finish_client(p) for p in players):
        # One GOP for the whole clip: a player joining at any time gets every frame.
        assert got["video_frames"] == pushed["video_frames"]
        assert got["audio_frames"] >= pushed["audio_frames"] * 0.9
        assert got["keyframe_first"]
        assert got["video_dts"] == sorted(got["video_dts"])
        assert got["decode_errors"] == 0
        assert (got["width"], got["height"]) == (192, 108)


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
        relay.stream_info("live", "cli")
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
    pusher = start_client("push", f"{relay.rtmp_url}/live/api", "--seconds", "8")
    relay.stream_info("live", "api")
    player = start_client("play", f"{relay.http_url}/live/api.flv")
    time.sleep(2.0)
    with httpx.Client(base_url=relay.http_url, timeout=10) as client:
        listed = client.get("/api/v1/streams").json()
        assert [(s["app"], s["stream"]) for s in listed] == [("live", "api")]
        one = client.get("/api/v1/streams/live/api").json()
        assert one["codec"] == "avc1" and one["audio_codec"] == "aac"
        assert one["players"] == 1
        assert one["bitrate_kbps"] > 0 and 20 <= one["fps"] <= 30
        assert one["roi"]["applied"] is False
        assert client.get("/api/v1/streams/live/nope").status_code == 404
        metrics = client.get("/metrics").text
        assert "roi_relay_streams 1.0" in metrics
        assert "roi_relay_players 1.0" in metrics
        assert "roi_relay_rtmp_connections 1.0" in metrics
        assert "roi_relay_rtmp_pending_message_bytes " in metrics
        assert client.delete("/api/v1/streams/live/api").status_code == 204
        deadline = time.monotonic() + 5
        while client.get("/api/v1/streams").json() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/api/v1/streams").json() == []
        assert client.get("/healthz").json()["status"] == "ok"
        metrics = client.get("/metrics").text
        assert "roi_relay_streams 0.0" in metrics
    got = finish_client(player, timeout=15)  # a clean end of stream after the kick
    assert 0 < got["video_frames"] < 8 * 25
    pusher.communicate(timeout=30)
    assert pusher.returncode != 0, "the kicked publisher sees its connection closed"


def test_streams_api_has_a_typed_schema_that_the_documents_follow(relay) -> None:
    pusher = start_client("push", f"{relay.rtmp_url}/live/typed", "--seconds", "3")
    with httpx.Client(base_url=relay.http_url, timeout=10) as client:
        relay.stream_info("live", "typed")
        listed = client.get("/api/v1/streams").json()
        schema = client.get("/openapi.json").json()
    finish_client(pusher)
    ok = schema["paths"]["/api/v1/streams"]["get"]["responses"]["200"]["content"]
    assert ok["application/json"]["schema"]["items"] == {"$ref": "#/components/schemas/StreamInfo"}
    one = schema["paths"]["/api/v1/streams/{app}/{stream}"]["get"]["responses"]["200"]
    assert one["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StreamInfo"
    }
    models = schema["components"]["schemas"]
    fields = models["StreamInfo"]["properties"]
    assert fields["roi"] == {"$ref": "#/components/schemas/RoiInfo"}
    # The console and the player read these: each one is in the schema and in the document.
    for name in (
        "app", "stream", "remote", "codec", "audio_codec", "width", "height", "fps",
        "bitrate_kbps", "players", "uptime_s", "bytes_in", "dropped_frames", "template",
        "roi", "warnings",
    ):  # fmt: skip
        assert name in fields and name in listed[0], name
    assert set(listed[0]) == set(fields)
    assert set(listed[0]["roi"]) == set(models["RoiInfo"]["properties"]) == {
        "template", "model", "applied", "reason", "regions", "detect_ms", "detect_every",
        "encode_ms", "lag_ms", "degraded", "decoder", "decoder_fallback", "encoder",
        "encoder_fallback", "providers", "corrupt_gops",
    }  # fmt: skip


def test_long_keyframe_interval_is_a_warning_in_the_stream_status(relay) -> None:
    # 25 fps with a keyframe every 125 frames: 5 s, longer than the 4 s a late joiner should wait.
    pusher = start_client(
        "push", f"{relay.rtmp_url}/live/longgop", "--seconds", "6", "--gop", "125"
    )
    info = relay.stream_info("live", "longgop")
    assert info["warnings"] == []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not info["warnings"]:
        time.sleep(0.2)
        info = relay.stream_info("live", "longgop")
    finish_client(pusher)
    assert len(info["warnings"]) == 1 and "keyframe interval over 4 s" in info["warnings"][0]


def test_unknown_stream_is_404_over_http_flv(relay) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{relay.http_url}/live/missing.flv", timeout=5)
    assert err.value.code == 404


def test_hevc_push_over_enhanced_rtmp_plays_over_http_flv(relay) -> None:
    pusher = start_client(
        "push", f"{relay.rtmp_url}/live/hevc", "--codec", "libx265", "--seconds", "2"
    )
    relay.stream_info("live", "hevc")
    got = run_client("play", f"{relay.http_url}/live/hevc.flv")
    pushed = finish_client(pusher)
    assert got["codec"] == "hevc"
    assert got["video_frames"] == pushed["video_frames"]


def test_http_flv_player_leaving_is_dropped_at_once(relay) -> None:
    import socket

    pusher = start_client("push", f"{relay.rtmp_url}/live/leave", "--seconds", "6")
    relay.stream_info("live", "leave")
    with socket.create_connection(("127.0.0.1", relay.relay.http_port), timeout=5) as conn:
        conn.sendall(b"GET /live/leave.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.recv(65536)
        assert head.startswith(b"HTTP/1.1 200") and b"video/x-flv" in head
        assert relay.stream_info("live", "leave")["players"] == 1
    deadline = time.monotonic() + 2
    while relay.stream_info("live", "leave")["players"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert relay.stream_info("live", "leave")["players"] == 0
    head_only = httpx.head(f"{relay.http_url}/live/leave.flv", timeout=5)
    assert head_only.status_code == 200 and head_only.headers["content-type"] == "video/x-flv"
    finish_client(pusher)
