"""RTMP chunk streams, sans-IO: ChunkReader turns received bytes into whole messages,
ChunkWriter turns messages into chunks.

The chunk layer owns the protocol control messages that change how bytes are framed or
acknowledged: Set Chunk Size (1), Abort (2) and Window Acknowledgement Size (5) are applied by
the reader as soon as they complete (the very next chunk in the same buffer may depend on
them) and are not handed up; the reader also says when an Acknowledgement (3) is due.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0x7FFFFFFF  # the top bit of Set Chunk Size must be zero
# The 24-bit length field allows up to 16 MiB - 1; no real frame comes near 8 MiB (a 4K
# keyframe at 50 Mbit/s is 1-2 MiB), so more is a broken or hostile peer.
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
DEFAULT_MAX_CHUNK_STREAMS = 64
# Unfinished messages interleaved over many chunk streams, all together: room for one
# message of the largest size and the audio interleaved with it, not for several at once.
DEFAULT_MAX_PENDING_BYTES = 12 * 1024 * 1024
DEFAULT_WINDOW_ACK_SIZE = 2_500_000
_EXTENDED = 0xFFFFFF
_U32 = struct.Struct(">I")
_HALF_RANGE = 1 << 31


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


class ChunkError(Exception):
    """The peer broke the chunk stream rules; the connection cannot continue."""


class PendingBudget:
    """What the unfinished messages of every reader sharing it hold, against one cap (the
    whole server's): the reader whose bytes would go over it fails, the others go on."""

    __slots__ = ("limit", "held")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0


@dataclass(frozen=True, slots=True)
class RtmpMessage:
    csid: int
    type_id: int
    stream_id: int
    timestamp: int  # milliseconds, 32-bit (wraps after ~49.7 days)
    payload: bytes


class _HeaderState:
    """What the previous header on one chunk stream said (compressed headers refer to it)."""

    __slots__ = ("timestamp", "delta", "length", "type_id", "stream_id", "ext")

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.ext: int | None = None  # extended timestamp field of the last full header, if any


class _InState(_HeaderState):
    """The previous header on one incoming chunk stream, and the message being assembled."""

    __slots__ = ("parts", "got")

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] | None = None  # None: no message in progress
        self.got = 0


class ChunkReader:
    """Feed received bytes with ``receive_data``; it returns every message completed so far."""

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_chunk_streams: int = DEFAULT_MAX_CHUNK_STREAMS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        budget: PendingBudget | None = None,
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        self.max_pending_bytes = max_pending_bytes
        self.budget = budget
        self._charged = 0  # what this reader counts in the budget now
        self.window_ack_size = DEFAULT_WINDOW_ACK_SIZE
        self.bytes_received = 0
        self._acked = 0
        self._buf = bytearray()
        self._streams: dict[int, _InState] = {}
        self._pending_bytes = 0  # payload held in unfinished messages, over all chunk streams
        # Whether this peer repeats the extended timestamp on type-3 chunks (the spec and
        # FFmpeg/librtmp do; some encoders do not). Learnt from the first such chunk.
        self.type3_repeats_extended: bool | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed into a complete chunk."""
        return len(self._buf)

    @property
    def in_message(self) -> bool:
        """True when a message is partly received (a peer stopping now stops mid-message)."""
        return bool(self._buf) or self._pending_bytes > 0

    @property
    def held_bytes(self) -> int:
        """Memory held for messages not yet complete: their chunks and an unparsed tail."""
        return self._pending_bytes + len(self._buf)

    def discard(self) -> None:
        """Drops unfinished messages (the connection ended) and gives back their budget."""
        self._buf.clear()
        for state in self._streams.values():
            state.parts = None
        self._pending_bytes = 0
        self._charge()

    def _charge(self) -> None:
        held = self.held_bytes
        if self.budget is not None:
            self.budget.held += held - self._charged
        self._charged = held

    def take_ack(self) -> int | None:
        """The sequence number to acknowledge, when a window's worth arrived since the last."""
        if self.bytes_received - self._acked >= self.window_ack_size:
            self._acked = self.bytes_received
            return self.bytes_received & 0xFFFFFFFF
        return None

    def receive_data(self, data: bytes) -> list[RtmpMessage]:
        self.bytes_received += len(data)
        self._buf += data
        messages: list[RtmpMessage] = []
        pos = 0
        try:
            while True:
                consumed = self._parse_chunk(pos, messages)
                if consumed == 0:
                    break
                pos += consumed
        finally:
            if pos:
                del self._buf[:pos]
            self._charge()
        if self.held_bytes > self.max_pending_bytes:
            raise ChunkError(
                f"more than {self.max_pending_bytes} bytes held in unfinished messages"
            )
        budget = self.budget
        if budget is not None and budget.held > budget.limit and self._charged:
            raise ChunkError(
                f"unfinished messages of all connections hold more than {budget.limit} bytes"
            )
        return messages

    def _parse_chunk(self, pos: int, messages: list[RtmpMessage]) -> int:
        """Parses one whole chunk at ``pos``; returns its size, or 0 when more bytes are needed.
        Nothing is changed unless the whole chunk is there."""
        buf = self._buf
        avail = len(buf) - pos
        if avail < 1:
            return 0
        b0 = buf[pos]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        p = pos + 1
        if csid == 0:
            if avail < 2:
                return 0
            csid = 64 + buf[pos + 1]
            p += 1
        elif csid == 1:
            if avail < 3:
                return 0
            csid = 64 + buf[pos + 1] + (buf[pos + 2] << 8)
            p += 2
        end = len(buf)
        state = self._streams.get(csid)
        if state is None:
            if fmt != 0:
                raise ChunkError(f"chunk stream {csid} starts with a type-{fmt} header")
            if len(self._streams) >= self.max_chunk_streams:
                raise ChunkError(f"more than {self.max_chunk_streams} chunk streams in use")
        in_progress = state is not None and state.parts is not None
        if in_progress and fmt != 3:
            raise ChunkError(
                f"type-{fmt} header on chunk stream {csid} before its message was complete"
            )

        ext: int | None = None
        length = type_id = stream_id = 0
        if fmt == 3:
            assert state is not None
            timestamp_field = 0
            if state.ext is not None:
                if self.type3_repeats_extended is None:
                    if end - p < 4:
                        return 0
                    self.type3_repeats_extended = _U32.unpack_from(buf, p)[0] == state.ext
                if self.type3_repeats_extended:
                    if end - p < 4:
                        return 0
                    p += 4
        else:
            header_size = (11, 7, 3)[fmt]
            if end - p < header_size:
                return 0
            timestamp_field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
            if timestamp_field == _EXTENDED:
                if end - p < header_size + 4:
                    return 0
                ext = _U32.unpack_from(buf, p + header_size)[0]
            if fmt <= 1:
                length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
                type_id = buf[p + 6]
                if length > self.max_message_size:
                    raise ChunkError(
                        f"message of {length} bytes on chunk stream {csid} exceeds the "
                        f"{self.max_message_size}-byte limit"
                    )
            if fmt == 0:
                stream_id = int.from_bytes(buf[p + 7 : p + 11], "little")
            p += header_size + (4 if ext is not None else 0)

        if in_progress:
            assert state is not None and state.parts is not None
            remaining = state.length - state.got
        elif fmt <= 1:
            remaining = length
        else:
            assert state is not None
            remaining = state.length
        take = min(self.chunk_size, remaining)
        if end - p < take:
            return 0
        if take < remaining and self._pending_bytes + take > self.max_pending_bytes:
            raise ChunkError(
                f"more than {self.max_pending_bytes} bytes held in unfinished messages"
            )

        # The whole chunk is here: commit.
        if state is None:
            state = self._streams[csid] = _InState()
        if not in_progress:
            value = ext if ext is not None else timestamp_field
            if fmt == 0:
                state.timestamp = value
                state.delta = (
                    value  # a later type-3 message reuses it as its delta (spec 5.3.1.2.4)
                )
                state.stream_id = stream_id
            elif fmt in (1, 2):
                state.delta = value
                state.timestamp = (state.timestamp + value) & 0xFFFFFFFF
            else:
                state.timestamp = (state.timestamp + state.delta) & 0xFFFFFFFF
            if fmt <= 1:
                state.length = length
                state.type_id = type_id
            if fmt != 3:
                state.ext = ext
            state.parts = []
            state.got = 0
        assert state.parts is not None
        if take:
            state.parts.append(bytes(buf[p : p + take]))
            state.got += take
            self._pending_bytes += take
        if state.got == state.length:
            payload = b"".join(state.parts) if len(state.parts) != 1 else state.parts[0]
            state.parts = None
            self._pending_bytes -= state.got
            self._deliver(
                RtmpMessage(csid, state.type_id, state.stream_id, state.timestamp, payload),
                messages,
            )
        return p + take - pos

    def _deliver(self, msg: RtmpMessage, messages: list[RtmpMessage]) -> None:
        if msg.type_id == MessageType.SET_CHUNK_SIZE:
            size = _u32_of(msg, "Set Chunk Size")
            if size == 0 or size > MAX_CHUNK_SIZE:
                raise ChunkError(f"invalid chunk size {size}")
            self.chunk_size = size
        elif msg.type_id == MessageType.ABORT:
            aborted = self._streams.get(_u32_of(msg, "Abort"))
            if aborted is not None and aborted.parts is not None:
                self._pending_bytes -= aborted.got
                aborted.parts = None
        elif msg.type_id == MessageType.WINDOW_ACK_SIZE:
            size = _u32_of(msg, "Window Acknowledgement Size")
            if size == 0:
                raise ChunkError("window acknowledgement size 0")
            self.window_ack_size = size
        else:
            messages.append(msg)


def _u32_of(msg: RtmpMessage, what: str) -> int:
    if len(msg.payload) < 4:
        raise ChunkError(f"{what} message shorter than 4 bytes")
    return _U32.unpack_from(msg.payload)[0]


def _basic_header(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes([(fmt << 6) | csid])
    if 64 <= csid <= 319:
        return bytes([fmt << 6, csid - 64])
    if 320 <= csid <= 65599:
        return bytes([(fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8])
    raise ValueError(f"chunk stream id {csid} out of range 2..65599")


class _OutState(_HeaderState):
    """The previous header written on one outgoing chunk stream, and its format."""

    __slots__ = ("fmt",)

    def __init__(self) -> None:
        super().__init__()
        self.fmt = 0


class ChunkWriter:
    """Splits messages into chunks, compressing headers against the previous message on the
    same chunk stream. Extended timestamps are repeated on every type-3 chunk, as the spec,
    FFmpeg and librtmp readers expect."""

    def __init__(
        self, chunk_size: int = DEFAULT_CHUNK_SIZE, *, type3_repeats_extended: bool = True
    ) -> None:
        self.chunk_size = chunk_size
        # False emulates encoders that omit the extended timestamp on type-3 chunks.
        self.type3_repeats_extended = type3_repeats_extended
        self._streams: dict[int, _OutState] = {}

    def allowed_formats(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, length: int
    ) -> tuple[int, ...]:
        """Header formats that would describe this message correctly."""
        state = self._streams.get(csid)
        if state is None or state.stream_id != stream_id:
            return (0,)
        delta = (timestamp - state.timestamp) & 0xFFFFFFFF
        if delta >= _HALF_RANGE:  # going backwards: only an absolute timestamp says that
            return (0,)
        if state.length != length or state.type_id != type_id:
            return (0, 1)
        if state.delta != delta:
            return (0, 1, 2)
        return (0, 1, 2, 3)

    def write(
        self,
        csid: int,
        type_id: int,
        stream_id: int,
        timestamp: int,
        payload: bytes,
        *,
        fmt: int | None = None,
    ) -> bytes:
        timestamp &= 0xFFFFFFFF
        length = len(payload)
        if length > 0xFFFFFF:
            raise ValueError(f"message of {length} bytes does not fit a chunk header")
        allowed = self.allowed_formats(csid, type_id, stream_id, timestamp, length)
        state = self._streams.get(csid)
        if fmt is None:
            fmt = allowed[-1]
            # A type-3 message right after a type-0 one means "delta = that absolute
            # timestamp" (spec), which some readers get wrong: say the delta explicitly.
            if fmt == 3 and state is not None and state.fmt == 0:
                fmt = 2
        elif fmt not in allowed:
            raise ValueError(f"header type {fmt} cannot describe this message ({allowed=})")
        if state is None:
            state = self._streams[csid] = _OutState()

        if fmt == 3:
            ext = state.ext
            header = _basic_header(3, csid) + self._type3_extended(ext)
            state.timestamp = timestamp
        else:
            value = timestamp if fmt == 0 else (timestamp - state.timestamp) & 0xFFFFFFFF
            ext = value if value >= _EXTENDED else None
            field = _EXTENDED if ext is not None else value
            header = _basic_header(fmt, csid) + field.to_bytes(3, "big")
            if fmt <= 1:
                header += length.to_bytes(3, "big") + bytes([type_id])
            if fmt == 0:
                header += stream_id.to_bytes(4, "little")
            if ext is not None:
                header += _U32.pack(ext)
            state.timestamp = timestamp
            state.delta = value
            state.length = length
            state.type_id = type_id
            state.stream_id = stream_id
            state.ext = ext
            state.fmt = fmt

        size = self.chunk_size
        if length <= size:
            return header + payload
        continuation = _basic_header(3, csid) + self._type3_extended(ext)
        view = memoryview(payload)
        parts: list[bytes | memoryview] = [header, view[:size]]
        for offset in range(size, length, size):
            parts.append(continuation)
            parts.append(view[offset : offset + size])
        return b"".join(parts)

    def _type3_extended(self, ext: int | None) -> bytes:
        return b"" if ext is None or not self.type3_repeats_extended else _U32.pack(ext)

    # Protocol control messages travel on chunk stream 2, message stream 0.

    def control(self, type_id: int, payload: bytes) -> bytes:
        return self.write(2, type_id, 0, 0, payload)

    def set_chunk_size(self, size: int) -> bytes:
        """The Set Chunk Size message; chunks written after it use the new size."""
        if not 1 <= size <= MAX_CHUNK_SIZE:
            raise ValueError(f"invalid chunk size {size}")
        data = self.control(MessageType.SET_CHUNK_SIZE, _U32.pack(size))
        self.chunk_size = size
        return data

    def abort(self, csid: int) -> bytes:
        return self.control(MessageType.ABORT, _U32.pack(csid))

    def acknowledgement(self, sequence_number: int) -> bytes:
        return self.control(MessageType.ACKNOWLEDGEMENT, _U32.pack(sequence_number & 0xFFFFFFFF))

    def window_ack_size(self, size: int) -> bytes:
        return self.control(MessageType.WINDOW_ACK_SIZE, _U32.pack(size))

    def set_peer_bandwidth(self, size: int, limit_type: int = 2) -> bytes:
        return self.control(MessageType.SET_PEER_BANDWIDTH, _U32.pack(size) + bytes([limit_type]))

    def user_control(self, event: int, data: bytes) -> bytes:
        return self.control(MessageType.USER_CONTROL, event.to_bytes(2, "big") + data)
