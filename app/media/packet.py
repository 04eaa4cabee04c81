"""MediaPacket: the unit that flows through the hub (one FLV tag body with its timestamp)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from app.media.flv import (
    FlvError,
    TagType,
    VideoPacketType,
    flv_tag,
    parse_audio_tag,
    parse_video_tag,
)


@dataclass(frozen=True, slots=True)
class MediaPacket:
    kind: TagType
    timestamp: int  # milliseconds on the publisher's timeline (DTS for video)
    payload: bytes  # FLV tag body == RTMP message payload
    keyframe: bool = False
    sequence_header: bool = False
    # Compact ROI JSON of this video frame (docs/roi-rules.md), set by the ROI transcoder; outputs
    # forward it (WebSocket feed, WHEP data channel) aligned with the frame it describes.
    roi: str | None = None
    # Wire forms of this packet (an FLV file tag, RTMP chunks), each built once on first use
    # and shared by every player that needs the same bytes.
    _encoded: dict[Hashable, bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def encoded(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        cache = self._encoded
        if cache is None:
            cache = {}
            object.__setattr__(self, "_encoded", cache)  # a cache, not a change of value
        data = cache.get(key)
        if data is None:
            data = cache[key] = build()
        return data

    def flv_tag(self) -> bytes:
        cache = self._encoded  # built once, read once per player: the read without a closure
        if cache is not None and (tag := cache.get("flv")) is not None:
            return tag
        return self.encoded("flv", lambda: flv_tag(self.kind, self.timestamp, self.payload))

    @classmethod
    def from_tag(cls, kind: int, timestamp: int, payload: bytes) -> MediaPacket:
        """Classifies a tag body; raises FlvError for a body too short to classify."""
        tag_kind = TagType(kind)
        if tag_kind is TagType.VIDEO:
            info = parse_video_tag(payload)
            # Only a coded picture is a keyframe to start playback on: sequence headers and
            # end-of-sequence tags carry the keyframe flag too.
            return cls(
                tag_kind,
                timestamp,
                payload,
                keyframe=info.keyframe and info.packet_type is VideoPacketType.CODED_FRAMES,
                sequence_header=info.packet_type is VideoPacketType.SEQUENCE_START,
            )
        if tag_kind is TagType.AUDIO:
            return cls(
                tag_kind,
                timestamp,
                payload,
                sequence_header=parse_audio_tag(payload).sequence_header,
            )
        return cls(tag_kind, timestamp, payload)

    @property
    def size(self) -> int:
        return len(self.payload)


@dataclass(slots=True)
class PacketBatch:
    """Packets that go to a player in one write (one loop pass's or merge window's).

    Every player that got all of a pass's packets gets the same batch object, so the wire
    form of the whole batch (FLV tags, RTMP chunks) is built once for all of them: one
    buffer per player and write, not one per packet.
    """

    packets: list[MediaPacket]
    _encoded: dict[Hashable, bytes] = field(default_factory=dict, repr=False, compare=False)

    def encoded(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        data = self._encoded.get(key)
        if data is None:
            data = self._encoded[key] = build()
        return data

    def flv_tags(self) -> bytes:
        """The packets as FLV file tags, back to back (a lone packet's shared tag itself)."""
        if len(self.packets) == 1:
            return self.packets[0].flv_tag()
        return self.encoded("flv", lambda: b"".join([p.flv_tag() for p in self.packets]))


__all__ = ["FlvError", "MediaPacket", "PacketBatch", "TagType"]
