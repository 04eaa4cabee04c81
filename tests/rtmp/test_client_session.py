"""The publishing client session against the server session, both sans-IO, in memory."""

from __future__ import annotations

from app.rtmp import amf0
from app.rtmp.client import (
    ClientProtocolError,
    Published,
    PublishRefused,
    RtmpPublishSession,
    ServerClosed,
)
from app.rtmp.session import (
    Connected,
    MediaReceived,
    MetadataReceived,
    PublishRequested,
    RtmpServerSession,
)


def exchange(client: RtmpPublishSession, server: RtmpServerSession) -> tuple[list, list]:
    """Moves bytes both ways until neither side has anything to say."""
    server_events: list = []
    client_events: list = []
    while True:
        to_server = client.data_to_send()
        if to_server:
            server_events += server.receive_data(to_server)
        to_client = server.data_to_send()
        if to_client:
            client_events += client.receive_data(to_client)
        if not to_server and not to_client:
            return server_events, client_events


def test_client_connects_creates_a_stream_publishes_and_sends_media() -> None:
    client = RtmpPublishSession("live", "rtmp://127.0.0.1:1935/live", "cam?token=x")
    server = RtmpServerSession(peer="test")
    server_events, client_events = exchange(client, server)
    assert any(isinstance(e, Connected) and e.app == "live" for e in server_events)
    (request,) = [e for e in server_events if isinstance(e, PublishRequested)]
    assert (request.app, request.name, request.query) == ("live", "cam", {"token": "x"})
    assert not client.published and client_events == []
    server.accept_publish(request.stream_id)
    _, client_events = exchange(client, server)
    assert client_events == [Published(request.stream_id)] and client.published

    video = bytes([0x17, 1, 0, 0, 0]) + b"\x00\x00\x00\x05frame" * 2000  # several chunks
    metadata = amf0.encode("onMetaData", amf0.ECMAArray({"width": 320.0, "height": 240.0}))
    client.send_media(18, 0, metadata)
    client.send_media(9, 40, video)
    client.send_media(8, 5_000_000_000 & 0xFFFFFFFF, b"\xaf\x01audio")
    server_events, _ = exchange(client, server)
    (meta,) = [e for e in server_events if isinstance(e, MetadataReceived)]
    assert meta.metadata == {"width": 320.0, "height": 240.0}
    media = [e for e in server_events if isinstance(e, MediaReceived)]
    assert [(m.kind, m.payload) for m in media] == [(9, video), (8, b"\xaf\x01audio")]


def test_a_refused_publish_is_an_event_with_the_servers_code() -> None:
    client = RtmpPublishSession("live", "rtmp://h/live", "taken")
    server = RtmpServerSession()
    server_events, _ = exchange(client, server)
    (request,) = [e for e in server_events if isinstance(e, PublishRequested)]
    server.refuse_publish(request.stream_id, "NetStream.Publish.BadName", "taken is busy")
    _, client_events = exchange(client, server)
    assert client_events == [PublishRefused("NetStream.Publish.BadName", "taken is busy")]


def test_garbage_from_the_server_and_end_of_file_are_events() -> None:
    client = RtmpPublishSession("live", "rtmp://h/live", "x")
    client.data_to_send()
    (error,) = client.receive_data(b"\x09" + bytes(3072))
    assert isinstance(error, ClientProtocolError)
    other = RtmpPublishSession("live", "rtmp://h/live", "x")
    assert other.receive_data(b"") == [ServerClosed()]
