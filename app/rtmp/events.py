"""What an RTMP server session tells its owner (``RtmpServerSession.receive_data``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    pass


@dataclass(frozen=True, slots=True)
class Connected(Event):
    app: str
    tc_url: str
    params: dict[str, Any]  # the connect command object as sent


@dataclass(frozen=True, slots=True)
class PublishRequested(Event):
    """Answer with ``accept_publish`` or ``refuse_publish`` (passing ``request``)."""

    stream_id: int
    app: str
    name: str
    query: dict[str, str]
    publish_type: str  # "live", "record" or "append"
    # Which request this is: the peer may withdraw it (closeStream) and ask again on the same
    # stream before its owner answers, and an answer must reach the request it was meant for.
    request: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class PlayRequested(Event):
    """Answer with ``accept_play`` or ``refuse_play`` (passing ``request``)."""

    stream_id: int
    app: str
    name: str
    query: dict[str, str]
    request: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class MediaReceived(Event):
    stream_id: int
    kind: int  # 8 audio, 9 video (FLV tag types)
    timestamp: int  # ms; RTMP's 32-bit timestamps unwrapped, so it keeps growing past 2^32
    payload: bytes  # the FLV tag body, untouched


@dataclass(frozen=True, slots=True)
class MetadataReceived(Event):
    stream_id: int
    metadata: dict[str, Any]
    tag_payload: bytes  # AMF0 "onMetaData" + object, as an FLV script-data tag body
    timestamp: int


@dataclass(frozen=True, slots=True)
class Unpublished(Event):
    stream_id: int


@dataclass(frozen=True, slots=True)
class PlayStopped(Event):
    stream_id: int


@dataclass(frozen=True, slots=True)
class RequestRefused(Event):
    """The session refused a publish/play itself (a name it cannot use); after a refused
    publish it wants to close (``should_close``)."""

    stream_id: int
    action: str  # "publish" or "play"
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolError(Event):
    """The connection cannot go on; its owner should flush ``data_to_send`` and close."""

    reason: str


@dataclass(frozen=True, slots=True)
class Closed(Event):
    pass
