"""The playing side of an RTMP connection, sans-IO (bytes in, events out), for edge pulls.

``RtmpPlaySession(app, tc_url, name)`` starts the handshake; ``receive_data`` consumes what the
socket read and returns events; ``data_to_send`` hands out what to write. It goes through
connect, createStream and play as FFmpeg does, says ``PlayStarted`` once the server answers
``NetStream.Play.Start``, then ``MediaReceived``/``MetadataReceived`` (the server session's own
event types, timestamps unwrapped the same way) until ``PlayEnded``. Pings and
acknowledgements are answered on its own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any

from app.rtmp import amf0
from app.rtmp.chunk import ChunkError, ChunkReader, ChunkWriter, MessageType, RtmpMessage
from app.rtmp.handshake import ClientHandshake, HandshakeError
from app.rtmp.session import (
    CSID_COMMAND,
    CSID_STREAM,
    DATA_KIND,
    MEDIA_KINDS,
    OUT_CHUNK_SIZE,
    UC_PING_REQUEST,
    UC_PING_RESPONSE,
    UC_SET_BUFFER_LENGTH,
    UC_STREAM_EOF,
    MediaReceived,
    MetadataReceived,
    TimestampUnwrapper,
)

FLASH_VERSION = "LNX 9,0,124,2 (roi-relay edge)"
_TXN_CONNECT = 1.0
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


class RtmpPlaySession:
    def __init__(self, app: str, tc_url: str, name: str) -> None:
        self.app = app
        self.tc_url = tc_url
        self.name = name
        self._handshake = ClientHandshake()
        self._reader = ChunkReader()
        self._writer = ChunkWriter()
        self._out = bytearray(self._handshake.data_to_send())
        self._phase = _Phase.HANDSHAKE
        self._clock = TimestampUnwrapper()
        self.stream_id = 0

    @property
    def phase(self) -> str:
        return self._phase.value

    @property
    def ended(self) -> bool:
        return self._phase is _Phase.ENDED

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[PlayEvent]:
        if self._phase is _Phase.ENDED:
            return []
        events: list[PlayEvent] = []
        if not data:
            self._end("the origin closed the connection", events)
            return events
        try:
            if self._phase is _Phase.HANDSHAKE:
                data = self._handshake.receive_data(data)
                self._out += self._handshake.data_to_send()
                if not self._handshake.complete:
                    return events
                self._start_connect()
            for message in self._reader.receive_data(data):
                self._handle(message, events)
                if self.ended:
                    break
            ack = self._reader.take_ack()
            if ack is not None:
                self._out += self._writer.acknowledgement(ack)
        except (HandshakeError, ChunkError, amf0.AmfError) as exc:
            self._end(f"protocol error: {exc}", events)
        return events

    def _end(self, reason: str, events: list[PlayEvent], refused: bool = False) -> None:
        if self._phase is not _Phase.ENDED:
            self._phase = _Phase.ENDED
            events.append(PlayEnded(reason, refused))

    def _start_connect(self) -> None:
        self._phase = _Phase.CONNECTING
        self._out += self._writer.set_chunk_size(OUT_CHUNK_SIZE)
        self._writer.chunk_size = OUT_CHUNK_SIZE
        self._command(
            0,
            "connect",
            _TXN_CONNECT,
            {"app": self.app, "flashVer": FLASH_VERSION, "tcUrl": self.tc_url, "fpad": False},
        )

    def _handle(self, msg: RtmpMessage, events: list[PlayEvent]) -> None:
        kind = msg.type_id
        if kind == MessageType.COMMAND_AMF0:
            self._on_command(amf0.decode(msg.payload), events)
        elif kind == MessageType.COMMAND_AMF3:
            self._on_command(amf0.decode(msg.payload[1:]), events)
        elif kind == MessageType.USER_CONTROL and len(msg.payload) >= 6:
            event = int.from_bytes(msg.payload[:2], "big")
            if event == UC_PING_REQUEST:
                self._out += self._writer.user_control(UC_PING_RESPONSE, msg.payload[2:6])
            elif event == UC_STREAM_EOF and self._phase is _Phase.PLAYING:
                self._end("the stream ended at the origin", events)
        elif kind in MEDIA_KINDS and self._phase is _Phase.PLAYING and msg.payload:
            ts = self._clock.extend(msg.timestamp)
            events.append(MediaReceived(msg.stream_id, kind, ts, msg.payload))
        elif kind == DATA_KIND and self._phase is _Phase.PLAYING:
            self._on_data(msg, events)

    def _on_data(self, msg: RtmpMessage, events: list[PlayEvent]) -> None:
        first, offset = amf0.decode_value(msg.payload)
        if first != "onMetaData":
            return  # |RtmpSampleAccess and the like
        values = amf0.decode(msg.payload[offset:])
        metadata = values[0] if values and isinstance(values[0], dict) else {}
        ts = self._clock.extend(msg.timestamp)
        events.append(MetadataReceived(msg.stream_id, dict(metadata), bytes(msg.payload), ts))

    def _on_command(self, values: list[Any], events: list[PlayEvent]) -> None:
        if not values or not isinstance(values[0], str):
            raise amf0.AmfError("command message without a command name")
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        info = values[3] if len(values) > 3 else None
        if name == "_result" and txn == _TXN_CONNECT and self._phase is _Phase.CONNECTING:
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

    def _command(self, stream_id: int, name: str, txn: float, *args: Any) -> None:
        csid = CSID_COMMAND if stream_id == 0 else CSID_STREAM
        self._out += self._writer.write(
            csid, MessageType.COMMAND_AMF0, stream_id, 0, amf0.encode(name, txn, *args)
        )

    def close(self) -> None:
        if self._phase is _Phase.PLAYING:
            self._command(0, "deleteStream", 0.0, None, float(self.stream_id))
        self._phase = _Phase.ENDED


__all__ = ["PlayEnded", "PlayEvent", "PlayStarted", "RtmpPlaySession"]
