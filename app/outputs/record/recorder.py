"""One stream's recording session: a hub subscription on the loop, a writer thread on disk.

The loop side reads the stream's output track (what players get: ROI-encoded when applied,
audio included) through an internal hub subscription and hands packets to the writer thread
through a bounded queue. When the thread falls behind (a slow disk), the queue fills, and
the loop side drops video up to the next keyframe and counts it: the live stream is never
slowed. The thread cuts segments at keyframes by duration, keeps the ROI sidecar, applies
retention after each segment and stops the recording (never the stream) when the disk fails
or runs low. Results go back to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from app.hub import Stream, StreamKey, Subscription
from app.media.flv import TagType
from app.media.packet import MediaPacket
from app.outputs.record.retention import Retention, apply_retention
from app.outputs.record.segment import Segment, SegmentError, SegmentSummary

log = logging.getLogger("app.outputs.record")

QUEUE_PACKETS = 1500  # about 30 s of 25 fps video with audio
DISK_CHECK_SECONDS = 1.0
_BREAK = "break"  # the publisher left: close the segment, keep the session
_STOP = "stop"


@dataclass
class RecorderStatus:
    session: str
    state: str = "recording"  # recording | waiting (publisher away) | stopped | failed
    segments: int = 0
    bytes: int = 0
    dropped_frames: int = 0
    error: str | None = None
    current: str | None = None  # id of the segment being written

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "state": self.state,
            "segments": self.segments,
            "bytes": self.bytes,
            "dropped_frames": self.dropped_frames,
            "error": self.error,
            "current": self.current,
        }


@dataclass
class RecorderConfig:
    session_dir: Path
    file_format: str  # mp4 | flv
    segment_ms: int
    min_free_bytes: int
    retention: Retention


SegmentListener = Callable[[SegmentSummary], None]


@dataclass
class _WriterState:
    metadata: MediaPacket | None = None
    video_header: MediaPacket | None = None
    audio_header: MediaPacket | None = None
    segment: Segment | None = None
    next_index: int = 1
    header_changed: bool = False
    last_disk_check: float = field(default_factory=time.monotonic)


class StreamRecorder:
    def __init__(
        self,
        key: StreamKey,
        session: str,
        config: RecorderConfig,
        on_segment: SegmentListener,
        on_failed: Callable[[StreamRecorder, str], None],
    ) -> None:
        self.key = key
        self.config = config
        self.status = RecorderStatus(session=session)
        self._on_segment = on_segment
        self._on_failed = on_failed
        self._loop = asyncio.get_running_loop()
        self._queue: queue.Queue[MediaPacket | str] = queue.Queue(QUEUE_PACKETS)
        self._skipping = False
        # Video frames skipped: by this recorder's queue, and by the hub subscriptions it
        # had (both mean the writer fell behind the stream).
        self._dropped_here = 0
        self._dropped_hub = 0
        self._subscription: Subscription | None = None
        self._pump: asyncio.Task[None] | None = None
        self._stream: Stream | None = None
        config.session_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._write_loop, name=f"record {key}", daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self.status.state in ("stopped", "failed")

    # ------------------------------------------------------------------ loop side

    def attach(self, stream: Stream) -> None:
        """Records ``stream`` (a new publisher or a reconnect: a new segment either way)."""
        if self.stopped:
            return
        self.detach()
        self._stream = stream
        self.status.state = "recording"
        subscription = stream.output.subscribe(f"recorder {stream.key}", internal=True)
        self._pump = self._loop.create_task(self._feed(subscription))

    def detach(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None

    def refresh(self) -> RecorderStatus:
        sub = self._subscription
        live = sub.dropped_frames if sub is not None else 0
        self.status.dropped_frames = self._dropped_here + self._dropped_hub + live
        return self.status

    async def _feed(self, subscription: Subscription) -> None:
        self._subscription = subscription
        try:
            while True:
                packet = await subscription.get()
                if packet is None:
                    break
                self._offer(packet)
        finally:
            self._dropped_hub += subscription.dropped_frames
            self._subscription = None
            subscription.close()
            self._put(_BREAK)
            if not self.stopped:
                self.status.state = "waiting"

    def _offer(self, packet: MediaPacket) -> None:
        if self._skipping:
            if not (packet.kind is TagType.VIDEO and packet.keyframe) or self._queue.full():
                if packet.kind is TagType.VIDEO and not packet.sequence_header:
                    self._dropped_here += 1
                return
            self._skipping = False
            log.info("recording %s caught up: resumed at a keyframe", self.key)
        try:
            self._queue.put_nowait(packet)
        except queue.Full:
            self._skipping = True
            if packet.kind is TagType.VIDEO:
                self._dropped_here += 1
            log.warning("recording %s fell behind the stream: skipping to a keyframe", self.key)

    def _put(self, item: str) -> None:
        """A control item; it waits for room only off the media path (a few ms at most)."""
        try:
            self._queue.put(item, timeout=2.0)
        except queue.Full:
            log.warning("recording %s: writer thread stuck, %s not delivered", self.key, item)

    def stop(self) -> None:
        self.detach()
        if not self.stopped:
            self.status.state = "stopped"
        self._put(_STOP)

    async def wait_stopped(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self._thread.join, timeout)

    def _report_segment(self, summary: SegmentSummary) -> None:
        if self.status.current == f"{self.status.session}-{summary.path.stem}":
            self.status.current = None
        self.status.segments += 1
        self.status.bytes += summary.bytes
        self._on_segment(summary)

    def _report_failure(self, reason: str) -> None:
        self.detach()
        self.status.state = "failed"
        self.status.error = reason
        self.status.current = None
        self._on_failed(self, reason)

    # ------------------------------------------------------------------ writer thread

    def _write_loop(self) -> None:
        state = _WriterState()
        try:
            while True:
                item = self._queue.get()
                if item == _STOP:
                    break
                if item == _BREAK:
                    self._close_segment(state)
                    continue
                assert isinstance(item, MediaPacket)
                self._write(state, item)
        except (OSError, av.FFmpegError, SegmentError) as exc:
            if state.segment is not None:
                state.segment.abort()
                state.segment = None
            reason = f"{type(exc).__name__}: {exc}"
            log.error("recording %s stopped (the live stream goes on): %s", self.key, reason)
            self._loop.call_soon_threadsafe(self._report_failure, reason)
            return
        self._close_segment(state)

    def _write(self, state: _WriterState, packet: MediaPacket) -> None:
        if packet.kind is TagType.DATA:
            state.metadata = packet
            return
        if packet.sequence_header:
            if packet.kind is TagType.VIDEO:
                if state.video_header is not None and state.video_header.payload != packet.payload:
                    state.header_changed = True
                state.video_header = packet
            else:
                state.audio_header = packet
            return
        segment = state.segment
        if packet.kind is TagType.VIDEO and packet.keyframe:
            self._check_disk(state)
            if segment is not None and (
                state.header_changed or packet.timestamp - segment.base_ms >= self.config.segment_ms
            ):
                self._close_segment(state)
                segment = None
            if segment is None:
                segment = self._open_segment(state, packet)
                return
        if segment is not None:
            segment.write(packet)

    def _open_segment(self, state: _WriterState, keyframe: MediaPacket) -> Segment | None:
        if state.video_header is None:
            return None
        name = f"{state.next_index:05d}.{self.config.file_format}"
        state.next_index += 1
        state.header_changed = False
        path = self.config.session_dir / name
        state.segment = Segment(
            path, keyframe, state.video_header, state.audio_header, state.metadata
        )
        segment_id = f"{self.status.session}-{path.stem}"
        self._loop.call_soon_threadsafe(setattr, self.status, "current", segment_id)
        log.info("recording %s: segment %s", self.key, path)
        return state.segment

    def _close_segment(self, state: _WriterState) -> None:
        segment = state.segment
        if segment is None:
            return
        state.segment = None
        summary = segment.close()
        info = {
            "duration_ms": summary.duration_ms,
            "video_frames": summary.video_frames,
            "audio_frames": summary.audio_frames,
            "bytes": summary.bytes,
            "closed_at": time.time(),
        }
        summary.path.with_suffix(".json").write_text(json.dumps(info))
        apply_retention(self.config.session_dir.parent, self.config.retention)
        self._loop.call_soon_threadsafe(self._report_segment, summary)

    def _check_disk(self, state: _WriterState) -> None:
        now = time.monotonic()
        if now - state.last_disk_check < DISK_CHECK_SECONDS and state.segment is not None:
            return
        state.last_disk_check = now
        free = shutil.disk_usage(self.config.session_dir).free
        if free < self.config.min_free_bytes:
            raise OSError(
                f"only {free // 2**20} MiB free on the recording disk "
                f"(minimum {self.config.min_free_bytes // 2**20} MiB)"
            )


__all__ = ["RecorderConfig", "RecorderStatus", "StreamRecorder"]
