"""HLS: a track's packets cut into MPEG-TS segments at keyframes, served from memory.

Sans-IO core: :class:`HlsSegmenter` (packets in, finished segments out) and
:class:`HlsPlaylist` (sliding window, media playlist text). The asyncio layer
(:class:`HlsSession`, :class:`HlsService`) only moves packets from a hub subscription into
them and wakes up waiting playlist requests.

Choices, and why:

* Segments live in memory, not under ``data_dir``: a segment is needed for a few seconds,
  the window is small (``hls_window`` segments of ``hls_segment_seconds``, a few MB per stream
  at usual bitrates), and memory leaves nothing to clean up after a crash or on a read-only
  disk. Memory stays bounded: the window plus two retired segments (still fetchable by a
  player that read the playlist just before they slid out) plus one open segment, which is
  dropped if it grows past ``MAX_SEGMENT_BYTES`` without a keyframe to cut at.
* Muxing runs for every live stream from its first packet. It re-packs bytes and re-encodes
  nothing (about 150 us per 720p frame at 9 Mbit/s, under 0.5 % of a core at 30 fps:
  bench/hls_mux.py), and a player that arrives finds a full
  playlist at once: players start three target durations from the live edge, and Chrome's
  native HLS refuses a live playlist with fewer than three segments (RFC 8216 6.2.2 asks the
  server for three target durations too), so starting on the first request would make
  every first viewer wait for three new segments.
* Video and SEI pass through untouched (FLV AVCC to Annex-B only), so the per-frame ROI SEI
  reaches HLS players too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from app.hub import Hub, Stream, StreamKey
from app.media.flv import FlvError, TagType, VideoPacketType, parse_audio_tag, parse_video_tag
from app.media.nal import DecoderConfig
from app.media.packet import MediaPacket
from app.outputs.annexb import (
    VideoConfigError,
    access_unit,
    frame_nal_units,
    parse_video_config,
)
from app.outputs.mpegts import (
    AacConfig,
    AacConfigError,
    TsMuxer,
    adts_frame,
    parse_audio_specific_config,
)

log = logging.getLogger("app.outputs.hls")

MAX_SEGMENT_BYTES = 32 * 1024 * 1024
RETIRED_SEGMENTS_KEPT = 2
# A jump in the timeline bigger than this (or any step back of more than a second) ends the
# segment and marks a discontinuity instead of producing a segment with a bogus duration.
MAX_TIMESTAMP_GAP_MS = 10_000
DEFAULT_FRAME_MS = 40


@dataclass(frozen=True, slots=True)
class HlsSegment:
    sequence: int
    start_ms: int  # FLV timeline: DTS of the segment's first frame
    duration: float  # seconds
    data: bytes
    discontinuity: bool  # the timeline or the codec setup changed before this segment
    wall_time: float  # Unix time at which the relay got the segment's first frame


class HlsSegmenter:
    """Cuts a track into TS segments that each start with a keyframe (sans-IO).

    Audio-only tracks are cut by time on audio frames. Video codecs other than H.264/H.265
    and audio codecs other than AAC/MP3 are left out (reported in ``skipped``).
    """

    def __init__(self, target_seconds: float, max_segment_bytes: int = MAX_SEGMENT_BYTES) -> None:
        self.target_ms = max(1, int(target_seconds * 1000))
        self.max_segment_bytes = max_segment_bytes
        self.skipped: set[str] = set()
        self._muxer = TsMuxer()
        self._video: DecoderConfig | None = None
        self._video_fourcc: str | None = None
        self._audio_codec: str | None = None
        self._aac: AacConfig | None = None
        self._sequence = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._open = False
        self._start_ms = 0
        self._last_ms = 0
        self._last_gap_ms = DEFAULT_FRAME_MS
        self._wall_time = 0.0
        self._discontinuity = False

    @property
    def has_video(self) -> bool:
        return self._video is not None

    def feed(self, packet: MediaPacket, now: float) -> list[HlsSegment]:
        """Takes one packet; returns the segments it completed (zero, one or two)."""
        done: list[HlsSegment] = []
        try:
            if packet.kind is TagType.VIDEO:
                self._feed_video(packet, now, done)
            elif packet.kind is TagType.AUDIO:
                self._feed_audio(packet, now, done)
        except (FlvError, AacConfigError, ValueError) as exc:
            # One bad tag costs one frame, never the stream.
            log.warning("HLS: dropped a %s tag: %s", packet.kind.name.lower(), exc)
        if self._open and self._size > self.max_segment_bytes:
            log.warning("HLS: no keyframe within %d bytes: segment dropped", self._size)
            self._drop_open(discontinuity=True)
        return done

    def finish(self) -> HlsSegment | None:
        """Closes the open segment at the end of the stream."""
        if not self._open:
            return None
        return self._close(self._last_ms + self._last_gap_ms)

    # -- video --------------------------------------------------------------------------

    def _feed_video(self, packet: MediaPacket, now: float, done: list[HlsSegment]) -> None:
        if packet.sequence_header:
            self._set_video_config(packet.payload, done)
            return
        if self._video is None:
            return
        tag = parse_video_tag(packet.payload)
        if tag.codec != self._video_fourcc or tag.packet_type is not VideoPacketType.CODED_FRAMES:
            return  # end-of-sequence tags (flagged as keyframes in FLV) carry no picture
        dts = packet.timestamp
        self._check_timeline(dts, done)
        if packet.keyframe:
            if self._open and dts - self._start_ms >= self.target_ms:
                done.append(self._close(dts))
            if not self._open:
                self._begin(dts, now)
        if not self._open:
            return  # waiting for a keyframe to start a segment on
        nals = frame_nal_units(self._video, packet.payload)
        unit = access_unit(self._video, nals, packet.keyframe)
        pts = dts + tag.composition_time
        self._append(self._muxer.video(unit, pts * 90, dts * 90, packet.keyframe))
        self._advance(dts)

    def _set_video_config(self, payload: bytes, done: list[HlsSegment]) -> None:
        try:
            config = parse_video_config(payload)
        except VideoConfigError as exc:
            codec = parse_video_tag(payload).codec
            if codec not in self.skipped:
                log.warning("HLS: video left out: %s", exc)
            self.skipped.add(codec)
            config = None
        if config == self._video:
            return  # publishers resend identical headers; nothing changes
        if self._open:
            done.append(self._close(self._last_ms + self._last_gap_ms))
        if self._video is not None or self._sequence:
            self._discontinuity = True
        self._video = config
        self._video_fourcc = parse_video_tag(payload).codec if config is not None else None
        self._declare_streams()

    # -- audio --------------------------------------------------------------------------

    def _feed_audio(self, packet: MediaPacket, now: float, done: list[HlsSegment]) -> None:
        tag = parse_audio_tag(packet.payload)
        if packet.sequence_header:
            if tag.codec == "aac":
                self._aac = parse_audio_specific_config(packet.payload[tag.data_offset :])
                self._set_audio_codec("aac")
            return
        if tag.codec == "mp3":
            self._set_audio_codec("mp3")
            frame = packet.payload[tag.data_offset :]
        elif tag.codec == "aac" and self._aac is not None:
            frame = adts_frame(self._aac, packet.payload[tag.data_offset :])
        else:
            if tag.codec not in self.skipped:
                log.warning("HLS: audio codec %s left out", tag.codec)
                self.skipped.add(tag.codec)
            return
        ts = packet.timestamp
        if self._video is None:
            # Audio-only: audio frames set the timeline and the cuts.
            self._check_timeline(ts, done)
            if self._open and ts - self._start_ms >= self.target_ms:
                done.append(self._close(ts))
            if not self._open:
                self._begin(ts, now)
            self._append(self._muxer.audio(frame, ts * 90))
            self._advance(ts)
            return
        if self._open:
            self._append(self._muxer.audio(frame, ts * 90))

    def _set_audio_codec(self, codec: str) -> None:
        if codec != self._audio_codec:
            self._audio_codec = codec
            self._declare_streams()

    # -- segments -----------------------------------------------------------------------

    def _declare_streams(self) -> None:
        self._muxer.set_streams(self._video_fourcc, self._audio_codec)

    def _check_timeline(self, ts: int, done: list[HlsSegment]) -> None:
        if not self._open:
            return
        step = ts - self._last_ms
        if step < -1000 or step > MAX_TIMESTAMP_GAP_MS:
            log.info("HLS: timeline jumped by %d ms: discontinuity", step)
            done.append(self._close(self._last_ms + self._last_gap_ms))
            self._discontinuity = True

    def _begin(self, ts: int, now: float) -> None:
        self._open = True
        self._start_ms = self._last_ms = ts
        self._wall_time = now
        self._parts = [self._muxer.tables()]
        self._size = len(self._parts[0])

    def _append(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)

    def _advance(self, ts: int) -> None:
        if ts > self._last_ms:
            self._last_gap_ms = ts - self._last_ms
        self._last_ms = max(self._last_ms, ts)

    def _close(self, end_ms: int) -> HlsSegment:
        segment = HlsSegment(
            sequence=self._sequence,
            start_ms=self._start_ms,
            duration=max(end_ms - self._start_ms, 1) / 1000,
            data=b"".join(self._parts),
            discontinuity=self._discontinuity,
            wall_time=self._wall_time,
        )
        self._sequence += 1
        self._discontinuity = False
        self._open = False
        self._parts = []
        self._size = 0
        return segment

    def _drop_open(self, discontinuity: bool) -> None:
        self._open = False
        self._parts = []
        self._size = 0
        self._discontinuity = self._discontinuity or discontinuity


class HlsPlaylist:
    """The sliding window of segments and its media playlist (sans-IO)."""

    def __init__(self, window: int, target_seconds: float) -> None:
        self.window = window
        self.segments: deque[HlsSegment] = deque()
        self._retired: deque[HlsSegment] = deque()
        self.discontinuity_sequence = 0
        self.ended = False
        # EXT-X-TARGETDURATION may not shrink during a session: it only grows with a long GOP.
        self.target_duration = max(1, math.ceil(target_seconds))

    @property
    def media_sequence(self) -> int:
        return self.segments[0].sequence if self.segments else 0

    def add(self, segment: HlsSegment) -> None:
        self.segments.append(segment)
        self.target_duration = max(self.target_duration, round(segment.duration))
        while len(self.segments) > self.window:
            gone = self.segments.popleft()
            if self.segments[0].discontinuity:
                self.discontinuity_sequence += 1
            self._retired.append(gone)
            while len(self._retired) > RETIRED_SEGMENTS_KEPT:
                self._retired.popleft()

    def get(self, sequence: int) -> HlsSegment | None:
        for segment in (*self.segments, *self._retired):
            if segment.sequence == sequence:
                return segment
        return None

    def render(self, uri: Callable[[HlsSegment], str]) -> str:
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{self.target_duration}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
            f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}",
            "#EXT-X-INDEPENDENT-SEGMENTS",
        ]
        for index, segment in enumerate(self.segments):
            if segment.discontinuity and index > 0:
                lines.append("#EXT-X-DISCONTINUITY")
            stamp = datetime.fromtimestamp(segment.wall_time, UTC).isoformat(
                timespec="milliseconds"
            )
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{stamp.replace('+00:00', 'Z')}")
            lines.append(f"#EXTINF:{segment.duration:.3f},")
            lines.append(uri(segment))
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


class HlsSession:
    """One stream's HLS muxer: reads the stream's output track until the stream ends."""

    def __init__(self, stream: Stream, segment_seconds: float, window: int) -> None:
        self.stream = stream
        self.token = secrets.token_hex(4)
        self.segmenter = HlsSegmenter(segment_seconds)
        self.playlist = HlsPlaylist(window, segment_seconds)
        # Segments a playlist holds before it is served (see the module notes).
        self.ready_segments = min(3, window)
        self.finished_at: float | None = None
        self._changed = asyncio.Event()
        # Subscribed here, not in the task: nothing the stream sends may be missed.
        self._sub = stream.output.subscribe("hls", internal=True)
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def ready(self) -> bool:
        return len(self.playlist.segments) >= self.ready_segments or self.playlist.ended

    async def _run(self) -> None:
        try:
            while (packet := await self._sub.get()) is not None:
                for segment in self.segmenter.feed(packet, time.time()):
                    self._publish(segment)
            last = self.segmenter.finish()
            if last is not None:
                self._publish(last)
            self.playlist.ended = True
        finally:
            self._sub.close()
            self.finished_at = time.monotonic()
            self._changed.set()

    def _publish(self, segment: HlsSegment) -> None:
        self.playlist.add(segment)
        self._changed.set()

    async def wait_ready(self, timeout: float) -> bool:
        """Waits until the playlist can be served; False on timeout."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    def cancel(self) -> None:
        self._task.cancel()


class HlsService:
    """The HLS sessions of a hub: one per live stream, started when the stream opens."""

    def __init__(
        self,
        hub: Hub,
        segment_seconds: float = 1.0,
        window: int = 6,
        ended_linger: float | None = None,
    ) -> None:
        self.hub = hub
        self.segment_seconds = segment_seconds
        self.window = window
        # An ended playlist (with EXT-X-ENDLIST) stays readable a while so players see the end.
        self.ended_linger = (
            ended_linger if ended_linger is not None else max(30.0, 2 * segment_seconds * window)
        )
        self._sessions: dict[StreamKey, HlsSession] = {}
        hub.on_stream_opened.append(self._on_opened)
        hub.on_stream_closed.append(self._on_closed)

    def _on_opened(self, stream: Stream) -> None:
        self._sweep()
        self._start(stream)

    def _on_closed(self, stream: Stream) -> None:
        self._sweep()

    def _start(self, stream: Stream) -> HlsSession:
        current = self._sessions.get(stream.key)
        if current is not None:
            current.cancel()
        session = HlsSession(stream, self.segment_seconds, self.window)
        self._sessions[stream.key] = session
        return session

    def _sweep(self) -> None:
        now = time.monotonic()
        for key, session in list(self._sessions.items()):
            if session.finished_at is not None and now - session.finished_at > self.ended_linger:
                del self._sessions[key]

    def session(self, key: StreamKey) -> HlsSession | None:
        """The live stream's session (started late for a stream that opened before this
        service existed), or a recently ended one, or None."""
        self._sweep()
        live = self.hub.get(key)
        current = self._sessions.get(key)
        if live is not None and (current is None or current.stream is not live):
            current = self._start(live)
        return current

    def segment(self, key: StreamKey, token: str, sequence: int) -> HlsSegment | None:
        session = self._sessions.get(key)
        if session is None or session.token != token:
            return None
        return session.playlist.get(sequence)

    def close(self) -> None:
        for session in self._sessions.values():
            session.cancel()
        self._sessions.clear()
        if self._on_opened in self.hub.on_stream_opened:
            self.hub.on_stream_opened.remove(self._on_opened)
        if self._on_closed in self.hub.on_stream_closed:
            self.hub.on_stream_closed.remove(self._on_closed)
