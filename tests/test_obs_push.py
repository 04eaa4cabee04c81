"""Real OBS Studio (Debian's obs-studio 29, headless under Xvfb with software GL) pushing a
face to the relay, with the query in the Stream Key and in the Server field: the stream gets
ROI regions and plays over HTTP-FLV; when the relay restarts, OBS's own reconnect brings the
stream back, with ROI, within 15 s.

OBS's config home and command line are tests/support/obs.py's; the scene is one image source
showing a face.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.hub import StreamKey
from tests.support.av_client import run_client
from tests.support.obs import OBS_COMMAND, image_source, obs_environment, write_obs_config
from tests.support.relay_harness import RunningRelay, create_template

FACE = Path(__file__).resolve().parent / "data" / "images" / "grace_hopper.jpg"
WIDTH, HEIGHT = 640, 360

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("obs") and shutil.which("xvfb-run")),
        reason="obs-studio and xvfb are not installed (scripts/system-deps.sh)",
    ),
]


# x264 with a keyframe every second, OBS's automatic reconnect every second.
OUTPUT = (
    "[Output]\nMode=Advanced\nReconnect=true\nRetryDelay=1\nMaxRetries=30\n\n"
    "[AdvOut]\nEncoder=obs_x264\nTrackIndex=1\nApplyServiceSettings=true\n\n"
    "[Audio]\nSampleRate=44100\nChannelSetup=Stereo\n"
)
ENCODER = {"rate_control": "CBR", "bitrate": 600, "keyint_sec": 1, "preset": "veryfast"}


class ObsStudio:
    """OBS Studio under `xvfb-run -a`, in its own process group, with its own config home."""

    def __init__(self, home: Path, server: str, key: str) -> None:
        self.config_home = home / ".config"
        write_obs_config(
            self.config_home, "roi", server, key, size=(WIDTH, HEIGHT), fps=25,
            source=image_source(FACE), output=OUTPUT, encoder=ENCODER,
        )  # fmt: skip
        self.proc = subprocess.Popen(
            OBS_COMMAND, env=obs_environment(home, self.config_home), cwd=home,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        logs = sorted((self.config_home / "obs-studio" / "logs").glob("*.txt"))
        return logs[-1].read_text(errors="replace") if logs else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def obs_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[ObsStudio] = []

    def start(server: str, key: str) -> ObsStudio:
        obs = ObsStudio(tmp_path / f"obs{len(started)}", server, key)
        started.append(obs)
        return obs

    yield start
    for obs in started:
        obs.close()


def wait_for_roi(relay: RunningRelay, obs: ObsStudio, timeout: float) -> dict[str, Any]:
    """The stream's status once OBS is live on it and ROI encoding has found regions."""
    deadline = time.monotonic() + timeout
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"{relay.http_url}/api/v1/streams/live/face", timeout=5)
        except httpx.HTTPError:
            reply = None
        if reply is not None and reply.status_code == 200:
            info = reply.json()
            if info["roi"]["applied"] and info["roi"]["regions"] > 0:
                return info
        time.sleep(0.2)
    raise AssertionError(f"no ROI stream from OBS within {timeout} s: {info}\n{obs.log()[-3000:]}")


def plays_with_regions(relay: RunningRelay) -> dict[str, Any]:
    got = run_client(
        "play", f"{relay.http_url}/live/face.flv", "--sei", "--max-frames", "30", "--timeout", "15"
    )
    assert got["codec"] == "h264" and (got["width"], got["height"]) == (WIDTH, HEIGHT)
    assert got["video_frames"] >= 30 and got["keyframe_first"] and got["decode_errors"] == 0
    assert got["audio_frames"] > 0, "OBS's audio track is relayed"
    with_regions = [json.loads(doc) for doc in got["sei"] if doc]
    assert len(with_regions) >= 25, "nearly every frame carries its regions"
    assert all(doc["template"] == "roiface1" for doc in with_regions)
    assert any(r["label"] == "face" for doc in with_regions for r in doc["regions"])
    return got


def screenshot_player(relay: RunningRelay, path: Path) -> None:
    """The web player on OBS's stream, in headless Chromium: the face, its regions drawn and
    sample comments kept off them."""
    from tests.support.browser import CHROMIUM, chromium

    if not CHROMIUM.exists():
        return
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 800, "height": 560})
        page.goto(f"{relay.http_url}/play/live/face?transport=flv&regions=1&demo=1")
        page.wait_for_function(
            "roiPlayer.frames > 10 && roiPlayer.boxes.length > 0 && roiPlayer.comments > 6",
            timeout=20_000,
        )
        assert page.evaluate("roiPlayer.status") == "playing (flv)"
        page.wait_for_timeout(4000)  # comments drift across the face's region meanwhile
        assert page.evaluate("roiPlayer.status") == "playing (flv)"
        page.screenshot(path=str(path))


@pytest.mark.parametrize("query_in", ["key", "server"])
def test_obs_push_gets_roi_plays_and_comes_back_after_a_relay_restart(
    relay_factory: Any, obs_factory: Any, query_in: str, tmp_path: Path
) -> None:
    relay = relay_factory(template_activation_delay=0, log_level="info")
    create_template(relay.http_url, "face1", model="LiveShows")
    query = "roirecognition=roiface1"
    server, key = f"{relay.rtmp_url}/live", "face"
    if query_in == "key":
        key = f"face?{query}"
    else:
        server = f"{server}?{query}"
    obs = obs_factory(server, key)

    first = wait_for_roi(relay, obs, timeout=40)
    assert first["template"] == "roiface1" and first["codec"] == "avc1"
    plays_with_regions(relay)
    if query_in == "key":
        screenshot_player(relay, tmp_path / "obs-player.png")

    relay.restart()
    restarted = time.monotonic()
    back = wait_for_roi(relay, obs, timeout=15)
    took = time.monotonic() - restarted
    print(f"OBS ({query_in}) back with ROI {took:.1f} s after the relay restarted")
    assert back["uptime_s"] < took + 1, "a new publish on the restarted relay"
    assert "Reconnecting in" in obs.log(), "OBS reconnected by itself"
    plays_with_regions(relay)


def test_obs_push_refused_for_a_bad_signature(
    relay_factory: Any, obs_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """What the README says OBS shows: the publish fails with OBS_OUTPUT_INVALID_STREAM (-3,
    "Could not access the specified channel or stream key..."); the relay logs why."""
    caplog.set_level("WARNING", logger="app.rtmp")
    relay = relay_factory(push_key="k3y")
    obs = obs_factory(f"{relay.rtmp_url}/live", "face?txSecret=0&txTime=FFFFFFFF")
    deadline = time.monotonic() + 30
    while "failed: -3" not in obs.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"Connection to {relay.rtmp_url}/live failed: -3" in obs.log(), obs.log()[-2000:]
    assert relay.relay.hub.get(StreamKey("live", "face")) is None
    assert any(
        "push to live/face refused: txSecret does not match the push key" in r.getMessage()
        for r in caplog.records
    )
    time.sleep(3)
    assert obs.log().count("Connecting to RTMP URL") == 1, "OBS does not retry a refused push"
