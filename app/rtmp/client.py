"""The publishing side of an RTMP connection, sans-IO (bytes in, events out), for forwarding.

``RtmpPublishSession(app, tc_url, name)`` starts the handshake; ``receive_data`` consumes
what the socket read and returns events; ``data_to_send`` hands out what to write. It goes
through connect, releaseStream/FCPublish, createStream and publish as OBS and FFmpeg do, and
says ``Published`` once the server answers ``NetStream.Publish.Start``; from then on
``send_media`` queues FLV tag bodies. Pings and acknowledgements are answered on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from app.rtmp import amf0
from app.rtmp.chunk import ChunkError, MessageType
from app.rtmp.client_connection import TXN_CONNECT, ClientConnection
from app.rtmp.handshake import HandshakeError
from app.rtmp.session import CSID_AUDIO, CSID_STREAM, CSID_VIDEO, DATA_KIND

FLASH_VERSION = "FMLE/3.0 (compatible; roi-relay)"
_TXN_CREATE_STREAM = 4.0


@dataclass(frozen=True, slots=True)
class ClientEvent:
    pass


@dataclass(frozen=True, slots=True)
class Published(ClientEvent):
    stream_id: int


@dataclass(frozen=True, slots=True)
class PublishRefused(ClientEvent):
    """The server said no (bad name, auth, busy); the connection is of no further use."""

    code: str
    description: str


@dataclass(frozen=True, slots=True)
class ClientProtocolError(ClientEvent):
    reason: str


@dataclass(frozen=True, slots=True)
class ServerClosed(ClientEvent):
    pass


class _Phase(Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    CREATING_STREAM = "creating stream"
    PUBLISHING = "publish requested"
    PUBLISHED = "published"
    CLOSED = "closed"


class RtmpPublishSession(ClientConnection):
    def __init__(self, app: str, tc_url: str, name: str) -> None:
        super().__init__(app, tc_url, name)
        self._phase = _Phase.HANDSHAKE
        # Why the session cannot go on (refused, protocol error, server gone); None: fine.
        self.failure: str | None = None

    @property
    def published(self) -> bool:
        return self._phase is _Phase.PUBLISHED

    @property
    def phase(self) -> str:
        return self._phase.value

    # --------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        if self._phase is _Phase.CLOSED:
            return []
        if not data:
            self._phase = _Phase.CLOSED
            self.failure = self.failure or "destination closed the connection"
            return [ServerClosed()]
        events: list[ClientEvent] = []
        try:
            self._feed(data, events)
        except (HandshakeError, ChunkError, amf0.AmfError) as exc:
            self._phase = _Phase.CLOSED
            self.failure = f"protocol error: {exc}"
            events.append(ClientProtocolError(str(exc)))
        return events

    def _connect_object(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "type": "nonprivate",
            "flashVer": FLASH_VERSION,
            "tcUrl": self.tc_url,
        }

    def _connect_sent(self) -> None:
        self._phase = _Phase.CONNECTING

    def _on_command(self, name: str, txn: float, info: Any, events: list[ClientEvent]) -> None:
        if name == "_result" and txn == TXN_CONNECT and self._phase is _Phase.CONNECTING:
            self._phase = _Phase.CREATING_STREAM
            self._command(0, "releaseStream", 2.0, None, self.name)
            self._command(0, "FCPublish", 3.0, None, self.name)
            self._command(0, "createStream", _TXN_CREATE_STREAM, None)
        elif (
            name == "_result"
            and txn == _TXN_CREATE_STREAM
            and self._phase is _Phase.CREATING_STREAM
        ):
            if not isinstance(info, float):
                raise amf0.AmfError("createStream answered without a stream id")
            self.stream_id = int(info)
            self._phase = _Phase.PUBLISHING
            self._command(self.stream_id, "publish", 5.0, None, self.name, "live")
        elif name == "_error":
            self._refused(info, "NetConnection.Call.Failed", events)
        elif name == "onStatus" and isinstance(info, dict):
            code = str(info.get("code", ""))
            if code == "NetStream.Publish.Start" and self._phase is _Phase.PUBLISHING:
                self._phase = _Phase.PUBLISHED
                events.append(Published(self.stream_id))
            elif info.get("level") == "error":
                self._refused(info, code, events)

    def _refused(self, info: Any, code: str, events: list[ClientEvent]) -> None:
        if isinstance(info, dict):
            code = str(info.get("code") or code)
            description = str(info.get("description") or code)
        else:
            description = code
        self._phase = _Phase.CLOSED
        self.failure = f"publish refused: {code} {description}"
        events.append(PublishRefused(code, description))

    # --------------------------------------------------------------- output

    def send_media(self, kind: int, timestamp: int, payload: bytes) -> None:
        """Queues one FLV tag body (audio 8, video 9, script data 18) once published."""
        if self._phase is not _Phase.PUBLISHED:
            raise ValueError(f"not published (session is {self._phase.value})")
        if kind == DATA_KIND:
            # A publisher hands metadata to the server as @setDataFrame.
            body = amf0.encode("@setDataFrame") + payload
            self._out += self._writer.write(CSID_STREAM, kind, self.stream_id, timestamp, body)
            return
        csid = CSID_VIDEO if kind == MessageType.VIDEO else CSID_AUDIO
        self._out += self._writer.write(csid, kind, self.stream_id, timestamp, payload)

    def unpublish(self) -> None:
        if self._phase is _Phase.PUBLISHED:
            self._command(0, "FCUnpublish", 6.0, None, self.name)
            self._command(0, "deleteStream", 7.0, None, float(self.stream_id))
        self._phase = _Phase.CLOSED


__all__ = [
    "ClientEvent",
    "ClientProtocolError",
    "Published",
    "PublishRefused",
    "RtmpPublishSession",
    "ServerClosed",
]
