"""The README is what a new user follows: its quick start runs as written (relay, template,
push, play), its signed-URL one-liner makes a URL the relay accepts, and its settings table
lists every setting the code reads."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from tests.support.relay_harness import RunningRelay

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FACE = ROOT / "tests" / "data" / "images" / "grace_hopper.jpg"

needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="Debian ffmpeg is missing")


def section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n#", start + len(title))
    return README[start : end if end >= 0 else None]


def shell_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.+?)\n\s*```", text, re.S)]


def test_every_setting_is_in_the_settings_table() -> None:
    table = section("## Configuration")
    for name in Settings.model_fields:
        assert f"ROI_RELAY_{name.upper()}" in table, f"ROI_RELAY_{name.upper()} is not listed"


def test_quick_start_is_in_the_order_of_use() -> None:
    steps = shell_blocks(section("## Quick start"))
    assert [s.split()[0] for s in steps] == [
        "ROI_RELAY_TEMPLATE_ACTIVATION_DELAY=5",
        "curl",
        "ffmpeg",
        "ffplay",
    ]
    assert '"name": "face1"' in steps[1] and "roirecognition=roiface1" in steps[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def face_clip(path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-loop", "1", "-i", str(FACE), "-f", "lavfi",
         "-i", "sine=frequency=440:sample_rate=44100", "-t", "4", "-vf", "scale=352:264",
         "-pix_fmt", "yuv420p", "-c:v", "libx264", "-c:a", "aac", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


def on_ports(command: str, http: int, rtmp: int, clip: Path | None = None) -> str:
    command = command.replace("localhost:8080", f"127.0.0.1:{http}")
    command = command.replace("localhost:1935", f"127.0.0.1:{rtmp}")
    return command.replace("clip.mp4", str(clip)) if clip else command


@pytest.mark.slow
@needs_ffmpeg
def test_quick_start_runs_as_written(tmp_path: Path) -> None:
    serve, create, push, play = shell_blocks(section("## Quick start"))
    http, rtmp = free_port(), free_port()
    env = {
        **os.environ,
        "ROI_RELAY_HTTP_PORT": str(http),
        "ROI_RELAY_RTMP_PORT": str(rtmp),
        "ROI_RELAY_DATA_DIR": str(tmp_path / "data"),
        "ROI_RELAY_LOG_LEVEL": "warning",
    }
    # The README's `.venv/bin/roi-relay` is the console script of this same code.
    serve = serve.replace(".venv/bin/roi-relay", f"{sys.executable} -m app.cli")
    relay = subprocess.Popen(serve, shell=True, env=env, cwd=ROOT, start_new_session=True)
    pusher = None
    try:
        base = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        created = subprocess.run(
            on_ports(create, http, rtmp), shell=True, capture_output=True, text=True, timeout=30
        )
        assert '"name":"roiface1"' in created.stdout and '"model":"LiveShows"' in created.stdout
        assert '"status":"pending"' in created.stdout, created.stdout

        clip = face_clip(tmp_path / "clip.mp4")
        pusher = subprocess.Popen(
            on_ports(push, http, rtmp, clip) + " -v error",
            shell=True,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        # Pending for 5 s: relayed unchanged, then ROI-encoded without the push reconnecting.
        roi: dict = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reply = httpx.get(f"{base}/api/v1/streams/live/mystream")
            if reply.status_code == 200:
                roi = reply.json()["roi"]
                if roi["applied"] and roi["regions"] > 0:
                    break
            time.sleep(0.3)
        assert roi.get("applied") and roi["template"] == "roiface1", roi
        assert roi["regions"] > 0, "the face was found"

        url = play.split()[1]
        assert url == "http://localhost:8080/live/mystream.flv"
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
             on_ports(url, http, rtmp)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert probe.stdout.split() == ["h264", "aac"], probe.stderr
    finally:
        for proc in (pusher, relay):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, 15)
                proc.wait(15)


@needs_ffmpeg
def test_signed_push_url_one_liner_is_accepted(tmp_path: Path) -> None:
    (one_liner,) = shell_blocks(section("### Signed pushes"))
    assert "KEY=secret STREAM=mystream" in one_liner
    url = subprocess.run(
        ["bash", "-c", one_liner], capture_output=True, text=True, check=True
    ).stdout.strip()
    relay = RunningRelay(tmp_path / "data", push_key="secret")
    try:
        pushed = subprocess.run(
            ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
             "-t", "2", "-c:v", "libx264", "-g", "25", "-f", "flv",
             url.replace("rtmp://localhost:1935", relay.rtmp_url)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        assert relay.relay.hub.counters.streams_started == 1
        assert relay.relay.hub.counters.refused_pushes == {}
        # The same URL for another stream name does not verify: StreamName is in the hash.
        other = url.replace("/live/mystream?", "/live/other?")
        refused = subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
             "-t", "1", "-c:v", "libx264", "-f", "flv",
             other.replace("rtmp://localhost:1935", relay.rtmp_url)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode != 0
        assert relay.relay.hub.counters.refused_pushes == {"auth": 1}
    finally:
        relay.stop()
