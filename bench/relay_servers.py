"""The processes bench/relay.py runs and measures: the clip, the servers under test (roi-relay
and nginx with libnginx-mod-rtmp), the ffmpeg publisher, the player process, and the CPU
accounting of each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.media.flv import TagType  # noqa: E402
from app.media.packet import MediaPacket  # noqa: E402
from bench.relay_players import APP, HOST, LOAD_STREAM, MEDIA_KINDS, Target  # noqa: E402
from tests.support.clips import flv_packets  # noqa: E402

NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
PLAYERS_SCRIPT = Path(__file__).resolve().parent / "relay_players.py"

CLIP_SECONDS = 10
CLIP_FPS = 30
CLIP_KBPS = 4000
KEYFRAME_SECONDS = 2

OUT_CHUNK_SIZE = 4096
REQUEST_TIMEOUT_S = 30.0


# ------------------------------------------------------------------------------- clip


@dataclass(frozen=True)
class Clip:
    path: Path
    tags: list[MediaPacket]  # every tag of the file, script data included
    period_ms: int  # one loop of the clip on the media timeline
    media_bytes_per_s: float
    media_tags_per_s: float

    @property
    def mbps(self) -> float:
        return self.media_bytes_per_s * 8 / 1e6

    def script_tag(self) -> MediaPacket | None:
        return next((t for t in self.tags if t.kind is TagType.DATA), None)


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
    tags = flv_packets(path)
    media = [t for t in tags if t.kind in MEDIA_KINDS and not t.sequence_header]
    last = max(t.timestamp for t in media)
    period_ms = last + round(1000 / CLIP_FPS)
    return Clip(
        path,
        tags,
        period_ms,
        sum(t.size for t in media) * 1000 / period_ms,
        len(media) * 1000 / period_ms,
    )


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


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its descendants (``--workers`` children, nginx workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    total = 0.0
    for member in tree:
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


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


# ------------------------------------------------------------------------------- servers


@dataclass
class Server:
    target: Target
    proc: asyncio.subprocess.Process
    log: Path
    # The processes doing the serving, when several (--workers, nginx workers): their CPU
    # is printed one by one.
    workers: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid


async def start_roi_relay(
    workdir: Path, name: str = "roi-relay", env: dict[str, str] | None = None, workers: int = 1
) -> Server:
    """``python -m app.cli serve`` on free ports; ``env`` adds ROI_RELAY_* settings (the
    bench's --record/--forward/--callbacks/--hook-ms runs, the --edge cluster nodes);
    ``workers`` > 1 runs ``--workers``."""
    rtmp_port, http_port = free_port(), free_port()
    data_dir = workdir / f"{name}-data"
    log = workdir / f"{name}.log"
    args = ["-m", "app.cli", "serve", "--host", HOST, "--rtmp-port", str(rtmp_port)]
    args += ["--http-port", str(http_port), "--data-dir", str(data_dir), "--log-level", "warning"]
    args += ["--workers", str(workers)]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=out,
            stdin=asyncio.subprocess.DEVNULL,
        )
    server = Server(Target(name, rtmp_port, http_port), proc, log)
    await wait_listening(http_port, proc, log)
    await wait_listening(rtmp_port, proc, log)
    return server


async def start_nginx(workdir: Path, name: str = "nginx-rtmp", workers: int = 1) -> Server:
    prefix = workdir / name
    (prefix / "logs").mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""load_module {NGINX_MODULE};
daemon off;
{"master_process off;" if workers == 1 else "master_process on;"}
worker_processes {workers};
{"rtmp_auto_push on;" if workers > 1 else ""}
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
    server = Server(Target(name, port, None), proc, log)
    await wait_listening(port, proc, prefix / "logs" / "error.log")
    return server


# ------------------------------------------------------------------------------- load


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


class PlayerFleet:
    """The bench's handle on one player process (bench/relay_players.py)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, target: Target) -> PlayerFleet:
        args = [sys.executable, str(PLAYERS_SCRIPT), "--name", target.name]
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
