"""Real relay processes on loopback for the cluster tests, and cheap players.

Nodes are ``python -m app.cli serve`` subprocesses (one each, or one ``--workers N``); players
are plain HTTP-FLV and RTMP readers that keep each video frame's timestamp, a hash of its
bytes and its ROI SEI, so frames seen on two nodes can be compared one by one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.media.flv import TagType, VideoPacketType, parse_video_tag
from app.media.sei import extract_roi_sei
from app.rtmp.play_client import PlayEnded, RtmpPlaySession
from app.rtmp.session import MediaReceived

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """One ``roi-relay serve`` process (or a ``--workers`` supervisor)."""

    def __init__(
        self, name: str, tmp: Path, database_url: str, *, workers: int = 1, **env: str
    ) -> None:
        self.name = name
        self.rtmp_port = free_port()
        self.http_port = free_port()
        self.log_path = tmp / f"{name}.log"
        environment = {
            **os.environ,
            "ROI_RELAY_CLUSTER": "true",
            "ROI_RELAY_HOST": "127.0.0.1",
            "ROI_RELAY_DATABASE_URL": database_url,
            "ROI_RELAY_DATA_DIR": str(tmp / name),
            "ROI_RELAY_NODE_ID": name,
            "ROI_RELAY_HEARTBEAT_SECONDS": "0.5",
            "ROI_RELAY_NODE_EXPIRY_SECONDS": "3",
            "ROI_RELAY_EDGE_GRACE_SECONDS": "2",
            "ROI_RELAY_ENCODER": "libx264",
            **env,
        }
        args = [sys.executable, "-m", "app.cli", "serve"]
        args += ["--rtmp-port", str(self.rtmp_port), "--http-port", str(self.http_port)]
        args += ["--workers", str(workers)]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def rtmp(self) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}"

    def wait_ready(self, timeout: float = 60, nodes: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited: {self.log()[-2000:]}")
            try:
                got = httpx.get(f"{self.http}/api/v1/cluster/nodes", timeout=2).json()
                if len(got["nodes"]) >= nodes:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"node {self.name} not ready: {self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.http}/api/v1/cluster/nodes", timeout=5).json()["nodes"])

    def directory(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.http}/api/v1/cluster/streams", timeout=5).json()["streams"]

    def metric(self, name: str, **labels: str) -> float:
        """A sample of this node's /metrics (with ``labels`` among its labels)."""
        text = httpx.get(f"{self.http}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    return float(sample.value)
        raise KeyError(name)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def push(url: str, seconds: float) -> subprocess.Popen[bytes]:
    """An FFmpeg CLI publisher: 320x240 test pattern, x264, one keyframe a second."""
    return subprocess.Popen(
        [
            "ffmpeg", "-loglevel", "error", "-re", "-f", "lavfi",
            "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25",
            "-f", "flv", url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_live(node: Node, app: str, name: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = httpx.get(f"{node.http}/api/v1/streams/{app}/{name}", timeout=5)
        if reply.status_code == 200 and reply.json().get("codec"):
            return dict(reply.json())
        time.sleep(0.2)
    raise TimeoutError(f"{app}/{name} not live on {node.name}")


def wait_registered(node: Node, timeout: float = 20) -> list[dict[str, Any]]:
    """The directory's entries once it has any (a push registered somewhere)."""
    deadline = time.monotonic() + timeout
    while not (entries := node.directory()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing registered in the directory via {node.name}")
        time.sleep(0.3)
    return entries


@dataclass
class Frames:
    """Video frames a player got: (timestamp, sha1 of the tag body, ROI SEI or None)."""

    frames: list[tuple[int, str, str | None]] = field(default_factory=list)
    keyframe_first: bool | None = None
    ended_cleanly: bool = False  # the server ended the stream (EOF / end status)
    ended_at: float | None = None
    error: str | None = None
    redirects: list[str] = field(default_factory=list)  # URLs answered with a redirect

    def add_video(self, timestamp: int, body: bytes) -> None:
        tag = parse_video_tag(body)
        if tag.packet_type is not VideoPacketType.CODED_FRAMES:
            return
        if self.keyframe_first is None:
            self.keyframe_first = tag.keyframe
        roi = extract_roi_sei(body[tag.data_offset :], "h264")
        self.frames.append((timestamp, hashlib.sha1(body).hexdigest(), roi))


async def play_flv(url: str, seconds: float, frames: Frames) -> Frames:
    """An HTTP-FLV reader: tags parsed as they come, for ``seconds`` or until the end."""
    deadline = time.monotonic() + seconds
    try:
        client = httpx.AsyncClient(timeout=10, follow_redirects=True)
        async with client, client.stream("GET", url) as reply:
            frames.redirects = [str(r.url) for r in reply.history]
            if reply.status_code != 200:
                frames.error = f"HTTP {reply.status_code}"
                return frames
            buffer = bytearray()
            header_done = False
            async for chunk in reply.aiter_raw():
                buffer += chunk
                if not header_done:
                    if len(buffer) < 13:
                        continue
                    del buffer[:13]
                    header_done = True
                while len(buffer) >= 11:
                    size = int.from_bytes(buffer[1:4], "big")
                    if len(buffer) < 11 + size + 4:
                        break
                    kind = buffer[0]
                    ts = int.from_bytes(buffer[4:7], "big") | (buffer[7] << 24)
                    body = bytes(buffer[11 : 11 + size])
                    del buffer[: 11 + size + 4]
                    if kind == TagType.VIDEO:
                        frames.add_video(ts, body)
                if time.monotonic() > deadline:
                    return frames
            frames.ended_cleanly = True
            frames.ended_at = time.monotonic()
    except httpx.HTTPError as exc:
        frames.error = repr(exc)
        frames.ended_at = time.monotonic()
    return frames


async def play_rtmp(url: str, seconds: float, frames: Frames) -> Frames:
    """An RTMP player on the sans-IO play session (app/rtmp/play_client.py)."""
    rest = url.removeprefix("rtmp://")
    hostport, app, name = rest.split("/", 2)
    host, port = hostport.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    session = RtmpPlaySession(app, f"rtmp://{hostport}/{app}", name)
    writer.write(session.data_to_send())
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not session.ended:
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.5)
            except TimeoutError:
                continue
            for event in session.receive_data(data):
                if isinstance(event, MediaReceived) and event.kind == TagType.VIDEO:
                    frames.add_video(event.timestamp, event.payload)
                elif isinstance(event, PlayEnded):
                    frames.ended_cleanly = not event.refused and bool(data)
                    frames.error = None if frames.ended_cleanly else event.reason
                    frames.ended_at = time.monotonic()
            writer.write(session.data_to_send())
    finally:
        writer.close()
    return frames
