"""RTMPS: FFmpeg pushes and plays over rtmps:// (a self-signed certificate made here); a
connection that fails its TLS handshake is closed alone and the live stream goes on."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.relay_harness import RunningRelay
from tests.support.tls import self_signed

pytestmark = pytest.mark.slow


def ffmpeg_push(url: str, seconds: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ffmpeg", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-g", "250", "-bf", "0",
         "-c:a", "aac", "-f", "flv", url],
    )  # fmt: skip


def count_frames(path: Path) -> dict[str, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,nb_read_frames", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {s["codec_type"]: int(s["nb_read_frames"]) for s in json.loads(out)["streams"]}


@pytest.fixture
def tls_relay(tmp_path: Path):
    certs = self_signed(tmp_path / "tls")
    running = RunningRelay(tmp_path / "data", rtmps_port=0, tls_cert=certs.cert, tls_key=certs.key)
    try:
        yield running
    finally:
        running.stop()


def test_ffmpeg_pushes_and_plays_over_rtmps_and_a_bad_tls_hello_closes_alone(
    tls_relay: RunningRelay, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = tls_relay.relay.rtmps_port
    url = f"rtmps://127.0.0.1:{port}/live/secure"
    pusher = ffmpeg_push(url, 4)
    try:
        tls_relay.stream_info("live", "secure")
        recorded = tmp_path / "played.flv"
        player = subprocess.Popen(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", url, "-c", "copy", str(recorded)]
        )
        caplog.set_level(logging.WARNING, logger="app.rtmp")
        # A plain RTMP handshake and then garbage on the TLS port, while the stream runs.
        for hello in (b"\x03" + os.urandom(1536), b"\x16\x03\x01\x00\x05garbage" * 20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as bad:
                bad.sendall(hello)
                bad.settimeout(5)
                # The server answers with a TLS alert at most, then closes this one.
                while bad.recv(65536):
                    pass
        assert pusher.wait(30) == 0
        assert player.wait(30) == 0
    finally:
        pusher.kill()
    failures = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failures) == 2, [r.getMessage() for r in caplog.records]
    frames = count_frames(recorded)
    # One GOP for the whole clip: the player joined late but got every frame from the cache.
    assert frames["video"] == 100
    assert frames["audio"] > 150
    # Plain RTMP on the other port still answers.
    with socket.create_connection(("127.0.0.1", tls_relay.relay.rtmp_port), timeout=5):
        pass
