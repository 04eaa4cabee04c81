"""The per-frame ROI feed: each video frame's region JSON (``MediaPacket.roi``) as it goes out.

Transport-free: :class:`RoiFeed` subscribes to a stream's output and yields documents; the
WebSocket endpoint (app/api/roi_feed.py) only sends them. The feed starts live: the cached GOP
a subscription begins with is the past, and its regions would arrive in a burst.
"""

from __future__ import annotations

from types import TracebackType

from app.hub import Stream
from app.media.flv import TagType


class RoiFeed:
    """One listener's feed of ROI documents; use as a context manager (or call close)."""

    def __init__(self, stream: Stream, name: str = "roi-feed") -> None:
        self._sub = stream.output.subscribe(name)
        while self._sub.get_nowait() is not None:
            pass

    async def next(self) -> str | None:
        """The next frame's document, or None once the stream has ended."""
        while (packet := await self._sub.get()) is not None:
            if packet.kind is TagType.VIDEO and packet.roi is not None:
                return packet.roi
        return None

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> RoiFeed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["RoiFeed"]
