"""HLS: the TS writer, the segmenter and playlist (sans-IO), and live HLS read back by PyAV."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, replace

import av
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.hub import Hub, StreamKey
from app.media.flv import TagType
from app.media.packet import MediaPacket
from app.media.sei import roi_json_from_frame
from app.outputs.hls import HlsPlaylist, HlsSegment, HlsSegmenter, HlsService
from app.outputs.mpegts import (
    AUDIO_PID,
    PAT_PID,
    PMT_PID,
    TS_PACKET,
    VIDEO_PID,
    AacConfig,
    TsMuxer,
    adts_frame,
    mpeg_crc32,
    parse_audio_specific_config,
)
from app.roi.regions import Region, parse_roi_json
from tests.outputs.conftest import PlayerServer
from tests.outputs.media import frame_pts, with_roi
from tests.support.av_client import run_client
from tests.support.clips import encode_flv, flv_packets

FPS = 25


def moving_face(index: int) -> list[Region]:
    return [Region(20 + index % 60, 40 + index % 90, 100 + index % 60, 120 + index % 90, -6)]


@pytest.fixture(scope="module")
def clip() -> list[MediaPacket]:
    """4 s of 320x240 H.264 + AAC, a keyframe every 12 frames, ROI JSON + SEI on each frame."""
    return with_roi(flv_packets(encode_flv(seconds=4, gop=12)), moving_face, 320, 240)


@dataclass
class Decoded:
    frames: int
    audio_frames: int
    first_pts: float
    last_pts: float
    roi: dict[int, str]  # frame pts (ms) -> ROI JSON read from its SEI
    first_is_key: bool


def decode_ts(data: bytes) -> Decoded:
    frames = audio = 0
    pts: list[float] = []
    roi: dict[int, str] = {}
    first_is_key = False
    with av.open(io.BytesIO(data), format="mpegts") as container:
        for packet in container.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == "video":
                if not pts and frames == 0:
                    first_is_key = packet.is_keyframe
                for frame in packet.decode():
                    frames += 1
                    t = float(frame.pts * frame.time_base)
                    pts.append(t)
                    text = roi_json_from_frame(frame)
                    if text is not None:
                        roi[round(t * 1000)] = text
            elif packet.stream.type == "audio":
                audio += len(packet.decode())
    return Decoded(frames, audio, min(pts), max(pts), roi, first_is_key)


def ts_packets(data: bytes) -> list[bytes]:
    assert len(data) % TS_PACKET == 0
    return [data[i : i + TS_PACKET] for i in range(0, len(data), TS_PACKET)]


def segment_clip(packets: list[MediaPacket], target: float = 1.0) -> list[HlsSegment]:
    segmenter = HlsSegmenter(target)
    segments: list[HlsSegment] = []
    for packet in packets:
        segments += segmenter.feed(packet, 0.0)
    last = segmenter.finish()
    assert last is not None
    return [*segments, last]


# -- sans-IO ----------------------------------------------------------------------------


def test_ts_packets_are_well_formed(clip: list[MediaPacket]) -> None:
    segments = segment_clip(clip)
    counters: dict[int, int] = {}
    for segment in segments:
        packets = ts_packets(segment.data)
        assert {p[0] for p in packets} == {0x47}
        pids = [((p[1] & 0x1F) << 8) | p[2] for p in packets]
        assert pids[:2] == [PAT_PID, PMT_PID], "each segment opens with PAT and PMT"
        for packet, pid in zip(packets, pids, strict=True):
            if packet[3] & 0x10:  # carries payload: continuity counter advances by one
                cc = packet[3] & 0x0F
                if pid in counters:
                    assert cc == (counters[pid] + 1) & 0x0F, f"CC jump on PID {pid:#x}"
                counters[pid] = cc
        for table in packets[:2]:
            section_length = ((table[6] & 0x0F) << 8) | table[7]
            section = table[5 : 8 + section_length]
            assert mpeg_crc32(section) == 0, "CRC over section + CRC must be zero"


def test_segments_cut_at_keyframes_with_target_duration(clip: list[MediaPacket]) -> None:
    segments = segment_clip(clip, target=1.0)
    # (coded frames are the packets with ROI; the FLV end-of-sequence tag is flagged key too)
    keyframes = [p.timestamp for p in clip if p.keyframe and p.roi is not None]
    frames = [p for p in clip if p.kind is TagType.VIDEO and not p.sequence_header]
    # A keyframe every 480 ms: a 1 s target gives segments of three GOPs (1.44 s).
    assert [s.start_ms for s in segments] == keyframes[::3]
    for segment in segments[:-1]:
        assert segment.duration == pytest.approx(1.44)
    for before, after in zip(segments, segments[1:], strict=False):
        assert before.start_ms + round(before.duration * 1000) == after.start_ms
    total_frames = 0
    for segment in segments:
        got = decode_ts(segment.data)
        assert got.first_is_key
        total_frames += got.frames
        assert got.audio_frames > 0
        # The segment's frames span its duration (last frame shown for one frame interval).
        span = got.last_pts - got.first_pts + 1 / FPS
        assert span == pytest.approx(segment.duration, abs=0.002)
        assert got.first_pts == pytest.approx(segment.start_ms / 1000, abs=0.001)
    assert total_frames == 4 * FPS
    assert len(frames) == 4 * FPS + 1  # and the end-of-sequence tag, which is no frame


def test_sei_regions_survive_in_every_frame(clip: list[MediaPacket]) -> None:
    sent = {frame_pts(p): p.roi for p in clip if p.roi is not None}
    seen: dict[int, str] = {}
    for segment in segment_clip(clip):
        seen.update(decode_ts(segment.data).roi)
    assert seen == sent
    assert parse_roi_json(next(iter(seen.values()))).regions


def test_hevc_passes_through() -> None:
    packets = flv_packets(encode_flv(seconds=2, gop=25, codec="libx265", audio=False))
    segments = segment_clip(packets)
    assert len(segments) == 2
    with av.open(io.BytesIO(segments[0].data), format="mpegts") as container:
        assert container.streams.video[0].codec_context.name == "hevc"
    assert decode_ts(segments[0].data).frames == 25


def test_audio_only_stream_is_cut_by_time() -> None:
    packets = [p for p in flv_packets(encode_flv(seconds=3)) if p.kind is not TagType.VIDEO]
    segments = segment_clip(packets, target=1.0)
    assert len(segments) == 3
    for segment in segments:
        assert segment.duration == pytest.approx(1.0, abs=0.03)
        assert decode_ts_audio(segment.data) > 30


def decode_ts_audio(data: bytes) -> int:
    with av.open(io.BytesIO(data), format="mpegts") as container:
        return sum(len(p.decode()) for p in container.demux() if p.dts is not None)


def test_new_video_header_starts_a_discontinuity(clip: list[MediaPacket]) -> None:
    other = flv_packets(encode_flv(seconds=1, gop=25, width=160, height=120, audio=False))
    shift = clip[-1].timestamp + 40
    second = [replace(p, timestamp=p.timestamp + shift) for p in other]
    segments = segment_clip([*clip, *second])
    flags = [s.discontinuity for s in segments]
    assert flags.count(True) == 1
    after = segments[flags.index(True)]
    assert after.start_ms == next(p.timestamp for p in second if p.keyframe)
    with av.open(io.BytesIO(after.data), format="mpegts") as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (160, 120)


def test_bad_tags_cost_a_frame_not_the_stream(clip: list[MediaPacket]) -> None:
    segmenter = HlsSegmenter(1.0)
    broken = [
        MediaPacket(TagType.VIDEO, 10, b"\x17\x01\x00\x00\x00\x00\x00\x00\xff\x65", keyframe=True),
        MediaPacket(TagType.VIDEO, 10, b"\x17\x00\x00\x00\x00\x01", sequence_header=True),
        MediaPacket(TagType.AUDIO, 10, b"\xaf\x00\xff", sequence_header=True),
    ]
    for packet in broken:
        assert segmenter.feed(packet, 0.0) == []
    segments = []
    for packet in clip:
        segments += segmenter.feed(packet, 0.0)
    assert len(segments) >= 2


def test_segment_that_outgrows_the_limit_is_dropped_until_a_keyframe() -> None:
    one_gop = flv_packets(encode_flv(seconds=2, gop=100, audio=False))
    shift = one_gop[-1].timestamp + 40
    short_gops = [
        replace(p, timestamp=p.timestamp + shift)
        for p in flv_packets(encode_flv(seconds=2, gop=10, audio=False))
    ]
    long_segment = segment_clip(one_gop, target=0.3)
    assert len(long_segment) == 1 and decode_ts(long_segment[0].data).frames == 50
    limit = max(len(s.data) for s in segment_clip(short_gops, target=0.3))
    assert limit < len(long_segment[0].data)
    bounded = HlsSegmenter(0.3, max_segment_bytes=limit)
    for packet in one_gop:
        assert bounded.feed(packet, 0.0) == []
    out: list[HlsSegment] = []
    for packet in short_gops:
        out += bounded.feed(packet, 0.0)
    assert len(out) == 4, "segments resume at the next keyframe"
    assert out[0].discontinuity
    assert out[0].start_ms == next(p.timestamp for p in short_gops if p.keyframe)
    assert all(decode_ts(s.data).frames == 10 for s in out)


def test_playlist_window_sequence_and_end() -> None:
    playlist = HlsPlaylist(window=3, target_seconds=1.0)
    for seq in range(6):
        playlist.add(HlsSegment(seq, seq * 1000, 1.0 + 0.5 * (seq == 4), b"x", seq == 2, 0.0))
    text = playlist.render(lambda s: f"s/{s.sequence}.ts")
    assert "#EXT-X-MEDIA-SEQUENCE:3" in text
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in text  # segment 2's discontinuity slid out
    assert "#EXT-X-TARGETDURATION:2" in text
    assert [line for line in text.splitlines() if line.endswith(".ts")] == [
        "s/3.ts",
        "s/4.ts",
        "s/5.ts",
    ]
    assert "#EXT-X-ENDLIST" not in text
    assert playlist.get(1) is not None and playlist.get(0) is None  # two retired kept
    playlist.ended = True
    assert playlist.render(lambda s: "x").rstrip().endswith("#EXT-X-ENDLIST")


def test_adts_header_from_audio_specific_config() -> None:
    config = parse_audio_specific_config(bytes([0x12, 0x10]))  # AAC-LC, 44.1 kHz, stereo
    assert config == AacConfig(object_type=2, sampling_index=4, channels=2)
    frame = adts_frame(config, b"\x00" * 100)
    assert frame[:2] == b"\xff\xf1" and len(frame) == 107
    assert ((frame[3] & 3) << 11) | (frame[4] << 3) | (frame[5] >> 5) == 107


async def test_service_muxes_every_stream_from_its_start(clip: list[MediaPacket]) -> None:
    hub = Hub()
    service = HlsService(hub, segment_seconds=1.0, window=3, ended_linger=0.2)
    key = StreamKey("live", "s")
    stream = hub.open_publisher(key, {}, "test")
    session = service.session(key)
    assert session is not None and not session.ready
    for packet in clip:
        stream.source.push(packet)
        await asyncio.sleep(0)  # the muxer keeps up, as it does with a live publisher
    assert session.playlist.segments[0].start_ms == clip[4].timestamp, "from the first frame"
    assert len(session.playlist.segments) == 2 and not session.ready, "served from 3 segments"
    stream.close()
    await asyncio.sleep(0.05)
    assert session.finished and session.playlist.ended and session.ready
    assert service.session(key) is session, "an ended playlist stays readable a while"
    again = hub.open_publisher(key, {}, "test")
    second = service.session(key)
    assert second is not None and second is not session and second.stream is again
    again.close()
    await asyncio.sleep(0.3)
    assert service.session(key) is None, "and is forgotten after that"
    assert service.session(StreamKey("live", "nothing")) is None
    service.close()


async def test_service_picks_up_streams_opened_before_it(clip: list[MediaPacket]) -> None:
    hub = Hub()
    key = StreamKey("live", "early")
    stream = hub.open_publisher(key, {}, "test")
    for packet in clip[:50]:
        stream.source.push(packet)
    service = HlsService(hub, segment_seconds=1.0, window=3)
    session = service.session(key)
    assert session is not None
    for packet in clip[50:]:
        stream.source.push(packet)
        await asyncio.sleep(0)
    stream.close()
    await asyncio.sleep(0.05)
    # It starts from the hub's cached GOP, at a keyframe.
    assert session.playlist.ended and session.playlist.segments
    assert decode_ts(session.playlist.segments[0].data).first_is_key
    service.close()


# -- live over HTTP ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_clip() -> list[MediaPacket]:
    return with_roi(flv_packets(encode_flv(seconds=8, gop=12)), moving_face, 320, 240)


@pytest.mark.slow
def test_live_hls_reads_back_with_pyav(long_clip: list[MediaPacket]) -> None:
    player_server = PlayerServer(segment_seconds=1.0, window=2)
    try:
        check_live_hls(player_server, long_clip)
    finally:
        player_server.stop()


def check_live_hls(player_server: PlayerServer, clip: list[MediaPacket]) -> None:
    feeder = player_server.feed("live", "hls", clip)
    player_server.wait_live("live", "hls")
    base = f"{player_server.http_url}/live/"
    fetched: dict[str, bytes] = {}
    durations: dict[str, float] = {}
    ended = False
    window_sizes = []
    with httpx.Client(timeout=20) as http:
        first = time.monotonic()
        while not ended and time.monotonic() - first < 20:
            reply = http.get(base + "hls.m3u8")
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"] == "application/vnd.apple.mpegurl"
            lines = reply.text.splitlines()
            assert lines[0] == "#EXTM3U"
            uris = [line for line in lines if line and not line.startswith("#")]
            window_sizes.append(len(uris))
            for index, line in enumerate(lines):
                if line.startswith("#EXTINF:"):
                    durations[lines[index + 1]] = float(line[8:].rstrip(","))
            for uri in uris:
                if uri not in fetched:
                    segment = http.get(base + uri)
                    assert segment.status_code == 200
                    assert segment.headers["content-type"] == "video/mp2t"
                    fetched[uri] = segment.content
            ended = "#EXT-X-ENDLIST" in lines
            time.sleep(0.3)
        assert ended, "the playlist ends with EXT-X-ENDLIST when the stream ends"
        assert max(window_sizes) == 2  # the window
        oldest = sorted(fetched, key=lambda u: int(u.rsplit("/", 1)[1][:-3]))[0]
        assert http.get(base + oldest).status_code == 404, "slid-out segments are deleted"
        assert http.get(base + "nope.m3u8").status_code == 404
    feeder.result(10)
    assert len(fetched) == 6  # 1.44 s segments (three 480 ms GOPs) over 8 s
    sent = {frame_pts(p): p.roi for p in clip if p.roi is not None}
    frames = 0
    for uri, data in fetched.items():
        got = decode_ts(data)
        frames += got.frames
        assert got.last_pts - got.first_pts + 1 / FPS == pytest.approx(durations[uri], abs=0.002)
        assert got.roi and all(sent[pts] == text for pts, text in got.roi.items())
    assert frames == 200


@pytest.mark.slow
def test_ffmpeg_hls_demuxer_plays_the_live_playlist(player_server, clip) -> None:
    feeder = player_server.feed("live", "ff", clip)
    player_server.wait_live("live", "ff")
    # FFmpeg's HLS demuxer, in its own process (PyAV keeps the GIL while on the network).
    got = run_client("play", f"{player_server.http_url}/live/ff.m3u8", "--sei")
    feeder.result(10)
    assert got["decode_errors"] == 0 and got["keyframe_first"]
    assert got["video_frames"] == 100 and got["audio_frames"] > 150
    sent = {p.roi for p in clip if p.roi is not None}
    assert set(got["sei"]) == sent, "every frame's regions, in SEI"


def reassemble(data: bytes, pid: int) -> list[bytes]:
    """The PES packets carried on ``pid``, put back together from the TS packets."""
    pes: list[bytearray] = []
    for packet in ts_packets(data):
        if ((packet[1] & 0x1F) << 8 | packet[2]) != pid:
            continue
        start = 4
        if packet[3] & 0x20:  # adaptation field: length byte, then that many bytes
            start += 1 + packet[4]
        if packet[1] & 0x40:
            pes.append(bytearray())
        pes[-1] += packet[start:]
    return [bytes(p) for p in pes]


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=2000), min_size=1, max_size=8),
    keyframe=st.booleans(),
)
def test_ts_packetizing_round_trips_any_frame_size(sizes: list[int], keyframe: bool) -> None:
    muxer = TsMuxer()
    muxer.set_streams("avc1", "aac")
    for index, size in enumerate(sizes):
        frame = bytes((index + i) % 251 for i in range(size))
        video = muxer.video(frame, 90_000 + index * 3600, 90_000 + index * 3600, keyframe)
        (pes,) = reassemble(video, VIDEO_PID)
        assert pes.endswith(frame) and pes[:3] == b"\x00\x00\x01"
        assert len(pes) == 9 + pes[8] + size  # header, timestamps, the frame: no stuffing
        audio = muxer.audio(frame[:1500], 90_000 + index * 1920)
        (apes,) = reassemble(audio, AUDIO_PID)
        assert apes.endswith(frame[:1500])
        assert int.from_bytes(apes[4:6], "big") == len(apes) - 6  # bounded audio PES


def test_timestamps_are_written_as_given() -> None:
    muxer = TsMuxer()
    muxer.set_streams("avc1", None)
    (pes,) = reassemble(muxer.video(b"\x00\x00\x00\x01\x09\xf0", 123_456, 120_000, True), VIDEO_PID)
    assert pes[7] == 0xC0  # PTS and DTS

    def read(field: bytes) -> int:
        return (
            ((field[0] >> 1) & 7) << 30
            | field[1] << 22
            | (field[2] >> 1) << 15
            | (field[3] << 7)
            | (field[4] >> 1)
        )

    assert read(pes[9:14]) == 123_456 and read(pes[14:19]) == 120_000


def test_truncated_audio_specific_config_is_a_clear_error() -> None:
    from app.outputs.mpegts import AacConfigError

    with pytest.raises(AacConfigError, match="truncated"):
        parse_audio_specific_config(b"\x12")
