"""Whatever an RTMP connection registers in the hub is released when it ends, however it
ends; bounds on what a connection may hold; publisher takeover after a network drop.

Live: a real RtmpServer and Hub on loopback, driven by the test RTMP client over sockets
(and, for takeover, ffmpeg pushing and a PyAV player watching throughout).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from app.hub import StreamKey
from app.media.flv import FlvFileReader
from app.rtmp.chunk import MessageType
from app.rtmp.metrics import RtmpCollector
from tests.rtmp.conftest import StartRelay
from tests.support.rtmp_client import SocketClient

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KEYFRAME = bytes([0x17, 1, 0, 0, 0]) + b"\x00\x00\x00\x02\x65\x88"
AVC_HEADER = bytes([0x17, 0, 0, 0, 0]) + b"\x01\x42\x00\x1e\xff"


def peer_of(client: SocketClient) -> str:
    host, port = client.sock.getsockname()[:2]
    return f"{host}:{port}"


def created(client: SocketClient, count: int) -> None:
    client.wait_for(lambda: sum(c[0] == "_result" for c in client.proto.commands()) == count)


def statuses(client: SocketClient) -> list[str]:
    return [s["code"] for s in client.proto.statuses()]


def publisher(port: int, name: str, fake_media: bool = True) -> SocketClient:
    client = SocketClient(port)
    client.handshake_and_connect()
    client.send(client.proto.command("createStream", None))
    created(client, 2)
    client.send(client.proto.command("publish", None, name, "live", stream_id=1))
    client.wait_for(lambda: "NetStream.Publish.Start" in statuses(client))
    if fake_media:
        w = client.proto.writer
        client.send(w.write(6, MessageType.VIDEO, 1, 0, AVC_HEADER) + w.write(6, 9, 1, 0, KEYFRAME))
    return client


class Feed:
    """A healthy publisher of ``live/feed`` that keeps sending frames until closed."""

    def __init__(self, port: int, name: str = "feed", signed: bool = False) -> None:
        self.client = publisher_with_key(port, name) if signed else publisher(port, name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        w = self.client.proto.writer
        ts = 0
        while not self._stop.wait(0.2):
            ts += 200
            self.client.send(w.write(6, MessageType.VIDEO, 1, ts, KEYFRAME))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()


def publisher_and_player(port: int, name: str, watch: str) -> SocketClient:
    """One connection that publishes ``name`` on stream 1 and plays ``watch`` on stream 2."""
    client = publisher(port, name)
    client.send(client.proto.command("createStream", None))
    created(client, 3)
    client.send(client.proto.command("play", None, watch, stream_id=2))
    client.wait_for(lambda: "NetStream.Play.Start" in statuses(client))
    return client


def reset(client: SocketClient) -> None:
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sock.close()


@pytest.mark.parametrize("ending", ["close", "reset", "protocol-error", "timeout", "kick"])
async def test_a_connection_leaves_nothing_behind(
    start_relay: StartRelay, ending: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.rtmp")
    relay = await start_relay(play_wait_seconds=1.0, rtmp_idle_timeout=1.5)
    feed = await asyncio.to_thread(Feed, relay.port)
    client = await asyncio.to_thread(publisher_and_player, relay.port, "mine", "feed")
    peer = peer_of(client)
    mine = relay.hub.get(StreamKey("live", "mine"))
    assert mine is not None and mine.remote == peer
    assert relay.leftovers(peer)  # it holds a stream, a subscription and the connection

    if ending == "close":
        client.close()
    elif ending == "reset":
        reset(client)
    elif ending == "protocol-error":
        client.send(client.proto.writer.control(MessageType.SET_CHUNK_SIZE, struct.pack(">I", 0)))
    elif ending == "timeout":
        pass  # it just stops sending: a silent publisher is closed after the idle timeout
    elif ending == "kick":
        mine.kick()
    await relay.wait_released(peer)
    assert mine.closed and relay.hub.get(StreamKey("live", "mine")) is None
    assert relay.hub.get(StreamKey("live", "feed")) is not None, "only that connection ended"
    assert relay.server.pending_budget.held == 0
    assert "Traceback" not in caplog.text and "Fatal error" not in caplog.text
    closing = [r for r in caplog.records if "closing RTMP connection" in r.getMessage()]
    assert [r.getMessage().split(":")[0] for r in closing].count("127.0.0.1") <= 1
    assert sum(peer in r.getMessage() for r in closing) == 1, "one line for that connection"
    client.close()
    feed.close()


def ghost_stream_trick(port: int) -> SocketClient:
    # Issue 17, finding 1: publish before createStream, createStream (which used to hand out
    # the same id and replace the state), publish another name on that id.
    client = SocketClient(port)
    client.handshake_and_connect()
    c = client.proto
    client.send(
        c.command("publish", None, "ghost", "live", stream_id=1)
        + c.command("createStream", None)
        + c.command("publish", None, "other", "live", stream_id=1)
    )
    return client


def leaked_player_trick(port: int) -> SocketClient:
    client = SocketClient(port)
    client.handshake_and_connect()
    c = client.proto
    client.send(
        c.command("play", None, "feed", stream_id=1)
        + c.command("createStream", None)
        + c.command("play", None, "feed", stream_id=1)
    )
    return client


def withdrawn_requests(port: int) -> SocketClient:
    # Requests withdrawn before they could be answered, all in one write: the answers that
    # used to raise "stream 1 is not publish-pending" inside data_received.
    client = SocketClient(port)
    client.handshake_and_connect()
    c = client.proto
    client.send(c.command("createStream", None) + c.command("createStream", None))
    created(client, 3)
    client.send(
        c.command("publish", None, "w1", "live", stream_id=1)
        + c.command("deleteStream", None, 1.0)
        + c.command("play", None, "feed", stream_id=2)
        + c.command("closeStream", None, stream_id=2)
        + c.command("publish", None, "w2", "live", stream_id=2)
        + c.command("FCUnpublish", None, "w2")
    )
    return client


@pytest.mark.parametrize("trick", [ghost_stream_trick, leaked_player_trick, withdrawn_requests])
async def test_request_tricks_leave_nothing_and_no_traceback(
    start_relay: StartRelay, trick: Callable[[int], SocketClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.rtmp")
    relay = await start_relay(
        play_wait_seconds=1.0, push_key="k"
    )  # with push auth on, as in the campaign
    feed = await asyncio.to_thread(Feed, relay.port, "feed", True)
    client = await asyncio.to_thread(trick, relay.port)
    peer = peer_of(client)
    if trick is withdrawn_requests:
        await asyncio.sleep(1.5)  # past the player's wait for a stream: nothing answered late
        assert relay.leftovers(peer) == [f"connection {peer}"]
        client.close()
    else:
        assert await asyncio.to_thread(client.closed_by_server)
        assert "createStream never made" in caplog.text
    await relay.wait_released(peer)
    assert [str(s.key) for s in relay.hub.streams()] == ["live/feed"]
    assert relay.hub.get(StreamKey("live", "feed")).output.players == 0  # type: ignore[union-attr]
    assert "Traceback" not in caplog.text and "Fatal error" not in caplog.text
    assert "not publish-pending" not in caplog.text and "not play-pending" not in caplog.text
    feed.close()


def publisher_with_key(port: int, name: str) -> SocketClient:
    from app.auth import sign_push

    query = sign_push("k", name, time.time() + 60)
    return publisher(port, f"{name}?txSecret={query['txSecret']}&txTime={query['txTime']}")


async def test_connected_clients_that_neither_publish_nor_play_are_closed(
    start_relay: StartRelay,
) -> None:
    relay = await start_relay(
        play_wait_seconds=1.0, rtmp_connect_timeout=1.5, rtmp_handshake_timeout=1.5
    )

    def connected_then_silent() -> bool:
        client = SocketClient(relay.port)
        client.handshake_and_connect()
        return client.closed_by_server(timeout=6)

    def played_what_is_not_live() -> bool:
        client = SocketClient(relay.port)
        client.handshake_and_connect()
        client.send(client.proto.command("createStream", None))
        created(client, 2)
        client.send(client.proto.command("play", None, "nothing", stream_id=1))
        client.wait_for(lambda: "NetStream.Play.StreamNotFound" in statuses(client))
        return client.closed_by_server(timeout=6)

    def silent_in_the_handshake() -> bool:
        client = SocketClient(relay.port)
        client.send(b"\x03" + bytes(100))
        return client.closed_by_server(timeout=6)

    started = time.monotonic()
    results = await asyncio.gather(
        asyncio.to_thread(connected_then_silent),
        asyncio.to_thread(played_what_is_not_live),
        asyncio.to_thread(silent_in_the_handshake),
    )
    assert results == [True, True, True]
    assert time.monotonic() - started < 6
    assert relay.server.counters.timeouts == 3
    assert not relay.server.connections


def start_big_messages(port: int, count: int, size: int, sent: int) -> tuple[SocketClient, str]:
    """Starts ``count`` messages of ``size`` bytes on as many chunk streams and sends
    ``sent`` bytes of each, interleaved; returns the client and whether it was closed."""
    client = SocketClient(port)
    client.handshake_and_connect()
    w = client.proto.writer
    client.send(w.set_chunk_size(65536))
    messages = [w.write(4 + i, MessageType.VIDEO, 1, 0, bytes(size)) for i in range(count)]
    header = 12
    try:
        for k in range(sent // 65536):
            for m in messages:
                start = 0 if k == 0 else header + 65536 + (k - 1) * 65537
                client.send(m[start : header + 65536 if k == 0 else start + 65537])
    except (BrokenPipeError, ConnectionResetError):
        return client, "closed"
    return client, "open"


async def test_unfinished_messages_are_capped_per_connection_and_server_wide(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.rtmp")
    mib = 1024 * 1024
    relay = await start_relay(play_wait_seconds=1.0, rtmp_max_pending_bytes_total=18 * mib)
    registry = CollectorRegistry()
    registry.register(RtmpCollector(relay.server))

    def gauge() -> float:
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("roi_relay_rtmp_pending_message_bytes "):
                return float(line.split()[1])
        raise AssertionError("no roi_relay_rtmp_pending_message_bytes")

    # Issue 17, finding 5: four 8 MiB messages, 7 MiB of each sent.
    client, _ = await asyncio.to_thread(start_big_messages, relay.port, 4, 8 * mib, 7 * mib)
    assert await asyncio.to_thread(client.closed_by_server)
    assert "bytes held in unfinished messages" in caplog.text

    # Two connections each within their own cap, together over the server's.
    first, state = await asyncio.to_thread(start_big_messages, relay.port, 2, 8 * mib, 5 * mib)
    assert state == "open"
    deadline = time.monotonic() + 5
    while gauge() < 10 * mib:
        assert time.monotonic() < deadline, gauge()
        await asyncio.sleep(0.05)
    second, _ = await asyncio.to_thread(start_big_messages, relay.port, 2, 8 * mib, 5 * mib)
    assert await asyncio.to_thread(second.closed_by_server)
    assert "unfinished messages of all connections hold more than" in caplog.text
    assert len(relay.server.connections) == 1, "the first connection goes on"
    first.close()
    deadline = time.monotonic() + 5
    while relay.server.connections or gauge():
        assert time.monotonic() < deadline, gauge()
        await asyncio.sleep(0.05)
    assert "Traceback" not in caplog.text


# ----------------------------------------------------------------------------- takeover


def make_clip(path: Path, seconds: float, size: str) -> list[Any]:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         f"testsrc2=size={size}:rate=25:duration={seconds}", "-c:v", "libx264", "-preset",
         "veryfast", "-g", "25", "-bf", "0", "-y", "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip
    return FlvFileReader().feed(path.read_bytes())


def publish_then_go_silent(port: int, name: str, tags: list[Any], seconds: float) -> SocketClient:
    """Publishes real H.264 in real time for ``seconds``, then neither sends nor reads, as
    if its network had vanished (no FIN, no RST)."""
    client = publisher(port, name, fake_media=False)
    w = client.proto.writer
    started = time.monotonic()
    for tag in tags:
        if tag.timestamp / 1000 > seconds:
            break
        while time.monotonic() - started < tag.timestamp / 1000:
            time.sleep(0.005)
        client.send(w.write(6 if tag.kind == 9 else 5, tag.kind, 1, tag.timestamp, tag.body))
    return client


async def test_a_new_push_takes_over_after_a_network_drop_and_the_player_keeps_playing(
    start_relay: StartRelay, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    relay = await start_relay(
        play_wait_seconds=1.0
    )  # the defaults: takeover of a publisher silent for 3 s
    tags = await asyncio.to_thread(make_clip, tmp_path / "a.flv", 3.0, "192x108")
    url = f"rtmp://127.0.0.1:{relay.port}/live/show"
    dropped = asyncio.create_task(
        asyncio.to_thread(publish_then_go_silent, relay.port, "show", tags, 2.0)
    )
    await relay.wait_live("live", "show")
    stream = relay.hub.get(StreamKey("live", "show"))
    player = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.av_client", "play", url, "--timeout", "30",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    old = await dropped
    dropped_at = time.monotonic()
    await asyncio.sleep(2.0)  # OBS reconnects 2 s after it lost the server
    attempts: list[float] = []
    while len(attempts) < 3:
        attempts.append(time.monotonic() - dropped_at)
        push = await asyncio.create_subprocess_exec(
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
            "testsrc2=size=160x90:rate=25:duration=2", "-c:v", "libx264", "-preset",
            "veryfast", "-g", "25", "-bf", "0", "-f", "flv", url,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await push.communicate()
        if push.returncode == 0:
            break
        assert b"BadName" in err or b"error" in err.lower(), err
        await asyncio.sleep(2.0)  # and retries every 2 s
    assert push.returncode == 0, f"never taken over: {attempts}"
    assert len(attempts) <= 2, f"accepted only after {attempts}: more than one retry"
    assert relay.hub.counters.takeovers == 1
    assert "taken over by" in caplog.text
    # The player was attached throughout and saw the new publisher's pictures.
    out, err = await asyncio.wait_for(player.communicate(), 60)
    assert player.returncode == 0, err.decode()[-2000:]
    got = json.loads(out.decode().strip().splitlines()[-1])
    assert (got["width"], got["height"]) == (160, 90), "the last frames came from the new push"
    # At least a GOP of the old publisher (the player may join late on a loaded machine) and
    # nearly all 50 frames of the new one.
    assert got["video_frames"] >= 10 + 45, got["video_frames"]
    assert got["video_dts"] == sorted(got["video_dts"]), "time goes on across the takeover"
    assert stream is not None and stream.closed  # the same stream, ended by the new publisher
    assert await asyncio.to_thread(old.closed_by_server, 2)
    await relay.wait_released(peer_of(old))
    old.close()
