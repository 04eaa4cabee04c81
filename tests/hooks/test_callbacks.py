"""Event callbacks end to end: a real relay, real PyAV pushes and players, and a real HTTP
receiver (tests/hooks/receiver.py) recording what the relay POSTs."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from app.auth import sign_push
from tests.hooks.clients import PLAY_PROTOCOLS, try_play
from tests.hooks.receiver import Answer, Receiver, dead_url
from tests.support.av_client import finish_client, start_client

pytestmark = pytest.mark.slow

CALLBACK_KEY = "callback-secret"


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_receiver() -> dict[str, Any]:
    """The example receiver of the README's "Callbacks and authentication", run as written."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Callbacks and authentication") :]
    begin = section.index("```python\n") + 10
    code = section[begin : section.index("```\n", begin)]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def verify(body: dict[str, Any], key: str) -> bool:
    """The README's check: sign = md5(key + t), t not passed."""
    receiver = readme_receiver()
    receiver["KEY"] = key
    valid = receiver["valid"](body)
    # And the check must be able to say no.
    assert not receiver["valid"]({**body, "sign": hashlib.md5(b"forged").hexdigest()})
    return bool(valid)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def metric(relay: Any, name: str, kind: str) -> float:
    text = httpx.get(f"{relay.http_url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(f'{name}{{kind="{kind}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_push_start_and_stop_callbacks_carry_the_cloud_fields(relay_factory, receiver) -> None:
    relay = relay_factory(
        callback_url=f"{receiver.url}/events", callback_key=CALLBACK_KEY, push_key="pk"
    )
    signed = sign_push("pk", "cam", time.time() + 600)
    url = f"{relay.rtmp_url}/live/cam?txSecret={signed['txSecret']}&txTime={signed['txTime']}"
    started = time.monotonic()
    pusher = start_client("push", url + "&extra=1", "--seconds", "3")
    relay.stream_info("live", "cam")
    # A player too: play start/stop are events of our own (1101/1100).
    with httpx.stream("GET", f"{relay.http_url}/live/cam.flv?who=me", timeout=10) as reply:
        assert reply.status_code == 200
        next(reply.iter_bytes())
    finish_client(pusher)
    push_seconds = time.monotonic() - started
    receiver.wait_for(lambda: any(b["event_type"] == 0 for b in receiver.bodies()))
    receiver.wait_for(lambda: any(b["event_type"] == 1100 for b in receiver.bodies()))

    events = receiver.bodies("/events")
    start = next(b for b in events if b["event_type"] == 1)
    stop = next(b for b in events if b["event_type"] == 0)
    assert events.index(start) < events.index(stop)
    for body in (start, stop):
        assert verify(body, CALLBACK_KEY)
        assert 590 <= body["t"] - time.time() <= 600
        assert body["appname"] == "live"
        assert body["stream_id"] == body["channel_id"] == "cam"
        assert body["user_ip"] == "127.0.0.1"
        assert body["node"] and body["app"]
        assert abs(body["event_time"] - time.time()) < 30
        assert body["errcode"] == 0
        param = parse_qs(body["stream_param"])
        assert param == {"extra": ["1"]}  # txSecret and txTime removed
    assert start["sequence"] == stop["sequence"] and start["sequence"]
    assert "push_duration" not in start
    duration_ms = int(stop["push_duration"])
    assert 2500 <= duration_ms <= push_seconds * 1000 + 500
    assert (stop["width"], stop["height"]) == (192, 108)

    play_start = next(b for b in events if b["event_type"] == 1101)
    play_stop = next(b for b in events if b["event_type"] == 1100)
    assert play_start["protocol"] == "http-flv" and play_start["stream_param"] == "who=me"
    assert play_start["sequence"] == play_stop["sequence"] != start["sequence"]
    assert int(play_stop["play_duration"]) >= 0 and verify(play_stop, CALLBACK_KEY)
    assert metric(relay, "roi_relay_callbacks_delivered_total", "publish") == 2


def test_a_receiver_answering_500_twice_gets_the_retry(relay_factory, receiver) -> None:
    answers = iter([500, 500])

    def flaky(_path: str, _body: dict[str, Any]) -> Answer:
        return next(answers, 200), {"code": 0}, 0.0

    receiver.behaviour = flaky
    relay = relay_factory(
        callback_url=f"{receiver.url}/cb", callback_key="k", callback_retry_interval=0.2
    )
    finish_client(start_client("push", f"{relay.rtmp_url}/live/retry", "--seconds", "1"))
    receiver.wait_for(lambda: any(b["event_type"] == 0 for b in receiver.bodies()))
    attempts = [r for r in receiver.received if r.body["event_type"] == 1]
    assert len(attempts) == 3  # 500, 500, then 200 ends it
    assert len({a.body["sequence"] for a in attempts}) == 1
    assert all(b.at - a.at >= 0.19 for a, b in zip(attempts, attempts[1:], strict=False))
    assert all(verify(a.body, "k") for a in attempts)
    assert len([b for b in receiver.bodies() if b["event_type"] == 0]) == 1
    assert metric(relay, "roi_relay_callbacks_failed_attempts_total", "publish") == 2
    assert metric(relay, "roi_relay_callbacks_delivered_total", "publish") == 2


def test_a_dead_receiver_never_delays_the_stream(relay_factory) -> None:
    # Refused connections, a minute between retries, room for one record: the first record
    # waits to be retried, the queue fills, later records are dropped.
    relay = relay_factory(callback_url=dead_url(), callback_queue_size=1)
    player = start_client("play", f"{relay.rtmp_url}/live/dead", "--timeout", "15")
    time.sleep(0.5)  # the player waits for the publisher (RTMP play waits a few seconds)
    started = time.monotonic()
    pushed = finish_client(start_client("push", f"{relay.rtmp_url}/live/dead", "--seconds", "3"))
    push_seconds = time.monotonic() - started
    got = finish_client(player)
    assert got["video_frames"] == pushed["video_frames"] == 75
    assert push_seconds < 3 + 4  # real time plus process start, no waiting on callbacks
    deadline = time.monotonic() + 5
    while (
        metric(relay, "roi_relay_callbacks_dropped_total", "publish")
        + metric(relay, "roi_relay_callbacks_dropped_total", "play")
        < 1
    ):
        assert time.monotonic() < deadline, "no drop counted"
        time.sleep(0.1)
    assert metric(relay, "roi_relay_callbacks_delivered_total", "publish") == 0


def test_roi_applied_and_fell_back_events(relay_factory, receiver) -> None:
    relay = relay_factory(
        callback_url_roi=f"{receiver.url}/roi", callback_key="k", template_activation_delay=0
    )
    reply = httpx.post(
        f"{relay.http_url}/api/v1/roi-templates",
        json={"name": "face1", "model": "LiveShows"},
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    pushers = [
        start_client("push", f"{relay.rtmp_url}/live/{name}?roirecognition={template}",
                     "--seconds", "3", "--gop", "25")
        for name, template in (("applied", "roiface1"), ("fellback", "roinope"))
    ]  # fmt: skip
    for pusher in pushers:
        finish_client(pusher)
    receiver.wait_for(lambda: {b["event_type"] for b in receiver.bodies()} >= {1001, 1002})
    bodies = receiver.bodies("/roi")
    assert {b["event_type"] for b in bodies} == {1001, 1002}  # only ROI events on this URL
    applied = next(b for b in bodies if b["event_type"] == 1001)
    assert (applied["stream_id"], applied["template"], applied["model"]) == (
        "applied",
        "roiface1",
        "LiveShows",
    )
    assert applied["encoder"] == "libx264" and applied["reason"] == "ROI encoding"
    fell = next(b for b in bodies if b["event_type"] == 1002)
    assert fell["stream_id"] == "fellback" and fell["template"] == "roinope"
    assert "does not exist" in fell["reason"] and fell["encoder"] == ""
    assert all(verify(b, "k") for b in bodies)


def test_play_start_and_stop_events_on_every_transport(relay_factory, receiver) -> None:
    relay = relay_factory(
        callback_url_play=f"{receiver.url}/play", callback_key="k", hls_session_timeout=1
    )
    pusher = start_client(
        "push", f"{relay.rtmp_url}/live/watched", "--seconds", "30", "--gop", "25"
    )
    try:
        relay.stream_info("live", "watched")
        for protocol in PLAY_PROTOCOLS:
            allowed, answer = try_play(protocol, relay, "live", "watched", f"viewer={protocol}")
            assert allowed, f"{protocol}: {answer}"

        def pairs() -> dict[str, set[int]]:
            seen: dict[str, set[int]] = {}
            for body in receiver.bodies("/play"):
                seen.setdefault(body["protocol"], set()).add(body["event_type"])
            return seen

        # HLS has no connection to lose: its stop comes when the session goes idle.
        receiver.wait_for(lambda: all(pairs().get(p) == {1101, 1100} for p in PLAY_PROTOCOLS))
    finally:
        pusher.kill()
        pusher.wait()
    for body in receiver.bodies("/play"):
        assert body["stream_param"] == f"viewer={body['protocol']}"
        assert body["stream_id"] == "watched" and verify(body, "k")
    stops = [b for b in receiver.bodies("/play") if b["event_type"] == 1100]
    assert len(stops) == len(PLAY_PROTOCOLS)
    assert all(int(b["play_duration"]) >= 0 for b in stops)


def test_recording_finished_event(relay_factory, receiver) -> None:
    relay = relay_factory(callback_url_record=f"{receiver.url}/rec", record="live/*")
    pusher = start_client("push", f"{relay.rtmp_url}/live/taped", "--seconds", "3", "--gop", "25")
    relay.stream_info("live", "taped")
    time.sleep(1.5)
    stop = httpx.delete(f"{relay.http_url}/api/v1/streams/live/taped/record", timeout=10)
    assert stop.status_code < 300, stop.text
    finish_client(pusher)
    receiver.wait_for(lambda: any(b["event_type"] == 1201 for b in receiver.bodies()))
    body = next(b for b in receiver.bodies("/rec") if b["event_type"] == 1201)
    assert (body["appname"], body["stream_id"]) == ("live", "taped")
    assert body["session"] and body["segments"] >= 1 and body["file_size"] > 0
    assert body["reason"] == "stopped by the operator"
    assert {b["event_type"] for b in receiver.bodies()} == {1201}  # only record events here
