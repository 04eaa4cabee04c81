"""Chunk streams: header formats, extended timestamps, control messages, limits, and
writer->reader round trips over random formats, chunk sizes and timestamps."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.rtmp.chunk import (
    ChunkError,
    ChunkReader,
    ChunkWriter,
    MessageType,
    RtmpMessage,
)


def header0(csid: int, ts: int, length: int, type_id: int, sid: int) -> bytes:
    field = min(ts, 0xFFFFFF)
    head = bytes([csid]) + field.to_bytes(3, "big") + length.to_bytes(3, "big")
    head += bytes([type_id]) + sid.to_bytes(4, "little")
    return head + (struct.pack(">I", ts) if field == 0xFFFFFF else b"")


def test_spec_example_audio_with_type_2_and_3_headers() -> None:
    # RTMP spec 5.3.2.1: one message with a type-0 header, then delta-only and bare headers.
    payload = bytes(32)
    data = header0(3, 1000, 32, 8, 12345) + payload
    data += bytes([0x80 | 3]) + (20).to_bytes(3, "big") + payload  # type 2, delta 20
    data += bytes([0xC0 | 3]) + payload  # type 3: same delta
    data += bytes([0xC0 | 3]) + payload
    got = ChunkReader().receive_data(data)
    assert [m.timestamp for m in got] == [1000, 1020, 1040, 1060]
    assert all(m.stream_id == 12345 and m.type_id == 8 and len(m.payload) == 32 for m in got)


def test_spec_example_message_split_in_chunks() -> None:
    # RTMP spec 5.3.2.2: a 307-byte message with chunk size 128 -> type 0 + two type-3 chunks.
    payload = bytes(range(256)) + bytes(51)
    data = header0(4, 1000, 307, 9, 1) + payload[:128]
    data += bytes([0xC4]) + payload[128:256] + bytes([0xC4]) + payload[256:]
    (msg,) = ChunkReader().receive_data(data)
    assert msg.payload == payload and msg.timestamp == 1000 and msg.csid == 4


def test_type_1_header_changes_length_and_type() -> None:
    data = header0(5, 10, 3, 8, 1) + b"abc"
    data += bytes([0x40 | 5]) + (5).to_bytes(3, "big") + (4).to_bytes(3, "big") + b"\x09" + b"wxyz"
    a, b = ChunkReader().receive_data(data)
    assert (b.timestamp, b.type_id, b.payload, b.stream_id) == (15, 9, b"wxyz", 1)


def test_type_3_after_type_0_uses_the_absolute_timestamp_as_delta() -> None:
    data = header0(3, 40, 1, 8, 1) + b"a" + bytes([0xC3]) + b"b"
    assert [m.timestamp for m in ChunkReader().receive_data(data)] == [40, 80]


def test_two_and_three_byte_chunk_stream_ids() -> None:
    writer, reader = ChunkWriter(), ChunkReader()
    for csid in (2, 63, 64, 319, 320, 65599):
        data = writer.write(csid, 9, 1, 7, b"x" * 300)
        (msg,) = reader.receive_data(data)
        assert msg.csid == csid and msg.payload == b"x" * 300


@pytest.mark.parametrize("repeat", [True, False])
def test_extended_timestamp_on_type_3_continuations_both_client_styles(repeat: bool) -> None:
    writer = ChunkWriter(type3_repeats_extended=repeat)
    reader = ChunkReader()
    stamps = [0xFFFFFE, 0xFFFFFF, 0x1000000, 0x1000040, 0xFFFFFFFF]
    payloads = [bytes([ts & 0x7F]) * 500 for ts in stamps]
    data = b"".join(writer.write(6, 9, 1, ts, p) for ts, p in zip(stamps, payloads, strict=True))
    got = reader.receive_data(data)
    assert [m.timestamp for m in got] == stamps
    assert [m.payload for m in got] == payloads
    assert reader.type3_repeats_extended is repeat


def test_extended_timestamp_detection_when_payload_starts_with_other_bytes() -> None:
    # A non-repeating encoder whose continuation payload happens to start with zeros: the
    # first four bytes differ from the extended value, so they are read as payload.
    writer = ChunkWriter(type3_repeats_extended=False)
    payload = b"A" * 128 + b"\x00\x00\x00\x00" + b"B" * 10
    (msg,) = ChunkReader().receive_data(writer.write(4, 8, 1, 0x2000000, payload))
    assert msg.payload == payload and msg.timestamp == 0x2000000


def test_wrapping_timestamp_deltas() -> None:
    writer, reader = ChunkWriter(), ChunkReader()
    stamps = [0xFFFFFFF0, 0x10, 0x30]  # the 32-bit clock wraps between the first two
    data = b"".join(writer.write(6, 8, 1, ts, b"a") for ts in stamps)
    assert [m.timestamp for m in reader.receive_data(data)] == stamps


def test_writer_compresses_headers() -> None:
    writer = ChunkWriter()
    first = writer.write(6, 9, 1, 0, b"a" * 10)
    second = writer.write(6, 9, 1, 40, b"b" * 10)  # same length/type: type 2
    third = writer.write(6, 9, 1, 80, b"c" * 10)  # same delta too: type 3
    fourth = writer.write(6, 9, 1, 90, b"d" * 11)  # new length: type 1
    fifth = writer.write(6, 9, 2, 90, b"e" * 11)  # other message stream: type 0
    assert [x[0] >> 6 for x in (first, second, third, fourth, fifth)] == [0, 2, 3, 1, 0]
    got = ChunkReader().receive_data(first + second + third + fourth + fifth)
    assert [(m.timestamp, m.stream_id) for m in got] == [(0, 1), (40, 1), (80, 1), (90, 1), (90, 2)]


def test_timestamp_going_backwards_uses_type_0() -> None:
    writer = ChunkWriter()
    writer.write(6, 9, 1, 100, b"a")
    back = writer.write(6, 9, 1, 50, b"a")
    assert back[0] >> 6 == 0
    with pytest.raises(ValueError):
        writer.write(6, 9, 1, 40, b"a", fmt=2)


def test_set_chunk_size_applies_to_the_next_chunk_in_the_same_buffer() -> None:
    writer = ChunkWriter()
    data = writer.set_chunk_size(4096) + writer.write(6, 9, 1, 0, b"z" * 4000)
    reader = ChunkReader()
    (msg,) = reader.receive_data(data)
    assert reader.chunk_size == 4096 and msg.payload == b"z" * 4000


@pytest.mark.parametrize("size", [0, 1 << 31, 0xFFFFFFFF])
def test_invalid_chunk_size_is_an_error(size: int) -> None:
    data = ChunkWriter().control(MessageType.SET_CHUNK_SIZE, struct.pack(">I", size))
    with pytest.raises(ChunkError, match="invalid chunk size"):
        ChunkReader().receive_data(data)


def test_largest_valid_chunk_size_is_accepted() -> None:
    reader = ChunkReader()
    reader.receive_data(ChunkWriter().control(MessageType.SET_CHUNK_SIZE, b"\x7f\xff\xff\xff"))
    assert reader.chunk_size == 0x7FFFFFFF


def test_short_control_message_is_an_error() -> None:
    with pytest.raises(ChunkError, match="shorter than 4 bytes"):
        ChunkReader().receive_data(ChunkWriter().control(MessageType.SET_CHUNK_SIZE, b"\x00"))


def test_message_length_over_the_cap_is_refused_from_the_header_alone() -> None:
    reader = ChunkReader(max_message_size=1024 * 1024)
    with pytest.raises(ChunkError, match="exceeds"):
        reader.receive_data(header0(6, 0, 0xFFFFFF, 9, 1))  # no payload needed to refuse


def test_too_many_chunk_streams() -> None:
    writer, reader = ChunkWriter(), ChunkReader(max_chunk_streams=4)
    for csid in range(3, 7):
        reader.receive_data(writer.write(csid, 8, 1, 0, b"a"))
    with pytest.raises(ChunkError, match="chunk streams"):
        reader.receive_data(writer.write(7, 8, 1, 0, b"a"))


def test_unfinished_messages_over_many_chunk_streams_are_bounded() -> None:
    reader = ChunkReader(max_pending_bytes=1000)
    # Four messages of 400 bytes, each left after its first 300-byte chunk.
    reader.receive_data(ChunkWriter().set_chunk_size(300))
    reader.receive_data(header0(3, 0, 400, 9, 1) + bytes(300))
    reader.receive_data(header0(4, 0, 400, 9, 1) + bytes(300))
    reader.receive_data(header0(5, 0, 400, 9, 1) + bytes(300))
    with pytest.raises(ChunkError, match="unfinished messages"):
        reader.receive_data(header0(6, 0, 400, 9, 1) + bytes(300))


def test_chunk_stream_starting_without_a_full_header() -> None:
    with pytest.raises(ChunkError, match="starts with a type-1 header"):
        ChunkReader().receive_data(bytes([0x40 | 5]) + bytes(7))


def test_new_header_in_the_middle_of_a_message() -> None:
    data = header0(6, 0, 300, 9, 1) + bytes(128) + header0(6, 0, 5, 9, 1)
    with pytest.raises(ChunkError, match="before its message was complete"):
        ChunkReader().receive_data(data)


def test_abort_discards_the_partial_message() -> None:
    writer = ChunkWriter()
    reader = ChunkReader()
    partial = header0(6, 0, 300, 9, 1) + bytes(128)
    assert reader.receive_data(partial) == []
    assert reader.in_message
    reader.receive_data(writer.abort(6))
    assert not reader.in_message
    (msg,) = reader.receive_data(header0(6, 5, 2, 9, 1) + b"ok")
    assert msg.payload == b"ok"


def test_acknowledgement_after_the_peer_window() -> None:
    writer, reader = ChunkWriter(), ChunkReader()
    reader.receive_data(writer.window_ack_size(1000))
    assert reader.window_ack_size == 1000
    assert reader.take_ack() is None
    reader.receive_data(writer.write(6, 9, 1, 0, bytes(600)))
    assert reader.take_ack() is None
    reader.receive_data(writer.write(6, 9, 1, 0, bytes(600)))
    seq = reader.take_ack()
    assert seq == reader.bytes_received and seq > 1000
    assert reader.take_ack() is None


def test_zero_window_is_an_error() -> None:
    with pytest.raises(ChunkError, match="window"):
        ChunkReader().receive_data(ChunkWriter().window_ack_size(0))


def test_zero_length_message() -> None:
    (msg,) = ChunkReader().receive_data(header0(3, 0, 0, 20, 0))
    assert msg.payload == b""


# ----------------------------------------------------------------------------- properties

message_strategy = st.builds(
    lambda csid, type_id, sid, ts, size, fill: (csid, type_id, sid, ts, bytes([fill]) * size),
    csid=st.sampled_from([3, 4, 63, 64, 319, 320, 65599]),
    type_id=st.sampled_from([8, 9, 18, 20]),
    sid=st.sampled_from([0, 1, 2]),
    ts=st.one_of(
        st.integers(0xFFFFF0, 0x100000F),  # around the extended-timestamp threshold
        st.integers(0xFFFFFFF0, 0xFFFFFFFF),  # just before the 32-bit wrap
        st.integers(0, 0xFFFFFFFF),
    ),
    size=st.integers(0, 700),
    fill=st.integers(0, 255),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(message_strategy, min_size=1, max_size=25),
    data=st.data(),
    repeat=st.booleans(),
)
def test_round_trip_random_formats_chunk_sizes_and_timestamps(messages, data, repeat) -> None:
    writer = ChunkWriter(type3_repeats_extended=repeat)
    reader = ChunkReader()
    stream = bytearray()
    sent: list[RtmpMessage] = []
    previous: dict[int, int] = {}
    for csid, type_id, sid, ts, payload in messages:
        if data.draw(st.booleans(), label="repeat the previous timestamp step"):
            # Steady steps on one chunk stream let type-2/3 headers apply.
            ts = (previous.get(csid, ts) + 40) & 0xFFFFFFFF
        if not repeat:
            # Without the repeated field, type-3 chunks are told apart by content: a payload
            # holding the very extended-timestamp bytes would be ambiguous, as on the wire.
            delta = (ts - previous.get(csid, 0)) & 0xFFFFFFFF
            assume(struct.pack(">I", ts) not in payload and struct.pack(">I", delta) not in payload)
        previous[csid] = ts
        if data.draw(st.integers(0, 9), label="change chunk size") == 0:
            stream += writer.set_chunk_size(data.draw(st.integers(1, 1000), label="chunk size"))
        allowed = writer.allowed_formats(csid, type_id, sid, ts, len(payload))
        fmt = data.draw(st.sampled_from(allowed), label="header format")
        stream += writer.write(csid, type_id, sid, ts, payload, fmt=fmt)
        sent.append(RtmpMessage(csid, type_id, sid, ts, payload))
    # Feed in random pieces: chunk boundaries must not matter.
    got: list[RtmpMessage] = []
    pos = 0
    while pos < len(stream):
        step = data.draw(st.integers(1, 2000), label="piece size")
        got += reader.receive_data(bytes(stream[pos : pos + step]))
        pos += step
    assert got == sent
    assert not reader.in_message


def test_round_trip_property_covers_every_header_format() -> None:
    # The property above draws formats from allowed_formats; make sure all four are reachable.
    writer = ChunkWriter()
    writer.write(3, 8, 1, 0, b"ab")
    assert writer.allowed_formats(3, 8, 1, 0, 2) == (0, 1, 2, 3)
    assert writer.allowed_formats(3, 8, 1, 10, 2) == (0, 1, 2)
    assert writer.allowed_formats(3, 9, 1, 10, 2) == (0, 1)
    assert writer.allowed_formats(3, 8, 2, 10, 2) == (0,)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash_the_reader(blob: bytes) -> None:
    reader = ChunkReader(max_message_size=4096)
    try:
        reader.receive_data(blob)
    except ChunkError:
        pass


def test_unfinished_messages_of_all_readers_share_one_budget() -> None:
    from app.rtmp.chunk import PendingBudget

    budget = PendingBudget(1500)
    first, second = ChunkReader(budget=budget), ChunkReader(budget=budget)
    writer = ChunkWriter()
    setup = writer.set_chunk_size(700)
    message = writer.write(3, 9, 1, 0, bytes(2000))  # 12 + 700, then 1 + 700 per chunk
    for reader in (first, second):
        reader.receive_data(setup)
    first.receive_data(message[:712])
    assert budget.held == 700 == first.held_bytes
    second.receive_data(message[:500])  # an unparsed tail counts too
    assert budget.held == 700 + 500
    with pytest.raises(ChunkError, match="all connections"):
        second.receive_data(message[500:1000])
    second.discard()
    assert budget.held == 700
    assert [m.payload for m in first.receive_data(message[712:])] == [bytes(2000)]
    assert first.held_bytes == 0 and budget.held == 0
