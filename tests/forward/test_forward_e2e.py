"""Forwarding end to end: the relay pushes what its players get (ROI-encoded) on to Debian's
nginx-rtmp, to a second roi-relay over RTMP and RTMPS, reconnects to a destination that was
restarted, and a destination that stops reading slows neither the source nor its players."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.forward.conftest import StalledDestination, free_port
from tests.support.av_client import face_push, finish_client, start_client
from tests.support.relay_harness import RunningRelay, create_template
from tests.support.tls import self_signed

pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def forwards(relay: RunningRelay, path: str) -> list[dict[str, Any]]:
    return httpx.get(f"{relay.http_url}/api/v1/streams/{path}/forwards", timeout=5).json()


def live(relay: RunningRelay, path: str) -> bool:
    return httpx.get(f"{relay.http_url}/api/v1/streams/{path}", timeout=5).status_code == 200


def sei_regions(got: dict[str, Any]) -> int:
    import json

    return sum(1 for doc in got["sei"] if doc and json.loads(doc)["regions"])


def test_forward_to_nginx_rtmp_and_a_second_relay_carries_the_roi_encoded_stream(
    relay_factory, nginx_rtmp: int
) -> None:
    second = relay_factory()
    source = relay_factory(
        template_activation_delay=0,
        forward=f"live/*=rtmp://127.0.0.1:{second.relay.rtmp_port}/copy/{{stream}}",
    )
    create_template(source.http_url, "fwd", model="LiveShows", delta_qp=-8)
    added = httpx.post(
        f"{source.http_url}/api/v1/streams/live/face/forwards",
        json={"url": f"rtmp://127.0.0.1:{nginx_rtmp}/live/face"},
        timeout=5,
    )
    assert added.status_code == 201, added.text
    pusher = face_push(f"{source.rtmp_url}/live/face?roirecognition=roifwd", 12)
    wait_for(
        lambda: (
            all(f["connected"] for f in forwards(source, "live/face"))
            and len(forwards(source, "live/face")) == 2
        ),
        what="both destinations publishing",
    )
    wait_for(lambda: live(second, "copy/face"), what="the second relay to go live")
    players = [
        start_client("play", f"rtmp://127.0.0.1:{nginx_rtmp}/live/face", "--sei",
                     "--max-frames", "50"),
        start_client("play", f"{second.http_url}/copy/face.flv", "--sei", "--max-frames", "50"),
    ]  # fmt: skip
    results = [finish_client(p) for p in players]
    finish_client(pusher)
    for got in results:
        assert got["video_frames"] == 50
        assert got["decode_errors"] == 0
        assert sei_regions(got) > got["video_frames"] // 2, "ROI SEI regions in the forwarded copy"
    status = forwards(source, "live/face")
    assert all(f["bytes"] > 50_000 for f in status)
    metrics = httpx.get(f"{source.http_url}/metrics", timeout=5).text
    assert "roi_relay_forward_bytes_total" in metrics


def test_a_restarted_destination_is_reconnected_within_the_backoff(relay_factory, tmp_path) -> None:
    port = free_port()
    destination = RunningRelay(tmp_path / "first", rtmp_port=port)
    source = relay_factory(
        forward=f"live/*=rtmp://127.0.0.1:{port}/live/{{stream}}",
        forward_backoff_initial=0.5,
        forward_backoff_max=1.0,
    )
    pusher = start_client("push", f"{source.rtmp_url}/live/loop", "--seconds", "12", "--gop", "25")
    try:
        wait_for(lambda: live(destination, "live/loop"), what="the destination going live")
    finally:
        destination.stop()
    wait_for(lambda: not forwards(source, "live/loop")[0]["connected"], what="the drop noticed")
    down = forwards(source, "live/loop")[0]
    assert down["last_error"]
    time.sleep(1.0)  # a backoff or two while nothing listens
    restarted = RunningRelay(tmp_path / "again", rtmp_port=port)
    try:
        started = time.monotonic()
        wait_for(lambda: live(restarted, "live/loop"), timeout=10, what="the reconnect")
        assert time.monotonic() - started < 5  # backoff max 1 s + connect and publish
        status = forwards(source, "live/loop")[0]
        assert status["connected"] and status["reconnects"] >= 1
        got = start_client("play", f"{restarted.http_url}/live/loop.flv", "--max-frames", "25")
        assert finish_client(got)["video_frames"] == 25
    finally:
        finish_client(pusher)
        restarted.stop()


def test_a_destination_that_stops_reading_slows_neither_source_nor_players(
    relay_factory, stalled_destination: StalledDestination
) -> None:
    source = relay_factory(
        player_queue_seconds=1.0,
        forward=f"live/*=rtmp://127.0.0.1:{stalled_destination.port}/live/{{stream}}",
    )
    pusher = start_client(
        "push", f"{source.rtmp_url}/live/busy", "--seconds", "8", "--width", "640",
        "--height", "360", "--bitrate", "2500", "--gop", "25",
    )  # fmt: skip
    source.stream_info("live", "busy")
    player = start_client("play", f"{source.http_url}/live/busy.flv")
    assert stalled_destination.published.wait(10)
    peak_queue = 0
    while pusher.poll() is None:
        status = forwards(source, "live/busy")[0]
        peak_queue = max(peak_queue, status["queued_packets"])
        time.sleep(0.2)
    pushed = finish_client(pusher)
    played = finish_client(player)
    status = forwards(source, "live/busy")[0]
    # The player joined on the cached GOP (at most 25 frames back) and from there got every
    # frame: no gap in its timeline while the forward was stuck.
    assert played["video_frames"] >= pushed["video_frames"] - 25
    steps = {b - a for a, b in zip(played["video_dts"], played["video_dts"][1:], strict=False)}
    assert steps <= {40}, steps
    assert status["dropped_frames"] > 0, status  # the stalled destination skipped ahead
    # Bounded: about a second of 25 fps video and its audio, never the whole stream.
    assert peak_queue < 150, peak_queue


def test_forward_to_an_rtmps_destination(relay_factory, tmp_path) -> None:
    certs = self_signed(tmp_path / "tls")
    destination = relay_factory(rtmps_port=0, tls_cert=certs.cert, tls_key=certs.key)
    url = f"rtmps://127.0.0.1:{destination.relay.rtmps_port}/live/{{stream}}"
    source = relay_factory(forward=f"live/*={url}", forward_tls_ca=certs.cert)
    pusher = start_client("push", f"{source.rtmp_url}/live/tls", "--seconds", "4", "--gop", "25")
    wait_for(lambda: live(destination, "live/tls"), what="the RTMPS destination going live")
    document = source.stream_info("live", "tls")
    (entry,) = document["forwards"]
    assert entry["connected"] and entry["state"] == "publishing"
    got = finish_client(
        start_client("play", f"{destination.http_url}/live/tls.flv", "--max-frames", "25")
    )
    finish_client(pusher)
    assert got["video_frames"] == 25
    assert forwards(source, "live/tls")[0]["url"].startswith("rtmps://127.0.0.1:")


def test_bad_forward_urls_are_refused_naming_the_field(relay) -> None:
    base = f"{relay.http_url}/api/v1/streams/live/x/forwards"
    for url in ("http://example.com/live/x", "rtmp://host-only", "rtmp://h/app"):
        reply = httpx.post(base, json={"url": url}, timeout=5)
        assert reply.status_code == 422, (url, reply.text)
        assert reply.json()["detail"][0]["loc"] == ["body", "url"]
    assert httpx.post(base, json={}, timeout=5).status_code == 422
    assert httpx.delete(base, timeout=5).status_code == 404
    assert httpx.post(base, json={"url": "rtmp://127.0.0.1:1/live/x"}, timeout=5).status_code == 201
    (idle,) = httpx.get(base, timeout=5).json()
    assert idle["state"] == "idle" and idle["connected"] is False
    assert httpx.delete(base, timeout=5).status_code == 204
    assert httpx.get(base, timeout=5).json() == []


def test_a_destination_that_refuses_the_publish_is_retried_with_the_reason(relay_factory) -> None:
    destination = relay_factory(push_key="destination-secret")
    source = relay_factory(
        forward=f"live/*=rtmp://127.0.0.1:{destination.relay.rtmp_port}/live/{{stream}}",
        forward_backoff_initial=0.2,
        forward_backoff_max=0.5,
    )
    pusher = start_client("push", f"{source.rtmp_url}/live/nokey", "--seconds", "4")
    status = wait_for(
        lambda: (f := forwards(source, "live/nokey")) and f[0]["reconnects"] >= 2 and f[0],
        what="retries after the refusal",
    )
    finish_client(pusher)
    assert not status["connected"]
    assert "publish refused" in status["last_error"], status
    assert not live(destination, "live/nokey")
