"""A live fuzz campaign: mutated captured RTMP sessions against a running relay, with a healthy
publisher and player alongside.

    .venv/bin/python bench/fuzz_live.py [--sessions 2000] [--concurrency 8] [--media] [--seed 1]

Setup, all on 127.0.0.1: ``python -m app.cli serve`` runs as a subprocess on free ports. A real
ffmpeg push (a 2 s 160x90 clip, H.264 + AAC) is captured once through a loopback proxy: its
client-to-server bytes, split into the handshake and the RTMP messages. A healthy publisher
(``ffmpeg -re``, 320x240, live/healthy) and a healthy HTTP-FLV player (this process) run for
the whole campaign.

Each session is the capture with its stream name made unique (``s0000042``) and mutated, seeded
by ``--seed`` and its number: at the message level commands are reordered, repeated, dropped,
renamed (``publish`` <-> ``play``, ``createStream``, ``deleteStream``...), sent on wrong message
stream ids, AMF markers swapped, Set Chunk Size sent with other (or bogus) sizes, messages
cut; at the byte level bits are flipped, the stream is spliced onto itself, a chunk header's
message length is rewritten, the session truncated. It is sent over a fresh connection that
then ends one of three ways: FIN at once, FIN after reading what the server sends for a
while, or RST. ``--media`` keeps the protocol intact and mutates the media instead (bit
flips, random runs, truncated frames, the sequence header), on streams pushed with an active
ROI template (created over REST; the server runs with activation delay 0).

It prints the sessions sent, whether the server is alive, streams and players left over after
every session's connection has ended (from /api/v1/streams: anything but live/healthy and its
one player), tracebacks in the server log (protocol errors apart), the server's RSS before
and after (and along the way), and the healthy player's longest gap between video tags. The
"before" RSS is taken after ``--warmup`` sessions of the same kind that are not counted: RSS
climbs over a cold server's first few thousand mutated sessions (lazily reached code paths,
the allocator's first high-water mark) and then levels off; the growth from the cold server
is printed beside it. The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.rtmp import amf0  # noqa: E402
from app.rtmp.chunk import ChunkReader, ChunkWriter, MessageType  # noqa: E402

HOST = "127.0.0.1"
HANDSHAKE_BYTES = 1 + 1536 + 1536  # C0 C1 C2
CAPTURE_NAME = "capture"
TEMPLATE = "fuzz"
SESSION_TIMEOUT_S = 5.0
SETTLE_S = 3.0  # after the last session: time for the server to notice every end
WARMUP_FIRST_INDEX = 90_000_000  # warm-up sessions are named past any campaign's
COMMANDS = (
    "connect",
    "releaseStream",
    "FCPublish",
    "createStream",
    "publish",
    "play",
    "deleteStream",
    "FCUnpublish",
    "closeStream",
    "getStreamLength",
    "receiveVideo",
)
AMF_MARKERS = bytes([0x00, 0x01, 0x02, 0x03, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x10])
# Exceptions of these types are the peer's fault, told in one log line: not counted as crashes.
PROTOCOL_ERRORS = (
    "ChunkError",
    "AmfError",
    "HandshakeError",
    "FlvError",
    "NalError",
    "StreamNameError",
    "ProtocolError",
)


@dataclass
class Message:
    csid: int
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


@dataclass
class Capture:
    handshake: bytes
    messages: list[Message]


# ------------------------------------------------------------------------------ the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    rtmp_port: int
    http_port: int
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


def start_server(workdir: Path, media: bool, root: Path = ROOT) -> Server:
    rtmp_port, http_port = free_port(), free_port()
    log_path = workdir / "server.log"
    # No bytecode written: --server-root may be another checkout, read only.
    env = dict(os.environ, ROI_RELAY_TEMPLATE_ACTIVATION_DELAY="0", PYTHONDONTWRITEBYTECODE="1")
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--host",
        HOST,
        "--rtmp-port",
        str(rtmp_port),
        "--http-port",
        str(http_port),
        "--data-dir",
        str(workdir / "data"),
        "--log-level",
        "info",
        "--workers",  # one process: its RSS and log are what the campaign reads
        "1",
    ]
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, rtmp_port, http_port, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not server.alive:
            raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            status, _ = http_request(server, "GET", "/healthz")
            if status == 200:
                return server
        time.sleep(0.2)
    raise RuntimeError("the server did not start in 30 s")


def http_request(
    server: Server, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    with socket.create_connection((HOST, server.http_port), timeout=10) as sock:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode() + data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head_bytes, _, payload = reply.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head_bytes.lower():
        payload = _dechunk(payload)
    return status, json.loads(payload) if payload.strip() else None


def _dechunk(data: bytes) -> bytes:
    out, pos = b"", 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end], 16)
        if size == 0:
            return out
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


async def roi_attached(server: Server, name: str, timeout: float = 2.0) -> None:
    """Waits until the ROI stage has taken the stream (so that the media reaches a decoder
    instead of racing the controller)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = await asyncio.to_thread(
            http_request, server, "GET", f"/api/v1/streams/live/{name}"
        )
        if status == 200 and body["roi"]["reason"] != "waiting for the ROI stage":
            return
        await asyncio.sleep(0.02)


def create_template(server: Server) -> str:
    status, body = http_request(
        server, "POST", "/api/v1/roi-templates", {"name": TEMPLATE, "model": "General"}
    )
    if status not in (200, 201):
        raise RuntimeError(f"template create answered {status}: {body}")
    name = body["name"]
    for _ in range(50):
        status, body = http_request(server, "GET", f"/api/v1/roi-templates/{name}")
        if status == 200 and body.get("status") == "active":
            return name
        time.sleep(0.1)
    raise RuntimeError(f"template {name} never became active")


# -------------------------------------------------------------------------------- capture


def ffmpeg_push(url: str, seconds: float, size: str, realtime: bool) -> list[str]:
    return [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        *(["-re"] if realtime else []),
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate=25:duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "flv",
        url,
    ]


async def capture_push(server: Server) -> Capture:
    """Relays one real ffmpeg push to the server, keeping what the client sent."""
    sent = bytearray()

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bytearray | None
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if keep is not None:
                    keep.extend(data)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, server.rtmp_port)
        await asyncio.gather(pipe(reader, up_writer, sent), pipe(up_reader, writer, None))

    proxy = await asyncio.start_server(on_client, HOST, 0)
    port = proxy.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        *ffmpeg_push(f"rtmp://{HOST}:{port}/live/{CAPTURE_NAME}", 2, "160x90", realtime=False)
    )
    await asyncio.wait_for(proc.wait(), 60)
    await asyncio.sleep(0.5)
    proxy.close()
    data = bytes(sent)
    reader = ChunkReader(max_message_size=16 * 1024 * 1024)
    # The reader consumes Set Chunk Size itself; the sessions send their own.
    messages = [
        Message(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload)
        for m in reader.receive_data(data[HANDSHAKE_BYTES:])
    ]
    if not any(m.type_id == MessageType.VIDEO for m in messages):
        raise RuntimeError("the capture holds no video")
    return Capture(data[:HANDSHAKE_BYTES], messages)


# ------------------------------------------------------------------------------ mutations


def _rename(payload: bytes, name: str) -> bytes:
    try:
        values = amf0.decode(payload)
    except Exception:
        return payload
    changed = [name if v == CAPTURE_NAME else v for v in values]
    return amf0.encode(*changed) if changed != values else payload


def _command_indices(messages: list[Message]) -> list[int]:
    return [i for i, m in enumerate(messages) if m.type_id == MessageType.COMMAND_AMF0]


def mutate_messages(rng: random.Random, messages: list[Message], ops: Counter[str]) -> None:
    """In place, one to three message-level mutations."""
    for _ in range(rng.randint(1, 3)):
        commands = _command_indices(messages)
        op = rng.choice(
            (
                "reorder",
                "repeat",
                "drop",
                "rename",
                "stream_id",
                "amf_marker",
                "chunk_size",
                "cut",
                "none",
            )
        )
        ops[op] += 1
        if op == "reorder" and len(commands) >= 2:
            a, b = rng.sample(commands, 2)
            messages[a], messages[b] = messages[b], messages[a]
        elif op == "repeat" and commands:
            i = rng.choice(commands)
            for _ in range(rng.randint(1, 3)):
                messages.insert(rng.randint(i, len(messages)), _copy(messages[i]))
        elif op == "drop" and commands:
            del messages[rng.choice(commands)]
        elif op == "rename" and commands:
            m = messages[rng.choice(commands)]
            with contextlib.suppress(Exception):
                values = amf0.decode(m.payload)
                if values and isinstance(values[0], str):
                    values[0] = rng.choice(COMMANDS)
                    m.payload = amf0.encode(*values)
        elif op == "stream_id" and messages:
            m = messages[rng.choice(commands or range(len(messages)))]
            m.stream_id = rng.choice((0, 1, 2, 3, 255, 0xFFFFFFFF))
        elif op == "amf_marker" and commands:
            m = messages[rng.choice(commands)]
            spots = [i for i, b in enumerate(m.payload) if b in AMF_MARKERS]
            if spots:
                i = rng.choice(spots)
                m.payload = m.payload[:i] + bytes([rng.choice(AMF_MARKERS)]) + m.payload[i + 1 :]
        elif op == "chunk_size":
            size = rng.choice((1, 2, 127, 128, 129, 4096, 65536, 0x7FFFFFFF, 0, 0xFFFFFFFF))
            at = rng.randint(0, len(messages))
            messages.insert(
                at, Message(2, MessageType.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", size))
            )
        elif op == "cut" and len(messages) > 4:
            del messages[rng.randint(4, len(messages) - 1) :]


def mutate_media(rng: random.Random, messages: list[Message], ops: Counter[str]) -> None:
    """In place, corrupts one to five video (or audio) payloads; the protocol stays valid."""
    media = [
        i for i, m in enumerate(messages) if m.type_id in (MessageType.VIDEO, MessageType.AUDIO)
    ]
    for _ in range(rng.randint(1, 5)):
        if not media:
            return
        m = messages[rng.choice(media)]
        if len(m.payload) < 6:
            continue
        op = rng.choice(("bits", "run", "truncate", "header_bits", "zero"))
        ops["media_" + op] += 1
        body = bytearray(m.payload)
        start = 5 if op != "header_bits" else 0
        if op in ("bits", "header_bits"):
            for _ in range(rng.randint(1, 32)):
                i = rng.randrange(start, len(body))
                body[i] ^= 1 << rng.randrange(8)
        elif op == "run":
            i = rng.randrange(start, len(body))
            n = rng.randint(1, 64)
            body[i : i + n] = rng.randbytes(n)
        elif op == "truncate":
            del body[rng.randint(start, len(body) - 1) :]
        elif op == "zero":
            i = rng.randrange(start, len(body))
            body[i:] = bytes(len(body) - i)
        m.payload = bytes(body)


def serialize(handshake: bytes, messages: list[Message]) -> tuple[bytes, int]:
    """The session's bytes and the offset of its first media message."""
    writer = ChunkWriter()
    out = [handshake]
    split: int | None = None
    for m in messages:
        if split is None and m.type_id in (MessageType.VIDEO, MessageType.AUDIO):
            split = sum(len(part) for part in out)
        if m.type_id == MessageType.SET_CHUNK_SIZE:
            size = struct.unpack(">I", m.payload)[0]
            out.append(writer.write(2, m.type_id, 0, 0, m.payload))
            if 1 <= size <= 0x7FFFFFFF:
                writer.chunk_size = size
            continue
        try:
            out.append(
                writer.write(m.csid, m.type_id, m.stream_id & 0xFFFFFFFF, m.timestamp, m.payload)
            )
        except ValueError:
            continue
    data = b"".join(out)
    return data, len(data) if split is None else split


def mutate_bytes(rng: random.Random, data: bytes, ops: Counter[str]) -> bytes:
    if rng.random() < 0.4:
        return data
    op = rng.choice(("bits", "splice", "length", "truncate", "handshake_bits"))
    ops["bytes_" + op] += 1
    buf = bytearray(data)
    lo = HANDSHAKE_BYTES if op != "handshake_bits" else 0
    hi = len(buf) if op != "handshake_bits" else HANDSHAKE_BYTES
    if hi <= lo:
        return data
    if op in ("bits", "handshake_bits"):
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(lo, hi)
            buf[i] ^= 1 << rng.randrange(8)
    elif op == "splice":
        a = rng.randrange(lo, len(buf))
        b = rng.randrange(lo, len(buf))
        return bytes(buf[:a] + buf[b:])
    elif op == "length":
        # A type-0 header on chunk stream 3..8 (commands, media): rewrite its length field.
        heads = [m.start() for m in re.finditer(rb"[\x03-\x08]", bytes(buf[lo : lo + 4096]))]
        if heads:
            i = lo + rng.choice(heads)
            if i + 7 < len(buf):
                buf[i + 4 : i + 7] = rng.randrange(1 << 24).to_bytes(3, "big")
    elif op == "truncate":
        return bytes(buf[: rng.randrange(lo, len(buf))])
    return bytes(buf)


def _copy(m: Message) -> Message:
    return Message(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload)


def build_session(
    capture: Capture, index: int, seed: int, media: str | None, ops: Counter[str]
) -> tuple[bytes, int]:
    """A mutated session: its bytes and where its media starts (see :func:`run_session`)."""
    rng = random.Random(seed * 1_000_003 + index)
    name = f"s{index:07d}"
    if media is not None:
        name += f"?roirecognition={media}"
    messages = []
    for m in capture.messages:
        m = _copy(m)
        if m.type_id == MessageType.COMMAND_AMF0:
            m.payload = _rename(m.payload, name)
        messages.append(m)
    if media is not None:
        mutate_media(rng, messages, ops)
        return serialize(capture.handshake, messages)
    mutate_messages(rng, messages, ops)
    data, split = serialize(capture.handshake, messages)
    return mutate_bytes(rng, data, ops), split


# ------------------------------------------------------------------------------- sessions


async def run_session(
    port: int,
    data: bytes,
    split: int,
    paced: bool,
    rng: random.Random,
    ends: Counter[str],
    before_media: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Sends one session. ``paced``: the bytes before the first media message go first, and
    the media once the server has answered the publish (as a real client does), so that the
    media reaches a live stream instead of racing the publish; else all at once."""
    reader, writer = await asyncio.open_connection(HOST, port)
    replies = bytearray()
    published = asyncio.Event()

    async def drain_replies() -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if len(replies) < 65536:
                    replies.extend(data)
                    if b"Publish.Start" in replies:
                        published.set()

    draining = asyncio.create_task(drain_replies())
    end = rng.choice(("fin", "linger", "rst"))
    ends[end] += 1
    try:
        parts = [data[:split], data[split:]] if paced else [data]
        for n, part in enumerate(parts):
            if n == 1:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(published.wait(), 1.0)
                if before_media is not None and published.is_set():
                    await before_media()
            pos = 0
            while pos < len(part):
                step = rng.choice((512, 4096, 65536, len(part)))
                writer.write(part[pos : pos + step])
                pos += step
                await writer.drain()
        if end == "linger":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(draining), rng.uniform(0.05, 1.0))
    except OSError:
        pass
    finally:
        if end == "rst":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        draining.cancel()
        with contextlib.suppress(BaseException):
            await draining
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass
class HealthyPlayer:
    port: int
    video_tags: int = 0
    longest_gap_s: float = 0.0
    ended: bool = False
    _last: float | None = None
    _measuring: bool = False
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def measure(self) -> None:
        self._measuring = True
        self._last = time.monotonic()
        self.longest_gap_s = 0.0

    async def _run(self) -> None:
        reader, writer = await asyncio.open_connection(HOST, self.port)
        writer.write(b"GET /live/healthy.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            chunked = b"transfer-encoding: chunked" in head.lower()
            buf = bytearray()
            flv_header_left = 13
            while True:
                if chunked:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    if size == 0:
                        break
                    buf += await reader.readexactly(size + 2)
                    del buf[-2:]
                else:
                    data = await reader.read(65536)
                    if not data:
                        break
                    buf += data
                if flv_header_left:
                    taken = min(flv_header_left, len(buf))
                    del buf[:taken]
                    flv_header_left -= taken
                while len(buf) >= 11:
                    size = int.from_bytes(buf[1:4], "big")
                    if len(buf) < 11 + size + 4:
                        break
                    if buf[0] & 0x1F == 9:
                        self._video_tag()
                    del buf[: 11 + size + 4]
            self.ended = True
        except (OSError, asyncio.IncompleteReadError):
            self.ended = True
        finally:
            writer.close()

    def _video_tag(self) -> None:
        now = time.monotonic()
        self.video_tags += 1
        if self._measuring and self._last is not None:
            self.longest_gap_s = max(self.longest_gap_s, now - self._last)
        self._last = now

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


def log_findings(text: str) -> dict[str, Any]:
    lines = text.splitlines()
    tracebacks: Counter[str] = Counter()
    protocol: Counter[str] = Counter()
    for i, line in enumerate(lines):
        if not line.startswith("Traceback (most recent call last)"):
            continue
        j = i + 1
        while j < len(lines) and (
            lines[j].startswith(" ") or lines[j].startswith("Traceback") or not lines[j].strip()
        ):
            j += 1
        last = lines[j].strip() if j < len(lines) else "?"
        kind = last.split(":", 1)[0].rsplit(".", 1)[-1]
        (protocol if kind in PROTOCOL_ERRORS else tracebacks)[last[:160]] += 1
    return {
        "tracebacks": sum(tracebacks.values()),
        "protocol_error_tracebacks": sum(protocol.values()),
        "fatal_errors": text.count("Fatal error"),
        "protocol_error_lines": text.count("RTMP protocol error"),
        "distinct": tracebacks.most_common(10),
    }


async def campaign(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-live-"))
    server = start_server(workdir, args.media, args.server_root)
    healthy_pub: asyncio.subprocess.Process | None = None
    player: HealthyPlayer | None = None
    try:
        template = create_template(server) if args.media else None
        capture = await capture_push(server)
        print(
            f"captured: {len(capture.messages)} messages "
            f"({sum(len(m.payload) for m in capture.messages)} payload bytes)",
            flush=True,
        )
        healthy_pub = await asyncio.create_subprocess_exec(
            *ffmpeg_push(
                f"rtmp://{HOST}:{server.rtmp_port}/live/healthy", 36000, "320x240", realtime=True
            ),
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while http_request(server, "GET", "/api/v1/streams/live/healthy")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the healthy publisher never went live")
            await asyncio.sleep(0.2)
        player = HealthyPlayer(server.http_port)
        player.start()
        ops: Counter[str] = Counter()
        ends: Counter[str] = Counter()
        rss_series: list[tuple[int, float]] = []
        done = 0
        errors = 0
        started = time.monotonic()

        async def run_sessions(first: int, count: int, counted: bool) -> None:
            """Sessions ``first`` .. ``first + count - 1``, ``--concurrency`` at a time."""
            nonlocal done, errors
            indices = iter(range(first, first + count))

            async def worker() -> None:
                nonlocal done, errors
                for index in indices:
                    if not server.alive:
                        return
                    data, split = build_session(capture, index, args.seed, template, ops)
                    rng = random.Random(args.seed + index)
                    paced = args.media or rng.random() < 0.5
                    wait = None
                    if template is not None:
                        wait = functools.partial(roi_attached, server, f"s{index:07d}")
                    try:
                        await asyncio.wait_for(
                            run_session(server.rtmp_port, data, split, paced, rng, ends, wait),
                            SESSION_TIMEOUT_S,
                        )
                    except (OSError, TimeoutError):
                        errors += counted
                    if not counted:
                        continue
                    done += 1
                    if done % args.report_every == 0:
                        rss_series.append((done, server.rss_mb()))
                        print(
                            f"  {done} sessions, RSS {rss_series[-1][1]:.0f} MB, "
                            f"{time.monotonic() - started:.0f} s",
                            flush=True,
                        )

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))

        # Warm-up: sessions of the same kind, not counted, so that what a server allocates
        # once (lazily loaded code paths, the recognition model and encoder libraries, the
        # allocator's first high-water mark) is in the "before" figure and growth means
        # what sessions leave behind. Cold-start growth is printed too.
        rss_cold = server.rss_mb()
        await run_sessions(WARMUP_FIRST_INDEX, args.warmup, counted=False)
        await asyncio.sleep(2.0)
        rss_before = server.rss_mb()
        rss_series.append((0, rss_before))
        player.measure()
        ops.clear()
        ends.clear()
        started = time.monotonic()
        await run_sessions(0, args.sessions, counted=True)
        elapsed = time.monotonic() - started
        gap = player.longest_gap_s
        player_alive = not player.ended
        await asyncio.sleep(SETTLE_S)
        alive = server.alive
        leftover_streams: list[str] = []
        leftover_players = 0
        if alive:
            _, streams = http_request(server, "GET", "/api/v1/streams")
            for s in streams:
                key = f"{s['app']}/{s['stream']}"
                if key == "live/healthy":
                    leftover_players += max(0, s["players"] - 1)
                else:
                    leftover_streams.append(key)
                    leftover_players += s["players"]
        rss_after = server.rss_mb()
        publisher_alive = healthy_pub.returncode is None
    finally:
        if player is not None:
            await player.stop()
        if healthy_pub is not None and healthy_pub.returncode is None:
            healthy_pub.terminate()
            await healthy_pub.wait()
        server.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(10)
        if server.proc.poll() is None:
            server.proc.kill()
    findings = log_findings(server.log_path.read_text(errors="replace"))
    return {
        "mode": "media" if args.media else "rtmp",
        "sessions_sent": done,
        "session_errors": errors,
        "seconds": round(elapsed, 1),
        "server_alive": alive,
        "leftover_streams": len(leftover_streams),
        "leftover_stream_names": leftover_streams[:20],
        "leftover_players": leftover_players,
        **findings,
        "warmup_sessions": args.warmup,
        "rss_cold_mb": round(rss_cold, 1),
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        "rss_growth_pct": round(100 * (rss_after - rss_before) / rss_before, 1),
        "rss_growth_from_cold_pct": round(100 * (rss_after - rss_cold) / rss_cold, 1),
        "rss_series": [(n, round(r, 1)) for n, r in rss_series],
        "healthy_player_longest_gap_s": round(gap, 3),
        "healthy_player_alive": player_alive,
        "healthy_publisher_alive": publisher_alive,
        "healthy_video_tags": player.video_tags if player else 0,
        "mutations": dict(ops.most_common()),
        "session_ends": dict(ends),
        "server_log": str(server.log_path),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--media", action="store_true", help="mutate media on streams with an active ROI template"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report-every", type=int, default=500)
    parser.add_argument(
        "--warmup",
        type=int,
        default=2000,
        help="sessions of the same kind before the 'before' RSS, not counted (RSS climbs over "
        "the first few thousand mutated sessions and then levels off)",
    )
    parser.add_argument(
        "--server-root", type=Path, default=ROOT, help="the checkout whose server is run"
    )
    args = parser.parse_args()
    result = asyncio.run(campaign(args))
    print(
        f"mode: {result['mode']}, sessions sent: {result['sessions_sent']} in "
        f"{result['seconds']} s (concurrency {args.concurrency}, seed {args.seed})"
    )
    print(f"server alive: {result['server_alive']}")
    print(
        f"leftover streams: {result['leftover_streams']} {result['leftover_stream_names']}, "
        f"leftover players: {result['leftover_players']}"
    )
    print(
        f"tracebacks (not protocol errors): {result['tracebacks']} {result['distinct']}; "
        f"protocol-error tracebacks: {result['protocol_error_tracebacks']}; "
        f"'Fatal error': {result['fatal_errors']}; "
        f"protocol error lines: {result['protocol_error_lines']}"
    )
    print(
        f"RSS: {result['rss_before_mb']} -> {result['rss_after_mb']} MB "
        f"({result['rss_growth_pct']:+} % after {result['warmup_sessions']} warm-up sessions; "
        f"{result['rss_growth_from_cold_pct']:+} % from the cold server's "
        f"{result['rss_cold_mb']} MB); along the way {result['rss_series']}"
    )
    print(
        f"healthy player: longest gap {result['healthy_player_longest_gap_s']} s, "
        f"{result['healthy_video_tags']} video tags, still playing "
        f"{result['healthy_player_alive']}; healthy publisher alive "
        f"{result['healthy_publisher_alive']}"
    )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
