"""The relay as a real process (`python -m app.cli serve`): `kill -9` mid-recording leaves a
fragmented MP4 that plays up to its last fragment; a write failure (a file-size limit the
kernel enforces, EFBIG, the way a full disk fails a write) stops the recording with a log
line while players keep every frame."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.record.helpers import probe_frames
from tests.support.av_client import ROOT, finish_client, start_client

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RelayProcess:
    def __init__(self, data: Path, preexec: Callable[[], None] | None = None, **env: str) -> None:
        self.rtmp, self.http = free_port(), free_port()
        environment = {
            **os.environ,
            "ROI_RELAY_HOST": "127.0.0.1",
            "ROI_RELAY_RTMP_PORT": str(self.rtmp),
            "ROI_RELAY_HTTP_PORT": str(self.http),
            "ROI_RELAY_DATA_DIR": str(data),
            "ROI_RELAY_RECORD": "live/*",
            "ROI_RELAY_RECORD_MIN_FREE_MB": "0",
            "ROI_RELAY_WORKERS": "1",  # kill -9 is aimed at the process that records
            **env,
        }
        self.log = data.parent / "relay.log"
        data.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=ROOT,
            env=environment,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.base}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "relay did not start"
                time.sleep(0.1)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def url(self, path: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp}/{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def processes() -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        relay.stop()


def test_kill_9_mid_recording_leaves_a_segment_that_plays_to_its_last_fragment(
    tmp_path: Path, processes: list[RelayProcess]
) -> None:
    relay = RelayProcess(tmp_path / "data")
    processes.append(relay)
    pusher = start_client("push", relay.url("live/crash"), "--seconds", "8", "--gop", "250")
    deadline = time.monotonic() + 20
    while True:
        found = httpx.get(f"{relay.base}/api/v1/recordings", timeout=5).json()
        if found and found[0]["bytes"] > 60_000:
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.2)
    relay.proc.send_signal(signal.SIGKILL)
    relay.proc.wait(10)
    pusher.kill()
    pusher.wait()
    (segment,) = (tmp_path / "data" / "recordings" / "live" / "crash").glob("*/00001.mp4")
    assert not segment.with_suffix(".json").exists()  # never closed
    frames = probe_frames(segment)
    lines = len(segment.with_suffix(".roi.jsonl").read_text().splitlines())
    # A fragment at least every second: at most ~1 s (25 frames) was lost with the process.
    assert frames["video"] >= 25, frames
    assert lines - 30 <= frames["video"] <= lines, (frames, lines)
    assert frames["audio"] > 0
    # The next start lists it as cut short and serves it.
    restarted = RelayProcess(tmp_path / "data")
    processes.append(restarted)
    (listed,) = httpx.get(f"{restarted.base}/api/v1/recordings", timeout=5).json()
    assert listed["state"] == "cut short"
    assert httpx.get(restarted.base + listed["media_url"], timeout=5).status_code == 200


def _limit_file_size() -> None:
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG instead.
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_a_failing_disk_stops_the_recording_and_players_keep_playing(
    tmp_path: Path, processes: list[RelayProcess]
) -> None:
    relay = RelayProcess(tmp_path / "data", preexec=_limit_file_size)
    processes.append(relay)
    pusher = start_client(
        "push", relay.url("live/full"), "--seconds", "6", "--gop", "250", "--bitrate", "800"
    )
    deadline = time.monotonic() + 20
    while httpx.get(f"{relay.base}/api/v1/streams/live/full", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    player = start_client("play", f"{relay.base}/live/full.flv")
    pushed = finish_client(pusher)
    played = finish_client(player)
    assert played["video_frames"] == pushed["video_frames"]
    log = relay.log.read_text()
    assert "recording live/full stopped (the live stream goes on)" in log
    assert "recording.failed" in log
    (listed,) = httpx.get(f"{relay.base}/api/v1/recordings", timeout=5).json()
    assert listed["state"] == "cut short"
    assert 0 < listed["bytes"] <= 200_000
