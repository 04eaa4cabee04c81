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

from app.hub.core import Hub, HubCounters, TakeoverPolicy
from app.hub.metadata import sanitized_metadata
from app.hub.stream import (
    CodecInfo,
    Processor,
    Publisher,
    Stream,
    StreamBusyError,
    StreamKey,
    StreamStats,
)
from app.hub.track import Subscription, Track

__all__ = [
    "CodecInfo",
    "Hub",
    "HubCounters",
    "Processor",
    "Publisher",
    "Stream",
    "StreamBusyError",
    "StreamKey",
    "StreamStats",
    "Subscription",
    "TakeoverPolicy",
    "Track",
    "sanitized_metadata",
]
