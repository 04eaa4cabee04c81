"""The live ROI transcoder end to end: a face pushed with `roirecognition` comes out with its
regions in SEI, lower QP inside them, and templates switching a running stream."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from tests.support.av_client import covers_face, face_push, finish_client, run_client, start_client
from tests.support.relay_harness import create_template

pytestmark = pytest.mark.slow


def test_face_push_with_active_template_carries_regions_and_lower_qp(relay_factory) -> None:
    relay = relay_factory(template_activation_delay=0)
    base = relay.http_url
    create_template(base, "face1", model="LiveShows", delta_qp=-8)
    create_template(base, "zero", model="LiveShows", delta_qp=0)
    results = {}
    metrics: dict[str, str] = {}
    for template in ("roiface1", "roizero"):
        name = f"cam_{template}"
        pusher = face_push(f"{relay.rtmp_url}/live/{name}?roirecognition={template}", 5)
        relay.stream_info("live", name)
        time.sleep(0.5)  # let it start on the first keyframe
        flv = start_client("play", f"{base}/live/{name}.flv", "--sei", "--qp")
        rtmp = start_client("play", f"{relay.rtmp_url}/live/{name}", "--sei")
        time.sleep(2)
        info = relay.stream_info("live", name)
        metrics[template] = httpx.get(f"{base}/metrics", timeout=5).text
        pushed = finish_client(pusher)
        results[template] = (finish_client(flv), finish_client(rtmp), info, pushed)

    got_flv, got_rtmp, info, pushed = results["roiface1"]
    assert info["roi"]["applied"] is True, info["roi"]
    assert info["roi"]["template"] == "roiface1" and info["roi"]["model"] == "LiveShows"
    assert info["roi"]["detect_every"] >= 1 and info["roi"]["detect_ms"] > 0, info["roi"]
    gauges = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics["roiface1"].splitlines()
        if 'stream="live/cam_roiface1"' in line
    }
    assert gauges["roi_relay_roi_applied"] == 1.0, gauges
    assert gauges["roi_relay_roi_regions"] >= 1
    assert gauges["roi_relay_roi_detect_interval_frames"] >= 1
    assert 0 < gauges["roi_relay_roi_detect_seconds"] < 1
    assert 0 < gauges["roi_relay_roi_encode_seconds"] < 1
    for got in (got_flv, got_rtmp):
        assert got["decode_errors"] == 0
        assert got["codec"] == "h264"
        documents = [json.loads(d) for d in got["sei"] if d]
        # Every transcoded frame carries its regions; a player joining mid-stream may start on
        # the cached GOP of the publisher's own keyframe before transcoding kicked in.
        assert len(documents) >= 0.8 * got["video_frames"]
        with_face = [d for d in documents if any(covers_face(r) for r in d["regions"])]
        assert len(with_face) >= 0.7 * len(documents), documents[-3:]
        last = documents[-1]
        assert last["template"] == "roiface1" and last["model"] == "LiveShows"
        assert (last["w"], last["h"]) == (320, 240)
        assert all(r["qp"] < 0 for d in with_face for r in d["regions"])
    # Output timestamps are the publisher's: every frame, once, in order.
    assert got_flv["video_dts"] == sorted(got_flv["video_dts"])
    assert got_flv["video_frames"] >= pushed["video_frames"] - 25

    roi_gap = np.mean(got_flv["qp_inside"]) - np.mean(got_flv["qp_outside"])
    zero_flv = results["roizero"][0]
    zero_gap = np.mean(zero_flv["qp_inside"]) - np.mean(zero_flv["qp_outside"])
    # Same content, same regions, same encoder path: only the QP delta differs. Without ROI
    # (delta 0) the face still gets a QP of its own: adaptive quantisation raises it on the
    # detailed face, and it does so alike in both runs.
    assert len(got_flv["qp_inside"]) > 50 and len(zero_flv["qp_inside"]) > 50
    assert roi_gap - zero_gap == pytest.approx(-8, abs=2.5), (roi_gap, zero_gap)


def test_pending_template_switches_a_running_stream_without_reconnect(relay_factory) -> None:
    relay = relay_factory(template_activation_delay=3)
    base = relay.http_url
    create_template(base, "late", model="LiveShows")
    pusher = face_push(f"{relay.rtmp_url}/live/late?roirecognition=roilate", 9)
    info = relay.stream_info("live", "late")
    assert info["roi"]["applied"] is False
    assert "pending" in info["roi"]["reason"]
    player = start_client("play", f"{base}/live/late.flv", "--sei")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not info["roi"]["applied"]:
        time.sleep(0.2)
        info = relay.stream_info("live", "late")
    assert info["roi"]["applied"] is True, info["roi"]
    pushed = finish_client(pusher)
    got = finish_client(player)
    assert got["decode_errors"] == 0
    flags = [d is not None for d in got["sei"]]
    first_roi = flags.index(True)
    assert first_roi > 10, "plain relay while the template was pending"
    assert all(flags[first_roi:]), "every frame after the switch carries regions"
    # One continuous stream through the switch: no frame lost, timestamps in order. The
    # player may join a GOP late on a loaded machine (it starts on the cached keyframe), so
    # the count is from its first frame: no gap over one frame interval, up to the last frame.
    dts = got["video_dts"]
    assert dts == sorted(dts)
    frame_ms = 1000 / 25
    assert max(b - a for a, b in zip(dts, dts[1:], strict=False)) <= 1.5 * frame_ms
    assert got["video_frames"] >= pushed["video_frames"] - 2 * 25  # joined within 2 GOPs
    assert dts[-1] >= (pushed["video_frames"] - 1) * frame_ms - 1.5 * frame_ms


def test_unknown_template_relays_untouched(relay) -> None:
    pusher = start_client("push", f"{relay.rtmp_url}/live/plain?roirecognition=roinope")
    info = relay.stream_info("live", "plain")
    got = run_client("play", f"{relay.http_url}/live/plain.flv", "--sei")
    finish_client(pusher)
    assert info["template"] == "roinope"
    assert info["roi"]["applied"] is False
    assert "does not exist" in info["roi"]["reason"]
    assert got["video_frames"] > 0 and not any(got["sei"])


def test_application_regions_override_and_roi_feed(relay) -> None:
    import websockets.sync.client

    pusher = start_client("push", f"{relay.rtmp_url}/live/app", "--seconds", "5", "--gop", "25")
    relay.stream_info("live", "app")
    reply = httpx.put(
        f"{relay.http_url}/api/v1/streams/live/app/roi",
        json={"roi": "10,20-50,60=-10;0,0-0,0;garbage"},
        timeout=5,
    )
    assert reply.status_code == 200
    assert reply.json() == {"roi": "10,20-50,60=-10", "regions": 1}
    with websockets.sync.client.connect(
        f"ws://127.0.0.1:{relay.relay.http_port}/live/app/roi", open_timeout=5
    ) as ws:
        message = json.loads(ws.recv(timeout=10))
    assert message["roi"] == "10,20-50,60=-10"
    assert message["regions"][0] == {
        "top": 10,
        "left": 20,
        "bottom": 50,
        "right": 60,
        "qp": -10,
        "label": "",
        "score": 1.0,
    }
    bad = httpx.put(f"{relay.http_url}/api/v1/streams/live/app/roi", json={"rio": 1}, timeout=5)
    assert bad.status_code == 422 and "roi" in bad.text
    missing = httpx.put(
        f"{relay.http_url}/api/v1/streams/live/none/roi", json={"roi": "Clear"}, timeout=5
    )
    assert missing.status_code == 404
    finish_client(pusher)


def test_hevc_push_is_roi_encoded_as_hevc(relay_factory) -> None:
    relay = relay_factory(template_activation_delay=0)
    create_template(relay.http_url, "hevc", model="LiveShows")
    pusher = face_push(
        f"{relay.rtmp_url}/live/h265?roirecognition=roihevc", 4, "--codec", "libx265"
    )
    relay.stream_info("live", "h265")
    time.sleep(1)
    got = run_client("play", f"{relay.http_url}/live/h265.flv", "--sei")
    finish_client(pusher)
    assert got["codec"] == "hevc" and got["decode_errors"] == 0
    documents = [json.loads(d) for d in got["sei"] if d]
    assert len(documents) >= 0.8 * got["video_frames"] > 0
    assert any(covers_face(r) for d in documents for r in d["regions"])


def test_template_edit_and_delete_change_a_running_stream(relay_factory) -> None:
    relay = relay_factory(template_activation_delay=0)
    base = relay.http_url
    create_template(base, "live1", model="LiveShows", delta_qp=-6)
    pusher = face_push(f"{relay.rtmp_url}/live/edit?roirecognition=roilive1", 9)
    relay.stream_info("live", "edit")
    player = start_client("play", f"{base}/live/edit.flv", "--sei")

    def wait_for(predicate, timeout: float = 6) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = relay.stream_info("live", "edit")
            if predicate(info["roi"]):
                return info["roi"]
            time.sleep(0.1)
        raise AssertionError(relay.stream_info("live", "edit")["roi"])

    wait_for(lambda roi: roi["applied"])
    time.sleep(1)
    edited = httpx.patch(f"{base}/api/v1/roi-templates/roilive1", json={"delta_qp": -12})
    assert edited.status_code == 200, edited.text
    time.sleep(2)
    assert httpx.delete(f"{base}/api/v1/roi-templates/roilive1").status_code == 204
    roi = wait_for(lambda roi: not roi["applied"])
    assert "does not exist" in roi["reason"]
    finish_client(pusher)
    got = finish_client(player)
    assert got["decode_errors"] == 0
    assert got["video_dts"] == sorted(got["video_dts"])
    face_qps = [
        next((r["qp"] for r in json.loads(d)["regions"] if r["label"] == "face"), None)
        for d in got["sei"]
        if d
    ]
    seen = [qp for qp in face_qps if qp is not None]
    assert -6 in seen and -12 in seen, "the edit reached the encoder without a reconnect"
    assert seen.index(-12) > seen.index(-6)
    flags = [d is not None for d in got["sei"]]
    last_roi = len(flags) - 1 - flags[::-1].index(True)
    assert last_roi < len(flags) - 10, "after the delete the stream went on as plain relay"


def test_put_roi_answers_what_takes_effect_under_the_template(relay_factory) -> None:
    import websockets.sync.client

    from app.roi.regions import ROI_REQUEST_RULE

    relay = relay_factory(template_activation_delay=0)
    create_template(relay.http_url, "two", model="LiveShows", max_regions=2)
    pusher = face_push(f"{relay.rtmp_url}/live/two?roirecognition=roitwo", 6)
    relay.stream_info("live", "two")
    url = f"{relay.http_url}/api/v1/streams/live/two/roi"
    four = "0,0-16,16=-5;16,16-32,32=-5;32,32-48,48=-5;48,48-64,64=-5"
    reply = httpx.put(url, json={"roi": four}, timeout=5)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"roi": "0,0-16,16=-5;16,16-32,32=-5", "regions": 2}
    with websockets.sync.client.connect(
        f"ws://127.0.0.1:{relay.relay.http_port}/live/two/roi", open_timeout=5
    ) as ws:
        for _ in range(50):  # frames encoded before the PUT reached the worker come first
            message = json.loads(ws.recv(timeout=10))
            if message["roi"].endswith("=-5"):
                break
    assert message["roi"] == "0,0-16,16=-5;16,16-32,32=-5", "the encoder got what PUT said"

    garbage = httpx.put(url, json={"roi": "garbage"}, timeout=5)
    assert garbage.status_code == 422, garbage.text
    (error,) = garbage.json()["detail"]
    assert error["loc"] == ["body", "roi"] and ROI_REQUEST_RULE in error["msg"]
    for clear in ("Clear", ";", ""):
        cleared = httpx.put(url, json={"roi": clear}, timeout=5)
        assert cleared.json() == {"roi": "", "regions": 0}, (clear, cleared.text)
    finish_client(pusher)
