"""Fuzz targets: one function per parser, bytes in, the documented error types allowed out.

Each target feeds ``data`` to one parser (or the RTMP session) and checks what must hold
whatever the input; an exception of a type in ``expected`` is that parser refusing bad input
as documented, anything else is a failure. The same functions serve the atheris runner
(``fuzz/run.py``), the smoke test and the regression replays (``tests/fuzz``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass

from app.media.flv import FlvError, FlvFileReader, parse_audio_tag, parse_video_tag
from app.media.nal import (
    Codec,
    NalError,
    parse_decoder_config,
    parse_sps,
    split_annexb,
    split_length_prefixed,
    unescape_rbsp,
)
from app.media.packet import MediaPacket
from app.media.sei import extract_roi_sei, parse_sei_messages
from app.roi.regions import MAX_STRING_BYTES, effective_regions, parse_roi
from app.rtmp import amf0
from app.rtmp.chunk import ChunkError, ChunkReader, ChunkWriter, MessageType, PendingBudget
from app.rtmp.events import PlayRequested, PlayStopped, PublishRequested, Unpublished
from app.rtmp.handshake import HANDSHAKE_SIZE, ClientHandshake, HandshakeError, ServerHandshake
from app.rtmp.session import RtmpServerSession


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    expected: tuple[type[BaseException], ...]


class InvariantError(AssertionError):
    """Something that must hold for any input did not."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantError(what)


# ----------------------------------------------------------------------------- parsers


def handshake(data: bytes) -> None:
    hs = ServerHandshake()
    rest = hs.receive_data(data)
    out = hs.data_to_send()
    if len(data) >= 1 + HANDSHAKE_SIZE:
        check(len(out) == 1 + 2 * HANDSHAKE_SIZE, "S0+S1+S2 after C0+C1")
    if hs.complete:
        check(len(data) - len(rest) == 1 + 2 * HANDSHAKE_SIZE, "complete after C0+C1+C2")


def chunk(data: bytes) -> None:
    budget = PendingBudget(1 << 20)
    reader = ChunkReader(max_pending_bytes=1 << 19, budget=budget)
    half = len(data) // 2
    try:
        for part in (data[:half], data[half:]):
            for message in reader.receive_data(part):
                check(len(message.payload) <= reader.max_message_size, "message within the cap")
    finally:
        check(budget.held == reader.held_bytes, "the budget holds what the reader holds")
        reader.discard()
        check(budget.held == 0, "discard gives the budget back")


def amf(data: bytes) -> None:
    values = amf0.decode(data)
    # What the decoder produced, the encoder writes and the decoder reads back.
    again = amf0.decode(amf0.encode(*values))
    check(len(again) == len(values), "AMF0 values survive a round trip")


def flv(data: bytes) -> None:
    for kind in (8, 9, 18):
        try:
            MediaPacket.from_tag(kind, 0, data)
        except FlvError:
            pass
    try:
        parse_audio_tag(data)
    except FlvError:
        pass
    tag = parse_video_tag(data)
    check(0 <= tag.data_offset <= len(data), "video data offset inside the tag")
    reader = FlvFileReader()
    reader.feed(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00" + data)


def nal(data: bytes) -> None:
    codec: Codec = "hevc" if data[:1] == b"\x01" and len(data) > 1 and data[1] & 1 else "h264"
    body = data[1:]
    for splitter in (split_annexb, lambda d: split_length_prefixed(d, 4)):
        try:
            units = splitter(body)
        except NalError:
            continue
        for unit in units[:8]:
            for parse in (
                lambda u: parse_sps(u, codec),
                lambda u: parse_sei_messages(u, codec),
            ):
                try:
                    parse(unit)
                except NalError:
                    pass
    unescape_rbsp(body)
    try:
        extract_roi_sei(body, codec)
    except NalError:
        pass
    config = parse_decoder_config(body, codec)
    info = config.sps_info()
    check(info.width > 0 and info.height > 0, "an SPS gives a picture size")


def roi(data: bytes) -> None:
    # UTF-16 with surrogates passed through reaches every code point, lone surrogates too.
    text = data.decode("utf-16-le", errors="surrogatepass") if len(data) % 2 == 0 else ""
    if not text:
        text = data.decode("latin-1")
    regions = parse_roi(text)
    check(len(regions) <= MAX_STRING_BYTES // 7 + 1, "no more regions than the text can hold")
    # Parsing is syntax only; the picture rules then keep every region inside the picture.
    kept = effective_regions(regions, 1280, 720)
    check(kept == effective_regions(kept, 1280, 720), "the picture rules are idempotent")
    for r in kept:
        check(0 <= r.left < r.right <= 1280 and 0 <= r.top < r.bottom <= 720, "inside")


# ----------------------------------------------------------------------------- the session


class OwnerModel:
    """What the server does with a session's events, reduced to bookkeeping: accepts a
    publish unless the name is taken, accepts every play, and remembers what it registered.
    After each step the session's view must match it: a stream registered twice or left
    registered after it ended is what a ghost stream or a leaked player is made of."""

    def __init__(self, session: RtmpServerSession) -> None:
        self.session = session
        self.publishers: dict[int, str] = {}
        self.players: dict[int, str] = {}

    def step(self, data: bytes) -> None:
        session = self.session
        for event in session.receive_data(data):
            if isinstance(event, PublishRequested):
                if not session.awaiting_answer(event.stream_id, event.request):
                    continue
                check(event.stream_id not in self.publishers, "publish slot already taken")
                if event.name in self.publishers.values():
                    check(session.refuse_publish(event.stream_id, request=event.request), "refuse")
                else:
                    check(session.accept_publish(event.stream_id, event.request), "accept")
                    self.publishers[event.stream_id] = event.name
            elif isinstance(event, PlayRequested):
                check(event.stream_id not in self.players, "play slot already taken")
                self.players[event.stream_id] = event.name
            elif isinstance(event, Unpublished):
                self.publishers.pop(event.stream_id, None)
            elif isinstance(event, PlayStopped):
                self.players.pop(event.stream_id, None)
        # Plays are answered later (the server waits for the stream); answer them now.
        for sid in list(self.players):
            if session.awaiting_answer(sid):
                check(session.accept_play(sid), "accept play")
                session.send_media(sid, 9, 0, b"\x17\x01\x00\x00\x00")
            elif sid not in session.playing():
                del self.players[sid]
        session.data_to_send()
        if session.closed:
            self.publishers.clear()
            self.players.clear()
        published = {sid: t.stream for sid, t in session.publishing().items()}
        check(published == self.publishers, f"session {published} vs owner {self.publishers}")
        check(set(session.playing()) == set(self.players), "players match")

    def finish(self) -> None:
        self.step(b"")
        check(self.session.closed, "closed after end of input")
        check(self.session.pending_bytes == 0, "nothing held after the end")


def session(data: bytes) -> None:
    """Raw client bytes (a captured push or play, mutated), handshake included, in pieces."""
    budget = PendingBudget(1 << 24)
    owner = OwnerModel(RtmpServerSession(peer="fuzz", pending_budget=budget))
    step = max(1, len(data) // 5)
    for start in range(0, len(data), step):
        owner.step(data[start : start + step])
    owner.finish()
    check(budget.held == 0, "the budget is given back")


COMMANDS = (
    "connect", "createStream", "publish", "play", "deleteStream", "closeStream",
    "releaseStream", "FCPublish", "FCUnpublish", "FCSubscribe", "getStreamLength",
    "_result", "onStatus", "pause", "@setDataFrame", "receiveAudio",
)  # fmt: skip
_NAMES = ("cam", "cam?txTime=1", "other", "", "a/b", "../x")


def _connected_session() -> tuple[OwnerModel, ClientHandshake]:
    owner = OwnerModel(RtmpServerSession(peer="fuzz"))
    client = ClientHandshake()
    c0c1 = client.data_to_send()
    s = ServerHandshake()
    s.receive_data(c0c1)
    client.receive_data(s.data_to_send())
    owner.step(c0c1 + client.data_to_send())
    return owner, client


@functools.cache
def _command_body(command: str, name: int, txn: int) -> bytes:
    args: list[object] = [_NAMES[name % len(_NAMES)], "live"]
    if command == "deleteStream":
        args = [float(name % 5)]
    return amf0.encode(command, float(txn), None, *args)


def commands(data: bytes) -> None:
    """Whole command sequences: each 4-byte group picks a command, a message stream id, a
    stream name and a message type, so sequences get reordered, repeated and sent on
    streams that do not exist; media and metadata mixed in."""
    owner, _ = _connected_session()
    writer = ChunkWriter()
    out = writer.write(
        3, MessageType.COMMAND_AMF0, 0, 0, amf0.encode("connect", 1.0, {"app": "live"})
    )
    for i in range(0, len(data) - 3, 4):
        if owner.session.closed:
            break  # a closed session reads nothing more: the rest of the input cannot matter
        op, sid, name, extra = data[i : i + 4]
        sid %= 5
        kind = op % 8
        if kind < 5:
            command = COMMANDS[(op >> 3) % len(COMMANDS)]
            # Transaction ids cycle (the server only echoes them) so bodies can be cached.
            body = _command_body(command, name % len(_NAMES), 2 + i // 4 % 64)
            out += writer.write(3 + sid, MessageType.COMMAND_AMF0, sid, 0, body)
        elif kind == 5:
            tag = bytes([0x17 if extra & 1 else 0x27, extra & 1, 0, 0, 0]) + bytes(extra)
            out += writer.write(6, MessageType.VIDEO, sid, i, tag)
        elif kind == 6:
            meta = amf0.encode("@setDataFrame", "onMetaData", {"width": float(extra)})
            out += writer.write(5, MessageType.DATA_AMF0, sid, i, meta)
        else:
            out += writer.write(2, MessageType.USER_CONTROL, 0, 0, struct.pack(">HI", 6, extra))
        if extra & 0x80:  # deliver now: the owner answers before what follows arrives
            owner.step(out)
            out = b""
    owner.step(out)
    owner.finish()


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("handshake", handshake, (HandshakeError,)),
        Target("chunk", chunk, (ChunkError,)),
        Target("amf0", amf, (amf0.AmfError,)),
        Target("flv", flv, (FlvError,)),
        Target("nal", nal, (NalError,)),
        Target("roi", roi, ()),
        # The session turns every kind of bad input into events: nothing may escape it.
        Target("session", session, ()),
        Target("commands", commands, ()),
    )
}


def run_one(target: Target, data: bytes) -> BaseException | None:
    """Runs one input; returns the unexpected exception, if any."""
    try:
        target.run(data)
    except target.expected:
        return None
    except Exception as exc:
        return exc
    return None
