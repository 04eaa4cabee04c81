"""Relay fan-out: CPU per player, the most players held, and publish-to-play latency, for
roi-relay beside nginx with Debian's libnginx-mod-rtmp, both measured in the same run.

    .venv/bin/python bench/relay.py [--quick] [--steps 1,10,25,50,100,200,400] [--step-seconds 8]

Setup: a 10 s 1280x720 30 fps clip is encoded once with Debian's ffmpeg CLI (libx264 CBR
4 Mbit/s, a keyframe every 2 s, AAC audio) and pushed in a loop by ``ffmpeg -re -stream_loop
-1 ... -c copy -f flv rtmp://...``. Servers run as subprocesses on 127.0.0.1: roi-relay as
``python -m app.cli serve`` (plain relay, no ROI template) and nginx with only the RTMP module,
one process (``master_process off``), from a config in a temporary directory.

Players are cheap asyncio connections, all in ONE separate player process per server under
test, so that they do not swamp the two cores: HTTP-FLV players send a raw GET and read only
the FLV tag headers of the body; RTMP players are a minimal play client built on the project's
sans-IO handshake, chunk and AMF0 code. Each records the media bytes, tag count and newest
media timestamp it received.

Per server and player count (1, 10, 25, 50, 100, 200, 400; growth stops at the first step
that falls behind) the bench prints the server's CPU time per second of wall time (all threads,
from /proc/PID/task/*/schedstat), that divided by the players, and the marginal cost per
player over a publisher-only baseline. A step keeps up when every player at its end is within
1 s of the publisher's newest timestamp (ffmpeg's -progress), advanced its media time with the
wall clock, lost no frames (tag count per media second), and received at least 85 % of the
clip's bitrate. Past several hundred players the player process itself nears a full core: its
CPU is printed, and a step where it saturates one says so (the figure is then the bench's).

Latency is a separate, idle-server measurement: the bench publishes the clip's FLV tags in
real time with its own minimal RTMP publish client and records the wall time each tag was
sent; one player records the wall time each tag arrived. Latency = arrival - send (median,
95th percentile) for roi-relay HTTP-FLV, roi-relay RTMP and nginx RTMP.

The machine is shared: the load average and how busy both cores were are printed beside the
figures. The last line holds the headline figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.rtmp import amf0  # noqa: E402
from app.rtmp.chunk import ChunkReader, ChunkWriter, MessageType, RtmpMessage  # noqa: E402
from app.rtmp.handshake import ClientHandshake  # noqa: E402

HOST = "127.0.0.1"
APP = "live"
LOAD_STREAM = "bench"
NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

CLIP_SECONDS = 10
CLIP_FPS = 30
CLIP_KBPS = 4000
KEYFRAME_SECONDS = 2

MAX_LAG_MS = 1000.0  # a player further behind the publisher than this has fallen behind
MIN_ADVANCE = 0.9  # media time received per wall second
MIN_TAG_RATIO = 0.95  # tags received per media second / tags in the clip per media second
MIN_BITRATE_RATIO = 0.85  # received bitrate / clip bitrate
OUT_CHUNK_SIZE = 4096
# Above this share of a core the player process itself may be what falls behind.
PLAYERS_SATURATED = 0.9
CONNECT_BATCH = 25
QUIET_CPU = 0.15  # share of a core below which a server counts as idle between series
QUIET_LIMIT_S = 30.0
START_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 30.0

AUDIO, VIDEO, SCRIPT = 8, 9, 18
MEDIA_KINDS = (AUDIO, VIDEO)


# ------------------------------------------------------------------------------- clip


@dataclass(frozen=True, slots=True)
class FlvFileTag:
    kind: int
    timestamp: int
    body: bytes


def read_flv_file(path: Path) -> list[FlvFileTag]:
    data = path.read_bytes()
    if data[:3] != b"FLV":
        raise ValueError(f"{path} is not an FLV file")
    pos = int.from_bytes(data[5:9], "big") + 4
    tags: list[FlvFileTag] = []
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        body = data[pos + 11 : pos + 11 + size]
        if len(body) < size:
            break
        tags.append(FlvFileTag(data[pos] & 0x1F, ts, body))
        pos += 11 + size + 4
    return tags


def is_sequence_header(tag: FlvFileTag) -> bool:
    """AVC/HEVC decoder configuration or AAC AudioSpecificConfig (sent once per stream)."""
    if tag.kind == VIDEO:
        return len(tag.body) > 1 and tag.body[1] == 0 and (tag.body[0] & 0x0F) in (7, 12)
    if tag.kind == AUDIO:
        return len(tag.body) > 1 and (tag.body[0] >> 4) == 10 and tag.body[1] == 0
    return False


@dataclass(frozen=True)
class Clip:
    path: Path
    tags: list[FlvFileTag]
    period_ms: int  # one loop of the clip on the media timeline
    media_bytes_per_s: float
    media_tags_per_s: float

    @property
    def mbps(self) -> float:
        return self.media_bytes_per_s * 8 / 1e6


async def encode_clip(workdir: Path) -> Clip:
    path = workdir / "clip.flv"
    gop = CLIP_FPS * KEYFRAME_SECONDS
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={CLIP_FPS},noise=alls=12:allf=t",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(CLIP_SECONDS),
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-b:v", f"{CLIP_KBPS}k", "-minrate", f"{CLIP_KBPS}k", "-maxrate", f"{CLIP_KBPS}k",
        "-bufsize", f"{CLIP_KBPS}k", "-x264-params", "nal-hrd=cbr",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "128k",
        "-f", "flv", str(path),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not encode the clip: {err.decode(errors='replace')}")
    tags = read_flv_file(path)
    media = [t for t in tags if t.kind in MEDIA_KINDS and not is_sequence_header(t)]
    last = max(t.timestamp for t in media)
    period_ms = last + round(1000 / CLIP_FPS)
    return Clip(
        path,
        tags,
        period_ms,
        sum(len(t.body) for t in media) * 1000 / period_ms,
        len(media) * 1000 / period_ms,
    )


# ------------------------------------------------------------------------------- players


class PlayerStats:
    """What one player received: media payload bytes, tags, the newest media timestamp and,
    for the latency player, the arrival time of each (kind, timestamp)."""

    __slots__ = (
        "arrivals",
        "first_video_at",
        "closed",
        "error",
        "first_media_at",
        "media_bytes",
        "newest_ts",
        "tags",
    )

    def __init__(self, *, record_arrivals: bool = False) -> None:
        self.media_bytes = 0
        self.tags = 0
        self.newest_ts = -1
        self.first_media_at: float | None = None
        # nginx-rtmp holds video back until a keyframe, so "playing" means video arrived.
        self.first_video_at: float | None = None
        self.closed = False
        self.error: str | None = None
        self.arrivals: dict[tuple[int, int], float] | None = {} if record_arrivals else None

    def on_tag(self, kind: int, timestamp: int, size: int, now: float) -> None:
        if kind not in MEDIA_KINDS:
            return
        self.media_bytes += size
        self.tags += 1
        if timestamp > self.newest_ts:
            self.newest_ts = timestamp
        if self.first_media_at is None:
            self.first_media_at = now
        if kind == VIDEO and self.first_video_at is None:
            self.first_video_at = now
        if self.arrivals is not None:
            self.arrivals.setdefault((kind, timestamp), now)

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason


class FlvTagScanner:
    """Incremental FLV stream reader that looks only at tag headers (kind, timestamp, body
    size) and skips the bodies, so an HTTP-FLV player costs almost nothing per byte."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._need = 9  # the FLV file header first, then 11-byte tag headers
        self._skip = 0
        self._in_tags = False

    def feed(self, data: bytes | memoryview) -> list[tuple[int, int, int]]:
        tags: list[tuple[int, int, int]] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                continue
            take = min(self._need - len(self._head), end - pos)
            self._head += data[pos : pos + take]
            pos += take
            if len(self._head) < self._need:
                break
            head = self._head
            if not self._in_tags:
                if head[:3] != b"FLV":
                    raise ValueError("HTTP body is not FLV")
                self._skip = int.from_bytes(head[5:9], "big") - 9 + 4
                self._need = 11
                self._in_tags = True
            else:
                size = (head[1] << 16) | (head[2] << 8) | head[3]
                ts = (head[4] << 16) | (head[5] << 8) | head[6] | (head[7] << 24)
                tags.append((head[0] & 0x1F, ts, size))
                self._skip = size + 4
            head.clear()
        return tags


class ChunkedBody:
    """HTTP/1.1 chunked transfer decoding, incremental: returns the body pieces it holds."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._remaining = 0
        self._crlf = 0
        self.finished = False

    def feed(self, data: memoryview) -> list[memoryview]:
        pieces: list[memoryview] = []
        pos, end = 0, len(data)
        while pos < end and not self.finished:
            if self._remaining:
                take = min(self._remaining, end - pos)
                pieces.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._crlf = 2
            elif self._crlf:
                take = min(self._crlf, end - pos)
                pos += take
                self._crlf -= take
            else:
                newline = bytes(data[pos : pos + 1024]).find(b"\n")
                if newline < 0:
                    self._line += data[pos:]
                    break
                self._line += data[pos : pos + newline]
                pos += newline + 1
                size_text = bytes(self._line).split(b";")[0].strip()
                self._line.clear()
                size = int(size_text or b"0", 16)
                if size == 0:
                    self.finished = True
                else:
                    self._remaining = size
        return pieces


class HttpFlvPlayer(asyncio.Protocol):
    """GET /{app}/{stream}.flv and count the tags of the endless FLV body."""

    def __init__(self, path: str, stats: PlayerStats) -> None:
        self.path = path
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._chunked: ChunkedBody | None = None
        self._in_body = False
        self._scanner = FlvTagScanner()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = f"GET {self.path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        view = memoryview(data)
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._head[:end]).decode("latin-1").lower()
            status = head.split("\r\n", 1)[0]
            if " 200 " not in status + " ":
                self._stop(f"HTTP status {status!r}")
                return
            if "transfer-encoding: chunked" in head:
                self._chunked = ChunkedBody()
            view = memoryview(bytes(self._head[end + 4 :]))
            self._head.clear()
            self._in_body = True
        pieces = self._chunked.feed(view) if self._chunked is not None else [view]
        try:
            for piece in pieces:
                for kind, ts, size in self._scanner.feed(piece):
                    self.stats.on_tag(kind, ts, size, now)
        except ValueError as exc:
            self._stop(str(exc))

    def _stop(self, reason: str) -> None:
        self.stats.fail(reason)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed = True


class RtmpClient(asyncio.Protocol):
    """A minimal RTMP client on the project's sans-IO pieces: handshake, connect,
    createStream, then play (counting media) or publish (``send_tag``). ``ready`` resolves on
    NetStream.Play.Start / NetStream.Publish.Start."""

    def __init__(self, tc_url: str, stream: str, *, publish: bool, stats: PlayerStats) -> None:
        self.tc_url = tc_url
        self.stream = stream
        self.publish = publish
        self.stats = stats
        self.handshake = ClientHandshake()
        self.reader = ChunkReader()
        self.writer = ChunkWriter()
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stream_id = 0
        self._next_txn = 2.0
        self._create_txn = 0.0

    # -- sending

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _command(self, name: str, *args: Any, stream_id: int = 0, txn: float | None = None) -> None:
        if txn is None:
            txn = self._next_txn
            self._next_txn += 1
        csid = 3 if stream_id == 0 else 8
        payload = amf0.encode(name, txn, *args)
        self._write(self.writer.write(csid, MessageType.COMMAND_AMF0, stream_id, 0, payload))

    def send_tag(self, kind: int, timestamp: int, body: bytes) -> None:
        csid = {AUDIO: 4, VIDEO: 6}.get(kind, 5)
        self._write(self.writer.write(csid, kind, self.stream_id, timestamp, body))

    def send_metadata(self, script_body: bytes) -> None:
        """An FLV onMetaData script tag, sent the way publishers do (@setDataFrame)."""
        payload = amf0.encode("@setDataFrame") + script_body
        self._write(self.writer.write(5, MessageType.DATA_AMF0, self.stream_id, 0, payload))

    def use_chunk_size(self, size: int) -> None:
        self._write(self.writer.set_chunk_size(size))

    # -- receiving

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._write(self.handshake.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            if not self.handshake.complete:
                data = self.handshake.receive_data(data)
                c2 = self.handshake.data_to_send()
                if not self.handshake.complete:
                    return
                self._write(c2)
                app = self.tc_url.rsplit("/", 1)[1]
                obj = {"app": app, "type": "nonprivate", "tcUrl": self.tc_url}
                if not self.publish:
                    obj.update(fpad=False, capabilities=15.0, audioCodecs=3191.0)
                    obj.update(videoCodecs=252.0, videoFunction=1.0)
                self._command("connect", obj, txn=1.0)
                if not data:
                    return
            now = time.monotonic()
            for message in self.reader.receive_data(data):
                self._on_message(message, now)
            ack = self.reader.take_ack()
            if ack is not None:
                self._write(self.writer.acknowledgement(ack))
        except Exception as exc:  # any protocol failure ends this one client, recorded
            self._stop(f"{type(exc).__name__}: {exc}")

    def _on_message(self, msg: RtmpMessage, now: float) -> None:
        kind = msg.type_id
        if kind in MEDIA_KINDS:
            self.stats.on_tag(kind, msg.timestamp, len(msg.payload), now)
        elif kind == MessageType.COMMAND_AMF0:
            self._on_command(amf0.decode(msg.payload))
        elif kind == MessageType.USER_CONTROL and msg.payload[:2] == b"\x00\x06":
            self._write(self.writer.user_control(7, msg.payload[2:6]))  # ping -> pong

    def _on_command(self, values: list[Any]) -> None:
        name = values[0] if values else None
        txn = values[1] if len(values) > 1 else 0.0
        if name == "_result" and txn == 1.0:
            if self.publish:
                self._command("releaseStream", None, self.stream)
                self._command("FCPublish", None, self.stream)
            self._create_txn = self._next_txn
            self._command("createStream", None)
        elif name == "_result" and txn == self._create_txn and self._create_txn:
            self.stream_id = int(values[3])
            if self.publish:
                self._command("publish", None, self.stream, "live", stream_id=self.stream_id)
            else:
                self._command("play", None, self.stream, -1000.0, stream_id=self.stream_id)
                buffer_ms = (3000).to_bytes(4, "big")
                self._write(
                    self.writer.user_control(3, self.stream_id.to_bytes(4, "big") + buffer_ms)
                )
        elif name == "onStatus" and len(values) > 3 and isinstance(values[3], dict):
            code = str(values[3].get("code", ""))
            if values[3].get("level") == "error":
                self._stop(f"server said {code}: {values[3].get('description', '')}")
            elif code in ("NetStream.Publish.Start", "NetStream.Play.Start"):
                if not self.ready.done():
                    self.ready.set_result(None)
        elif name == "_error":
            self._stop(f"server answered _error to a command: {values[3:]}")

    def _stop(self, reason: str) -> None:
        self.stats.fail(reason)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection closed before start"))


@dataclass(frozen=True)
class Target:
    """Where a server under test listens."""

    name: str
    rtmp_port: int
    http_port: int | None  # None: no HTTP-FLV (nginx-rtmp)

    def tc_url(self) -> str:
        return f"rtmp://{HOST}:{self.rtmp_port}/{APP}"


async def open_player(target: Target, kind: str, stream: str, stats: PlayerStats) -> Any:
    """Connects one player; returns its transport."""
    loop = asyncio.get_running_loop()
    if kind == "flv":
        assert target.http_port is not None
        path = f"/{APP}/{stream}.flv"
        transport, _ = await loop.create_connection(
            lambda: HttpFlvPlayer(path, stats), HOST, target.http_port
        )
    else:
        transport, _ = await loop.create_connection(
            lambda: RtmpClient(target.tc_url(), stream, publish=False, stats=stats),
            HOST,
            target.rtmp_port,
        )
    return transport


# ------------------------------------------------------------------------------- player process


async def player_process_main(target: Target) -> None:
    """The separate player process: JSON commands on stdin, one JSON answer line each."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    players: list[tuple[PlayerStats, Any]] = []

    def answer(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def connect(kind: str) -> tuple[PlayerStats, Any]:
        stats = PlayerStats()
        try:
            transport = await open_player(target, kind, LOAD_STREAM, stats)
        except OSError as exc:
            stats.fail(f"connect: {exc}")
            stats.closed = True
            transport = None
        return stats, transport

    try:
        while line := await stdin.readline():
            request = json.loads(line)
            op = request["op"]
            if op == "grow":
                missing = request["count"] - len(players)
                while missing > 0:
                    batch = min(missing, CONNECT_BATCH)
                    players += await asyncio.gather(
                        *(connect(request["kind"]) for _ in range(batch))
                    )
                    missing -= batch
                deadline = time.monotonic() + START_TIMEOUT_S
                while time.monotonic() < deadline and any(
                    s.first_video_at is None and not s.closed for s, _ in players
                ):
                    await asyncio.sleep(0.05)
                errors = sorted({s.error for s, _ in players if s.error})
                playing = sum(
                    1 for s, _ in players if s.first_video_at is not None and not s.closed
                )
                answer({"players": len(players), "playing": playing, "errors": errors[:3]})
            elif op == "snap":
                answer(
                    {
                        "t": time.monotonic(),
                        "cpu_s": time.process_time(),
                        "players": [
                            [s.media_bytes, s.tags, s.newest_ts, not s.closed] for s, _ in players
                        ],
                        "errors": sorted({s.error for s, _ in players if s.error})[:3],
                    }
                )
            elif op == "reset":
                for _, transport in players:
                    if transport is not None:
                        transport.close()
                players.clear()
                await asyncio.sleep(0.2)
                answer({"players": 0})
            else:
                break
    finally:
        for _, transport in players:
            if transport is not None:
                transport.close()


class PlayerFleet:
    """The bench's handle on one player process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, target: Target) -> PlayerFleet:
        args = [sys.executable, str(Path(__file__).resolve()), "--player-process", target.name]
        args += ["--rtmp-port", str(target.rtmp_port)]
        if target.http_port is not None:
            args += ["--http-port", str(target.http_port)]
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        return cls(proc)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), REQUEST_TIMEOUT_S)
        if not line:
            raise RuntimeError("the player process exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.request("quit")  # no answer: the process exits
            # Signalling a child that exited on its own reaps it behind asyncio's back
            # (Popen.send_signal polls first), so give it the time to be seen exiting.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
        await stop_process(self.proc)


# ------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all its threads, user and system, in ns resolution from the
    scheduler's per-thread run time (/proc/PID/task/*/schedstat); utime+stime in
    /proc/PID/stat count whole 10 ms ticks, too coarse for nginx's few ms a second."""
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total_ns += int((task / "schedstat").read_text().split()[0])
    return total_ns / 1e9


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def wait_listening(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {tail(log)}")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise RuntimeError(f"nothing listens on port {port} after 30 s: {tail(log)}")


def tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Server:
    target: Target
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


async def start_roi_relay(workdir: Path) -> Server:
    rtmp_port, http_port = free_port(), free_port()
    data_dir = workdir / "roi-relay-data"
    log = workdir / "roi-relay.log"
    args = ["-m", "app.cli", "serve", "--host", HOST, "--rtmp-port", str(rtmp_port)]
    args += ["--http-port", str(http_port), "--data-dir", str(data_dir), "--log-level", "warning"]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=ROOT,
            stdout=out,
            stderr=out,
            stdin=asyncio.subprocess.DEVNULL,
        )
    server = Server(Target("roi-relay", rtmp_port, http_port), proc, log)
    await wait_listening(http_port, proc, log)
    await wait_listening(rtmp_port, proc, log)
    return server


async def start_nginx(workdir: Path) -> Server:
    prefix = workdir / "nginx"
    (prefix / "logs").mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""load_module {NGINX_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
rtmp {{
    server {{
        listen {HOST}:{port};
        chunk_size {OUT_CHUNK_SIZE};
        application {APP} {{ live on; }}
    }}
}}
"""
    )
    log = prefix / "logs" / "stderr.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            "nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs" / "error.log"),
            stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    server = Server(Target("nginx-rtmp", port, None), proc, log)
    await wait_listening(port, proc, prefix / "logs" / "error.log")
    return server


class FfmpegPublisher:
    """ffmpeg -re -stream_loop -1 pushing the clip; -progress tells its newest timestamp."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.out_ms: float | None = None
        self.out_at = 0.0
        self._reader = asyncio.get_running_loop().create_task(self._read_progress())

    @classmethod
    async def start(cls, clip: Clip, target: Target, workdir: Path) -> FfmpegPublisher:
        log = workdir / f"ffmpeg-{target.name}.log"
        url = f"{target.tc_url()}/{LOAD_STREAM}"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-nostats",
                "-re", "-stream_loop", "-1", "-i", str(clip.path), "-c", "copy",
                "-progress", "pipe:1", "-stats_period", "0.25", "-f", "flv", url,
                stdout=asyncio.subprocess.PIPE, stderr=err, stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        publisher = cls(proc, log)
        deadline = time.monotonic() + 15
        while publisher.out_ms is None or publisher.out_ms < 500:
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ffmpeg publisher did not start: {tail(log)}")
            await asyncio.sleep(0.05)
        return publisher

    async def _read_progress(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            key, _, value = line.decode(errors="replace").strip().partition("=")
            if key == "out_time_us" and value.lstrip("-").isdigit():
                self.out_ms = int(value) / 1000
                self.out_at = time.monotonic()

    def newest_ms(self, at: float) -> float:
        """The publisher's newest media timestamp at monotonic time ``at`` (it runs in real
        time between progress reports)."""
        assert self.out_ms is not None
        return self.out_ms + (at - self.out_at) * 1000

    async def stop(self) -> None:
        await stop_process(self.proc)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


# ------------------------------------------------------------------------------- scaling steps


@dataclass
class Snapshot:
    t: float
    players: list[list[Any]]
    player_cpu_s: float
    server_cpu_s: float
    publisher_cpu_s: float
    machine: tuple[int, int]
    publisher_ms: float


@dataclass
class StepResult:
    players: int
    server_cpu: float  # share of one core
    kept_up: int
    worst_lag_ms: float
    min_mbps: float
    mean_mbps: float
    player_proc_cpu: float
    machine_busy: float  # share of all cores
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.kept_up == self.players

    def cpu_per_player(self) -> float:
        return self.server_cpu / self.players


@dataclass
class Series:
    label: str
    baseline_cpu: float = 0.0
    steps: list[StepResult] = field(default_factory=list)

    @property
    def max_held(self) -> int:
        return max((s.players for s in self.steps if s.ok), default=0)

    @property
    def never_fell_behind(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def step(self, players: int) -> StepResult | None:
        return next((s for s in self.steps if s.players == players), None)


async def snapshot(fleet: PlayerFleet, server: Server, publisher: FfmpegPublisher) -> Snapshot:
    for proc, what, log in (
        (server.proc, server.target.name, server.log),
        (publisher.proc, "ffmpeg publisher", publisher.log),
    ):
        if proc.returncode is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {tail(log)}")
    answer = await fleet.request("snap")
    return Snapshot(
        t=answer["t"],
        players=answer["players"],
        player_cpu_s=answer["cpu_s"],
        server_cpu_s=cpu_seconds(server.pid),
        publisher_cpu_s=cpu_seconds(publisher.proc.pid),
        machine=machine_jiffies(),
        publisher_ms=publisher.newest_ms(answer["t"]),
    )


def evaluate(a: Snapshot, b: Snapshot, clip: Clip) -> StepResult:
    wall = b.t - a.t
    lags: list[float] = []
    rates: list[float] = []
    reasons: set[str] = set()
    kept_up = 0
    for before, after in zip(a.players, b.players, strict=False):
        bytes_a, tags_a, ts_a, _ = before
        bytes_b, tags_b, ts_b, alive = after
        advance_s = (ts_b - ts_a) / 1000
        lag = b.publisher_ms - ts_b
        mbps = (bytes_b - bytes_a) * 8 / wall / 1e6
        tag_ratio = (tags_b - tags_a) / (advance_s * clip.media_tags_per_s) if advance_s > 0 else 0
        lags.append(lag)
        rates.append(mbps)
        problems = []
        if not alive:
            problems.append("disconnected")
        if lag > MAX_LAG_MS:
            problems.append(f"lag>{MAX_LAG_MS:.0f}ms")
        if advance_s < MIN_ADVANCE * wall:
            problems.append("media time stalled")
        if tag_ratio < MIN_TAG_RATIO:
            problems.append("frames skipped")
        if mbps < MIN_BITRATE_RATIO * clip.mbps:
            problems.append("bitrate low")
        reasons.update(problems)
        kept_up += not problems
    busy = (b.machine[0] - a.machine[0]) / max(1, b.machine[1] - a.machine[1])
    return StepResult(
        players=len(b.players),
        server_cpu=(b.server_cpu_s - a.server_cpu_s) / wall,
        kept_up=kept_up,
        worst_lag_ms=max(lags, default=0.0),
        min_mbps=min(rates, default=0.0),
        mean_mbps=statistics.fmean(rates) if rates else 0.0,
        player_proc_cpu=(b.player_cpu_s - a.player_cpu_s) / wall,
        machine_busy=busy,
        reasons=sorted(reasons),
    )


async def wait_quiet(server: Server, limit_s: float = QUIET_LIMIT_S) -> float:
    """Waits until the server's CPU falls to its idle level (an overloaded server may still be
    working through queues of players that left); returns how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        before = cpu_seconds(server.pid)
        await asyncio.sleep(0.5)
        if (cpu_seconds(server.pid) - before) / 0.5 < QUIET_CPU:
            break
    return time.monotonic() - start


async def run_series(
    label: str,
    kind: str,
    server: Server,
    fleet: PlayerFleet,
    publisher: FfmpegPublisher,
    clip: Clip,
    steps: list[int],
    step_s: float,
    settle_s: float,
) -> Series:
    series = Series(label)
    await fleet.request("reset")
    await asyncio.sleep(settle_s)
    busy_s = await wait_quiet(server)
    if busy_s > 1:
        print(f"{label:<20} (server stayed busy {busy_s:.0f} s after the last players left)")
    a = await snapshot(fleet, server, publisher)
    await asyncio.sleep(step_s / 2)
    b = await snapshot(fleet, server, publisher)
    series.baseline_cpu = (b.server_cpu_s - a.server_cpu_s) / (b.t - a.t)
    ffmpeg_cpu = (b.publisher_cpu_s - a.publisher_cpu_s) / (b.t - a.t)
    print(
        f"{label:<20} publisher only: server {series.baseline_cpu:6.2%} of a core "
        f"(ffmpeg publisher {ffmpeg_cpu:.2%})",
        flush=True,
    )
    for count in steps:
        grown = await fleet.request("grow", kind=kind, count=count)
        if grown["playing"] < count:
            print(
                f"{label:<20} n={count:>4}: only {grown['playing']} players started "
                f"({'; '.join(grown['errors']) or 'timeout'})",
                flush=True,
            )
            series.steps.append(StepResult(count, 0.0, grown["playing"], 0, 0, 0, 0, 0, ["start"]))
            break
        await asyncio.sleep(settle_s)
        a = await snapshot(fleet, server, publisher)
        await asyncio.sleep(step_s)
        b = await snapshot(fleet, server, publisher)
        step = evaluate(a, b, clip)
        if step.player_proc_cpu > PLAYERS_SATURATED:
            step.reasons.append("player process saturated: figures limited by the load generator")
        series.steps.append(step)
        marginal = (step.server_cpu - series.baseline_cpu) / count
        print(
            f"{label:<20} n={count:>4}  server {step.server_cpu:6.1%}  "
            f"cpu/player {step.cpu_per_player():6.2%}  marginal/player {marginal:6.2%}  "
            f"kept up {step.kept_up:>3}/{count:<3}  worst lag {step.worst_lag_ms:5.0f} ms  "
            f"recv {step.mean_mbps:4.2f} Mbit/s (min {step.min_mbps:4.2f})  "
            f"players proc {step.player_proc_cpu:5.1%}  machine {step.machine_busy:4.0%}"
            + (f"  [{', '.join(step.reasons)}]" if step.reasons else ""),
            flush=True,
        )
        if not step.ok:
            break
    await fleet.request("reset")
    return series


# ------------------------------------------------------------------------------- latency


@dataclass
class Latency:
    label: str
    samples_ms: list[float]
    error: str | None = None

    def median(self) -> float:
        return statistics.median(self.samples_ms) if self.samples_ms else float("nan")

    def p95(self) -> float:
        if not self.samples_ms:
            return float("nan")
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


async def measure_latency(
    label: str, clip: Clip, target: Target, kind: str, seconds: float
) -> Latency:
    """Publishes the clip's tags in real time with our own RTMP client while one player
    records when each tag arrives."""
    loop = asyncio.get_running_loop()
    stream = f"latency-{kind}"
    publisher = RtmpClient(target.tc_url(), stream, publish=True, stats=PlayerStats())
    transport, _ = await loop.create_connection(lambda: publisher, HOST, target.rtmp_port)
    player_stats = PlayerStats(record_arrivals=True)
    player_transport: Any = None
    sent: dict[tuple[int, int], float] = {}
    try:
        await asyncio.wait_for(publisher.ready, 10)
        publisher.use_chunk_size(OUT_CHUNK_SIZE)
        script = next((t for t in clip.tags if t.kind == SCRIPT), None)
        if script is not None:
            publisher.send_metadata(script.body)
        start = time.monotonic()
        end = start + seconds + 1.0
        player_at = start + 1.0  # the stream must be live before an HTTP-FLV GET
        loop_index = 0
        while time.monotonic() < end:
            offset = loop_index * clip.period_ms
            for tag in clip.tags:
                if tag.kind not in MEDIA_KINDS or (loop_index and is_sequence_header(tag)):
                    continue
                ts = tag.timestamp + offset
                delay = start + ts / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if player_transport is None and time.monotonic() >= player_at:
                    player_transport = await open_player(target, kind, stream, player_stats)
                if time.monotonic() >= end:
                    break
                publisher.send_tag(tag.kind, ts, tag.body)
                sent.setdefault((tag.kind, ts), time.monotonic())
            loop_index += 1
        await asyncio.sleep(0.5)  # let the last tags arrive
    except (OSError, ConnectionError, TimeoutError) as exc:
        return Latency(label, [], f"{type(exc).__name__}: {exc}")
    finally:
        transport.close()
        if player_transport is not None:
            player_transport.close()
    first = player_stats.first_media_at
    arrivals = player_stats.arrivals or {}
    if first is None:
        return Latency(label, [], player_stats.error or "the player received no media")
    # Tags sent before the player's first media came out of a join-time cache (roi-relay's
    # GOP cache); only tags sent while the player was already playing measure delivery.
    samples = [
        (arrived - sent[key]) * 1000
        for key, arrived in arrivals.items()
        if key in sent and sent[key] >= first
    ]
    return Latency(label, samples)


# ------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a ~1 minute run (fewer, shorter steps)"
    )
    parser.add_argument(
        "--steps", help="player counts, comma-separated (default 1,10,25,50,100,200,400)"
    )
    parser.add_argument("--step-seconds", type=float, help="measured seconds per step (default 8)")
    parser.add_argument(
        "--latency-seconds", type=float, help="seconds of latency samples (default 6)"
    )
    parser.add_argument("--skip-nginx", action="store_true", help="measure roi-relay only")
    parser.add_argument("--player-process", help=argparse.SUPPRESS)
    parser.add_argument("--rtmp-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--http-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.steps = [
        int(v)
        for v in (args.steps or ("1,10,40" if quick else "1,10,25,50,100,200,400")).split(",")
    ]
    args.step_seconds = args.step_seconds or (3.0 if quick else 8.0)
    args.latency_seconds = args.latency_seconds or (3.0 if quick else 6.0)
    args.settle_seconds = 0.5 if quick else 1.0
    return args


def fmt_ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"


def ratio_at_common(roi: Series, nginx: Series | None) -> tuple[int, float] | None:
    """CPU per player of roi-relay over nginx at the largest player count both held."""
    if nginx is None:
        return None
    common = [s.players for s in roi.steps if s.ok and (n := nginx.step(s.players)) and n.ok]
    if not common:
        return None
    count = max(common)
    mine, theirs = roi.step(count), nginx.step(count)
    assert mine is not None and theirs is not None
    if theirs.server_cpu <= 0:
        return count, float("inf")
    return count, mine.cpu_per_player() / theirs.cpu_per_player()


def marginal_ratio(roi: Series, nginx: Series | None, count: int) -> float | None:
    """The same comparison with each server's publisher-only baseline taken off first."""
    mine, theirs = roi.step(count), nginx.step(count) if nginx else None
    if mine is None or theirs is None or nginx is None:
        return None
    extra = theirs.server_cpu - nginx.baseline_cpu
    return (mine.server_cpu - roi.baseline_cpu) / extra if extra > 0 else None


async def bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    servers: list[Server] = []
    publishers: list[FfmpegPublisher] = []
    fleets: list[PlayerFleet] = []
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        clip = await encode_clip(workdir)
        print(
            f"clip: {CLIP_SECONDS} s 1280x720 {CLIP_FPS} fps, keyframe every {KEYFRAME_SECONDS} s, "
            f"{clip.mbps:.2f} Mbit/s media, {clip.media_tags_per_s:.0f} tags/s; "
            f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
            flush=True,
        )
        relay = await start_roi_relay(workdir)
        servers.append(relay)
        nginx: Server | None = None
        if not args.skip_nginx:
            nginx = await start_nginx(workdir)
            servers.append(nginx)

        latencies = [
            await measure_latency(
                "roi-relay http-flv", clip, relay.target, "flv", args.latency_seconds
            ),
            await measure_latency(
                "roi-relay rtmp", clip, relay.target, "rtmp", args.latency_seconds
            ),
        ]
        if nginx is not None:
            latencies.append(
                await measure_latency(
                    "nginx-rtmp rtmp", clip, nginx.target, "rtmp", args.latency_seconds
                )
            )
        for lat in latencies:
            detail = lat.error or f"{len(lat.samples_ms)} tags"
            print(
                f"latency {lat.label:<20} median {fmt_ms(lat.median()):>4} ms  "
                f"p95 {fmt_ms(lat.p95()):>4} ms  ({detail})",
                flush=True,
            )

        plan: list[tuple[Server, list[tuple[str, str]]]] = [
            (relay, [("roi-relay http-flv", "flv"), ("roi-relay rtmp", "rtmp")])
        ]
        if nginx is not None:
            plan.append((nginx, [("nginx-rtmp rtmp", "rtmp")]))
        results: dict[str, Series] = {}
        for server, series_plan in plan:
            publisher = await FfmpegPublisher.start(clip, server.target, workdir)
            publishers.append(publisher)
            fleet = await PlayerFleet.start(server.target)
            fleets.append(fleet)
            for label, kind in series_plan:
                results[label] = await run_series(
                    label, kind, server, fleet, publisher, clip,
                    args.steps, args.step_seconds, args.settle_seconds,
                )  # fmt: skip
            await fleet.stop()
            await publisher.stop()

        load_after = os.getloadavg()
        print(f"\nsummary (CPU as share of one core; load average after {load_after[0]:.2f})")
        for series in results.values():
            held = f"{series.max_held}" + ("+" if series.never_fell_behind else "")
            per = ", ".join(f"{s.players}:{s.cpu_per_player():.2%}" for s in series.steps if s.ok)
            print(f"  {series.label:<20} most players held {held:>4}  cpu/player by n: {per}")
        nginx_series = results.get("nginx-rtmp rtmp")
        flv_ratio = ratio_at_common(results["roi-relay http-flv"], nginx_series)
        rtmp_ratio = ratio_at_common(results["roi-relay rtmp"], nginx_series)
        for name, ratio in (("http-flv", flv_ratio), ("rtmp", rtmp_ratio)):
            if ratio is not None:
                verdict = "within" if ratio[1] <= 2 else "NOT within"
                roi_series = results[f"roi-relay {name}"]
                marginal = marginal_ratio(roi_series, nginx_series, ratio[0])
                print(
                    f"  cpu/player roi-relay {name} / nginx-rtmp at n={ratio[0]}: "
                    f"{ratio[1]:.1f}x ({verdict} the 2x aim); over the publisher-only "
                    f"baselines: {'n/a' if marginal is None else f'{marginal:.1f}x'}"
                )
        print(f"  total run time {time.monotonic() - started:.0f} s", flush=True)

        lat_by = {lat.label: lat for lat in latencies}

        def ratio_text(ratio: tuple[int, float] | None) -> str:
            return "n/a" if ratio is None else f"{ratio[1]:.1f}x@n={ratio[0]}"

        nginx_latency = lat_by.get("nginx-rtmp rtmp")
        headline = [
            f"cpu_per_player_ratio={ratio_text(flv_ratio)}",
            f"rtmp_cpu_per_player_ratio={ratio_text(rtmp_ratio)}",
            f"roi_relay_max_players={results['roi-relay http-flv'].max_held}",
            f"roi_relay_rtmp_max_players={results['roi-relay rtmp'].max_held}",
            f"nginx_max_players={nginx_series.max_held if nginx_series else 'n/a'}",
            f"latency_flv_ms={fmt_ms(lat_by['roi-relay http-flv'].median())}",
            f"latency_rtmp_ms={fmt_ms(lat_by['roi-relay rtmp'].median())}",
            f"nginx_latency_ms={fmt_ms(nginx_latency.median()) if nginx_latency else 'n/a'}",
            f"load={load_before[0]:.1f}/{load_after[0]:.1f}",
        ]
        print(" ".join(headline), flush=True)
        return 0
    finally:
        for fleet in fleets:
            await fleet.stop()
        for publisher in publishers:
            await publisher.stop()
        for server in servers:
            await stop_process(server.proc)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.player_process:
        target = Target(args.player_process, args.rtmp_port, args.http_port)
        asyncio.run(player_process_main(target))
        return 0
    if not NGINX_MODULE.exists() and not args.skip_nginx:
        print(f"{NGINX_MODULE} is missing: apt-get install libnginx-mod-rtmp (or --skip-nginx)")
        return 2
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
