"""A minimal RTMP client built from the sans-IO pieces, for driving the server session in
unit tests and for hand-crafted (good or bad) traffic over real sockets."""

from __future__ import annotations

import socket
import time
from typing import Any

from app.rtmp import amf0
from app.rtmp.chunk import ChunkReader, ChunkWriter, MessageType, RtmpMessage
from app.rtmp.handshake import ClientHandshake
from app.rtmp.session import Event, RtmpServerSession


class ClientProtocol:
    """Client-side framing: build messages to send, parse what the server sent."""

    def __init__(self, *, digest: bool = False, scheme: int = 0) -> None:
        self.handshake = ClientHandshake(digest=digest, scheme=scheme)
        self.writer = ChunkWriter()
        self.reader = ChunkReader()
        self.messages: list[RtmpMessage] = []
        self._txn = 2.0  # 1 is connect

    def feed(self, data: bytes) -> None:
        if not self.handshake.complete:
            data = self.handshake.receive_data(data)
            if not self.handshake.complete:
                return
        if data:
            self.messages.extend(self.reader.receive_data(data))

    def command(self, name: str, *args: Any, stream_id: int = 0, txn: float | None = None) -> bytes:
        if txn is None:
            txn = self._txn
            self._txn += 1
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
