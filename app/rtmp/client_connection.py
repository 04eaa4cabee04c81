"""What every client side of an RTMP connection does alike, sans-IO: the handshake, chunk
framing both ways, ``connect``, acknowledgements and ping answers, and command messages.

The publishing session (app/rtmp/client.py, for forwarding) and the playing session
(app/rtmp/play_client.py, for edge pulls) build on it and add only their own commands and
events.
"""

from __future__ import annotations

from typing import Any

from app.rtmp import amf0
from app.rtmp.chunk import ChunkReader, ChunkWriter, MessageType, RtmpMessage
from app.rtmp.handshake import ClientHandshake
from app.rtmp.session import (
    CSID_COMMAND,
    CSID_STREAM,
    OUT_CHUNK_SIZE,
    UC_PING_REQUEST,
    UC_PING_RESPONSE,
)

TXN_CONNECT = 1.0


class ClientConnection:
    """Subclasses answer commands (``_on_command``) and other messages (``_on_message``,
    ``_on_user_control``); ``_feed`` raises HandshakeError, ChunkError or AmfError on bytes
    that cannot be an RTMP server's."""

    def __init__(self, app: str, tc_url: str, name: str) -> None:
        self.app = app
        self.tc_url = tc_url
        self.name = name  # stream name with its query, as the server's URL rules read it
        self._handshake = ClientHandshake()
        self._reader = ChunkReader()
        self._writer = ChunkWriter()
        self._out = bytearray(self._handshake.data_to_send())
        self.stream_id = 0

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _feed(self, data: bytes, events: list[Any]) -> None:
        if not self._handshake.complete:
            data = self._handshake.receive_data(data)
            self._out += self._handshake.data_to_send()
            if not self._handshake.complete:
                return
            self._out += self._writer.set_chunk_size(OUT_CHUNK_SIZE)
            self._writer.chunk_size = OUT_CHUNK_SIZE
            self._command(0, "connect", TXN_CONNECT, self._connect_object())
            self._connect_sent()
        for message in self._reader.receive_data(data):
            self._handle(message, events)
        ack = self._reader.take_ack()
        if ack is not None:
            self._out += self._writer.acknowledgement(ack)

    def _connect_object(self) -> dict[str, Any]:
        return {"app": self.app, "tcUrl": self.tc_url}

    def _connect_sent(self) -> None:
        """Called once ``connect`` is queued."""

    def _handle(self, msg: RtmpMessage, events: list[Any]) -> None:
        kind = msg.type_id
        if kind in (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3):
            payload = msg.payload if kind == MessageType.COMMAND_AMF0 else msg.payload[1:]
            values = amf0.decode(payload)
            if not values or not isinstance(values[0], str):
                raise amf0.AmfError("command message without a command name")
            txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
            info = values[3] if len(values) > 3 else None
            self._on_command(values[0], txn, info, events)
        elif kind == MessageType.USER_CONTROL and len(msg.payload) >= 6:
            event = int.from_bytes(msg.payload[:2], "big")
            if event == UC_PING_REQUEST:
                self._out += self._writer.user_control(UC_PING_RESPONSE, msg.payload[2:6])
            else:
                self._on_user_control(event, msg.payload[2:], events)
        else:
            self._on_message(msg, events)

    def _on_command(self, name: str, txn: float, info: Any, events: list[Any]) -> None:
        raise NotImplementedError

    def _on_user_control(self, event: int, data: bytes, events: list[Any]) -> None:
        """Stream begin/EOF and the like; nothing to answer by default."""

    def _on_message(self, msg: RtmpMessage, events: list[Any]) -> None:
        """Window size, peer bandwidth, acknowledgements, media: nothing by default."""

    def _command(self, stream_id: int, name: str, txn: float, *args: Any) -> None:
        csid = CSID_COMMAND if stream_id == 0 else CSID_STREAM
        self._out += self._writer.write(
            csid, MessageType.COMMAND_AMF0, stream_id, 0, amf0.encode(name, txn, *args)
        )


__all__ = ["TXN_CONNECT", "ClientConnection"]
