"""The blocking auth hook end to end: a real receiver decides each publish and each play
(RTMP publish and play, HTTP-FLV, HLS, WHEP, the ROI WebSocket) from the query it is sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth import sign_push
from tests.hooks.clients import PLAY_PROTOCOLS, rtmp_statuses, try_play
from tests.hooks.receiver import Answer, Receiver, dead_url
from tests.support.av_client import run_client, start_client
from tests.support.relay_harness import RunningRelay

pytestmark = pytest.mark.slow

HOOK_TIMEOUT = 0.4
# Answers that are not a clear yes: each refuses.
ODD_ANSWERS: dict[str, Answer] = {
    "not-json": (200, b"OK", 0.0),
    "string-code": (200, {"code": "0"}, 0.0),
    "no-code": (200, {"allowed": True}, 0.0),
    "json-list": (200, [0], 0.0),  # type: ignore[dict-item]
    "empty-204": (204, b"", 0.0),
    "bad-template": (200, {"code": 0, "template": 42}, 0.0),
    "redirect": (302, {"code": 0}, 0.0),
}


def decide(_path: str, body: dict[str, Any]) -> Answer:
    mode = body["query"].get("mode", "allow")
    if mode == "deny":
        return 200, {"code": 403, "message": "not you"}, 0.0
    if mode == "http-error":
        return 403, {"code": 0}, 0.0  # 2xx is required as well as code 0
    if mode == "slow":
        return 200, {"code": 0}, HOOK_TIMEOUT * 3
    if mode == "slow-yes":  # within the timeout
        return 200, {"code": 0}, HOOK_TIMEOUT / 2
    if mode == "template":
        return 200, {"code": 0, "template": "roiface1"}, 0.0
    if mode in ODD_ANSWERS:
        return ODD_ANSWERS[mode]
    return 200, {"code": 0}, 0.0


class HookedRelay:
    def __init__(self, root: Path, hook_url: str, **settings: Any) -> None:
        self.relay = RunningRelay(
            root, auth_hook_url=hook_url, auth_hook_timeout=HOOK_TIMEOUT, **settings
        )
        self.pushers: list[Any] = []

    def live(self, name: str, query: str = "mode=allow") -> None:
        self.pushers.append(
            start_client(
                "push",
                f"{self.relay.rtmp_url}/live/{name}?{query}",
                "--seconds",
                "60",
                "--gop",
                "25",
            )
        )
        self.relay.stream_info("live", name)

    def stop(self) -> None:
        for pusher in self.pushers:
            pusher.kill()
            pusher.wait()
        self.relay.stop()


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    receiver = Receiver(decide).start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def hooked(hook: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookedRelay]:
    running = HookedRelay(tmp_path_factory.mktemp("hooked"), f"{hook.url}/hook", push_key="pk")
    signed = sign_push("pk", "cam", time.time() + 600)
    running.live("cam", f"mode=allow&txSecret={signed['txSecret']}&txTime={signed['txTime']}")
    yield running
    running.stop()


@pytest.mark.parametrize("protocol", PLAY_PROTOCOLS)
@pytest.mark.parametrize(
    ("mode", "allowed"), [("allow", True), ("deny", False), ("http-error", False), ("slow", False)]
)
def test_hook_decides_each_play(
    hooked: HookedRelay, hook: Receiver, protocol: str, mode: str, allowed: bool
) -> None:
    before = len(hook.received)
    got, answer = try_play(protocol, hooked.relay, "live", "cam", f"mode={mode}&token=t0k")
    assert got is allowed, f"{protocol} {mode}: {answer}"
    if not allowed:
        refusal = {"rtmp": "NetStream.Play.Failed", "roi-ws": "4403"}.get(protocol, "403")
        assert refusal in answer
    asked = [r.body for r in hook.received[before:]]
    assert len(asked) == 1, asked
    assert asked[0] == {
        "action": "play",
        "protocol": protocol,
        "app": "live",
        "stream": "cam",
        "query": {"mode": mode, "token": "t0k"},
        "client_ip": "127.0.0.1",
        "signature": {"ok": True, "reason": "play authentication is off"},
    }


def test_hook_sees_the_publish_with_its_secrets_and_the_signature_verdict(
    hooked: HookedRelay, hook: Receiver
) -> None:
    publishes = [b for b in hook.bodies() if b["action"] == "publish" and b["stream"] == "cam"]
    assert len(publishes) == 1
    body = publishes[0]
    assert body["protocol"] == "rtmp" and body["app"] == "live"
    assert set(body["query"]) == {"mode", "txSecret", "txTime"}  # secrets kept for the hook
    assert body["signature"] == {"ok": True, "reason": "signature valid"}


@pytest.mark.parametrize("mode", ["deny", "http-error", "slow"])
def test_a_refused_publish_gets_bad_auth_and_reaches_no_player(
    hooked: HookedRelay, hook: Receiver, mode: str
) -> None:
    relay = hooked.relay
    name = f"refused{mode.replace('-', '')}"
    signed = sign_push("pk", name, time.time() + 600)
    query = f"mode={mode}&txSecret={signed['txSecret']}&txTime={signed['txTime']}"
    codes = rtmp_statuses(relay.relay.rtmp_port, "publish", f"{name}?{query}")
    assert codes == ["NetStream.Publish.BadAuth"]
    assert httpx.get(f"{relay.http_url}/api/v1/streams/live/{name}").status_code == 404
    # A real publisher too: refused, and a player finds nothing.
    result = start_client("push", f"{relay.rtmp_url}/live/{name}?{query}", "--seconds", "1")
    _out, err = result.communicate(timeout=30)
    assert result.returncode != 0
    assert httpx.get(f"{relay.http_url}/live/{name}.flv?mode=allow").status_code == 404


def test_a_bad_signature_is_refused_before_the_hook_is_asked(
    hooked: HookedRelay, hook: Receiver
) -> None:
    before = len(hook.received)
    codes = rtmp_statuses(
        hooked.relay.relay.rtmp_port, "publish", "forged?mode=allow&txSecret=00&txTime=FFFFFFFF"
    )
    assert codes == ["NetStream.Publish.BadAuth"]
    assert len(hook.received) == before


def test_the_hook_chooses_the_template_of_a_push(hooked: HookedRelay) -> None:
    signed = sign_push("pk", "chosen", time.time() + 600)
    hooked.live("chosen", f"mode=template&txSecret={signed['txSecret']}&txTime={signed['txTime']}")
    info = hooked.relay.stream_info("live", "chosen")
    assert info["template"] == "roiface1"


def test_a_slow_hook_stalls_no_other_connection(hooked: HookedRelay) -> None:
    slow_done = threading.Event()

    def slow_play() -> None:
        try_play("http-flv", hooked.relay, "live", "cam", "mode=slow")
        slow_done.set()

    thread = threading.Thread(target=slow_play)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    for protocol in ("rtmp", "http-flv", "hls"):
        assert try_play(protocol, hooked.relay, "live", "cam", "mode=allow")[0]
    fast = time.monotonic() - started
    thread.join(10)
    assert slow_done.is_set()
    assert fast < HOOK_TIMEOUT * 3  # the slow answer takes 3x the timeout


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookedRelay]:
    running = HookedRelay(tmp_path_factory.mktemp("down"), dead_url())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fail_open(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookedRelay]:
    running = HookedRelay(tmp_path_factory.mktemp("open"), dead_url(), auth_hook_fail_open=True)
    running.live("cam")
    yield running
    running.stop()


def test_a_down_hook_refuses_everything(down: HookedRelay) -> None:
    codes = rtmp_statuses(down.relay.relay.rtmp_port, "publish", "cam?mode=allow")
    assert codes == ["NetStream.Publish.BadAuth"]
    for protocol in PLAY_PROTOCOLS:
        allowed, answer = try_play(protocol, down.relay, "live", "cam", "mode=allow")
        assert not allowed, f"{protocol}: {answer}"
    metrics = httpx.get(f"{down.relay.http_url}/metrics").text
    assert 'roi_relay_auth_hook_answers_total{outcome="unavailable"} 6.0' in metrics


def test_a_down_hook_with_fail_open_allows(fail_open: HookedRelay) -> None:
    # The push in the fixture went live through the dead hook; so does every play.
    for protocol in PLAY_PROTOCOLS:
        allowed, answer = try_play(protocol, fail_open.relay, "live", "cam", "")
        assert allowed, f"{protocol}: {answer}"
    assert (
        run_client("play", f"{fail_open.relay.http_url}/live/cam.flv", "--max-frames", "5")[
            "video_frames"
        ]
        >= 5
    )


@pytest.mark.parametrize("mode", list(ODD_ANSWERS))
def test_anything_but_a_clear_yes_refuses(hooked: HookedRelay, hook: Receiver, mode: str) -> None:
    allowed, answer = try_play("http-flv", hooked.relay, "live", "cam", f"mode={mode}")
    assert not allowed and answer == "403"
    name = f"odd{mode.replace('-', '')}"
    signed = sign_push("pk", name, time.time() + 600)
    query = f"mode={mode}&txSecret={signed['txSecret']}&txTime={signed['txTime']}"
    before = len(hook.received)
    codes = rtmp_statuses(hooked.relay.relay.rtmp_port, "publish", f"{name}?{query}")
    assert codes == ["NetStream.Publish.BadAuth"]
    assert hook.bodies()[before:][0]["stream"] == name  # the hook was asked, and said no


def test_a_publish_is_held_until_the_hook_answers(hooked: HookedRelay) -> None:
    relay = hooked.relay
    signed = sign_push("pk", "held", time.time() + 600)
    query = f"mode=slow-yes&txSecret={signed['txSecret']}&txTime={signed['txTime']}"
    started = time.monotonic()
    codes = rtmp_statuses(relay.relay.rtmp_port, "publish", f"held?{query}")
    assert codes == ["NetStream.Publish.Start"]
    assert time.monotonic() - started >= HOOK_TIMEOUT / 2
    # A real push through the same slow yes reaches players.
    live = sign_push("pk", "heldlive", time.time() + 600)
    hooked.live("heldlive", f"mode=slow-yes&txSecret={live['txSecret']}&txTime={live['txTime']}")
    got = run_client("play", f"{relay.http_url}/live/heldlive.flv?mode=allow", "--max-frames", "10")
    assert got["video_frames"] >= 10
