"""Recording end to end in the relay: real RTMP pushes recorded to fragmented MP4 segments
with ROI sidecars, read back with FFmpeg; reconnects, retention and the REST switch."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.record.helpers import probe_frames, sei_by_pts, wait_recordings
from tests.support.av_client import finish_client, run_client, start_client

pytestmark = pytest.mark.slow


def test_pushed_clip_is_recorded_into_segments_with_every_frame_and_audio(relay_factory) -> None:
    relay = relay_factory(record="live/*", record_segment_seconds=1.0, record_min_free_mb=0)
    pushed = run_client("push", f"{relay.rtmp_url}/live/show", "--seconds", "4", "--gop", "25")
    found = wait_recordings(relay.http_url, "show", count=4)
    assert {r["session"] for r in found} == {found[0]["session"]}
    assert [r["segment"] for r in found] == list(range(1, len(found) + 1))
    root = Path(relay.relay.settings.resolved_record_dir)
    video = audio = 0
    for recording in found:
        with httpx.Client(base_url=relay.http_url, timeout=10) as client:
            media = client.get(recording["media_url"])
            assert media.status_code == 200 and media.headers["content-type"] == "video/mp4"
        path = root / "segment.mp4"
        path.write_bytes(media.content)
        frames = probe_frames(path)
        assert frames["video"] == recording["video_frames"]
        # Each segment opens on a keyframe, and the sidecar has a line per frame.
        regions = httpx.get(relay.http_url + recording["regions_url"], timeout=5)
        assert len(regions.text.splitlines()) == frames["video"]
        video += frames["video"]
        audio += frames["audio"]
    assert video == pushed["video_frames"]
    assert audio >= pushed["audio_frames"] - 2  # AAC priming/flush frames at the very end


def test_sidecar_regions_match_the_sei_of_the_same_frames(relay_factory, tmp_path) -> None:
    from tests.support.av_client import face_push
    from tests.support.relay_harness import create_template

    relay = relay_factory(
        template_activation_delay=0, record="live/*", record_segment_seconds=60,
        record_min_free_mb=0,
    )  # fmt: skip
    create_template(relay.http_url, "rec", model="LiveShows", delta_qp=-8)
    finish_client(face_push(f"{relay.rtmp_url}/live/face?roirecognition=roirec", 4))
    (recording,) = wait_recordings(relay.http_url, "face")
    media = tmp_path / "face.mp4"
    media.write_bytes(httpx.get(relay.http_url + recording["media_url"], timeout=10).content)
    lines = {line["t"]: line for line in sidecar_from(relay.http_url, recording)}
    frames = sei_by_pts(media)
    with_regions = 0
    for pts, document in frames:
        line = lines[pts]
        if document is None:
            assert line["regions"] == []
            continue
        assert line["regions"] == document["regions"]
        assert line["pts"] == document["pts"]
        with_regions += bool(document["regions"])
    assert with_regions > len(frames) // 2, "the face was found in most frames"


def sidecar_from(base: str, recording: dict) -> list[dict]:
    return [json.loads(line) for line in httpx.get(base + recording["regions_url"]).text.split()]


def test_a_reconnect_starts_a_new_segment_of_the_same_session(relay_factory) -> None:
    relay = relay_factory(record="live/*", record_min_free_mb=0)
    for _ in range(2):
        run_client("push", f"{relay.rtmp_url}/live/again", "--seconds", "1.5", "--no-audio")
    found = wait_recordings(relay.http_url, "again", count=2)
    assert len(found) == 2
    assert found[0]["session"] == found[1]["session"]
    assert [r["segment"] for r in found] == [1, 2]
    assert all(r["video_frames"] == 37 for r in found)
    info = httpx.get(f"{relay.http_url}/api/v1/recordings/{found[1]['id']}", timeout=5).json()
    assert info["state"] == "complete"
    metrics = httpx.get(f"{relay.http_url}/metrics", timeout=5).text
    assert 'roi_relay_recording_segments_total{stream="live/again"} 2.0' in metrics


def test_flv_recordings_on_request(relay_factory, tmp_path) -> None:
    relay = relay_factory(record="live/*", record_format="flv", record_min_free_mb=0)
    pushed = run_client("push", f"{relay.rtmp_url}/live/asflv", "--seconds", "2")
    (recording,) = wait_recordings(relay.http_url, "asflv")
    assert recording["format"] == "flv"
    media = httpx.get(f"{relay.http_url}/api/v1/recordings/{recording['id']}/media", timeout=5)
    assert media.headers["content-type"] == "video/x-flv"
    path = tmp_path / "rec.flv"
    path.write_bytes(media.content)
    frames = probe_frames(path)
    assert frames["video"] == pushed["video_frames"]
    assert frames["audio"] >= pushed["audio_frames"] - 2


def test_retention_deletes_the_oldest_segments(relay_factory) -> None:
    # 1-second segments of a ~400 kbit/s push are ~50 kB each; keep at most ~120 kB.
    relay = relay_factory(
        record="live/*", record_segment_seconds=1.0, record_max_gb=120_000 / 2**30,
        record_min_free_mb=0,
    )  # fmt: skip
    run_client(
        "push", f"{relay.rtmp_url}/live/keep", "--seconds", "6", "--gop", "25",
        "--bitrate", "400", "--no-realtime",
    )  # fmt: skip
    found = wait_recordings(relay.http_url, "keep", count=1)
    kept = [r["segment"] for r in found]
    assert kept[-1] >= 5, kept  # the newest segments are there
    assert kept[0] > 1, kept  # the oldest were deleted
    assert sum(r["bytes"] for r in found[:-1]) <= 120_000


def test_rest_starts_and_stops_a_recording_and_the_stream_document_shows_it(relay) -> None:
    pusher = start_client("push", f"{relay.rtmp_url}/live/ondemand", "--seconds", "4")
    relay.stream_info("live", "ondemand")
    base = relay.http_url
    assert relay.stream_info("live", "ondemand")["recording"]["state"] == "off"
    bad = httpx.post(f"{base}/api/v1/streams/live/ondemand/record", json={"format": "avi"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "format"]
    started = httpx.post(
        f"{base}/api/v1/streams/live/ondemand/record", json={"format": "flv"}, timeout=5
    )
    assert started.status_code == 200 and started.json()["recording"]["state"] == "recording"
    info = httpx.get(f"{base}/api/v1/streams/live/ondemand", timeout=5).json()
    assert info["recording"]["enabled"] is True
    stopped = httpx.delete(f"{base}/api/v1/streams/live/ondemand/record", timeout=5)
    assert stopped.status_code == 204
    again = httpx.delete(f"{base}/api/v1/streams/live/ondemand/record", timeout=5)
    assert again.status_code == 404
    finish_client(pusher)
    (recording,) = wait_recordings(base, "ondemand")
    assert recording["video_frames"] > 0 and recording["format"] == "flv"
    later = httpx.post(f"{base}/api/v1/streams/live/later/record", timeout=5)  # no body
    assert later.status_code == 200 and later.json()["recording"] is None  # armed, not live
    missing = httpx.get(f"{base}/api/v1/recordings/20260101T000000Z-abcdef-00001", timeout=5)
    assert missing.status_code == 404


def test_a_writer_that_falls_behind_skips_to_a_keyframe_and_counts_it(tmp_path) -> None:
    from app.hub import StreamKey
    from tests.outputs.media import feed_live
    from tests.support.clips import encode_flv, flv_packets
    from tests.support.relay_harness import RunningRelay

    # 50 s of media handed over at once (within what a hub queue holds): far faster than the
    # writer thread can mux, so the recorder's bounded queue overflows.
    packets = flv_packets(encode_flv(seconds=50, width=64, height=48, gop=25))
    relay = RunningRelay(
        tmp_path / "data", record="live/*", record_min_free_mb=0, player_queue_seconds=600
    )
    try:
        relay.run(feed_live(relay.relay.hub, StreamKey("live", "burst"), packets, False))
        (recording,) = wait_recordings(relay.http_url, "burst")
        streams = httpx.get(f"{relay.http_url}/metrics", timeout=5).text
    finally:
        relay.stop()
    total = sum(1 for p in packets if p.kind == 9 and not p.sequence_header)
    dropped = next(
        float(line.split()[-1])
        for line in streams.splitlines()
        if line.startswith('roi_relay_recording_dropped_frames_total{stream="live/burst"}')
    )
    assert dropped > 0, "the writer kept up with the burst"
    path = next((tmp_path / "data" / "recordings" / "live" / "burst").glob("*/00001.mp4"))
    frames = probe_frames(path)
    # Every frame is either in the file or counted as dropped; the file decodes throughout
    # (the skip resumed on a keyframe).
    assert frames["video"] + dropped == total, (frames, dropped, total)
    assert frames["video"] == recording["video_frames"]


def test_low_disk_space_stops_the_recording_not_the_stream(relay_factory) -> None:
    # More free space asked for than any disk here has: the writer's own limit trips at once.
    relay = relay_factory(record="live/*", record_min_free_mb=1e12)
    pusher = start_client("push", f"{relay.rtmp_url}/live/lowdisk", "--seconds", "3")
    relay.stream_info("live", "lowdisk")
    player = start_client("play", f"{relay.http_url}/live/lowdisk.flv")
    pushed, played = finish_client(pusher), finish_client(player)
    assert played["video_frames"] == pushed["video_frames"]
    metrics = httpx.get(f"{relay.http_url}/metrics", timeout=5).text
    assert 'roi_relay_recording_failed{stream="live/lowdisk"} 1.0' in metrics
    assert httpx.get(f"{relay.http_url}/api/v1/recordings", timeout=5).json() == []
