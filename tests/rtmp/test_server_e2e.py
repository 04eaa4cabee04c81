"""End to end: RtmpServer on a free port with a real Hub, pushed and played by real clients
(PyAV/FFmpeg 8, Debian's ffmpeg, GStreamer rtmp2sink, rtmpdump) and by hand-made bad input."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import struct
import threading
import time
from pathlib import Path
from typing import Any

import av
import pytest

from app.auth import sign_push
from app.hub import StreamKey
from app.media.flv import TagType, VideoPacketType, parse_video_tag
from app.rtmp import amf0
from app.rtmp.chunk import MessageType
from app.rtmp.handshake import ClientHandshake
from tests.rtmp.conftest import StartRelay
from tests.support.av_client import client_command, client_result
from tests.support.rtmp_client import SocketClient, publish_fast

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PUSH_KEY = "e2e-secret-key"


async def run(*cmd: str, timeout: float = 60.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{cmd[0]} did not finish in {timeout} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def av_client(action: str, url: str, *args: str, timeout: float = 60.0) -> dict[str, Any]:
    rc, out, err = await run(*client_command(action, url, *args), timeout=timeout)
    return client_result(action, rc, out, err)


def ffmpeg_push_cmd(
    url: str, seconds: float = 2.0, *extra: str, realtime: bool = True
) -> list[str]:
    return [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        *(["-re"] if realtime else []),
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=192x108:rate=25:duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "250",
        "-c:a",
        "aac",
        *extra,
        "-f",
        "flv",
        url,
    ]


def assert_played_everything(got: dict[str, Any], sent: dict[str, Any]) -> None:
    assert got["decode_errors"] == 0
    assert got["keyframe_first"] is True
    assert got["video_frames"] == sent["video_frames"]
    assert got["audio_frames"] >= sent["audio_frames"] * 0.9
    assert got["video_dts"] == sorted(got["video_dts"])


# ----------------------------------------------------------------------------- real clients


async def test_pyav_push_h264_aac_and_pyav_rtmp_play(start_relay: StartRelay) -> None:
    relay = await start_relay()
    url = relay.url("live/cam")
    pusher = asyncio.create_task(av_client("push", url, "--seconds", "2"))
    stream = await relay.wait_live("live", "cam")
    player = asyncio.create_task(av_client("play", url))
    sent, got = await pusher, await player
    assert_played_everything(got, sent)
    assert (got["width"], got["height"], got["codec"]) == (192, 108, "h264")
    assert stream.codec.video_codec == "avc1" and stream.codec.audio_codec == "aac"
    assert stream.metadata.get("width") == 192.0  # @setDataFrame onMetaData reached the hub
    await relay.wait_gone("live", "cam")


async def test_ffmpeg_cli_push_and_rtmpdump_play(start_relay: StartRelay, tmp_path: Path) -> None:
    relay = await start_relay()
    url = relay.url("live/cli")
    pusher = asyncio.create_task(run(*ffmpeg_push_cmd(url, 2.0)))
    await relay.wait_live("live", "cli")
    out_file = tmp_path / "dump.flv"
    dump = asyncio.create_task(run("rtmpdump", "-q", "-v", "-r", url, "-o", str(out_file)))
    rc, _, err = await pusher
    assert rc == 0, err
    rc, _, err = await dump
    assert rc in (0, 2), err  # 2: "incomplete", what rtmpdump says of any live stream
    with av.open(str(out_file)) as flv:
        frames = sum(1 for p in flv.demux(video=0) for _ in p.decode())
        first_key = next(
            p.is_keyframe for p in av.open(str(out_file)).demux(video=0) if p.dts is not None
        )
    assert frames == 50 and first_key


async def test_gstreamer_rtmp2sink_push(start_relay: StartRelay) -> None:
    relay = await start_relay()
    location = relay.url("live/gst")
    pipeline = (
        "videotestsrc is-live=true num-buffers=50 ! video/x-raw,width=192,height=108,"
        "framerate=25/1 ! x264enc tune=zerolatency speed-preset=veryfast key-int-max=100 "
        "! h264parse ! flvmux streamable=true name=mux ! rtmp2sink "
        f"location={location} "
        "audiotestsrc is-live=true num-buffers=86 ! audio/x-raw,rate=44100 ! voaacenc "
        "! aacparse ! mux."
    )
    pusher = asyncio.create_task(run("gst-launch-1.0", "-q", "-e", *pipeline.split()))
    stream = await relay.wait_live("live", "gst")
    sub = stream.output.subscribe("counter")
    got = await av_client("play", location)
    rc, out, err = await pusher
    assert rc == 0, out + err
    assert got["decode_errors"] == 0 and got["keyframe_first"]
    assert got["video_frames"] == 50
    assert got["audio_frames"] > 40
    coded_frames = 0
    while (packet := await sub.get()) is not None:
        if packet.kind is TagType.VIDEO:
            coded = parse_video_tag(packet.payload).packet_type is VideoPacketType.CODED_FRAMES
            coded_frames += coded
    assert coded_frames == 50  # flvmux also sends a sequence header and an end of sequence


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
async def test_hevc_over_enhanced_rtmp(start_relay: StartRelay) -> None:
    relay = await start_relay()
    url = relay.url("live/hevc")
    pusher = asyncio.create_task(av_client("push", url, "--seconds", "1.6", "--codec", "libx265"))
    stream = await relay.wait_live("live", "hevc")
    player = asyncio.create_task(av_client("play", url))
    sent, got = await pusher, await player
    assert stream.codec.video_codec == "hvc1"
    header = stream.output.video_header
    assert header is not None and header.payload[0] & 0x80  # ExVideoTagHeader
    assert header.payload[1:5] == b"hvc1"
    assert got["codec"] == "hevc"
    assert_played_everything(got, sent)


async def test_late_player_starts_on_a_keyframe(start_relay: StartRelay) -> None:
    relay = await start_relay()
    url = relay.url("live/late")
    pusher = asyncio.create_task(av_client("push", url, "--seconds", "3", "--gop", "25"))
    stream = await relay.wait_live("live", "late")
    keyframe_indexes: list[int] = []
    stream.source.listeners.append(
        lambda p: keyframe_indexes.append(stream.source.video_frames - 1) if p.keyframe else None
    )
    while stream.source.video_frames < 37:  # well into the second GOP
        await asyncio.sleep(0.02)
    got = await av_client("play", url)
    sent = await pusher
    assert got["keyframe_first"] is True and got["decode_errors"] == 0
    # The player got whole GOPs: everything from one of the later keyframes to the end.
    starts = [sent["video_frames"] - index for index in keyframe_indexes if index > 0]
    assert got["video_frames"] in starts, (got["video_frames"], keyframe_indexes)


async def test_play_of_a_stream_that_is_not_live(start_relay: StartRelay) -> None:
    relay = await start_relay()
    started = time.monotonic()
    rc, _, err = await run(*client_command("play", relay.url("live/none")), timeout=30)
    assert rc != 0
    assert time.monotonic() - started < 15


# ----------------------------------------------------------------------------- auth


async def test_push_auth_accepts_signed_urls_and_refuses_others(start_relay: StartRelay) -> None:
    relay = await start_relay(push_key=PUSH_KEY, push_backup_key="backup")
    now = time.time()
    good = sign_push(PUSH_KEY, "cam", now + 300)
    query = f"txSecret={good['txSecret']}&txTime={good['txTime']}"

    rc, _, err = await run(*ffmpeg_push_cmd(relay.url(f"live/cam?{query}"), 0.5, realtime=False))
    assert rc == 0, err
    assert relay.hub.counters.streams_started == 1

    backup = sign_push("backup", "cam", now + 300)
    backup_query = f"txSecret={backup['txSecret']}&txTime={backup['txTime']}"
    # OBS style: the query rides in the app ("Server" field), the key is the bare name.
    rc, _, err = await run(
        *ffmpeg_push_cmd(
            relay.url("live/cam"),
            0.5,
            "-rtmp_app",
            f"live?{backup_query}",
            "-rtmp_playpath",
            "cam",
            realtime=False,
        )
    )
    assert rc == 0, err
    assert relay.hub.counters.streams_started == 2

    expired = sign_push(PUSH_KEY, "cam", now - 10)
    refused = [
        "txSecret=00000000000000000000000000000000&txTime=" + good["txTime"],
        f"txSecret={expired['txSecret']}&txTime={expired['txTime']}",
        "",
    ]
    for bad in refused:
        rc, _, err = await run(*ffmpeg_push_cmd(relay.url(f"live/cam?{bad}"), 0.5, realtime=False))
        assert rc != 0, bad
    # A valid signature for another stream name does not open this one.
    rc, _, _ = await run(*ffmpeg_push_cmd(relay.url(f"live/cam2?{query}"), 0.5, realtime=False))
    assert rc != 0
    assert relay.hub.counters.streams_started == 2
    assert relay.hub.counters.refused_pushes["auth"] == 4
    assert relay.server.counters.refused["auth"] == 4


async def test_duplicate_publisher_is_refused_and_the_first_goes_on(
    start_relay: StartRelay,
) -> None:
    relay = await start_relay()
    url = relay.url("live/dup")
    first = asyncio.create_task(av_client("push", url, "--seconds", "2.5"))
    stream = await relay.wait_live("live", "dup")
    player = asyncio.create_task(av_client("play", url))
    rc, _, err = await run(*ffmpeg_push_cmd(url, 0.5, realtime=False))
    assert rc != 0
    assert relay.hub.get(StreamKey("live", "dup")) is stream
    sent, got = await first, await player
    assert_played_everything(got, sent)
    assert relay.hub.counters.refused_pushes["busy"] == 1


async def test_kick_closes_the_publisher(start_relay: StartRelay) -> None:
    relay = await start_relay()
    pusher = asyncio.create_task(run(*ffmpeg_push_cmd(relay.url("live/kick"), 10.0)))
    stream = await relay.wait_live("live", "kick")
    stream.kick()
    rc, _, _ = await asyncio.wait_for(pusher, 15)
    assert rc != 0  # ffmpeg notices the server hung up long before its 10 s clip ends
    assert relay.hub.get(StreamKey("live", "kick")) is None


async def test_strict_digest_handshake_over_a_socket(start_relay: StartRelay) -> None:
    relay = await start_relay()

    def handshake(scheme: int) -> None:
        client = SocketClient(relay.server.port)
        client.proto.handshake = ClientHandshake(digest=True, scheme=scheme)
        client.handshake_and_connect()  # raises if S1/S2 do not verify
        client.close()

    for scheme in (0, 1):
        await asyncio.to_thread(handshake, scheme)


async def test_rtmpdump_fp9_handshake_is_accepted(
    start_relay: StartRelay, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # With --swfhash/--swfsize librtmp switches to the FP9 handshake and checks our S1 digest
    # and S2 signature ("Server not genuine Adobe!" otherwise).
    caplog.set_level(logging.DEBUG, logger="app.rtmp")
    relay = await start_relay()
    url = relay.url("live/fp9")
    pusher = asyncio.create_task(run(*ffmpeg_push_cmd(url, 1.5)))
    await relay.wait_live("live", "fp9")
    out_file = tmp_path / "fp9.flv"
    rc, _, err = await run(
        "rtmpdump", "-v", "-r", url, "-w", "00" * 32, "-x", "1", "-o", str(out_file)
    )
    await pusher
    assert rc in (0, 2), err
    assert "genuine" not in err.lower() and "couldn't verify" not in err.lower()
    assert out_file.stat().st_size > 10_000
    assert caplog.text.count("digest scheme") == 2  # FFmpeg's push and librtmp's play


# ----------------------------------------------------------------------------- bad input


def bad_chunk_size(port: int, size: int) -> bool:
    client = SocketClient(port)
    client.handshake_and_connect()
    client.send(client.proto.writer.control(MessageType.SET_CHUNK_SIZE, struct.pack(">I", size)))
    return client.closed_by_server()


def oversized_message(port: int) -> bool:
    client = SocketClient(port)
    client.handshake_and_connect()
    client.send(bytes([6]) + bytes(3) + (0xFFFFFF).to_bytes(3, "big") + b"\x09" + bytes(4))
    return client.closed_by_server()


def deeply_nested_amf(port: int) -> bool:
    client = SocketClient(port)
    client.handshake_and_connect()
    body = amf0.encode("createStream", 2.0) + b"\x0a\x00\x00\x00\x01" * 20000 + b"\x05"
    client.send(client.proto.writer.write(3, MessageType.COMMAND_AMF0, 0, 0, body))
    return client.closed_by_server()


def truncated_amf(port: int) -> bool:
    client = SocketClient(port)
    client.send(client.proto.handshake.data_to_send())
    while not client.proto.handshake.complete:
        client.proto.feed(client.sock.recv(65536))
    body = amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://x/live"})[:-7]
    client.send(
        client.proto.handshake.data_to_send()
        + client.proto.writer.write(3, MessageType.COMMAND_AMF0, 0, 0, body)
    )
    return client.closed_by_server()


def garbage_handshake(port: int) -> bool:
    client = SocketClient(port)
    client.send(b"GET /live/cam.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    return client.closed_by_server()


def truncated_handshake(port: int) -> None:
    client = SocketClient(port)
    client.send(b"\x03" + bytes(500))
    client.close()


def unknown_message_type_keeps_the_connection(port: int) -> bool:
    client = SocketClient(port)
    client.handshake_and_connect()
    client.send(client.proto.writer.write(9, 0x33, 0, 0, b"vendor extension"))
    client.send(client.proto.command("createStream", None))
    client.wait_for(lambda: sum(c[0] == "_result" for c in client.proto.commands()) == 2)
    client.close()
    return True


def publisher_stopping_mid_message(port: int) -> None:
    client = SocketClient(port)
    client.handshake_and_connect()
    client.send(client.proto.command("createStream", None))
    client.wait_for(lambda: sum(c[0] == "_result" for c in client.proto.commands()) == 2)
    client.send(client.proto.command("publish", None, "half", "live", stream_id=1))
    client.wait_for(
        lambda: any(s["code"] == "NetStream.Publish.Start" for s in client.proto.statuses())
    )
    frame = client.proto.writer.write(
        6, MessageType.VIDEO, 1, 0, b"\x17\x01\x00\x00\x00" + bytes(20000)
    )
    client.send(frame[:7000])
    client.close()


async def test_bad_input_closes_only_that_connection_while_a_stream_flows(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.rtmp")
    relay = await start_relay()
    port = relay.server.port
    url = relay.url("live/healthy")
    pusher = asyncio.create_task(av_client("push", url, "--seconds", "3"))
    await relay.wait_live("live", "healthy")
    player = asyncio.create_task(av_client("play", url))

    assert await asyncio.to_thread(garbage_handshake, port)
    await asyncio.to_thread(truncated_handshake, port)
    assert await asyncio.to_thread(bad_chunk_size, port, 0)
    assert await asyncio.to_thread(bad_chunk_size, port, 1 << 31)
    assert await asyncio.to_thread(oversized_message, port)
    assert await asyncio.to_thread(deeply_nested_amf, port)
    assert await asyncio.to_thread(truncated_amf, port)
    assert await asyncio.to_thread(unknown_message_type_keeps_the_connection, port)
    await asyncio.to_thread(publisher_stopping_mid_message, port)
    await relay.wait_gone("live", "half")

    sent, got = await pusher, await player
    assert_played_everything(got, sent)
    log_text = caplog.text
    for reason in (
        "not an RTMP handshake",
        "closed during the handshake",
        "invalid chunk size 0",
        f"invalid chunk size {1 << 31}",
        "exceeds",
        "nested deeper",
        "truncated AMF0",
        "unknown type 51",
        "middle of a message",
    ):
        assert reason in log_text, reason
    assert relay.server.counters.protocol_errors >= 7


# ----------------------------------------------------------------------------- flow control


def play_raw(port: int, name: str, read: bool, frames_wanted: int = 0) -> SocketClient:
    client = SocketClient(port, timeout=20)
    client.handshake_and_connect()
    client.send(client.proto.command("createStream", None))
    client.wait_for(lambda: sum(c[0] == "_result" for c in client.proto.commands()) == 2)
    client.send(client.proto.command("play", None, name, stream_id=1))
    if read:
        client.wait_for(
            lambda: len(client.proto.of_type(MessageType.VIDEO)) >= frames_wanted, timeout=20
        )
    return client


async def test_a_player_that_never_reads_slows_nobody(start_relay: StartRelay) -> None:
    relay = await start_relay(player_queue_seconds=0.5)
    port = relay.server.port
    frames, size = 400, 100_000  # 40 MB: far beyond what socket buffers absorb
    go = threading.Event()
    publisher = asyncio.create_task(asyncio.to_thread(publish_fast, port, "flow", frames, size, go))
    stream = await relay.wait_live("live", "flow")
    stuck = await asyncio.to_thread(play_raw, port, "flow", False)
    healthy = asyncio.create_task(asyncio.to_thread(play_raw, port, "flow", True, 60))
    while len(stream.output.subscriptions) < 2:
        await asyncio.sleep(0.01)
    go.set()
    elapsed = await publisher
    reader = await healthy
    assert elapsed < 20
    # The healthy player read on; the stuck one was skipped ahead by the hub instead of
    # holding the publisher or growing without bound in our write buffer.
    assert len(reader.proto.of_type(MessageType.VIDEO)) >= 60
    assert stream.output.dropped_frames > 0
    buffered = [
        c.transport.get_write_buffer_size() for c in relay.server.connections if c.transport
    ]
    assert max(buffered) < 8 * 1024 * 1024
    stuck.close()
    reader.close()


async def test_silent_clients_are_closed(start_relay: StartRelay) -> None:
    relay = await start_relay()
    relay.server.handshake_timeout = 1.0
    relay.server.idle_timeout = 1.5
    port = relay.server.port

    def silent_from_the_start() -> bool:
        return SocketClient(port).closed_by_server(timeout=5)

    def silent_publisher() -> bool:
        client = SocketClient(port)
        client.handshake_and_connect()
        client.send(client.proto.command("createStream", None))
        client.wait_for(lambda: sum(c[0] == "_result" for c in client.proto.commands()) == 2)
        client.send(client.proto.command("publish", None, "quiet", "live", stream_id=1))
        return client.closed_by_server(timeout=6)

    started = time.monotonic()
    results = await asyncio.gather(
        asyncio.to_thread(silent_from_the_start), asyncio.to_thread(silent_publisher)
    )
    assert results == [True, True]
    assert time.monotonic() - started < 6
    assert relay.hub.get(StreamKey("live", "quiet")) is None
