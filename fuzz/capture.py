"""Records what real RTMP clients send, as the seed corpus of the fuzz targets.

    python -m fuzz.capture      # rewrites fuzz/corpus/ from ffmpeg, GStreamer and rtmpdump

A relay (RtmpServer + Hub) runs on loopback behind a small TCP proxy that writes each
connection's client-to-server bytes to a file; the clients push and play short clips through
it (OBS Studio too, headless under Xvfb, when installed). Each capture is cut to MAX_BYTES
(the handshake and commands come first, then media), and the other targets get the pieces
they parse: the handshake, the chunk stream after it, AMF0 command and data bodies, FLV tag
bodies, avcC/hvcC records and some ROI strings.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from app.config import Settings
from app.hub import Hub
from app.media.flv import parse_video_tag
from app.rtmp.chunk import ChunkError, ChunkReader, MessageType
from app.rtmp.handshake import HANDSHAKE_SIZE
from app.rtmp.server import RtmpServer
from tests.support.obs import OBS_COMMAND, colour_source, obs_environment, write_obs_config

CORPUS = Path(__file__).resolve().parent / "corpus"
MAX_BYTES = 48 * 1024
HANDSHAKE_BYTES = 1 + 2 * HANDSHAKE_SIZE
CLIP = "testsrc2=size=64x36:rate=10:duration=1"
TONE = "sine=frequency=440:duration=1"


def ffmpeg_push(url: str, *codec: str) -> list[str]:
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", CLIP,
        "-f", "lavfi", "-i", TONE, *codec, "-c:a", "aac", "-b:a", "32k", "-f", "flv", url,
    ]  # fmt: skip


CLIENTS: dict[str, tuple[str, list[str]]] = {
    # name: (stream it uses, command with {url})
    "ffmpeg-push-h264": ("cam", ffmpeg_push("{url}", "-c:v", "libx264", "-g", "5")),
    # Debian's ffmpeg 5.1 has no HEVC in FLV; PyAV's FFmpeg 8 speaks Enhanced RTMP.
    "pyav-push-hevc": (
        "hevc",
        [
            sys.executable,
            "-m",
            "tests.support.av_client",
            "push",
            "{url}",
            "--codec",
            "libx265",
            "--seconds",
            "1",
            "--width",
            "64",
            "--height",
            "36",
            "--fps",
            "10",
        ],
    ),  # fmt: skip
    "gstreamer-push": (
        "gst",
        [
            "gst-launch-1.0",
            "-q",
            "-e",
            "videotestsrc",
            "is-live=true",
            "num-buffers=10",
            "!",
            "video/x-raw,width=64,height=36,framerate=10/1",
            "!",
            "x264enc",
            "tune=zerolatency",
            "!",
            "h264parse",
            "!",
            "flvmux",
            "streamable=true",
            "!",
            "rtmp2sink",
            "location={url}",
        ],
    ),  # fmt: skip
    "ffmpeg-play": (
        "cam",
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            "{url}",
            "-t",
            "0.5",
            "-f",
            "null",
            "-",
        ],
    ),  # fmt: skip
    "rtmpdump-play": ("cam", ["rtmpdump", "-q", "-r", "{url}", "-B", "0.5", "-o", "/dev/null"]),
}
PLAYERS = {"ffmpeg-play", "rtmpdump-play"}


async def proxy(target_port: int, captures: dict[str, bytearray], label: list[str]) -> int:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = f"{label[0]}-{sum(1 for k in captures if k.startswith(label[0]))}"
        record = captures.setdefault(name, bytearray())
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, rec: bool) -> None:
            while data := await src.read(65536):
                if rec and len(record) < MAX_BYTES:
                    record.extend(data[: MAX_BYTES - len(record)])
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(
            pipe(reader, up_writer, True), pipe(up_reader, writer, False), return_exceptions=True
        )

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server.sockets[0].getsockname()[1]


async def run_client(command: list[str], timeout: float = 30) -> None:
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def capture_obs(port: int, captures: dict[str, bytearray], label: list[str]) -> None:
    if not (shutil.which("obs") and shutil.which("xvfb-run")):
        print("skipped obs-push: obs-studio or xvfb is not installed")
        return
    label[0] = "obs-push"
    with tempfile.TemporaryDirectory() as home:
        config = Path(home)
        write_obs_config(
            config, "fuzz", f"rtmp://127.0.0.1:{port}/live", "obs",
            size=(160, 90), fps=10, source=colour_source(160, 90),
        )  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *OBS_COMMAND, env=obs_environment(config, config), cwd=home,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        for _ in range(600):  # OBS takes a while to start under Xvfb
            if len(captures.get("obs-push-0", b"")) >= MAX_BYTES or proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        await proc.wait()


async def capture() -> dict[str, bytes]:
    hub = Hub()
    server = RtmpServer(hub, Settings(), play_wait_seconds=5)
    await server.start("127.0.0.1", 0)
    captures: dict[str, bytearray] = {}
    label = ["?"]
    port = await proxy(server.port, captures, label)
    background: asyncio.Task[None] | None = None
    for name, (stream, template) in CLIENTS.items():
        if shutil.which(template[0]) is None and not Path(template[0]).exists():
            print(f"skipped {name}: {template[0]} is not installed")
            continue
        if name in PLAYERS and background is None:
            # Players need something live: push directly (not recorded) for a while.
            feeder = ffmpeg_push(f"rtmp://127.0.0.1:{server.port}/live/{stream}", "-c:v", "libx264")
            feeder[feeder.index(CLIP)] = CLIP.replace("duration=1", "duration=20")
            feeder[feeder.index(TONE)] = TONE.replace("duration=1", "duration=20")
            background = asyncio.create_task(run_client(feeder, timeout=25))
            await asyncio.sleep(2)
        label[0] = name
        url = f"rtmp://127.0.0.1:{port}/live/{stream}"
        await run_client([part.replace("{url}", url) for part in template])
        await asyncio.sleep(0.3)
    if background is not None:
        background.cancel()
    await capture_obs(port, captures, label)
    await server.close()
    return {name: bytes(data) for name, data in captures.items() if data}


def pieces(session: bytes) -> dict[str, list[bytes]]:
    """What the other targets parse, cut out of one captured session."""
    out: dict[str, list[bytes]] = {"handshake": [session[:HANDSHAKE_BYTES]]}
    stream = session[HANDSHAKE_BYTES:]
    out["chunk"] = [stream[:8192], stream]
    reader = ChunkReader()
    messages = []
    try:
        for start in range(0, len(stream), 4096):
            messages.extend(reader.receive_data(stream[start : start + 4096]))
    except ChunkError:
        pass
    out["amf0"] = [
        m.payload
        for m in messages
        if m.type_id in (MessageType.COMMAND_AMF0, MessageType.DATA_AMF0)
    ]
    media = [m.payload for m in messages if m.type_id in (MessageType.AUDIO, MessageType.VIDEO)]
    out["flv"] = [p[:2048] for p in media[:12]]
    out["nal"] = []
    for payload in media:
        if payload[:1] and payload[0] >> 4 in (1, 2) or payload[:1] and payload[0] & 0x80:
            try:
                tag = parse_video_tag(payload)
            except ValueError:
                continue
            if tag.packet_type == 0 and tag.codec in ("avc1", "hvc1"):
                codec_byte = b"\x00" if tag.codec == "avc1" else b"\x01"
                out["nal"].append(codec_byte + payload[tag.data_offset :])
    return out


ROI_SEEDS = ["0,0-100,100", "10,20-30,40=-5;50,50-90,90=3", "1,1-2,2=x;;3,3-4,4", "a" * 300]


def write(captures: dict[str, bytes]) -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    files: dict[str, set[bytes]] = {}
    for data in captures.values():
        files.setdefault("session", set()).add(data)
        for target, items in pieces(data).items():
            files.setdefault(target, set()).update(i for i in items if i)
    files["roi"] = {text.encode("utf-16-le") for text in ROI_SEEDS}
    for target, found in files.items():
        folder = CORPUS / target
        folder.mkdir(parents=True)
        for item in sorted(found):
            (folder / hashlib.sha1(item).hexdigest()[:16]).write_bytes(item)
        print(f"{target}: {len(found)} files, {sum(map(len, found))} bytes")
    for name, data in captures.items():
        print(f"captured {name}: {len(data)} bytes")


if __name__ == "__main__":
    write(asyncio.run(capture()))
