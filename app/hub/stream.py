"""A live stream: its publisher, its source and output tracks, and its own stats."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from app.hub.metadata import sanitized_metadata
from app.hub.track import Track
from app.media.flv import TagType, parse_audio_tag, parse_video_tag
from app.media.nal import NalError, parse_decoder_config
from app.media.packet import MediaPacket

if TYPE_CHECKING:
    from app.hub.core import Hub

log = logging.getLogger("app.hub")

# A frame further than this from the last keyframe gets the publisher a warning: a player
# joining then waits as long for a picture, and HLS segments cannot be shorter.
LONG_KEYFRAME_INTERVAL_MS = 4000
_NAL_CODECS: dict[str, Literal["h264", "hevc"]] = {"avc1": "h264", "hvc1": "hevc"}
# A taken-over stream's new timeline starts this far after the last packet of the previous
# publisher, so players see time go on instead of jumping back to the new encoder's zero.
TAKEOVER_GAP_MS = 100


@dataclass(frozen=True, slots=True, order=True)
class StreamKey:
    app: str
    name: str

    def __str__(self) -> str:
        return f"{self.app}/{self.name}"


class StreamBusyError(Exception):
    """The stream name already has a live publisher."""


PublisherEnded = Callable[[str], None]


class Processor(Protocol):
    """A stage between a stream's source and output (the ROI transcoder)."""

    def feed(self, packet: MediaPacket) -> None: ...

    async def finish(self) -> None:
        """Flush what is pending into the output; called when the publisher leaves."""
        ...


class _RateMeter:
    """Bytes and video frames over a sliding window, for the stream stats.

    Reports nothing until the samples span ``min_span_s``: a rate over the first few
    milliseconds of a stream (a burst of the GOP) would be wildly off.
    """

    def __init__(self, window_s: float = 5.0, min_span_s: float = 1.0) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._samples: deque[tuple[float, int, int]] = deque()

    def add(self, size: int, frame: int) -> None:
        now = time.monotonic()
        self._samples.append((now, size, frame))
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def rates(self) -> tuple[float, float]:
        """(bits per second, video frames per second)."""
        samples = self._samples
        if len(samples) < 2:
            return 0.0, 0.0
        span = samples[-1][0] - samples[0][0]
        if span < self.min_span_s:
            return 0.0, 0.0
        size = sum(s for _, s, _ in samples)
        frames = sum(f for _, _, f in samples)
        return size * 8 / span, max(0, frames - 1) / span


@dataclass(slots=True)
class CodecInfo:
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One stream's figures as of one moment (the streams API and the metrics read them)."""

    remote: str
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    fps: float | None  # measured over the last seconds, else as the publisher declared it
    bitrate_bps: float
    players: int
    uptime_s: float
    bytes_in: int
    dropped_frames: int
    warnings: tuple[str, ...]


class Publisher:
    """One publisher's hold on a stream. What it sends reaches the stream only while it holds
    it; a takeover or a kick ends the hold and tells its owner through ``on_end``."""

    def __init__(
        self, stream: Stream, remote: str, on_end: PublisherEnded | None, rebase: bool
    ) -> None:
        self.stream = stream
        self.remote = remote
        self.on_end = on_end
        # A publisher taking over a stream starts where the previous one stopped (None: the
        # offset is set by its first packet).
        self._offset: int | None = None if rebase else 0

    @property
    def holds(self) -> bool:
        return self.stream.publisher is self and not self.stream.closed

    def push(self, packet: MediaPacket) -> None:
        if not self.holds:
            return
        if self._offset is None:
            last = self.stream.source.last_timestamp
            self._offset = last + TAKEOVER_GAP_MS - packet.timestamp
        if self._offset:
            packet = dataclasses.replace(packet, timestamp=packet.timestamp + self._offset)
        self.stream.source.push(packet)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        if self.holds:
            self.stream.set_metadata(metadata)

    def close(self) -> None:
        """The publisher left: the stream ends, unless someone else holds it by now."""
        if self.holds:
            self.stream.hub.close_stream(self.stream)

    def end(self, reason: str) -> None:
        """Tell the publisher's connection to go (kick, takeover), with the reason."""
        if self.on_end is not None:
            self.on_end(reason)


class Stream:
    """A live stream: its publisher's packets, what players get, and its stats."""

    def __init__(
        self, hub: Hub, key: StreamKey, query: dict[str, str], remote: str, max_buffer_ms: int
    ) -> None:
        self.hub = hub
        self.key = key
        self.query = dict(query)
        self.remote = remote
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self.source = Track(f"{key} (source)", max_buffer_ms)
        self.output = Track(f"{key}", max_buffer_ms, hub.write_merge_ms)
        self.metadata: dict[str, Any] = {}
        self.codec = CodecInfo()
        # What the publisher should change, in words (shown in the stream's status).
        self.warnings: list[str] = []
        self._last_keyframe_ts: int | None = None
        self.publisher = Publisher(self, remote, None, rebase=False)
        self.last_input = time.monotonic()  # when the source last got a packet
        self.closed = False
        self.processor: Processor | None = None
        # After a processor is removed, source video resumes on output at the next keyframe.
        self._passthrough_waits_keyframe = False
        # After a takeover, the new publisher's onMetaData goes to late joiners only: FFmpeg's
        # FLV demuxer takes an onMetaData in mid-stream for a new stream, which players that
        # fix their streams when they open (PyAV) cannot handle; decoders follow the SPS.
        self._metadata_to_cache_only = False
        self._meter = _RateMeter()
        self.source.listeners.append(self._on_source_packet)

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started_mono

    @property
    def declared_fps(self) -> float | None:
        """The frame rate the publisher's metadata states, if it states a number."""
        value = self.metadata.get("framerate") or self.metadata.get("fps")
        return float(value) if isinstance(value, int | float) and value > 0 else None

    @property
    def declared_video_kbps(self) -> float | None:
        """The video bitrate the publisher's metadata states, if it states a number."""
        value = self.metadata.get("videodatarate")
        return float(value) if isinstance(value, int | float) and value > 0 else None

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        self.metadata = sanitized_metadata(metadata)
        w, h = self.metadata.get("width"), self.metadata.get("height")
        if isinstance(w, int | float) and isinstance(h, int | float):
            self.codec.width, self.codec.height = int(w), int(h)

    def _on_source_packet(self, packet: MediaPacket) -> None:
        self.last_input = time.monotonic()
        if packet.kind is TagType.DATA and self._metadata_to_cache_only:
            self.output.metadata = packet
            return
        is_frame = packet.kind is TagType.VIDEO and not packet.sequence_header
        self._meter.add(packet.size, 1 if is_frame else 0)
        if is_frame:
            self._watch_keyframe_interval(packet)
        if packet.kind is TagType.VIDEO and packet.sequence_header:
            self._read_video_header(packet)
        elif packet.kind is TagType.AUDIO and packet.sequence_header:
            self.codec.audio_codec = parse_audio_tag(packet.payload).codec
        elif packet.kind is TagType.AUDIO and self.codec.audio_codec is None:
            self.codec.audio_codec = parse_audio_tag(packet.payload).codec
        if self.processor is not None:
            self.processor.feed(packet)
            return
        if self._passthrough_waits_keyframe and packet.kind is TagType.VIDEO:
            if not packet.keyframe:
                return
            self._passthrough_waits_keyframe = False
            if self.source.video_header is not None:
                self.output.push(self.source.video_header)
        self.output.push(packet)

    def _watch_keyframe_interval(self, frame: MediaPacket) -> None:
        if frame.keyframe:
            self._last_keyframe_ts = frame.timestamp
            return
        if self._last_keyframe_ts is None or self.warnings:
            return
        gap_ms = frame.timestamp - self._last_keyframe_ts
        if gap_ms > LONG_KEYFRAME_INTERVAL_MS:
            warning = (
                f"keyframe interval over {LONG_KEYFRAME_INTERVAL_MS // 1000} s: players joining "
                "late wait that long for a picture (set the encoder's keyframe interval to 1-2 s)"
            )
            self.warnings.append(warning)
            log.warning("stream %s: %s", self.key, warning)

    def _read_video_header(self, packet: MediaPacket) -> None:
        tag = parse_video_tag(packet.payload)
        self.codec.video_codec = tag.codec
        nal_codec = _NAL_CODECS.get(tag.codec)
        if nal_codec is None:
            return
        try:
            config = parse_decoder_config(packet.payload[tag.data_offset :], nal_codec)
            sps = config.sps_info()
        except (NalError, ValueError, IndexError) as exc:
            log.info("stream %s: unreadable %s sequence header: %s", self.key, tag.codec, exc)
            return
        self.codec.width, self.codec.height = sps.width, sps.height

    def set_processor(self, processor: Processor | None) -> None:
        """Puts a stage between source and output, or goes back to plain relay."""
        if processor is self.processor:
            return
        had_processor = self.processor is not None
        self.processor = processor
        if processor is None and had_processor:
            self._passthrough_waits_keyframe = True

    def rates(self) -> tuple[float, float]:
        return self._meter.rates()

    def kick(self) -> None:
        """Ends the stream (the operator's DELETE) and tells its publisher to go."""
        publisher = self.publisher
        self.hub.close_stream(self)
        publisher.end("kicked by the operator")

    def take_over(self, publisher: Publisher, query: dict[str, str]) -> Publisher:
        """A new publisher continues this stream: players stay, and video resumes on output at
        its first keyframe, preceded by its sequence header."""
        previous = self.publisher
        self.publisher = publisher
        self.query = dict(query)
        self.remote = publisher.remote
        self.last_input = time.monotonic()
        self._metadata_to_cache_only = True
        self._last_keyframe_ts = None
        if self.processor is None:
            self._passthrough_waits_keyframe = True
        return previous

    def close(self) -> None:
        self.hub.close_stream(self)

    def stats(self) -> StreamStats:
        bitrate, fps = self.rates()
        return StreamStats(
            remote=self.remote,
            video_codec=self.codec.video_codec,
            audio_codec=self.codec.audio_codec,
            width=self.codec.width,
            height=self.codec.height,
            fps=fps if fps else self.declared_fps,
            bitrate_bps=bitrate,
            players=self.output.players,
            uptime_s=self.uptime_s,
            bytes_in=self.source.bytes,
            dropped_frames=self.output.dropped_frames,
            warnings=tuple(self.warnings),
        )


StreamListener = Callable[[Stream], None]
