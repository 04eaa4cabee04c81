"""FLV tags: classify audio/video tag bodies (legacy and Enhanced RTMP) and write FLV files.

A tag body here is exactly an RTMP audio/video/data message payload, so the relay moves the
same bytes from RTMP ingest to RTMP play and HTTP-FLV without re-packing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum


class TagType(IntEnum):
    AUDIO = 8
    VIDEO = 9
    DATA = 18


class VideoPacketType(IntEnum):
    SEQUENCE_START = 0
    CODED_FRAMES = 1
    SEQUENCE_END = 2
    OTHER = 3


LEGACY_VIDEO_CODECS = {7: "avc1", 12: "hvc1"}  # 12 is the widely used (non-Adobe) HEVC id
FOURCC_TO_LEGACY = {v: k for k, v in LEGACY_VIDEO_CODECS.items()}
AUDIO_CODECS = {2: "mp3", 10: "aac", 11: "speex", 7: "g711a", 8: "g711u", 13: "opus"}

# Enhanced RTMP video packet types (veovera enhanced-rtmp v1/v2).
_EX_SEQUENCE_START = 0
_EX_CODED_FRAMES = 1
_EX_SEQUENCE_END = 2
_EX_CODED_FRAMES_X = 3


class FlvError(ValueError):
    """A tag body too short or otherwise not a valid FLV tag."""


@dataclass(frozen=True, slots=True)
class VideoTag:
    codec: str  # FourCC: avc1, hvc1, av01, vp09, ... or "legacy-N" for other legacy ids
    keyframe: bool
    packet_type: VideoPacketType
    composition_time: int  # ms, pts - dts
    data_offset: int  # where the codec payload (AVCC NAL units / config record) starts
    enhanced: bool


@dataclass(frozen=True, slots=True)
class AudioTag:
    codec: str
    sequence_header: bool
    data_offset: int


def _si24(b: bytes, off: int) -> int:
    v = (b[off] << 16) | (b[off + 1] << 8) | b[off + 2]
    return v - (1 << 24) if v & 0x800000 else v


def parse_video_tag(body: bytes) -> VideoTag:
    if len(body) < 1:
        raise FlvError("empty video tag")
    b0 = body[0]
    if b0 & 0x80:  # Enhanced RTMP ExVideoTagHeader
        if len(body) < 5:
            raise FlvError("enhanced video tag shorter than its header")
        frame_type = (b0 >> 4) & 0x07
        ex_type = b0 & 0x0F
        fourcc = body[1:5].decode("latin-1")
        cts = 0
        offset = 5
        if ex_type == _EX_SEQUENCE_START:
            ptype = VideoPacketType.SEQUENCE_START
        elif ex_type == _EX_CODED_FRAMES:
            ptype = VideoPacketType.CODED_FRAMES
            if fourcc in ("avc1", "hvc1"):
                if len(body) < 8:
                    raise FlvError("enhanced coded frame without composition time")
                cts = _si24(body, 5)
                offset = 8
        elif ex_type == _EX_CODED_FRAMES_X:
            ptype = VideoPacketType.CODED_FRAMES
        elif ex_type == _EX_SEQUENCE_END:
            ptype = VideoPacketType.SEQUENCE_END
        else:
            ptype = VideoPacketType.OTHER
        return VideoTag(fourcc, frame_type == 1, ptype, cts, offset, True)
    frame_type = b0 >> 4
    codec_id = b0 & 0x0F
    codec = LEGACY_VIDEO_CODECS.get(codec_id, f"legacy-{codec_id}")
    if codec_id in LEGACY_VIDEO_CODECS:
        if len(body) < 5:
            raise FlvError("AVC/HEVC video tag shorter than its 5-byte header")
        ptype = {
            0: VideoPacketType.SEQUENCE_START,
            1: VideoPacketType.CODED_FRAMES,
            2: VideoPacketType.SEQUENCE_END,
        }.get(body[1], VideoPacketType.OTHER)
        return VideoTag(codec, frame_type == 1, ptype, _si24(body, 2), 5, False)
    return VideoTag(codec, frame_type == 1, VideoPacketType.CODED_FRAMES, 0, 1, False)


def parse_audio_tag(body: bytes) -> AudioTag:
    if len(body) < 1:
        raise FlvError("empty audio tag")
    fmt = body[0] >> 4
    if fmt == 9:  # Enhanced RTMP ExAudioTagHeader
        if len(body) < 5:
            raise FlvError("enhanced audio tag shorter than its header")
        fourcc = body[1:5].decode("latin-1")
        return AudioTag(fourcc, (body[0] & 0x0F) == 0, 5)
    codec = AUDIO_CODECS.get(fmt, f"legacy-{fmt}")
    if fmt == 10:
        if len(body) < 2:
            raise FlvError("AAC audio tag shorter than its 2-byte header")
        return AudioTag(codec, body[1] == 0, 2)
    return AudioTag(codec, False, 1)


def build_video_tag(
    codec: str,
    packet_type: VideoPacketType,
    data: bytes,
    *,
    keyframe: bool,
    composition_time: int = 0,
    enhanced: bool = False,
) -> bytes:
    """Builds a tag body in the same signalling style (legacy or enhanced) as the source."""
    frame_type = 1 if keyframe else 2
    cts = struct.pack(">i", composition_time)[1:]
    if not enhanced and codec in FOURCC_TO_LEGACY:
        head = bytes([(frame_type << 4) | FOURCC_TO_LEGACY[codec], int(packet_type)])
        return head + cts + data
    ex = {
        VideoPacketType.SEQUENCE_START: _EX_SEQUENCE_START,
        VideoPacketType.SEQUENCE_END: _EX_SEQUENCE_END,
    }.get(packet_type, _EX_CODED_FRAMES)
    head = bytes([0x80 | (frame_type << 4) | ex]) + codec.encode("latin-1")
    if ex == _EX_CODED_FRAMES and codec in ("avc1", "hvc1"):
        head += cts
    return head + data


FLV_FILE_HEADER = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"


def flv_tag(tag_type: int, timestamp: int, body: bytes) -> bytes:
    """One FLV file tag with its trailing PreviousTagSize."""
    ts = timestamp & 0xFFFFFFFF
    size = len(body)
    head = struct.pack(
        ">BBHBBBB3s",
        tag_type,
        (size >> 16) & 0xFF,
        size & 0xFFFF,
        (ts >> 16) & 0xFF,
        (ts >> 8) & 0xFF,
        ts & 0xFF,
        (ts >> 24) & 0xFF,
        b"\x00\x00\x00",
    )
    return head + body + struct.pack(">I", size + 11)


@dataclass(frozen=True, slots=True)
class FlvFileTag:
    kind: int
    timestamp: int
    body: bytes


class FlvFileReader:
    """Incremental FLV file reader (sans-IO): feed bytes, get whole tags."""

    MAX_TAG_BYTES = 16 * 1024 * 1024

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._header_done = False

    def feed(self, data: bytes) -> list[FlvFileTag]:
        self._buffer += data
        tags: list[FlvFileTag] = []
        if not self._header_done:
            if len(self._buffer) < 13:
                return tags
            if self._buffer[:3] != b"FLV":
                raise FlvError("not an FLV file: no 'FLV' signature")
            offset = struct.unpack(">I", self._buffer[5:9])[0]
            if offset < 9:
                raise FlvError(f"FLV header size {offset} is below 9")
            if len(self._buffer) < offset + 4:
                return tags
            del self._buffer[: offset + 4]
            self._header_done = True
        while len(self._buffer) >= 11:
            size = int.from_bytes(self._buffer[1:4], "big")
            if size > self.MAX_TAG_BYTES:
                raise FlvError(f"FLV tag of {size} bytes is beyond the {self.MAX_TAG_BYTES} cap")
            if len(self._buffer) < 11 + size + 4:
                break
            ts = int.from_bytes(self._buffer[4:7], "big") | (self._buffer[7] << 24)
            body = bytes(self._buffer[11 : 11 + size])
            tags.append(FlvFileTag(self._buffer[0] & 0x1F, ts, body))
            del self._buffer[: 11 + size + 4]
        return tags
