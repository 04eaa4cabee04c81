"""The stream hub: one publisher, many players per ``{app}/{stream}``.

Every stream has two tracks. ``source`` carries what the publisher sent; ``output`` carries
what players get. Between them sits at most one *processor* (the ROI transcoder); without one,
``source`` packets are forwarded to ``output`` as they are. Tracks cache what a late joiner
needs (metadata, sequence headers, the GOP since the last keyframe) and give each subscriber a
bounded queue, so a slow player skips ahead on its own and never slows anyone else down.

Everything here runs on the event loop thread; processors that work in threads hand their
results back with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

from app.media.flv import TagType, parse_audio_tag, parse_video_tag
from app.media.nal import NalError, parse_decoder_config
from app.media.packet import MediaPacket

log = logging.getLogger("app.hub")

# A GOP longer than this is not cached: late joiners then wait for the next keyframe instead
# of the hub holding an unbounded amount of media for a publisher with a huge keyframe interval.
MAX_GOP_BYTES = 32 * 1024 * 1024
MAX_GOP_PACKETS = 4000
# Upper bounds on one subscriber's queue, beside its duration limit.
MAX_QUEUE_BYTES = 64 * 1024 * 1024
MAX_QUEUE_PACKETS = 4000
# A frame further than this from the last keyframe gets the publisher a warning: a player
# joining then waits as long for a picture, and HLS segments cannot be shorter.
LONG_KEYFRAME_INTERVAL_MS = 4000
_NAL_CODECS: dict[str, Literal["h264", "hevc"]] = {"avc1": "h264", "hvc1": "hevc"}
# The latest refused push per stream name is kept for this many names (for waiting players).
MAX_REMEMBERED_REFUSALS = 1000
# A player that keeps falling behind is logged once per this many seconds, not once per skip.
SKIP_LOG_INTERVAL_S = 30.0
# onMetaData values a publisher may declare; one outside its range is dropped, as is any
# non-finite number (AMF0 numbers are doubles: Infinity and NaN arrive as they are).
METADATA_RANGES: dict[str, tuple[float, float]] = {
    "width": (1, 65535),
    "height": (1, 65535),
    "framerate": (0.001, 1000),
    "fps": (0.001, 1000),
    "videodatarate": (0, 1_000_000),  # kbit/s
    "audiodatarate": (0, 1_000_000),
    "audiosamplerate": (1, 768_000),
    "audiosamplesize": (1, 64),
    "duration": (0, 1e9),
    "filesize": (0, 1e15),
}


@dataclass(frozen=True, slots=True, order=True)
class StreamKey:
    app: str
    name: str

    def __str__(self) -> str:
        return f"{self.app}/{self.name}"


class StreamBusyError(Exception):
    """The stream name already has a live publisher."""


class TakeoverPolicy(StrEnum):
    """When a new publish of a live name replaces the publisher it has."""

    STALE = "stale"  # only one that has sent nothing for a while (a dropped network)
    ALWAYS = "always"
    NEVER = "never"


# A taken-over stream's new timeline starts this far after the last packet of the previous
# publisher, so players see time go on instead of jumping back to the new encoder's zero.
TAKEOVER_GAP_MS = 100

PublisherEnded = Callable[[str], None]


def _is_media(packet: MediaPacket) -> bool:
    """An audio or video frame: what a moment of the stream is made of."""
    return packet.kind is not TagType.DATA and not packet.sequence_header


class Subscription:
    """One player's view of a track: a bounded queue that skips to keyframes when full."""

    def __init__(self, track: Track, name: str, max_buffer_ms: int, internal: bool) -> None:
        self.track = track
        self.name = name
        # Internal subscriptions (the HLS segmenter) feed other outputs; they are not players.
        self.internal = internal
        self.max_buffer_ms = max_buffer_ms
        self.created_at = time.monotonic()
        self.dropped_frames = 0
        self.bytes_out = 0
        self._queue: deque[MediaPacket] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._ended = False
        self._closed = False
        # Set by an output that can write synchronously (RTMP play): called with a packet when
        # nothing is queued; returns False when the player cannot take it now (then it queues).
        self.direct: Callable[[MediaPacket], bool] | None = None
        # True until the next video keyframe: set at start when no GOP is cached, and after
        # an overflow, so playback always resumes on a picture the decoder can show.
        self._awaiting_keyframe = False
        # The cached GOP a late joiner starts with goes out at network speed: it is not lag.
        # Backlog is counted from the live edge at join time (Track.subscribe offers the GOP
        # right after this).
        self._join_edge_ms: int | None = track.last_timestamp if track.gop else None
        # Skips since the player last caught up (an empty queue): one episode, one log line.
        self.skips = 0
        self._skipping = False
        self._skip_logged_at = -SKIP_LOG_INTERVAL_S
        self._skips_unlogged = 0

    def start_at_next_keyframe(self) -> None:
        """Nothing cached to start from: media is dropped until a video keyframe comes."""
        self._awaiting_keyframe = True

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _buffered_ms(self) -> int:
        # Only media timestamps count: metadata and sequence headers carry timestamp 0 (or
        # whatever the publisher had when it sent them) and say nothing about lag.
        # Timestamps from ingest are already unwrapped; a small step back (FFmpeg's end-of-stream
        # flush interleaves audio and video slightly out of order) is no backlog at all.
        queue = self._queue
        if len(queue) < 2:  # runs per packet per player: the common cases without a scan
            return 0
        head, tail = queue[0], queue[-1]
        first = (
            head.timestamp
            if _is_media(head)
            else next((p.timestamp for p in queue if _is_media(p)), None)
        )
        if first is None:
            return 0
        last = (
            tail.timestamp
            if _is_media(tail)
            else next(p.timestamp for p in reversed(queue) if _is_media(p))
        )
        if self._join_edge_ms is not None:
            first = max(first, self._join_edge_ms)
        return max(0, last - first)

    def offer(self, packet: MediaPacket) -> None:
        if self._closed or self._ended:
            return
        if packet.kind is TagType.DATA or packet.sequence_header:
            self._append(packet)
            return
        if self._awaiting_keyframe:
            if not (packet.kind is TagType.VIDEO and packet.keyframe):
                if packet.kind is TagType.VIDEO:
                    self.dropped_frames += 1
                return
            self._awaiting_keyframe = False
        self._append(packet)
        if (
            self._buffered_ms() > self.max_buffer_ms
            or self._queued_bytes > MAX_QUEUE_BYTES
            or len(self._queue) > MAX_QUEUE_PACKETS
        ):
            self._skip_to_next_keyframe()

    def _append(self, packet: MediaPacket) -> None:
        # Nothing queued and the player can take it now: hand it over without a task switch.
        if self.direct is not None and not self._queue and self.direct(packet):
            self.bytes_out += packet.size
            return
        self._queue.append(packet)
        self._queued_bytes += packet.size
        self._wakeup.set()

    def _skip_to_next_keyframe(self) -> None:
        """Drops queued media up to the newest queued keyframe, or all of it if there is none.

        The newest keyframe must come after the first queued media packet: resuming on the
        packet already at the head would drop nothing. Headers and metadata are kept: they
        describe the stream, not a moment of it.
        """
        first_media = next((i for i, p in enumerate(self._queue) if _is_media(p)), None)
        if first_media is None:
            return
        resume_at = None
        for index in range(len(self._queue) - 1, first_media, -1):
            p = self._queue[index]
            if p.kind is TagType.VIDEO and p.keyframe:
                resume_at = index
                break
        dropped = 0
        kept: deque[MediaPacket] = deque()
        for index, p in enumerate(self._queue):
            if resume_at is not None and index >= resume_at:
                kept.append(p)
            elif not _is_media(p):
                kept.append(p)
            elif p.kind is TagType.VIDEO:
                dropped += 1
        self._queue = kept
        self._queued_bytes = sum(p.size for p in kept)
        self._awaiting_keyframe = resume_at is None
        self._join_edge_ms = None
        self.dropped_frames += dropped
        self._note_skip()

    def _note_skip(self) -> None:
        self.skips += 1
        if self._skipping:
            return  # the same episode: the player has not caught up since the last skip
        self._skipping = True
        now = time.monotonic()
        if now - self._skip_logged_at < SKIP_LOG_INTERVAL_S:
            self._skips_unlogged += 1
            return
        earlier = (
            f" ({self._skips_unlogged} more time(s) since the last report)"
            if self._skips_unlogged
            else ""
        )
        log.info(
            "player %s on %s fell behind: skipped to a keyframe, %d frames dropped so far%s",
            self.name,
            self.track,
            self.dropped_frames,
            earlier,
        )
        self._skip_logged_at = now
        self._skips_unlogged = 0

    def end(self) -> None:
        self._ended = True
        self._wakeup.set()

    def close(self) -> None:
        """The player went away: stop queueing for it."""
        self._closed = True
        self._queue.clear()
        self._queued_bytes = 0
        self._wakeup.set()
        self.track.unsubscribe(self)

    def get_nowait(self) -> MediaPacket | None:
        if not self._queue:
            self._skipping = False  # caught up: a later skip is a new episode
            return None
        packet = self._queue.popleft()
        self._queued_bytes -= packet.size
        self.bytes_out += packet.size
        if not self._queue:
            self._skipping = False
        return packet

    async def get(self) -> MediaPacket | None:
        """The next packet, or None once the stream has ended (or the subscription closed)."""
        while not self._queue:
            if self._ended or self._closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        return self.get_nowait()


class Track:
    """A sequence of packets with what a late joiner needs to start decoding at once."""

    def __init__(self, label: str, max_buffer_ms: int) -> None:
        self.label = label
        self.max_buffer_ms = max_buffer_ms
        self.metadata: MediaPacket | None = None
        self.video_header: MediaPacket | None = None
        self.audio_header: MediaPacket | None = None
        self.gop: list[MediaPacket] = []
        self._gop_bytes = 0
        self._gop_open = False
        self.ended = False
        self.packets = 0
        self.bytes = 0
        self.video_frames = 0
        self.last_timestamp = 0
        self._subscriptions: set[Subscription] = set()
        # What subscriptions that have gone away had dropped and sent, so totals stay totals.
        self._closed_dropped = 0
        self._closed_bytes_out = 0
        self.listeners: list[Callable[[MediaPacket], None]] = []

    def __str__(self) -> str:
        return self.label

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        return frozenset(self._subscriptions)

    @property
    def dropped_frames(self) -> int:
        return self._closed_dropped + sum(s.dropped_frames for s in self._subscriptions)

    def push(self, packet: MediaPacket) -> None:
        if self.ended:
            return
        self.packets += 1
        self.bytes += packet.size
        self.last_timestamp = packet.timestamp
        self._cache(packet)
        for sub in tuple(self._subscriptions):
            sub.offer(packet)
        for listener in self.listeners:
            listener(packet)

    def _cache(self, packet: MediaPacket) -> None:
        if packet.kind is TagType.DATA:
            self.metadata = packet
            return
        if packet.sequence_header:
            if packet.kind is TagType.VIDEO:
                self.video_header = packet
                # Frames coded against the previous header cannot be decoded with the new one.
                self.gop.clear()
                self._gop_bytes = 0
                self._gop_open = False
            else:
                self.audio_header = packet
            return
        if packet.kind is TagType.VIDEO:
            self.video_frames += 1
            if packet.keyframe:
                self.gop = [packet]
                self._gop_bytes = packet.size
                self._gop_open = True
                return
        if not self._gop_open:
            return
        if self._gop_bytes + packet.size > MAX_GOP_BYTES or len(self.gop) >= MAX_GOP_PACKETS:
            self.gop.clear()
            self._gop_bytes = 0
            self._gop_open = False
            return
        self.gop.append(packet)
        self._gop_bytes += packet.size

    @property
    def bytes_out(self) -> int:
        return self._closed_bytes_out + sum(s.bytes_out for s in self._subscriptions)

    @property
    def players(self) -> int:
        return sum(1 for s in self._subscriptions if not s.internal)

    def subscribe(self, name: str, internal: bool = False) -> Subscription:
        sub = Subscription(self, name, self.max_buffer_ms, internal)
        for header in (self.metadata, self.video_header, self.audio_header):
            if header is not None:
                sub.offer(header)
        if self.gop:
            for packet in self.gop:
                sub.offer(packet)
        else:
            sub.start_at_next_keyframe()
        if self.ended:
            sub.end()
        else:
            self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.discard(sub)
            self._closed_dropped += sub.dropped_frames
            self._closed_bytes_out += sub.bytes_out

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for sub in tuple(self._subscriptions):
            sub.end()


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

    def _end(self, reason: str) -> None:
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
        self.output = Track(f"{key}", max_buffer_ms)
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
        publisher._end("kicked by the operator")

    def _take_over(self, publisher: Publisher, query: dict[str, str]) -> Publisher:
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


def sanitized_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The publisher's metadata without non-finite numbers (at any depth) and without the
    known fields whose value is out of :data:`METADATA_RANGES`: what enters the hub is what
    every reader (stream info, the ROI stage's rate and bitrate) may take at its word."""
    clean: dict[str, Any] = {}
    for name, value in metadata.items():
        value = _finite(value)
        if value is _DROP:
            continue
        bounds = METADATA_RANGES.get(name)
        if bounds is not None and _is_number(value) and not bounds[0] <= value <= bounds[1]:
            continue
        clean[name] = value
    return clean


_DROP = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else _DROP
    if isinstance(value, dict):
        return {k: v for k, v in ((k, _finite(v)) for k, v in value.items()) if v is not _DROP}
    if isinstance(value, list | tuple):
        return [v for v in (_finite(v) for v in value) if v is not _DROP]
    return value


@dataclass
class HubCounters:
    """Totals that outlive the streams, for /metrics."""

    refused_pushes: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    dropped_frames: int = 0
    streams_started: int = 0
    takeovers: int = 0
    # The latest refused push per stream name (wall time, reason), so a waiting player can
    # say why nothing plays; bounded, oldest forgotten first.
    last_refusals: dict[StreamKey, tuple[float, str]] = field(default_factory=dict)

    def refused(self, reason: str, key: StreamKey | None = None) -> None:
        self.refused_pushes[reason] = self.refused_pushes.get(reason, 0) + 1
        if key is not None:
            self.last_refusals.pop(key, None)
            self.last_refusals[key] = (time.time(), reason)
            while len(self.last_refusals) > MAX_REMEMBERED_REFUSALS:
                del self.last_refusals[next(iter(self.last_refusals))]


class Hub:
    def __init__(
        self,
        player_queue_seconds: float = 4.0,
        *,
        takeover: TakeoverPolicy | str = TakeoverPolicy.STALE,
        stale_seconds: float = 3.0,
    ) -> None:
        self.max_buffer_ms = int(player_queue_seconds * 1000)
        self.takeover = TakeoverPolicy(takeover)
        self.stale_seconds = stale_seconds
        self._streams: dict[StreamKey, Stream] = {}
        self.counters = HubCounters()
        self.on_stream_opened: list[StreamListener] = []
        self.on_stream_closed: list[StreamListener] = []
        self._closing: set[asyncio.Task[None]] = set()

    def open_publisher(
        self,
        key: StreamKey,
        query: dict[str, str],
        remote: str,
        *,
        on_end: PublisherEnded | None = None,
    ) -> Stream:
        """The stream ``key`` with this publisher holding it (``stream.publisher``): a new
        stream, or a live one taken over under the takeover policy; ``on_end(reason)`` is
        called if a kick or a takeover ends the hold. Raises StreamBusyError otherwise."""
        current = self._streams.get(key)
        if current is not None:
            refusal = self._takeover_refusal(current, query, remote)
            if refusal is not None:
                self.counters.refused("busy", key)
                raise StreamBusyError(f"stream {key} already has a publisher ({refusal})")
            silent = time.monotonic() - current.last_input
            previous = current._take_over(Publisher(current, remote, on_end, True), query)
            self.counters.takeovers += 1
            log.info(
                "stream %s taken over by %s (previous publisher %s silent for %.1f s)",
                key,
                remote,
                previous.remote,
                silent,
            )
            previous._end(f"{key} taken over by a new publisher from {remote}")
            return current
        stream = Stream(self, key, query, remote, self.max_buffer_ms)
        stream.publisher.on_end = on_end
        self._streams[key] = stream
        self.counters.streams_started += 1
        log.info("stream %s published from %s", key, remote)
        for listener in self.on_stream_opened:
            listener(stream)
        return stream

    def _takeover_refusal(self, stream: Stream, query: dict[str, str], remote: str) -> str | None:
        """Why a new publish may not take ``stream`` over (None: it may)."""
        if self.takeover is TakeoverPolicy.NEVER:
            return "publisher takeover is off"
        if stream.publisher.remote == remote:
            return "the same connection publishes it"
        if query.get("roirecognition") != stream.query.get("roirecognition"):
            # Another template is another output: the live one cannot carry on as it is.
            return "the new publish names another ROI template"
        if self.takeover is TakeoverPolicy.ALWAYS:
            return None
        silent = time.monotonic() - stream.last_input
        if silent < self.stale_seconds:
            return f"it sent media {silent:.1f} s ago"
        return None

    def get(self, key: StreamKey) -> Stream | None:
        return self._streams.get(key)

    def streams(self) -> list[Stream]:
        return sorted(self._streams.values(), key=lambda s: s.key)

    def close_stream(self, stream: Stream) -> None:
        """The publisher left: end the source, let the processor flush, then end the output."""
        if stream.closed:
            return
        stream.closed = True
        if self._streams.get(stream.key) is stream:
            del self._streams[stream.key]
        self.counters.bytes_in += stream.source.bytes
        stream.source.end()
        for listener in self.on_stream_closed:
            listener(stream)
        processor = stream.processor
        if processor is None:
            self._end_output(stream)
            return
        task = asyncio.get_running_loop().create_task(self._finish(stream, processor))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _finish(self, stream: Stream, processor: Processor) -> None:
        try:
            await processor.finish()
        except Exception:
            log.exception("the processor of %s failed while flushing", stream.key)
        finally:
            self._end_output(stream)

    def _end_output(self, stream: Stream) -> None:
        stream.output.end()
        self.counters.dropped_frames += stream.output.dropped_frames
        self.counters.bytes_out += stream.output.bytes_out
        log.info("stream %s ended", stream.key)

    async def wait_closed(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


__all__ = [
    "CodecInfo",
    "Hub",
    "Processor",
    "Publisher",
    "Stream",
    "StreamBusyError",
    "StreamKey",
    "StreamStats",
    "Subscription",
    "TakeoverPolicy",
    "Track",
]
