"""Callbacks and the auth hook: does either cost the stream anything?

    .venv/bin/python bench/hooks.py [--players 20] [--seconds 8] [--hook-ms 50]

Three runs of ``roi-relay serve`` (a subprocess on 127.0.0.1), each with one publisher
(Debian's ffmpeg CLI pushing a pre-encoded 640x360 25 fps clip in a loop, ``-re -c copy``) and
N HTTP-FLV players that join one after the other and then read for a few seconds:

* baseline: no callbacks, no hook;
* callbacks: ``ROI_RELAY_CALLBACK_URL`` to a receiver (a uvicorn app in this process, answering
  200 at once), so every publish and play emits events;
* hook: ``ROI_RELAY_AUTH_HOOK_URL`` to a hook answering ``{"code": 0}`` after ``--hook-ms``.

Per run it prints the players' connect-to-first-video-frame time (median and 95th percentile),
the slowest player's media time per wall second after its first second (1.0: keeping up), and
the server's CPU (utime + stime from /proc) per wall second; then the ratio of each run's
figures to the baseline. With the hook, first-frame time should grow by about the hook's
answer time and nothing else should move.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hooks.receiver import Answer, Receiver  # noqa: E402

HOST = "127.0.0.1"
FPS = 25


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def encode_clip(path: Path) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440", "-t", "10", "-c:v", "libx264",
         "-preset", "veryfast", "-g", str(2 * FPS), "-b:v", "1M", "-c:a", "aac", "-f", "flv",
         str(path)],
        check=True,
    )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def play(client: httpx.AsyncClient, url: str, seconds: float) -> tuple[float, float]:
    """(seconds from the request to the first video tag, media seconds received per wall
    second over ``seconds`` after the first one: 1.0 when the stream keeps up)."""
    started = time.monotonic()
    first = -1.0
    buffer = bytearray()
    offset = 13  # the FLV file header
    mark: tuple[float, int] | None = None
    newest = 0
    async with client.stream("GET", url) as reply:
        reply.raise_for_status()
        async for chunk in reply.aiter_bytes():
            buffer += chunk
            while len(buffer) - offset >= 11:
                size = int.from_bytes(buffer[offset + 1 : offset + 4], "big")
                if len(buffer) - offset < 11 + size + 4:
                    break
                if buffer[offset] == 9:
                    stamp = int.from_bytes(buffer[offset + 4 : offset + 7], "big")
                    newest = max(newest, stamp | buffer[offset + 7] << 24)
                    if first < 0:
                        first = time.monotonic() - started
                offset += 11 + size + 4
            del buffer[:offset]
            offset = 0
            now = time.monotonic()
            if first >= 0 and mark is None and now - started >= first + 1:
                mark = (now, newest)  # past the cached GOP's burst
            if mark is not None and now - mark[0] >= seconds:
                return first, (newest - mark[1]) / 1000 / (now - mark[0])
    raise RuntimeError("stream ended early")


async def run_case(clip: Path, env: dict[str, str], players: int, seconds: float) -> dict:
    rtmp, http = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="bench-hooks-")
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", HOST, "--rtmp-port", str(rtmp),
         "--http-port", str(http), "--data-dir", data, "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, **env},
    )  # fmt: skip
    publisher = None
    try:
        base = f"http://{HOST}:{http}"
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                if await _get(client, f"{base}/healthz"):
                    break
                await asyncio.sleep(0.1)
        publisher = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy",
             "-f", "flv", f"rtmp://{HOST}:{rtmp}/live/bench?mode=allow"],
        )  # fmt: skip
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                if await _get(client, f"{base}/api/v1/streams/live/bench"):
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
        limits = httpx.Limits(max_connections=players + 1, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=20, limits=limits) as client:
            tasks = []
            for _ in range(players):  # one after the other, as viewers arrive
                url = f"{base}/live/bench.flv?token=t"
                tasks.append(asyncio.create_task(play(client, url, seconds)))
                await asyncio.sleep(0.1)
            results = await asyncio.gather(*tasks)
        cpu = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - wall0)
    finally:
        if publisher is not None:
            publisher.terminate()
            publisher.wait()
        server.terminate()
        server.wait(10)
    firsts = sorted(r[0] * 1000 for r in results)
    return {
        "first_ms": statistics.median(firsts),
        "first_p95_ms": firsts[int(0.95 * (len(firsts) - 1))],
        "advance": min(r[1] for r in results),
        "cpu": cpu,
    }


async def _get(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url, timeout=1)).status_code == 200
    except httpx.HTTPError:
        return False


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--players", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--hook-ms", type=float, default=50.0)
    args = parser.parse_args()

    def hook(_path: str, _body: dict) -> Answer:
        return 200, {"code": 0}, args.hook_ms / 1000

    receiver = Receiver().start()
    hook_server = Receiver(hook).start()
    clip = Path(tempfile.mkdtemp(prefix="bench-hooks-")) / "clip.flv"
    encode_clip(clip)
    cases = {
        "baseline": {},
        "callbacks": {"ROI_RELAY_CALLBACK_URL": f"{receiver.url}/events"},
        "hook": {"ROI_RELAY_AUTH_HOOK_URL": f"{hook_server.url}/hook"},
    }
    figures = {}
    for name, env in cases.items():
        figures[name] = await run_case(clip, env, args.players, args.seconds)
        f = figures[name]
        print(
            f"{name:10s} first frame {f['first_ms']:7.1f} ms (p95 {f['first_p95_ms']:7.1f}), "
            f"slowest player's media/wall {f['advance']:.3f}, server CPU {f['cpu']:.2f} core",
            flush=True,
        )
    events = len(receiver.received)
    hooked = len(hook_server.received)
    receiver.stop()
    hook_server.stop()
    base = figures["baseline"]
    for name in ("callbacks", "hook"):
        f = figures[name]
        print(
            f"{name} / baseline: first frame x{f['first_ms'] / base['first_ms']:.2f} "
            f"({f['first_ms'] - base['first_ms']:+.0f} ms), "
            f"media/wall x{f['advance'] / base['advance']:.3f}, "
            f"CPU x{f['cpu'] / base['cpu']:.2f}"
        )
    print(f"receiver got {events} events; the hook was asked {hooked} times")


if __name__ == "__main__":
    asyncio.run(main())
