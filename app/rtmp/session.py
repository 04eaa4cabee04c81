"""The server side of one RTMP connection, sans-IO (bytes in, events out, like h11).

``receive_data(bytes) -> list[Event]`` (events in ``app/rtmp/events.py``) consumes what the
socket read (``b""`` at end of file); methods such as ``accept_publish`` or ``send_media``
queue bytes for the peer, which ``data_to_send()`` hands out. The session answers everything
the protocol itself requires (handshake, connect, createStream, pings, acknowledgements) and
leaves the decisions (may this stream be published? is there such a stream to play?) to its
owner.

Commands and status messages follow what OBS/librtmp, FFmpeg, GStreamer rtmp2 and rtmpdump
send and wait for; Enhanced RTMP clients get their ``fourCcList`` answered in connect.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from app.rtmp import amf0
from app.rtmp.chunk import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_WINDOW_ACK_SIZE,
    ChunkError,
    ChunkReader,
    ChunkWriter,
    MessageType,
    PendingBudget,
    RtmpMessage,
)
from app.rtmp.events import (
    Closed,
    Connected,
    Event,
    MediaReceived,
    MetadataReceived,
    PlayRequested,
    PlayStopped,
    ProtocolError,
    PublishRequested,
    RequestRefused,
    Unpublished,
)
from app.rtmp.handshake import HandshakeError, ServerHandshake
from app.rtmp.url import StreamNameError, StreamTarget, parse_stream_target

log = logging.getLogger("app.rtmp")

OUT_CHUNK_SIZE = 4096
MAX_STREAMS_PER_CONNECTION = 16
FMS_VERSION = "FMS/3,5,7,7009"
CAPABILITIES = 31.0

CSID_COMMAND = 3
CSID_STREAM = 5  # stream-level status and data messages
CSID_AUDIO = 6
CSID_VIDEO = 7

# User Control event types.
UC_STREAM_BEGIN = 0
UC_STREAM_EOF = 1
UC_SET_BUFFER_LENGTH = 3
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7

MEDIA_KINDS = (MessageType.AUDIO, MessageType.VIDEO)
DATA_KIND = int(MessageType.DATA_AMF0)


# ----------------------------------------------------------------------------- state


class _Phase(Enum):
    HANDSHAKE = "handshake"
    AWAIT_CONNECT = "await-connect"
    CONNECTED = "connected"
    CLOSED = "closed"


class _Role(Enum):
    IDLE = "idle"
    PUBLISH_PENDING = "publish-pending"
    PUBLISHING = "publishing"
    PLAY_PENDING = "play-pending"
    PLAYING = "playing"


class TimestampUnwrapper:
    """Turns 32-bit RTMP timestamps into one ever-growing millisecond timeline: a step back
    of more than half the 32-bit range is taken as a wrap, not as time running backwards."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: int | None = None

    def extend(self, ts32: int) -> int:
        if self._last is None:
            self._last = ts32
            return ts32
        diff = (ts32 - self._last) & 0xFFFFFFFF
        self._last += diff if diff < 1 << 31 else diff - (1 << 32)
        return self._last


@dataclass(slots=True)
class _Stream:
    """One message stream made by createStream: its role changes only through the peer's
    publish/play/closeStream and the owner's answers, never by a later createStream."""

    role: _Role = _Role.IDLE
    target: StreamTarget | None = None
    request: int = 0  # the publish/play request being answered or in force
    clock: TimestampUnwrapper = field(default_factory=TimestampUnwrapper)


class _Refusal(Exception):
    """A command the session itself must refuse (status already queued); ends the session."""


def _status(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"level": level, "code": code, "description": description, **extra}


# ----------------------------------------------------------------------------- session


class RtmpServerSession:
    def __init__(
        self,
        *,
        peer: str = "",
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        pending_budget: PendingBudget | None = None,
        window_ack_size: int = DEFAULT_WINDOW_ACK_SIZE,
    ) -> None:
        self.peer = peer
        self._handshake = ServerHandshake()
        self._reader = ChunkReader(
            max_message_size=max_message_size,
            max_pending_bytes=max_pending_bytes,
            budget=pending_budget,
        )
        self._writer = ChunkWriter()
        self._window_ack_size = window_ack_size
        self._out = bytearray()
        self._phase = _Phase.HANDSHAKE
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1  # ids are never handed out twice on one connection
        self._requests = 0
        self.app = ""
        self.tc_url = ""
        self.connect_params: dict[str, Any] = {}
        self.should_close = False  # set after a refusal: flush data_to_send, then close
        self.last_ping_response: int | None = None

    # --------------------------------------------------------------- properties

    @property
    def closed(self) -> bool:
        return self._phase is _Phase.CLOSED

    @property
    def connected(self) -> bool:
        """Past the handshake and connect."""
        return self._phase is _Phase.CONNECTED

    @property
    def handshake_scheme(self) -> int | None:
        """The digest scheme of the client's handshake (None: plain handshake)."""
        info = self._handshake.info
        return info.digest_scheme if info else None

    @property
    def bytes_received(self) -> int:
        return self._reader.bytes_received

    @property
    def pending_bytes(self) -> int:
        """Memory held for messages not yet complete."""
        return self._reader.held_bytes

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    # --------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> list[Event]:
        if self._phase is _Phase.CLOSED:
            return []
        if not data:
            return self._end_of_input()
        if self.should_close:
            return []  # refused: whatever the peer still says no longer matters
        events: list[Event] = []
        try:
            if self._phase is _Phase.HANDSHAKE:
                data = self._handshake.receive_data(data)
                self._out += self._handshake.data_to_send()
                if not self._handshake.complete:
                    return events
                self._phase = _Phase.AWAIT_CONNECT
                if not data:
                    return events
            for message in self._reader.receive_data(data):
                self._handle(message, events)
                if self.should_close:
                    break
            ack = self._reader.take_ack()
            if ack is not None:
                self._out += self._writer.acknowledgement(ack)
        except (HandshakeError, ChunkError, amf0.AmfError, _Refusal) as exc:
            self._close()
            events.append(ProtocolError(str(exc)))
        return events

    def _end_of_input(self) -> list[Event]:
        events: list[Event] = []
        if self._phase is _Phase.HANDSHAKE and not self.should_close:
            events.append(ProtocolError("connection closed during the handshake"))
        elif self._reader.in_message and not self.should_close:
            events.append(ProtocolError("connection closed in the middle of a message"))
        self._close()
        events.append(Closed())
        return events

    def _close(self) -> None:
        self._phase = _Phase.CLOSED
        self._reader.discard()  # gives back what unfinished messages held (server-wide budget)

    def _handle(self, msg: RtmpMessage, events: list[Event]) -> None:
        kind = msg.type_id
        if kind in MEDIA_KINDS:
            self._on_media(msg, events)
        elif kind == MessageType.COMMAND_AMF0:
            self._on_command(msg.payload, msg.stream_id, events)
        elif kind == MessageType.COMMAND_AMF3:
            # An AMF3 command message is an AMF0 body after one format byte.
            self._on_command(msg.payload[1:], msg.stream_id, events)
        elif kind == MessageType.DATA_AMF0:
            self._on_data(msg.payload, msg.stream_id, msg.timestamp, events)
        elif kind == MessageType.DATA_AMF3:
            self._on_data(msg.payload[1:], msg.stream_id, msg.timestamp, events)
        elif kind == MessageType.USER_CONTROL:
            self._on_user_control(msg.payload)
        elif kind == MessageType.AGGREGATE:
            self._on_aggregate(msg, events)
        elif kind in (MessageType.ACKNOWLEDGEMENT, MessageType.SET_PEER_BANDWIDTH):
            pass  # we never wait for the peer's acknowledgements
        elif kind in (MessageType.SHARED_OBJECT_AMF0, MessageType.SHARED_OBJECT_AMF3):
            log.debug("%s: shared objects are not supported; ignored", self.peer)
        else:
            log.info("%s: ignored RTMP message of unknown type %d", self.peer, kind)

    # --------------------------------------------------------------- media and data

    def _publishing(self, stream_id: int) -> _Stream | None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.role not in (_Role.PUBLISH_PENDING, _Role.PUBLISHING):
            return None
        return stream

    def _on_media(self, msg: RtmpMessage, events: list[Event]) -> None:
        stream = self._publishing(msg.stream_id)
        if stream is None:
            log.debug("%s: media on stream %d, which is not publishing", self.peer, msg.stream_id)
            return
        if not msg.payload:
            return  # some encoders send empty audio/video messages; there is nothing to relay
        timestamp = stream.clock.extend(msg.timestamp)
        events.append(MediaReceived(msg.stream_id, msg.type_id, timestamp, msg.payload))

    def _on_data(self, payload: bytes, stream_id: int, ts32: int, events: list[Event]) -> None:
        stream = self._publishing(stream_id)
        if stream is None:
            return
        try:
            first, offset = amf0.decode_value(payload)
            if first == "@setDataFrame":
                payload = payload[offset:]
                first, offset = amf0.decode_value(payload)
            if first != "onMetaData":
                log.debug("%s: data message %r ignored", self.peer, first)
                return
            values = amf0.decode(payload[offset:])
        except amf0.AmfError as exc:
            # Metadata is advisory: a broken one is dropped, the stream goes on.
            log.warning("%s: unreadable metadata dropped: %s", self.peer, exc)
            return
        metadata = values[0] if values else {}
        if not isinstance(metadata, dict):
            log.warning("%s: onMetaData without an object dropped", self.peer)
            return
        timestamp = stream.clock.extend(ts32)
        events.append(MetadataReceived(stream_id, dict(metadata), bytes(payload), timestamp))

    def _on_aggregate(self, msg: RtmpMessage, events: list[Event]) -> None:
        """An aggregate message is a run of FLV tags; their timestamps are offsets from the
        first one, re-based on the aggregate's own timestamp."""
        data = msg.payload
        pos = 0
        base: int | None = None
        while pos < len(data):
            if len(data) - pos < 11:
                raise ChunkError("truncated tag header in an aggregate message")
            tag_type = data[pos]
            size = int.from_bytes(data[pos + 1 : pos + 4], "big")
            tag_ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
            body_end = pos + 11 + size
            if body_end + 4 > len(data):
                raise ChunkError("truncated tag body in an aggregate message")
            if base is None:
                base = tag_ts
            ts32 = (msg.timestamp + tag_ts - base) & 0xFFFFFFFF
            inner = RtmpMessage(msg.csid, tag_type, msg.stream_id, ts32, data[pos + 11 : body_end])
            if tag_type in MEDIA_KINDS:
                self._on_media(inner, events)
            elif tag_type == DATA_KIND:
                self._on_data(inner.payload, msg.stream_id, ts32, events)
            pos = body_end + 4

    def _on_user_control(self, payload: bytes) -> None:
        if len(payload) < 2:
            log.info("%s: user control message shorter than 2 bytes ignored", self.peer)
            return
        event = int.from_bytes(payload[:2], "big")
        if event == UC_PING_REQUEST and len(payload) >= 6:
            self._out += self._writer.user_control(UC_PING_RESPONSE, payload[2:6])
        elif event == UC_PING_RESPONSE and len(payload) >= 6:
            self.last_ping_response = int.from_bytes(payload[2:6], "big")
        else:
            log.debug("%s: user control event %d", self.peer, event)

    # --------------------------------------------------------------- commands

    def _on_command(self, payload: bytes, stream_id: int, events: list[Event]) -> None:
        values = amf0.decode(payload)
        if not values or not isinstance(values[0], str):
            raise amf0.AmfError("command message without a command name")
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        args = values[3:]
        if self._phase is _Phase.AWAIT_CONNECT and name != "connect":
            raise _Refusal(f"command {name!r} before connect")
        handler = _COMMANDS.get(name)
        if handler is None:
            log.info("%s: ignored unknown command %r", self.peer, name)
            return
        command_object = values[2] if len(values) > 2 else None
        handler(self, txn, command_object, args, stream_id, events)

    def _send_command(self, stream_id: int, *values: Any) -> None:
        csid = CSID_COMMAND if stream_id == 0 else CSID_STREAM
        self._out += self._writer.write(
            csid, MessageType.COMMAND_AMF0, stream_id, 0, amf0.encode(*values)
        )

    def _send_data(self, stream_id: int, *values: Any) -> None:
        self._out += self._writer.write(
            CSID_STREAM, MessageType.DATA_AMF0, stream_id, 0, amf0.encode(*values)
        )

    def _send_status(self, stream_id: int, level: str, code: str, description: str) -> None:
        self._send_command(stream_id, "onStatus", 0.0, None, _status(level, code, description))

    def _cmd_connect(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        if self._phase is not _Phase.AWAIT_CONNECT:
            log.info("%s: second connect ignored", self.peer)
            return
        params = dict(obj) if isinstance(obj, dict) else {}
        self.app = str(params.get("app") or "")
        self.tc_url = str(params.get("tcUrl") or "")
        self.connect_params = params
        self._phase = _Phase.CONNECTED
        w = self._writer
        self._out += w.window_ack_size(self._window_ack_size)
        self._out += w.set_peer_bandwidth(self._window_ack_size, 2)
        self._out += w.set_chunk_size(OUT_CHUNK_SIZE)
        properties: dict[str, Any] = {
            "fmsVer": FMS_VERSION,
            "capabilities": CAPABILITIES,
            "mode": 1.0,
        }
        # Enhanced RTMP: answer with the codecs we handle. We relay tag bodies untouched, so
        # every FourCC the client offers is one we can forward.
        four_ccs = params.get("fourCcList")
        if isinstance(four_ccs, list):
            properties["fourCcList"] = [str(fourcc) for fourcc in four_ccs]
        for info_map in ("videoFourCcInfoMap", "audioFourCcInfoMap"):
            offered = params.get(info_map)
            if isinstance(offered, dict):
                properties[info_map] = amf0.ECMAArray({str(k): 4.0 for k in offered})  # CanForward
        encoding = params.get("objectEncoding", 0.0)
        info = _status(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
            objectEncoding=encoding if isinstance(encoding, float) else 0.0,
        )
        self._send_command(0, "_result", txn, properties, info)
        events.append(Connected(self.app, self.tc_url, params))

    def _cmd_create_stream(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        if len(self._streams) >= MAX_STREAMS_PER_CONNECTION:
            raise _Refusal(f"more than {MAX_STREAMS_PER_CONNECTION} streams on one connection")
        new_id = self._next_stream_id
        self._next_stream_id += 1
        self._streams[new_id] = _Stream()
        self._send_command(0, "_result", txn, None, float(new_id))

    def _stream_for(self, stream_id: int, action: str) -> _Stream:
        """The stream a publish/play arrives on: one that createStream made (every client we
        know asks for one first; a stream that appeared on its own could later collide with
        the id createStream hands out)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise _Refusal(f"{action} on message stream {stream_id}, which createStream never made")
        if stream.role is not _Role.IDLE:
            raise _Refusal(f"{action} on stream {stream_id}, which is already {stream.role.value}")
        return stream

    def _new_request(self, stream: _Stream, role: _Role, target: StreamTarget) -> int:
        self._requests += 1
        stream.role = role
        stream.target = target
        stream.request = self._requests
        return self._requests

    def _target(
        self, args: list[Any], stream_id: int, action: str, events: list[Event]
    ) -> StreamTarget | None:
        name = args[0] if args and isinstance(args[0], str) else ""
        try:
            return parse_stream_target(self.app, self.tc_url, name)
        except StreamNameError as exc:
            code = (
                "NetStream.Publish.BadName"
                if action == "publish"
                else "NetStream.Play.StreamNotFound"
            )
            self._send_status(stream_id, "error", code, str(exc))
            if action == "publish":
                self.should_close = True
            reason = f"bad stream name {name!r} (app {self.app!r}): {exc}"
            events.append(RequestRefused(stream_id, action, code, reason))
            return None

    def _cmd_publish(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        stream = self._stream_for(stream_id, "publish")
        target = self._target(args, stream_id, "publish", events)
        if target is None:
            return
        publish_type = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
        request = self._new_request(stream, _Role.PUBLISH_PENDING, target)
        events.append(
            PublishRequested(
                stream_id, target.app, target.stream, target.query, publish_type, request
            )
        )

    def _cmd_play(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        stream = self._stream_for(stream_id, "play")
        target = self._target(args, stream_id, "play", events)
        if target is None:
            return
        request = self._new_request(stream, _Role.PLAY_PENDING, target)
        events.append(PlayRequested(stream_id, target.app, target.stream, target.query, request))

    def _end_stream(self, stream_id: int, events: list[Event]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream.role in (_Role.PUBLISH_PENDING, _Role.PUBLISHING):
            if stream.role is _Role.PUBLISHING:
                self._send_status(
                    stream_id, "status", "NetStream.Unpublish.Success", "Stream unpublished."
                )
            events.append(Unpublished(stream_id))
        elif stream.role in (_Role.PLAY_PENDING, _Role.PLAYING):
            events.append(PlayStopped(stream_id))
        stream.role = _Role.IDLE
        stream.target = None

    def _cmd_delete_stream(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        if args and isinstance(args[0], float) and args[0].is_integer():
            target_id = int(args[0])
            self._end_stream(target_id, events)
            self._streams.pop(target_id, None)

    def _cmd_close_stream(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        self._end_stream(stream_id, events)

    def _cmd_release_stream(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        self._send_command(0, "_result", txn, None, amf0.UNDEFINED)

    def _cmd_fc_publish(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        name = args[0] if args and isinstance(args[0], str) else ""
        self._send_command(
            0, "onFCPublish", 0.0, None, {"code": "NetStream.Publish.Start", "description": name}
        )
        self._send_command(0, "_result", txn, None, amf0.UNDEFINED)

    def _cmd_fc_unpublish(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        name = args[0] if args and isinstance(args[0], str) else ""
        self._send_command(
            0,
            "onFCUnpublish",
            0.0,
            None,
            {"code": "NetStream.Unpublish.Success", "description": name},
        )
        self._send_command(0, "_result", txn, None, amf0.UNDEFINED)
        bare_name = name.partition("?")[0].rpartition("/")[2]
        for sid, stream in list(self._streams.items()):
            if stream.target is not None and stream.target.stream == bare_name:
                self._end_stream(sid, events)

    def _cmd_fc_subscribe(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        name = args[0] if args and isinstance(args[0], str) else ""
        self._send_command(
            0, "onFCSubscribe", 0.0, None, {"code": "NetStream.Play.Start", "description": name}
        )

    def _cmd_get_stream_length(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        self._send_command(0, "_result", txn, None, 0.0)  # live: no length

    def _cmd_ignore(
        self, txn: float, obj: Any, args: list[Any], stream_id: int, events: list[Event]
    ) -> None:
        pass

    # --------------------------------------------------------------- owner's answers
    #
    # Events are handed out in batches, so by the time the owner answers a request the peer
    # may have withdrawn it (closeStream, deleteStream, FCUnpublish), asked again, or broken
    # the connection. An answer that no longer fits is therefore not an error: it does
    # nothing and returns False, and the owner must not act on it (register nothing).

    def _pending(self, stream_id: int, role: _Role, request: int | None) -> _Stream | None:
        stream = self._streams.get(stream_id)
        if self._phase is not _Phase.CONNECTED or self.should_close or stream is None:
            return None
        if stream.role is not role or (request is not None and stream.request != request):
            return None
        return stream

    def awaiting_answer(self, stream_id: int, request: int | None = None) -> bool:
        """Whether a publish/play on ``stream_id`` (that ``request``, if given) still waits."""
        return any(
            self._pending(stream_id, role, request) is not None
            for role in (_Role.PUBLISH_PENDING, _Role.PLAY_PENDING)
        )

    def accept_publish(self, stream_id: int, request: int | None = None) -> bool:
        stream = self._pending(stream_id, _Role.PUBLISH_PENDING, request)
        if stream is None:
            return False
        stream.role = _Role.PUBLISHING
        name = stream.target.stream if stream.target else ""
        self._out += self._writer.user_control(UC_STREAM_BEGIN, struct.pack(">I", stream_id))
        self._send_status(stream_id, "status", "NetStream.Publish.Start", f"{name} is published.")
        return True

    def refuse_publish(
        self,
        stream_id: int,
        code: str = "NetStream.Publish.BadName",
        description: str = "",
        request: int | None = None,
    ) -> bool:
        """Says why, then the session wants to close (``should_close``)."""
        stream = self._pending(stream_id, _Role.PUBLISH_PENDING, request)
        if stream is None:
            return False
        stream.role = _Role.IDLE
        stream.target = None
        self._send_status(stream_id, "error", code, description or code)
        self.should_close = True
        return True

    def accept_play(self, stream_id: int, request: int | None = None) -> bool:
        stream = self._pending(stream_id, _Role.PLAY_PENDING, request)
        if stream is None:
            return False
        stream.role = _Role.PLAYING
        name = stream.target.stream if stream.target else ""
        self._out += self._writer.user_control(UC_STREAM_BEGIN, struct.pack(">I", stream_id))
        self._send_status(
            stream_id, "status", "NetStream.Play.Reset", f"Playing and resetting {name}."
        )
        self._send_status(stream_id, "status", "NetStream.Play.Start", f"Started playing {name}.")
        self._send_data(stream_id, "|RtmpSampleAccess", True, True)
        return True

    def refuse_play(
        self,
        stream_id: int,
        code: str = "NetStream.Play.StreamNotFound",
        description: str = "",
        request: int | None = None,
    ) -> bool:
        stream = self._pending(stream_id, _Role.PLAY_PENDING, request)
        if stream is None:
            return False
        stream.role = _Role.IDLE
        stream.target = None
        self._send_status(stream_id, "error", code, description or code)
        return True

    def publishing(self) -> dict[int, StreamTarget]:
        """The streams whose publish was accepted and not ended, by message stream id."""
        return self._in_role(_Role.PUBLISHING)

    def playing(self) -> dict[int, StreamTarget]:
        return self._in_role(_Role.PLAYING)

    def _in_role(self, role: _Role) -> dict[int, StreamTarget]:
        if self._phase is _Phase.CLOSED:
            return {}
        return {
            sid: s.target
            for sid, s in self._streams.items()
            if s.role is role and s.target is not None
        }

    def send_media(self, stream_id: int, kind: int, timestamp: int, payload: bytes) -> None:
        """Queues one FLV tag body (audio 8, video 9, data 18) for a playing stream."""
        if kind == DATA_KIND:
            self._out += self._writer.write(CSID_STREAM, kind, stream_id, timestamp, payload)
        else:
            self._out += self.media_chunks(stream_id, kind, timestamp, payload)

    def media_chunks(self, stream_id: int, kind: int, timestamp: int, payload: bytes) -> bytes:
        """An audio/video message as chunks with a full (type-0) header.

        Nothing in these bytes depends on what this connection sent before, so a server can
        build them once per packet and hand the same bytes to every player (``send_chunks``)
        with the same ``media_chunks_key``. The cost is a few header bytes per message.
        """
        csid = CSID_VIDEO if kind == MessageType.VIDEO else CSID_AUDIO
        return self._writer.write(csid, kind, stream_id, timestamp, payload, fmt=0)

    def media_chunks_key(self, stream_id: int) -> tuple[int, int, bool]:
        """What ``media_chunks`` output depends on besides the message itself."""
        return (self._writer.chunk_size, stream_id, self._writer.type3_repeats_extended)

    def send_chunks(self, chunks: bytes) -> None:
        """Queues bytes made by ``media_chunks`` (on any session with the same key)."""
        self._out += chunks

    def send_metadata(
        self, stream_id: int, metadata: Mapping[str, Any], timestamp: int = 0
    ) -> None:
        self.send_media(
            stream_id, DATA_KIND, timestamp, amf0.encode("onMetaData", amf0.ECMAArray(metadata))
        )

    def send_stream_eof(self, stream_id: int) -> bool:
        """Tells a player the stream ended (the publisher left); False if it stopped playing."""
        stream = self._streams.get(stream_id)
        if self._phase is not _Phase.CONNECTED or stream is None:
            return False
        if stream.role is not _Role.PLAYING:
            return False
        stream.role = _Role.IDLE
        stream.target = None
        self._out += self._writer.user_control(UC_STREAM_EOF, struct.pack(">I", stream_id))
        self._send_status(
            stream_id, "status", "NetStream.Play.UnpublishNotify", "The stream was unpublished."
        )
        self._send_status(stream_id, "status", "NetStream.Play.Stop", "Stopped playing.")
        return True

    def ping(self, timestamp: int) -> None:
        self._out += self._writer.user_control(
            UC_PING_REQUEST, struct.pack(">I", timestamp & 0xFFFFFFFF)
        )


_COMMANDS = {
    "connect": RtmpServerSession._cmd_connect,
    "createStream": RtmpServerSession._cmd_create_stream,
    "publish": RtmpServerSession._cmd_publish,
    "play": RtmpServerSession._cmd_play,
    "deleteStream": RtmpServerSession._cmd_delete_stream,
    "closeStream": RtmpServerSession._cmd_close_stream,
    "releaseStream": RtmpServerSession._cmd_release_stream,
    "FCPublish": RtmpServerSession._cmd_fc_publish,
    "FCUnpublish": RtmpServerSession._cmd_fc_unpublish,
    "FCSubscribe": RtmpServerSession._cmd_fc_subscribe,
    "getStreamLength": RtmpServerSession._cmd_get_stream_length,
    # Answers to our calls and flow controls that a live relay has no use for.
    "_result": RtmpServerSession._cmd_ignore,
    "_error": RtmpServerSession._cmd_ignore,
    "onStatus": RtmpServerSession._cmd_ignore,
    "_checkbw": RtmpServerSession._cmd_ignore,
    "receiveAudio": RtmpServerSession._cmd_ignore,
    "receiveVideo": RtmpServerSession._cmd_ignore,
    "pause": RtmpServerSession._cmd_ignore,
    "seek": RtmpServerSession._cmd_ignore,
}
