"""The server session without sockets: command flows of real clients, and bad input."""

from __future__ import annotations

import logging
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.rtmp import amf0
from app.rtmp.chunk import MessageType
from app.rtmp.events import (
    Closed,
    Connected,
    MediaReceived,
    MetadataReceived,
    PlayRequested,
    PlayStopped,
    ProtocolError,
    PublishRequested,
    RequestRefused,
    Unpublished,
)
from app.rtmp.session import RtmpServerSession, TimestampUnwrapper
from tests.support.rtmp_client import SessionDriver

AVC_KEYFRAME = bytes([0x17, 1, 0, 0, 0]) + b"\x00\x00\x00\x05\x65abcd"
AAC_FRAME = bytes([0xAF, 1]) + b"\x21\x10"


def only(events: list, kind: type):
    matching = [e for e in events if isinstance(e, kind)]
    assert len(matching) == 1, events
    return matching[0]


def test_connect_answers_what_clients_wait_for() -> None:
    d = SessionDriver()
    events = d.connect("live", tc_url="rtmp://h/live", objectEncoding=0.0)
    connected = only(events, Connected)
    assert (connected.app, connected.tc_url) == ("live", "rtmp://h/live")
    (result,) = [c for c in d.client.commands() if c[0] == "_result"]
    assert result[1] == 1.0  # the connect transaction
    assert result[2]["fmsVer"].startswith("FMS/")
    assert result[3]["code"] == "NetConnection.Connect.Success"
    assert result[3]["objectEncoding"] == 0.0
    # Window ack size and chunk size are applied by the client's reader, peer bandwidth seen.
    assert d.client.reader.window_ack_size == 2_500_000
    assert d.client.reader.chunk_size == 4096
    assert d.client.of_type(MessageType.SET_PEER_BANDWIDTH)


def test_enhanced_rtmp_four_cc_list_is_answered() -> None:
    d = SessionDriver()
    d.connect(
        "live",
        fourCcList=["av01", "vp09", "hvc1"],
        videoFourCcInfoMap=amf0.ECMAArray({"hvc1": 3.0, "av01": 1.0}),
        capsEx=0.0,
    )
    props = [c for c in d.client.commands() if c[0] == "_result"][0][2]
    assert props["fourCcList"] == ["av01", "vp09", "hvc1"]
    assert props["videoFourCcInfoMap"] == {"hvc1": 4.0, "av01": 4.0}


def test_publish_flow_like_obs_and_ffmpeg() -> None:
    d = SessionDriver()
    stream_id, events = d.publish("cam?txSecret=s&txTime=65F0")
    request = only(events, PublishRequested)
    assert request == PublishRequested(
        stream_id, "live", "cam", {"txSecret": "s", "txTime": "65F0"}, "live"
    )
    names = [c[0] for c in d.client.commands()]
    assert names == ["_result", "_result", "onFCPublish", "_result", "_result"]
    d.session.accept_publish(stream_id)
    d.pull()
    (status,) = d.client.statuses()
    assert status["code"] == "NetStream.Publish.Start" and status["level"] == "status"
    begin = d.client.of_type(MessageType.USER_CONTROL)[-1].payload
    assert begin == struct.pack(">HI", 0, stream_id)

    w = d.client.writer
    meta = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray({"width": 320.0}))
    events = d.send(w.write(5, MessageType.DATA_AMF0, stream_id, 0, meta))
    md = only(events, MetadataReceived)
    assert md.metadata == {"width": 320.0}
    assert md.tag_payload == amf0.encode("onMetaData", amf0.ECMAArray({"width": 320.0}))

    events = d.send(
        w.write(6, MessageType.VIDEO, stream_id, 0, AVC_KEYFRAME)
        + w.write(4, MessageType.AUDIO, stream_id, 23, AAC_FRAME)
        + w.write(6, MessageType.VIDEO, stream_id, 40, AVC_KEYFRAME)
    )
    media = [e for e in events if isinstance(e, MediaReceived)]
    assert [(m.kind, m.timestamp) for m in media] == [(9, 0), (8, 23), (9, 40)]
    assert media[0].payload == AVC_KEYFRAME

    events = d.send(d.client.command("FCUnpublish", None, "cam?txSecret=s&txTime=65F0"))
    assert only(events, Unpublished).stream_id == stream_id
    events = d.send(d.client.command("deleteStream", None, float(stream_id)))
    assert not [e for e in events if isinstance(e, Unpublished)]  # already ended
    assert d.send(b"") == [Closed()]


def test_plain_on_metadata_data_message() -> None:
    d = SessionDriver()
    stream_id, _ = d.publish("cam")
    d.session.accept_publish(stream_id)
    body = amf0.encode("onMetaData", {"framerate": 25.0})
    events = d.send(d.client.writer.write(5, MessageType.DATA_AMF0, stream_id, 0, body))
    md = only(events, MetadataReceived)
    assert md.tag_payload == body and md.metadata == {"framerate": 25.0}


def test_broken_metadata_is_dropped_and_the_stream_goes_on(caplog) -> None:
    d = SessionDriver()
    stream_id, _ = d.publish("cam")
    d.session.accept_publish(stream_id)
    w = d.client.writer
    bad = amf0.encode("@setDataFrame", "onMetaData") + b"\x03\x00\x05wid"
    with caplog.at_level(logging.WARNING, logger="app.rtmp"):
        events = d.send(w.write(5, MessageType.DATA_AMF0, stream_id, 0, bad))
    assert events == [] and "metadata" in caplog.text
    events = d.send(w.write(6, MessageType.VIDEO, stream_id, 0, AVC_KEYFRAME))
    assert only(events, MediaReceived).payload == AVC_KEYFRAME


def test_media_on_a_stream_that_is_not_publishing_is_ignored() -> None:
    d = SessionDriver()
    d.connect()
    sid = d.create_stream()
    assert d.send(d.client.writer.write(6, MessageType.VIDEO, sid, 0, AVC_KEYFRAME)) == []


def test_refused_publish_says_why_then_wants_to_close() -> None:
    d = SessionDriver()
    stream_id, _ = d.publish("cam")
    d.session.refuse_publish(stream_id, "NetStream.Publish.BadAuth", "txSecret does not match")
    d.pull()
    (status,) = d.client.statuses()
    assert status["level"] == "error"
    assert status["code"] == "NetStream.Publish.BadAuth"
    assert status["description"] == "txSecret does not match"
    assert d.session.should_close
    # Whatever the refused client still sends is ignored.
    assert d.send(d.client.writer.write(6, MessageType.VIDEO, stream_id, 0, AVC_KEYFRAME)) == []


def test_bad_stream_name_is_refused_by_the_session() -> None:
    d = SessionDriver()
    _, events = d.publish("../etc")
    refused = only(events, RequestRefused)
    assert refused.action == "publish" and refused.code == "NetStream.Publish.BadName"
    assert d.client.statuses()[-1]["code"] == "NetStream.Publish.BadName"
    assert d.session.should_close


def test_obs_style_query_in_the_server_field() -> None:
    d = SessionDriver()
    _, events = d.publish(
        "cam", app="live?txSecret=s&txTime=65F0", tc_url="rtmp://h/live?txSecret=s&txTime=65F0"
    )
    request = only(events, PublishRequested)
    assert (request.app, request.name) == ("live", "cam")
    assert request.query == {"txSecret": "s", "txTime": "65F0"}


def test_play_flow_and_stream_eof() -> None:
    d = SessionDriver()
    d.connect()
    sid = d.create_stream()
    d.send(d.client.command("getStreamLength", None, "cam"))
    events = d.send(d.client.command("play", None, "cam", -2.0, -1.0, True, stream_id=sid))
    assert only(events, PlayRequested) == PlayRequested(sid, "live", "cam", {})
    d.session.accept_play(sid)
    d.session.send_metadata(sid, {"width": 320.0})
    d.session.send_media(sid, 9, 0, AVC_KEYFRAME)
    d.session.send_media(sid, 8, 0x1_0000_0005, AAC_FRAME)  # past 2^32: sent wrapped
    d.pull()
    codes = [s["code"] for s in d.client.statuses()]
    assert codes == ["NetStream.Play.Reset", "NetStream.Play.Start"]
    data = [amf0.decode(m.payload) for m in d.client.of_type(MessageType.DATA_AMF0)]
    assert data[0] == ["|RtmpSampleAccess", True, True]
    assert data[-1] == ["onMetaData", {"width": 320.0}]
    (video,) = d.client.of_type(MessageType.VIDEO)
    (audio,) = d.client.of_type(MessageType.AUDIO)
    assert (video.payload, video.stream_id) == (AVC_KEYFRAME, sid)
    assert (audio.payload, audio.timestamp) == (AAC_FRAME, 5)
    begins = d.client.of_type(MessageType.USER_CONTROL)
    assert struct.pack(">HI", 0, sid) in [m.payload for m in begins]

    d.session.send_stream_eof(sid)
    d.pull()
    codes = [s["code"] for s in d.client.statuses()]
    assert codes[-2:] == ["NetStream.Play.UnpublishNotify", "NetStream.Play.Stop"]
    assert d.client.of_type(MessageType.USER_CONTROL)[-1].payload == struct.pack(">HI", 1, sid)
    length = [c for c in d.client.commands() if c[0] == "_result"][-1]
    assert length[3] == 0.0


def test_refused_play_keeps_the_connection() -> None:
    d = SessionDriver()
    d.connect()
    sid = d.create_stream()
    d.send(d.client.command("play", None, "nothing", stream_id=sid))
    d.session.refuse_play(sid, description="live/nothing is not live")
    d.pull()
    assert d.client.statuses()[-1]["code"] == "NetStream.Play.StreamNotFound"
    assert not d.session.should_close


def test_delete_stream_stops_a_player() -> None:
    d = SessionDriver()
    d.connect()
    sid = d.create_stream()
    d.send(d.client.command("play", None, "cam", stream_id=sid))
    d.session.accept_play(sid)
    events = d.send(d.client.command("deleteStream", None, float(sid)))
    assert only(events, PlayStopped).stream_id == sid


def test_close_stream_unpublishes() -> None:
    d = SessionDriver()
    sid, _ = d.publish("cam")
    d.session.accept_publish(sid)
    events = d.send(d.client.command("closeStream", None, stream_id=sid))
    assert only(events, Unpublished).stream_id == sid
    assert d.client.statuses()[-1]["code"] == "NetStream.Unpublish.Success"


def test_ping_both_ways() -> None:
    d = SessionDriver()
    d.connect()
    d.send(d.client.writer.user_control(6, struct.pack(">I", 1234)))
    assert d.client.of_type(MessageType.USER_CONTROL)[-1].payload == struct.pack(">HI", 7, 1234)
    d.session.ping(99)
    d.pull()
    assert d.client.of_type(MessageType.USER_CONTROL)[-1].payload == struct.pack(">HI", 6, 99)
    d.send(d.client.writer.user_control(7, struct.pack(">I", 99)))
    assert d.session.last_ping_response == 99


def test_acknowledgement_sent_after_the_window() -> None:
    d = SessionDriver()
    sid, _ = d.publish("cam")
    d.session.accept_publish(sid)
    w = d.client.writer
    d.send(w.window_ack_size(5000))
    assert not d.client.of_type(MessageType.ACKNOWLEDGEMENT)
    for ts in range(0, 400, 40):
        d.send(w.write(6, MessageType.VIDEO, sid, ts, AVC_KEYFRAME + bytes(1000)))
    acks = [struct.unpack(">I", m.payload)[0] for m in d.client.of_type(3)]
    assert acks and acks[0] >= 5000
    assert all(b - a >= 5000 for a, b in zip(acks, acks[1:], strict=False))
    assert acks[-1] <= d.session.bytes_received


def test_unknown_message_type_and_command_are_ignored(caplog) -> None:
    d = SessionDriver()
    sid, _ = d.publish("cam")
    d.session.accept_publish(sid)
    w = d.client.writer
    with caplog.at_level(logging.INFO, logger="app.rtmp"):
        events = d.send(w.write(9, 0x30, sid, 0, b"mystery"))
        events += d.send(d.client.command("someVendorCall", None, "x"))
        events += d.send(w.write(9, MessageType.SHARED_OBJECT_AMF0, 0, 0, b"so"))
    assert events == []
    assert "unknown type 48" in caplog.text and "someVendorCall" in caplog.text
    events = d.send(w.write(6, MessageType.VIDEO, sid, 0, AVC_KEYFRAME))
    assert only(events, MediaReceived)


def test_amf3_command_message() -> None:
    d = SessionDriver()
    d.do_handshake()
    body = b"\x00" + amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"})
    events = d.send(d.client.writer.write(3, MessageType.COMMAND_AMF3, 0, 0, body))
    assert only(events, Connected).app == "live"


def test_aggregate_message_is_split_into_tags() -> None:
    d = SessionDriver()
    sid, _ = d.publish("cam")
    d.session.accept_publish(sid)

    def tag(kind: int, ts: int, body: bytes) -> bytes:
        head = bytes([kind]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        head += bytes([ts >> 24]) + b"\x00\x00\x00"
        return head + body + (len(body) + 11).to_bytes(4, "big")

    agg = tag(9, 5000, AVC_KEYFRAME) + tag(8, 5020, AAC_FRAME)
    events = d.send(d.client.writer.write(6, MessageType.AGGREGATE, sid, 100, agg))
    media = [e for e in events if isinstance(e, MediaReceived)]
    assert [(m.kind, m.timestamp, m.payload) for m in media] == [
        (9, 100, AVC_KEYFRAME),
        (8, 120, AAC_FRAME),
    ]
    events = d.send(d.client.writer.write(6, MessageType.AGGREGATE, sid, 200, agg[:-6]))
    assert isinstance(events[-1], ProtocolError)


def test_media_timestamps_unwrap_past_32_bits() -> None:
    d = SessionDriver()
    sid, _ = d.publish("cam")
    d.session.accept_publish(sid)
    w = d.client.writer
    stamps = [0xFFFFFF00, 0xFFFFFFF0, 0x00000010, 0x00000100]
    events = d.send(b"".join(w.write(6, 9, sid, ts, AVC_KEYFRAME) for ts in stamps))
    got = [e.timestamp for e in events if isinstance(e, MediaReceived)]
    assert got == [0xFFFFFF00, 0xFFFFFFF0, 0x1_0000_0010, 0x1_0000_0100]


def test_unwrapper_allows_small_steps_back() -> None:
    clock = TimestampUnwrapper()
    assert [clock.extend(t) for t in (1000, 990, 0xFFFFFFF0, 5)] == [1000, 990, -16, 5]


def test_digest_handshake_through_the_session() -> None:
    d = SessionDriver(digest=True, scheme=1)
    d.connect()
    assert d.session.handshake_scheme == 1


def test_createstream_ids_are_distinct_and_bounded() -> None:
    d = SessionDriver()
    d.connect()
    ids = [d.create_stream() for _ in range(16)]
    assert sorted(set(ids)) == ids
    events = d.send(d.client.command("createStream", None))
    assert isinstance(events[-1], ProtocolError)


# ----------------------------------------------------------------------------- bad input


def protocol_error(events: list) -> str:
    errors = [e for e in events if isinstance(e, ProtocolError)]
    assert errors, events
    return errors[0].reason


def test_garbage_handshake() -> None:
    session = RtmpServerSession()
    assert "not an RTMP handshake" in protocol_error(session.receive_data(b"GET / HTTP/1.1\r\n"))
    assert session.closed
    assert session.receive_data(b"more") == []


def test_truncated_handshake() -> None:
    session = RtmpServerSession()
    assert session.receive_data(b"\x03" + bytes(700)) == []
    events = session.receive_data(b"")
    assert "during the handshake" in protocol_error(events) and isinstance(events[-1], Closed)


@pytest.mark.parametrize("size", [0, 1 << 31])
def test_bad_chunk_size(size: int) -> None:
    d = SessionDriver()
    d.connect()
    events = d.send(d.client.writer.control(1, struct.pack(">I", size)))
    assert "invalid chunk size" in protocol_error(events)
    assert d.session.closed


def test_message_length_far_beyond_the_cap() -> None:
    d = SessionDriver()
    d.connect()
    header = bytes([6]) + bytes(3) + (0xFFFFFF).to_bytes(3, "big") + b"\x09" + bytes(4)
    assert "exceeds" in protocol_error(d.send(header))


def test_truncated_amf_command() -> None:
    d = SessionDriver()
    d.do_handshake()
    body = amf0.encode("connect", 1.0, {"app": "live"})[:-5]
    events = d.send(d.client.writer.write(3, MessageType.COMMAND_AMF0, 0, 0, body))
    assert "truncated" in protocol_error(events)


def test_deeply_nested_amf_command() -> None:
    d = SessionDriver()
    d.connect()
    body = amf0.encode("createStream", 2.0) + b"\x0a\x00\x00\x00\x01" * 5000 + b"\x05"
    events = d.send(d.client.writer.write(3, MessageType.COMMAND_AMF0, 0, 0, body))
    assert "nested deeper" in protocol_error(events)


def test_command_without_a_name() -> None:
    d = SessionDriver()
    d.connect()
    events = d.send(d.client.writer.write(3, MessageType.COMMAND_AMF0, 0, 0, amf0.encode(1.0)))
    assert "without a command name" in protocol_error(events)


def test_commands_before_connect() -> None:
    d = SessionDriver()
    d.do_handshake()
    assert "before connect" in protocol_error(d.send(d.client.command("createStream", None)))


def test_publisher_stopping_mid_message() -> None:
    d = SessionDriver()
    sid, _ = d.publish("cam")
    d.session.accept_publish(sid)
    data = d.client.writer.write(6, MessageType.VIDEO, sid, 0, AVC_KEYFRAME + bytes(5000))
    assert d.send(data[:3000]) == []
    events = d.send(b"")
    assert "middle of a message" in protocol_error(events)
    assert isinstance(events[-1], Closed)


def test_random_bytes_after_connect_never_crash() -> None:
    import random

    rng = random.Random(7)
    for _ in range(200):
        d = SessionDriver()
        d.connect()
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400)))
        for event in d.send(blob) + d.send(b""):
            assert isinstance(
                event,
                ProtocolError | Closed | MediaReceived | Unpublished | PlayStopped | Connected,
            ), event


amf_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True),
        st.text(max_size=20),
        st.just(amf0.UNDEFINED),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
command_names = st.sampled_from(
    [
        "connect", "createStream", "publish", "play", "deleteStream", "closeStream",
        "releaseStream", "FCPublish", "FCUnpublish", "FCSubscribe", "getStreamLength",
        "_result", "onStatus", "pause", "seek", "@setDataFrame", "onMetaData", "whatever",
    ]
)  # fmt: skip
random_messages = st.lists(
    st.tuples(
        st.sampled_from([MessageType.COMMAND_AMF0, MessageType.DATA_AMF0, 8, 9, 4, 22, 77]),
        st.integers(0, 3),
        command_names,
        st.lists(amf_values, max_size=5),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(random_messages)
def test_random_commands_and_messages_after_connect_never_crash(messages) -> None:
    d = SessionDriver()
    d.connect()
    for type_id, stream_id, name, args in messages:
        if d.session.closed or d.session.should_close:
            break
        body = amf0.encode(name, *args)
        events = d.send(d.client.writer.write(3, type_id, stream_id, 0, body))
        for event in events:
            if isinstance(event, PublishRequested):
                d.session.accept_publish(event.stream_id)
            elif isinstance(event, PlayRequested):
                d.session.accept_play(event.stream_id)
                d.session.send_media(event.stream_id, 9, 0, AVC_KEYFRAME)
    d.send(b"")
    assert d.session.closed


def test_media_chunks_are_the_same_for_every_player_and_read_back_in_order() -> None:
    from app.rtmp.chunk import ChunkReader, MessageType
    from app.rtmp.session import RtmpServerSession

    first, second = RtmpServerSession(), RtmpServerSession()
    video = bytes([0x27, 1, 0, 0, 0]) + bytes(range(256)) * 40  # spans several chunks
    audio = bytes([0xAF, 1]) + b"\x11" * 300
    assert first.media_chunks_key(1) == second.media_chunks_key(1)
    shared = first.media_chunks(1, MessageType.VIDEO, 0xFFFFFF + 5, video)
    assert shared == second.media_chunks(1, MessageType.VIDEO, 0xFFFFFF + 5, video)
    # Interleaved with compressed messages, shared bytes still read back as sent.
    first.send_media(1, MessageType.AUDIO, 40, audio)
    first.send_chunks(shared)
    first.send_media(1, MessageType.AUDIO, 0xFFFFFF + 6, audio)
    first.send_chunks(first.media_chunks(1, MessageType.VIDEO, 0xFFFFFF + 45, video))
    reader = ChunkReader()  # both sides at the default chunk size: no connect happened
    got = [(m.type_id, m.timestamp, m.payload) for m in reader.receive_data(first.data_to_send())]
    assert got == [
        (MessageType.AUDIO, 40, audio),
        (MessageType.VIDEO, 0xFFFFFF + 5, video),
        (MessageType.AUDIO, 0xFFFFFF + 6, audio),
        (MessageType.VIDEO, 0xFFFFFF + 45, video),
    ]


# ----------------------------------------------------------------------------- one state per stream


def test_publish_before_create_stream_is_a_protocol_error() -> None:
    # The ghost-stream trick: publish on stream 1 first, then createStream hands out 1 again.
    d = SessionDriver()
    d.connect()
    events = d.send(d.client.command("publish", None, "ghost", "live", stream_id=1))
    assert "createStream never made" in protocol_error(events)
    assert not [e for e in events if isinstance(e, PublishRequested)]
    assert d.session.closed and d.session.publishing() == {}


def test_play_before_create_stream_is_a_protocol_error() -> None:
    d = SessionDriver()
    d.connect()
    events = d.send(d.client.command("play", None, "cam", stream_id=1))
    assert "createStream never made" in protocol_error(events)
    assert not [e for e in events if isinstance(e, PlayRequested)]


def test_a_later_create_stream_never_replaces_a_publishing_stream() -> None:
    d = SessionDriver()
    sid, events = d.publish("first")
    assert d.session.accept_publish(sid, only(events, PublishRequested).request)
    other = d.create_stream()
    assert other != sid
    assert {k: t.stream for k, t in d.session.publishing().items()} == {sid: "first"}
    events = d.send(d.client.command("publish", None, "second", "live", stream_id=other))
    assert d.session.accept_publish(other, only(events, PublishRequested).request)
    assert {k: t.stream for k, t in d.session.publishing().items()} == {
        sid: "first",
        other: "second",
    }
    # A second publish on a stream that is publishing cannot replace it either.
    events = d.send(d.client.command("publish", None, "third", "live", stream_id=sid))
    assert "already publishing" in protocol_error(events)


def test_second_play_on_a_playing_stream_is_a_protocol_error() -> None:
    d = SessionDriver()
    d.connect()
    sid = d.create_stream()
    request = only(d.send(d.client.command("play", None, "a", stream_id=sid)), PlayRequested)
    assert d.session.accept_play(sid, request.request)
    events = d.send(d.client.command("play", None, "b", stream_id=sid))
    assert "already playing" in protocol_error(events)


def test_answers_to_a_withdrawn_request_do_nothing() -> None:
    # publish, closeStream and publish again arrive in one read: the owner sees both
    # requests before it can answer the first one.
    d = SessionDriver()
    d.connect()
    sid = d.create_stream()
    c = d.client
    events = d.send(
        c.command("publish", None, "one", "live", stream_id=sid)
        + c.command("closeStream", None, stream_id=sid)
        + c.command("publish", None, "two", "live", stream_id=sid)
    )
    first, second = [e for e in events if isinstance(e, PublishRequested)]
    assert [type(e) for e in events] == [PublishRequested, Unpublished, PublishRequested]
    assert not d.session.awaiting_answer(sid, first.request)
    assert d.session.awaiting_answer(sid, second.request)
    assert d.session.accept_publish(sid, first.request) is False
    assert d.session.refuse_publish(sid, request=first.request) is False
    assert d.session.data_to_send() == b""  # nothing went out for the withdrawn one
    assert d.session.accept_publish(sid, second.request) is True
    assert {k: t.stream for k, t in d.session.publishing().items()} == {sid: "two"}


def test_answers_after_the_connection_broke_do_nothing() -> None:
    d = SessionDriver()
    d.connect()
    sid = d.create_stream()
    c = d.client
    events = d.send(
        c.command("play", None, "cam", stream_id=sid)
        + c.command("publish", None, "x", "live", stream_id=sid + 5)
    )
    request = only(events, PlayRequested)
    assert isinstance(events[-1], ProtocolError)
    assert d.session.accept_play(sid, request.request) is False
    assert d.session.refuse_play(sid, request=request.request) is False
    assert d.session.send_stream_eof(sid) is False
    assert d.session.playing() == {}


def test_unfinished_messages_are_given_back_when_the_session_closes() -> None:
    from app.rtmp.chunk import PendingBudget

    budget = PendingBudget(64 * 1024 * 1024)
    d = SessionDriver(RtmpServerSession(peer="t", pending_budget=budget))
    sid, _ = d.publish("cam")
    frame = d.client.writer.write(6, MessageType.VIDEO, sid, 0, AVC_KEYFRAME + bytes(50_000))
    d.send(frame[:30_000])
    assert budget.held == d.session.pending_bytes > 20_000
    d.send(b"")
    assert budget.held == 0 and d.session.pending_bytes == 0


def test_four_big_messages_started_at_once_close_the_session() -> None:
    # Four 8 MiB messages with 7 MiB of each sent: more than one connection may hold.
    d = SessionDriver()
    sid, _ = d.publish("cam")
    w = d.client.writer
    d.send(w.set_chunk_size(65536))
    size, sent = 8 * 1024 * 1024, 7 * 1024 * 1024
    messages = [w.write(4 + i, MessageType.VIDEO, sid, 0, bytes(size)) for i in range(4)]
    header = 12  # basic header and a type-0 message header; continuations are one byte

    def chunk(data: bytes, k: int) -> bytes:
        start = 0 if k == 0 else header + 65536 + (k - 1) * 65537
        return data[start : header + 65536 if k == 0 else start + 65537]

    error = ""
    for k in range(sent // 65536):
        events = d.send(b"".join(chunk(m, k) for m in messages))
        error = error or next((e.reason for e in events if isinstance(e, ProtocolError)), "")
        if d.session.closed:
            break
    assert "unfinished messages" in error
    assert d.session.pending_bytes == 0
