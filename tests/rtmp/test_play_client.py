"""The sans-IO play session against the server session, in memory: the full connect,
createStream and play exchange, media and metadata in order,
the end of the stream, a refusal, and a connection that breaks."""

from __future__ import annotations

from typing import Any

from app.media.flv import TagType
from app.rtmp.play_client import PlayEnded, PlayStarted, RtmpPlaySession
from app.rtmp.session import MediaReceived, MetadataReceived, PlayRequested, RtmpServerSession


def _pump(client: RtmpPlaySession, server: RtmpServerSession) -> tuple[list[Any], list[Any]]:
    client_events: list[Any] = []
    server_events: list[Any] = []
    for _ in range(20):
        out = client.data_to_send()
        if out:
            server_events += server.receive_data(out)
        back = server.data_to_send()
        if back:
            client_events += client.receive_data(back)
        if not out and not back:
            break
    return client_events, server_events


def _playing() -> tuple[RtmpPlaySession, RtmpServerSession, int]:
    client = RtmpPlaySession("live", "rtmp://127.0.0.1/live", "cam")
    server = RtmpServerSession(peer="test")
    _, server_events = _pump(client, server)
    requests = [e for e in server_events if isinstance(e, PlayRequested)]
    assert [(r.app, r.name) for r in requests] == [("live", "cam")]
    return client, server, requests[0].stream_id


def test_play_then_media_then_end() -> None:
    client, server, sid = _playing()
    server.accept_play(sid)
    server.send_metadata(sid, {"width": 320, "height": 240})
    header = bytes([0x17, 0, 0, 0, 0]) + b"\x01\x64\x00\x1f\xff"
    frame = bytes([0x17, 1, 0, 0, 0]) + b"\x00\x00\x00\x02\x65\x88"
    server.send_media(sid, TagType.VIDEO, 0, header)
    server.send_media(sid, TagType.VIDEO, 40, frame)
    events, _ = _pump(client, server)
    assert isinstance(events[0], PlayStarted) and events[0].stream_id == sid
    metadata = [e for e in events if isinstance(e, MetadataReceived)]
    assert metadata and metadata[0].metadata == {"width": 320.0, "height": 240.0}
    media = [e for e in events if isinstance(e, MediaReceived)]
    assert [(m.kind, m.timestamp, m.payload) for m in media] == [
        (TagType.VIDEO, 0, header),
        (TagType.VIDEO, 40, frame),
    ]
    server.send_stream_eof(sid)
    events, _ = _pump(client, server)
    assert [e for e in events if isinstance(e, PlayEnded)] == [
        PlayEnded("the stream ended at the origin")
    ]
    assert client.ended and client.receive_data(b"more") == []


def test_refused_play_and_broken_connection() -> None:
    client, server, sid = _playing()
    server.refuse_play(sid, description="live/cam is not live")
    events, _ = _pump(client, server)
    assert len(events) == 1 and isinstance(events[0], PlayEnded) and events[0].refused
    assert "not live" in events[0].reason

    client, server, sid = _playing()
    server.accept_play(sid)
    _pump(client, server)
    assert client.receive_data(b"") == [PlayEnded("the origin closed the connection")]
