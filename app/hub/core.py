"""The hub: which streams are live, who publishes each, and the totals that outlive them."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum

from app.hub.stream import (
    Processor,
    Publisher,
    PublisherEnded,
    Stream,
    StreamBusyError,
    StreamKey,
    StreamListener,
)

log = logging.getLogger("app.hub")

# The latest refused push per stream name is kept for this many names (for waiting players).
MAX_REMEMBERED_REFUSALS = 1000


class TakeoverPolicy(StrEnum):
    """When a new publish of a live name replaces the publisher it has."""

    STALE = "stale"  # only one that has sent nothing for a while (a dropped network)
    ALWAYS = "always"
    NEVER = "never"


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
        write_merge_ms: float = 0.0,
    ) -> None:
        self.max_buffer_ms = int(player_queue_seconds * 1000)
        self.write_merge_ms = write_merge_ms
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
            previous = current.take_over(Publisher(current, remote, on_end, True), query)
            self.counters.takeovers += 1
            log.info(
                "stream %s taken over by %s (previous publisher %s silent for %.1f s)",
                key,
                remote,
                previous.remote,
                silent,
            )
            previous.end(f"{key} taken over by a new publisher from {remote}")
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
