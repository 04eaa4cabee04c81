"""The playing side of an RTMP connection, sans-IO (bytes in, events out), for edge pulls.

``RtmpPlaySession(app, tc_url, name)`` starts the handshake; ``receive_data`` consumes what the
socket read and returns events; ``data_to_send`` hands out what to write. It goes through
connect, createStream and play as FFmpeg does, says ``PlayStarted`` once the server answers
``NetStream.Play.Start``, then ``MediaReceived``/``MetadataReceived`` (the server session's own
event types, timestamps unwrapped the same way) until ``PlayEnded``. Pings and
acknowledgements are answered by the connection code it shares with the publishing side
(app/rtmp/client_connection.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any

from app.rtmp import amf0
from app.rtmp.chunk import ChunkError, RtmpMessage
from app.rtmp.client_connection import TXN_CONNECT, ClientConnection
from app.rtmp.handshake import HandshakeError
from app.rtmp.session import (
    DATA_KIND,
    MEDIA_KINDS,
    UC_SET_BUFFER_LENGTH,
    UC_STREAM_EOF,
    MediaReceived,
    MetadataReceived,
    TimestampUnwrapper,
)

FLASH_VERSION = "LNX 9,0,124,2 (roi-relay edge)"
_TXN_CREATE_STREAM = 2.0


@dataclass(frozen=True, slots=True)
class PlayStarted:
    stream_id: int


@dataclass(frozen=True, slots=True)
class PlayEnded:
    """The stream ended (unpublished), was refused, or the connection broke: no more media."""

    reason: str
    refused: bool = False


PlayEvent = PlayStarted | PlayEnded | MediaReceived | MetadataReceived


class _Phase(Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    CREATING_STREAM = "creating stream"
    PLAY_REQUESTED = "play requested"
    PLAYING = "playing"
    ENDED = "ended"


class RtmpPlaySession(ClientConnection):
    def __init__(self, app: str, tc_url: str, name: str) -> None:
        super().__init__(app, tc_url, name)
        self._phase = _Phase.HANDSHAKE
        self._clock = TimestampUnwrapper()

    @property
    def phase(self) -> str:
        return self._phase.value

    @property
    def ended(self) -> bool:
        return self._phase is _Phase.ENDED

    def receive_data(self, data: bytes) -> list[PlayEvent]:
        if self._phase is _Phase.ENDED:
            return []
        events: list[PlayEvent] = []
        if not data:
            self._end("the origin closed the connection", events)
            return events
        try:
            self._feed(data, events)
        except (HandshakeError, ChunkError, amf0.AmfError) as exc:
            self._end(f"protocol error: {exc}", events)
        return events

    def _end(self, reason: str, events: list[PlayEvent], refused: bool = False) -> None:
        if self._phase is not _Phase.ENDED:
            self._phase = _Phase.ENDED
            events.append(PlayEnded(reason, refused))

    def _connect_object(self) -> dict[str, Any]:
        return {"app": self.app, "flashVer": FLASH_VERSION, "tcUrl": self.tc_url, "fpad": False}

    def _connect_sent(self) -> None:
        self._phase = _Phase.CONNECTING

    def _on_user_control(self, event: int, data: bytes, events: list[PlayEvent]) -> None:
        if event == UC_STREAM_EOF and self._phase is _Phase.PLAYING:
            self._end("the stream ended at the origin", events)

    def _on_message(self, msg: RtmpMessage, events: list[PlayEvent]) -> None:
        if self._phase is not _Phase.PLAYING:
            return
        if msg.type_id in MEDIA_KINDS and msg.payload:
            ts = self._clock.extend(msg.timestamp)
            events.append(MediaReceived(msg.stream_id, msg.type_id, ts, msg.payload))
        elif msg.type_id == DATA_KIND:
            first, offset = amf0.decode_value(msg.payload)
            if first != "onMetaData":
                return  # |RtmpSampleAccess and the like
            values = amf0.decode(msg.payload[offset:])
            metadata = values[0] if values and isinstance(values[0], dict) else {}
            ts = self._clock.extend(msg.timestamp)
            events.append(MetadataReceived(msg.stream_id, dict(metadata), bytes(msg.payload), ts))

    def _on_command(self, name: str, txn: float, info: Any, events: list[PlayEvent]) -> None:
        if self._phase is _Phase.ENDED:
            return
        if name == "_result" and txn == TXN_CONNECT and self._phase is _Phase.CONNECTING:
            self._phase = _Phase.CREATING_STREAM
            self._command(0, "createStream", _TXN_CREATE_STREAM, None)
        elif (
            name == "_result"
            and txn == _TXN_CREATE_STREAM
            and self._phase is _Phase.CREATING_STREAM
        ):
            if not isinstance(info, float):
                raise amf0.AmfError("createStream answered without a stream id")
            self.stream_id = int(info)
            self._phase = _Phase.PLAY_REQUESTED
            self._command(self.stream_id, "play", 0.0, None, self.name, -1000.0)
            self._out += self._writer.user_control(
                UC_SET_BUFFER_LENGTH, struct.pack(">II", self.stream_id, 1000)
            )
        elif name == "_error":
            self._end(f"refused: {info!r}", events, refused=True)
        elif name == "onStatus" and isinstance(info, dict):
            code = str(info.get("code", ""))
            if code == "NetStream.Play.Start" and self._phase is _Phase.PLAY_REQUESTED:
                self._phase = _Phase.PLAYING
                events.append(PlayStarted(self.stream_id))
            elif code in ("NetStream.Play.UnpublishNotify", "NetStream.Play.Stop"):
                self._end("the stream ended at the origin", events)
            elif info.get("level") == "error":
                self._end(f"{code}: {info.get('description', '')}", events, refused=True)

    def close(self) -> None:
        if self._phase is _Phase.PLAYING:
            self._command(0, "deleteStream", 0.0, None, float(self.stream_id))
        self._phase = _Phase.ENDED


__all__ = ["PlayEnded", "PlayEvent", "PlayStarted", "RtmpPlaySession"]
