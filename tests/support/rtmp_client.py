"""A minimal RTMP client built from the sans-IO pieces: for driving the server session in
unit tests, for hand-crafted (good or bad) traffic over real sockets, and as the cheap
asyncio player and publisher of bench/relay.py (hundreds of them in one process)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from app.rtmp import amf0
from app.rtmp.chunk import ChunkReader, ChunkWriter, MessageType, RtmpMessage
from app.rtmp.handshake import ClientHandshake
from app.rtmp.session import Event, RtmpServerSession


class ClientProtocol:
    """Client-side framing: build messages to send, parse what the server sent."""

    def __init__(
        self, *, digest: bool = False, scheme: int = 0, keep_messages: bool = True
    ) -> None:
        self.handshake = ClientHandshake(digest=digest, scheme=scheme)
        self.writer = ChunkWriter()
        self.reader = ChunkReader()
        # A long-running player hands messages on instead of keeping them.
        self.keep_messages = keep_messages
        self.messages: list[RtmpMessage] = []
        self._txn = 2.0  # 1 is connect
        self.last_txn = 0.0  # the transaction id of the latest command sent

    def feed(self, data: bytes) -> list[RtmpMessage]:
        """Takes bytes from the server; returns the messages they completed."""
        if not self.handshake.complete:
            data = self.handshake.receive_data(data)
            if not self.handshake.complete:
                return []
        if not data:
            return []
        messages = self.reader.receive_data(data)
        if self.keep_messages:
            self.messages.extend(messages)
        return messages

    def command(self, name: str, *args: Any, stream_id: int = 0, txn: float | None = None) -> bytes:
        if txn is None:
            txn = self._txn
            self._txn += 1
        self.last_txn = txn
        csid = 3 if stream_id == 0 else 8
        return self.writer.write(
            csid, MessageType.COMMAND_AMF0, stream_id, 0, amf0.encode(name, txn, *args)
        )

    def connect(self, app: str = "live", tc_url: str | None = None, **extra: Any) -> bytes:
        obj = {"app": app, "type": "nonprivate", "tcUrl": tc_url or f"rtmp://localhost/{app}"}
        obj.update(extra)
        return self.command("connect", obj, txn=1.0)

    def commands(self) -> list[list[Any]]:
        """Every command message received so far, decoded."""
        return [
            amf0.decode(m.payload) for m in self.messages if m.type_id == MessageType.COMMAND_AMF0
        ]

    def statuses(self) -> list[dict[str, Any]]:
        return [c[3] for c in self.commands() if c[0] == "onStatus"]

    def of_type(self, type_id: int) -> list[RtmpMessage]:
        return [m for m in self.messages if m.type_id == type_id]


class SessionDriver:
    """Connects a ClientProtocol to an in-memory RtmpServerSession."""

    def __init__(self, session: RtmpServerSession | None = None, **client: Any) -> None:
        self.session = session or RtmpServerSession(peer="test")
        self.client = ClientProtocol(**client)
        self.events: list[Event] = []

    def send(self, data: bytes) -> list[Event]:
        events = self.session.receive_data(data)
        self.events.extend(events)
        self.pull()
        return events

    def pull(self) -> None:
        self.client.feed(self.session.data_to_send())

    def do_handshake(self) -> list[Event]:
        events = self.send(self.client.handshake.data_to_send())
        assert self.client.handshake.complete
        return events + self.send(self.client.handshake.data_to_send())

    def connect(self, app: str = "live", **kwargs: Any) -> list[Event]:
        return self.do_handshake() + self.send(self.client.connect(app, **kwargs))

    def create_stream(self) -> int:
        self.send(self.client.command("createStream", None))
        result = [c for c in self.client.commands() if c[0] == "_result"][-1]
        return int(result[3])

    def publish(self, name: str, app: str = "live", **kwargs: Any) -> tuple[int, list[Event]]:
        self.connect(app, **kwargs)
        self.send(self.client.command("releaseStream", None, name))
        self.send(self.client.command("FCPublish", None, name))
        stream_id = self.create_stream()
        events = self.send(self.client.command("publish", None, name, "live", stream_id=stream_id))
        return stream_id, events


class SocketClient:
    """Blocking socket client for end-to-end bad-input tests."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.proto = ClientProtocol()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def handshake_and_connect(self, app: str = "live") -> None:
        self.send(self.proto.handshake.data_to_send())
        while not self.proto.handshake.complete:
            data = self.sock.recv(65536)
            assert data, "server closed during the handshake"
            self.proto.feed(data)
        self.send(self.proto.handshake.data_to_send() + self.proto.connect(app))
        self.wait_for(lambda: any(c[0] == "_result" for c in self.proto.commands()))

    def wait_for(self, condition: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out waiting for the server"
            data = self.sock.recv(65536)
            assert data, "server closed the connection"
            self.proto.feed(data)

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF or reset) within the timeout."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


MediaCallback = Callable[[int, int, int, float], None]  # type id, timestamp, size, arrival


class AsyncRtmpClient(asyncio.Protocol):
    """An asyncio RTMP client on ClientProtocol: handshake, connect, createStream, then play
    (each audio/video message goes to ``on_media`` and is not kept) or publish
    (``send_media``). ``ready`` resolves on NetStream.Play.Start / NetStream.Publish.Start;
    a protocol failure or an error status closes the connection and is passed to
    ``on_error``. Cheap enough to hold hundreds in one process."""

    def __init__(
        self,
        tc_url: str,
        stream: str,
        *,
        publish: bool = False,
        on_media: MediaCallback | None = None,
        on_error: Callable[[str], None] | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.tc_url = tc_url
        self.stream = stream
        self.publish = publish
        self.on_media = on_media
        self.on_error = on_error
        self.on_closed = on_closed
        self.proto = ClientProtocol(keep_messages=False)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stream_id = 0
        self._create_txn = 0.0

    # -- sending

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _command(self, name: str, *args: Any, stream_id: int = 0) -> None:
        self._write(self.proto.command(name, *args, stream_id=stream_id))

    def send_media(self, type_id: int, timestamp: int, body: bytes) -> None:
        """An audio (8) or video (9) message on the published stream."""
        csid = {MessageType.AUDIO: 4, MessageType.VIDEO: 6}.get(type_id, 5)
        self._write(self.proto.writer.write(csid, type_id, self.stream_id, timestamp, body))

    def send_metadata(self, script_body: bytes) -> None:
        """An FLV onMetaData script tag, sent the way publishers do (@setDataFrame)."""
        payload = amf0.encode("@setDataFrame") + script_body
        self._write(self.proto.writer.write(5, MessageType.DATA_AMF0, self.stream_id, 0, payload))

    def use_chunk_size(self, size: int) -> None:
        self._write(self.proto.writer.set_chunk_size(size))

    # -- receiving

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._write(self.proto.handshake.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            handshaking = not self.proto.handshake.complete
            messages = self.proto.feed(data)
            if handshaking and self.proto.handshake.complete:
                self._write(self.proto.handshake.data_to_send())  # C2
                extra: dict[str, Any] = {}
                if not self.publish:  # what players such as ffplay announce
                    extra = dict(fpad=False, capabilities=15.0, audioCodecs=3191.0)
                    extra.update(videoCodecs=252.0, videoFunction=1.0)
                app = self.tc_url.rsplit("/", 1)[1]
                self._write(self.proto.connect(app, self.tc_url, **extra))
            now = time.monotonic()
            for message in messages:
                self._on_message(message, now)
            ack = self.proto.reader.take_ack()
            if ack is not None:
                self._write(self.proto.writer.acknowledgement(ack))
        except Exception as exc:  # any protocol failure ends this one client, reported
            self._stop(f"{type(exc).__name__}: {exc}")

    def _on_message(self, msg: RtmpMessage, now: float) -> None:
        kind = msg.type_id
        if kind in (MessageType.AUDIO, MessageType.VIDEO):
            if self.on_media is not None:
                self.on_media(kind, msg.timestamp, len(msg.payload), now)
        elif kind == MessageType.COMMAND_AMF0:
            self._on_command(amf0.decode(msg.payload))
        elif kind == MessageType.USER_CONTROL and msg.payload[:2] == b"\x00\x06":
            self._write(self.proto.writer.user_control(7, msg.payload[2:6]))  # ping -> pong

    def _on_command(self, values: list[Any]) -> None:
        name = values[0] if values else None
        txn = values[1] if len(values) > 1 else 0.0
        if name == "_result" and txn == 1.0:
            if self.publish:
                self._command("releaseStream", None, self.stream)
                self._command("FCPublish", None, self.stream)
            self._command("createStream", None)
            self._create_txn = self.proto.last_txn
        elif name == "_result" and txn == self._create_txn and self._create_txn:
            self.stream_id = int(values[3])
            if self.publish:
                self._command("publish", None, self.stream, "live", stream_id=self.stream_id)
            else:
                self._command("play", None, self.stream, -1000.0, stream_id=self.stream_id)
                buffer_ms = (3000).to_bytes(4, "big")
                self._write(
                    self.proto.writer.user_control(3, self.stream_id.to_bytes(4, "big") + buffer_ms)
                )
        elif name == "onStatus" and len(values) > 3 and isinstance(values[3], dict):
            code = str(values[3].get("code", ""))
            if values[3].get("level") == "error":
                self._stop(f"server said {code}: {values[3].get('description', '')}")
            elif code in ("NetStream.Publish.Start", "NetStream.Play.Start"):
                if not self.ready.done():
                    self.ready.set_result(None)
        elif name == "_error":
            self._stop(f"server answered _error to a command: {values[3:]}")

    def _stop(self, reason: str) -> None:
        if self.on_error is not None:
            self.on_error(reason)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_closed is not None:
            self.on_closed()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection closed before start"))


def fake_video(keyframe: bool, size: int) -> bytes:
    return bytes([0x17 if keyframe else 0x27, 1, 0, 0, 0]) + bytes(size)


def publish_fast(port: int, name: str, frames: int, size: int, go: threading.Event) -> float:
    """Publishes synthetic H.264 tags as fast as the socket takes them, once ``go`` is set;
    returns the seconds that took."""
    client = SocketClient(port)
    client.handshake_and_connect()
    client.send(client.proto.command("createStream", None))
    client.wait_for(lambda: sum(c[0] == "_result" for c in client.proto.commands()) == 2)
    client.send(client.proto.command("publish", None, name, "live", stream_id=1))
    client.wait_for(
        lambda: any(s["code"] == "NetStream.Publish.Start" for s in client.proto.statuses())
    )
    writer = client.proto.writer
    client.send(writer.set_chunk_size(65536))
    client.send(writer.write(6, MessageType.VIDEO, 1, 0, bytes([0x17, 0, 0, 0, 0]) + b"avcC"))
    assert go.wait(10)
    started = time.monotonic()
    for i in range(frames):
        client.send(writer.write(6, MessageType.VIDEO, 1, i * 40, fake_video(i % 25 == 0, size)))
    elapsed = time.monotonic() - started
    client.close()
    return elapsed
