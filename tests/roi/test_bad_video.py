"""Video that must not cost the ROI stage its stream or the server its memory (issue 17, 8 and
9), pushed live over RTMP into a stream whose template is active: one corrupt GOP is relayed
plain and ROI resumes at the next keyframe; an SPS declaring 16000x8000 is relayed plain
without the decoder allocating such pictures."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.media.flv import TagType, VideoPacketType, build_video_tag, parse_video_tag
from app.media.nal import (
    escape_rbsp,
    parse_avcc,
    parse_h264_sps,
    split_length_prefixed,
    unescape_rbsp,
)
from app.media.packet import MediaPacket
from app.rtmp import amf0
from app.rtmp.chunk import MessageType
from tests.support.av_client import finish_client, start_client
from tests.support.clips import encode_flv, flv_packets
from tests.support.relay_harness import RunningRelay
from tests.support.rtmp_client import SocketClient

pytestmark = pytest.mark.slow

FPS = 25
GOP = 25


def _template(relay: RunningRelay, name: str) -> str:
    reply = httpx.post(
        f"{relay.http_url}/api/v1/roi-templates",
        json={"name": name, "model": "LiveShows"},
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    return reply.json()["name"]


def _push(
    relay: RunningRelay,
    name: str,
    packets: list[MediaPacket],
    metadata: dict[str, object] | None = None,
) -> None:
    """Publishes ``packets`` in real time with a hand-made RTMP client (the bytes are ours),
    after ``metadata`` as onMetaData when given."""
    client = SocketClient(relay.relay.rtmp_port)
    try:
        client.handshake_and_connect("live")
        client.send(client.proto.writer.set_chunk_size(4096))
        client.send(client.proto.command("createStream", None))
        client.wait_for(lambda: sum(c[0] == "_result" for c in client.proto.commands()) >= 2)
        client.send(client.proto.command("publish", None, name, "live", stream_id=1))
        client.wait_for(
            lambda: any(s.get("code") == "NetStream.Publish.Start" for s in client.proto.statuses())
        )
        client.sock.setblocking(True)
        if metadata is not None:
            data = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray(metadata))
            client.send(client.proto.writer.write(5, MessageType.DATA_AMF0, 1, 0, data))
        started = time.monotonic()
        for packet in packets:
            due = started + packet.timestamp / 1000
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            kind = MessageType.VIDEO if packet.kind is TagType.VIDEO else MessageType.AUDIO
            csid = 6 if kind == MessageType.VIDEO else 4
            client.send(client.proto.writer.write(csid, kind, 1, packet.timestamp, packet.payload))
        time.sleep(0.5)
    finally:
        client.close()


def _video_frames(packets: list[MediaPacket]) -> list[int]:
    return [i for i, p in enumerate(packets) if p.kind is TagType.VIDEO and not p.sequence_header]


def _replace_frame_data(packet: MediaPacket, change: Callable[[bytearray], None]) -> MediaPacket:
    tag = parse_video_tag(packet.payload)
    data = bytearray(packet.payload[tag.data_offset :])
    change(data)
    return MediaPacket(
        packet.kind,
        packet.timestamp,
        packet.payload[: tag.data_offset] + bytes(data),
        keyframe=packet.keyframe,
    )


def _status(relay: RunningRelay, name: str) -> dict:
    reply = httpx.get(f"{relay.http_url}/api/v1/streams/live/{name}", timeout=5)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _zero_slice(data: bytearray) -> None:
    data[5:] = bytes(len(data) - 5)  # FFmpeg: "Invalid data"


def _empty(data: bytearray) -> None:
    data.clear()  # an empty packet drains the decoder (the live fuzz campaign's EOFError)


@pytest.mark.parametrize("damage", [_zero_slice, _empty], ids=["zeroed-slice", "empty-frame"])
def test_one_corrupt_gop_is_relayed_plain_and_roi_resumes_at_the_next_keyframe(
    relay_factory, caplog: pytest.LogCaptureFixture, damage: Callable[[bytearray], None]
) -> None:
    caplog.set_level(logging.INFO, logger="app.roi")
    relay = relay_factory(template_activation_delay=0)
    template = _template(relay, "cgop")
    packets = flv_packets(encode_flv(seconds=7, fps=FPS, gop=GOP), media_only=True)
    frames = _video_frames(packets)
    # The sixth frame of the third GOP is damaged.
    bad = frames[2 * GOP + 5]
    packets[bad] = _replace_frame_data(packets[bad], damage)
    name = f"cg?roirecognition={template}"
    pusher = threading.Thread(target=_push, args=(relay, name, packets))
    pusher.start()
    relay.stream_info("live", "cg")
    player = start_client("play", f"{relay.http_url}/live/cg.flv", "--sei", "--timeout", "15")
    seen_reasons: set[str] = set()
    info = _status(relay, "cg")
    gauge = ""
    while pusher.is_alive():
        with contextlib.suppress(AssertionError):  # gone once the push ends
            info = _status(relay, "cg")
            seen_reasons.add(info["roi"]["reason"])
            metrics = httpx.get(f"{relay.http_url}/metrics", timeout=5).text
            gauge = next(
                (m for m in metrics.splitlines() if m.startswith("roi_relay_roi_corrupt_gops{")),
                gauge,
            )
        time.sleep(0.1)
    pusher.join()
    got = finish_client(player)

    assert info["roi"]["corrupt_gops"] == 1, info["roi"]
    assert gauge == 'roi_relay_roi_corrupt_gops{stream="live/cg"} 1.0', gauge
    assert info["roi"]["applied"] is True and info["roi"]["reason"] == "ROI encoding", info
    assert any(r.startswith("corrupt frame at") for r in seen_reasons), seen_reasons
    assert "undecodable frame" in caplog.text
    assert "ROI transcoder of" not in caplog.text  # never "failed"

    # The player saw ROI frames (SEI), then a run without (the plain GOP), then ROI again up
    # to the end of the push.
    marks = "".join("R" if doc else "." for doc in got["sei"])
    assert "R" in marks[: 2 * GOP], marks
    plain = marks.rfind(".")
    assert plain > 2 * GOP - 5, marks
    resumed = marks[plain + 1 :]
    assert len(resumed) >= 3 * GOP, marks
    gap = marks[marks.rfind("R", 0, plain) + 1 : plain + 1]
    assert GOP // 2 <= len(gap) <= GOP + 5, marks
    assert got["video_frames"] >= len(frames) - 2 * GOP


def _sps_with_size(sps: bytes, width: int, height: int) -> bytes:
    """The H.264 SPS with pic_width/height_in_mbs rewritten (all else kept, bit for bit)."""
    bits = "".join(f"{b:08b}" for b in unescape_rbsp(sps[1:]))
    pos = 24  # profile_idc, constraint flags, level_idc

    def ue() -> int:
        nonlocal pos
        zeros = 0
        while bits[pos] == "0":
            zeros += 1
            pos += 1
        value = int(bits[pos : pos + zeros + 1], 2) - 1
        pos += zeros + 1
        return value

    def flag() -> int:
        nonlocal pos
        pos += 1
        return int(bits[pos - 1])

    profile = sps[1]
    ue()  # seq_parameter_set_id
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        if ue() == 3:  # chroma_format_idc
            flag()
        ue()
        ue()
        flag()
        assert flag() == 0, "scaling matrices are not handled here"
    ue()  # log2_max_frame_num_minus4
    poc_type = ue()
    assert poc_type in (0, 2)
    if poc_type == 0:
        ue()
    ue()  # max_num_ref_frames
    flag()  # gaps_in_frame_num_value_allowed_flag
    before = bits[:pos]
    ue()
    ue()
    after = bits[pos:]

    def code(value: int) -> str:
        b = f"{value + 1:b}"
        return "0" * (len(b) - 1) + b

    out = before + code(width // 16 - 1) + code(height // 16 - 1) + after
    out = out[: out.rindex("1") + 1]  # up to the rbsp_stop_one_bit, re-aligned below
    out += "0" * (-len(out) % 8)
    rbsp = bytes(int(out[i : i + 8], 2) for i in range(0, len(out), 8))
    new = sps[:1] + escape_rbsp(rbsp)
    info = parse_h264_sps(new)
    assert (info.width, info.height) == (width, height)
    return new


def _avcc_with_size(record: bytes, width: int, height: int) -> bytes:
    """The avcC with its SPS rewritten, every other byte as it was."""
    config = parse_avcc(record)
    sps, pps = config.sps[0], config.pps[0]
    new_sps = _sps_with_size(sps, width, height)
    return (
        record[:6]
        + len(new_sps).to_bytes(2, "big")
        + new_sps
        + bytes([1])
        + len(pps).to_bytes(2, "big")
        + pps
    )


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


@pytest.mark.parametrize("where", ["sequence header", "in-band SPS"])
def test_a_picture_larger_than_the_limit_is_relayed_plain_without_the_memory(
    relay_factory, where: str
) -> None:
    relay = relay_factory(template_activation_delay=0)
    template = _template(relay, "huge")
    packets = flv_packets(encode_flv(seconds=4, fps=FPS, gop=GOP, audio=False), media_only=True)
    header_index = next(i for i, p in enumerate(packets) if p.sequence_header)
    header = packets[header_index]
    tag = parse_video_tag(header.payload)
    record = header.payload[tag.data_offset :]
    huge = _avcc_with_size(record, 16000, 8000)
    if where == "sequence header":
        body = build_video_tag("avc1", VideoPacketType.SEQUENCE_START, huge, keyframe=True)
        packets[header_index] = MediaPacket.from_tag(TagType.VIDEO, header.timestamp, body)
    else:
        # The header says 320x240; every keyframe carries an SPS declaring 16000x8000.
        huge_sps = parse_avcc(huge).sps[0]
        pps = parse_avcc(record).pps[0]
        prefix = b"".join(len(n).to_bytes(4, "big") + n for n in (huge_sps, pps))
        for i in _video_frames(packets):
            if packets[i].keyframe:

                def add_sets(data: bytearray) -> None:
                    nals = split_length_prefixed(bytes(data))
                    assert nals
                    data[:0] = prefix

                packets[i] = _replace_frame_data(packets[i], add_sets)
    _reset_peak_rss()
    before = _peak_rss_mb()
    name = f"big?roirecognition={template}"
    pusher = threading.Thread(target=_push, args=(relay, name, packets))
    pusher.start()
    relay.stream_info("live", "big")
    reasons: set[str] = set()
    corrupt = 0
    while pusher.is_alive():
        with contextlib.suppress(AssertionError):
            roi = _status(relay, "big")["roi"]
            reasons.add(roi["reason"])
            corrupt = max(corrupt, roi["corrupt_gops"])
        time.sleep(0.1)
    pusher.join()
    growth = _peak_rss_mb() - before
    assert growth < 300, f"peak RSS grew by {growth:.0f} MB"
    if where == "sequence header":
        assert any("16000x8000 is larger than the ROI stage decodes" in r for r in reasons), reasons
    else:
        assert corrupt >= 1, reasons  # FFmpeg refuses the picture: those GOPs go out plain


def test_non_finite_metadata_does_not_reach_the_roi_encoder(relay_factory) -> None:
    relay = relay_factory(template_activation_delay=0)
    template = _template(relay, "nanmeta")
    packets = flv_packets(encode_flv(seconds=3, fps=FPS, gop=GOP, audio=False), media_only=True)
    metadata = {"videodatarate": math.inf, "framerate": math.nan, "width": math.inf}
    name = f"nm?roirecognition={template}"
    pusher = threading.Thread(target=_push, args=(relay, name, packets, metadata))
    pusher.start()
    relay.stream_info("live", "nm")
    applied = None
    while pusher.is_alive():
        with contextlib.suppress(AssertionError):
            info = _status(relay, "nm")
            if info["roi"]["applied"]:
                applied = info
        time.sleep(0.1)
    pusher.join()
    assert applied is not None, "ROI encoding never started"
    assert applied["roi"]["reason"] == "ROI encoding"
    assert applied["width"] == 320 and applied["fps"] is not None
