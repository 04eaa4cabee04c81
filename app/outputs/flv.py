"""HTTP-FLV: a subscription written as one endless FLV file."""

from __future__ import annotations

from collections.abc import AsyncIterator

from app.hub import Subscription
from app.media.flv import FLV_FILE_HEADER, flv_tag


async def flv_body(sub: Subscription) -> AsyncIterator[bytes]:
    """FLV header, then every packet as a tag; ends when the stream ends.

    Whatever is queued is sent as one chunk: a player that has fallen behind costs one write
    per wake-up instead of one per packet.
    """
    try:
        yield FLV_FILE_HEADER
        while True:
            packet = await sub.get()
            if packet is None:
                return
            parts = [flv_tag(packet.kind, packet.timestamp, packet.payload)]
            while (more := sub.get_nowait()) is not None:
                parts.append(flv_tag(more.kind, more.timestamp, more.payload))
            yield b"".join(parts)
    finally:
        sub.close()
