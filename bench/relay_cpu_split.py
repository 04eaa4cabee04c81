"""Where a relay's CPU goes at one player count: user and system time of the server, and
the socket writes it makes per player and second, for roi-relay beside nginx-rtmp in one run.

    .venv/bin/python bench/relay_cpu_split.py [--players 400] [--kind flv|rtmp]
        [--seconds 5] [--no-strace] [--skip-nginx]

Same setup as bench/relay.py (bench/relay_servers.py: the clip, ``ffmpeg -re`` publisher,
one player process): roi-relay as a plain relay with one worker, then nginx-rtmp (RTMP
players: it has no HTTP-FLV). After the players have played for 3 s, user and system CPU of
the server come from /proc/PID/task/*/stat over ``--seconds``. Then ``strace -c -f -p``
counts its system calls for as long again: strace slows what it traces, so the CPU figures
are taken first and the counts say only how many writes the server makes, not how long
they take. User time is what the server's own code costs; system time is mostly the
kernel's TCP send, which both servers pay per write.

The last line holds the figures and the ratios against nginx-rtmp.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.relay_servers import (  # noqa: E402
    NGINX_MODULE,
    Clip,
    FfmpegPublisher,
    PlayerFleet,
    Server,
    encode_clip,
    start_nginx,
    start_roi_relay,
    stop_process,
)

WARM_UP_S = 3.0
WRITE_CALLS = ("write", "writev", "sendto", "sendmsg")


@dataclass
class Split:
    name: str
    players: int
    user: float  # share of one core
    system: float
    writes: int | None  # write-family system calls while strace ran
    traced_s: float

    @property
    def total(self) -> float:
        return self.user + self.system

    def writes_per_player_s(self) -> float | None:
        if self.writes is None or not self.players:
            return None
        return self.writes / self.traced_s / self.players

    def line(self) -> str:
        per = self.writes_per_player_s()
        writes = "" if per is None else f"  writes/player/s {per:5.1f}"
        return (
            f"{self.name:<18} n={self.players:4d}  user {self.user * 100:5.1f}%  "
            f"sys {self.system * 100:5.1f}%  total {self.total * 100:5.1f}% of a core{writes}"
        )


def ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of all threads of ``pid``."""
    user = system = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def serving_pid(server: Server) -> int:
    """nginx under ``master_process off`` serves in its one process; roi-relay with one
    worker serves in the process it started."""
    return server.workers[0] if server.workers else server.pid


def count_writes(pid: int, seconds: float) -> int | None:
    if shutil.which("strace") is None:
        return None
    done = subprocess.run(
        ["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    writes = 0
    for row in done.stderr.splitlines():
        cells = row.split()
        if cells and cells[-1] in WRITE_CALLS and len(cells) >= 5:
            writes += int(cells[3])
    return writes


async def measure(
    server: Server, clip: Clip, workdir: Path, kind: str, players: int, args: argparse.Namespace
) -> Split:
    publisher = await FfmpegPublisher.start(clip, server.target, workdir)
    fleet = await PlayerFleet.start(server.target)
    try:
        grown = await fleet.request("grow", kind=kind, count=players)
        if grown.get("errors"):
            raise RuntimeError(f"{server.target.name}: players failed: {grown['errors'][:3]}")
        await asyncio.sleep(WARM_UP_S)
        pid = serving_pid(server)
        hz = os.sysconf("SC_CLK_TCK")
        (user0, sys0), started = ticks(pid), time.monotonic()
        await asyncio.sleep(args.seconds)
        (user1, sys1), elapsed = ticks(pid), time.monotonic() - started
        writes = None
        if not args.no_strace:
            writes = await asyncio.to_thread(count_writes, pid, args.seconds)
        return Split(
            f"{server.target.name} {kind}",
            int(grown["playing"]),
            (user1 - user0) / hz / elapsed,
            (sys1 - sys0) / hz / elapsed,
            writes,
            args.seconds,
        )
    finally:
        await fleet.stop()
        await publisher.stop()


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roi-relay-cpu-split-"))
    try:
        clip = await encode_clip(workdir)
        relay = await start_roi_relay(workdir)
        try:
            ours = await measure(relay, clip, workdir, args.kind, args.players, args)
        finally:
            await stop_process(relay.proc)
        print(ours.line(), flush=True)
        theirs = None
        if not args.skip_nginx and NGINX_MODULE.exists():
            nginx = await start_nginx(workdir)
            try:
                theirs = await measure(nginx, clip, workdir, "rtmp", args.players, args)
            finally:
                await stop_process(nginx.proc)
            print(theirs.line(), flush=True)
        headline = [
            f"players={ours.players}",
            f"kind={args.kind}",
            f"user={ours.user * 100:.1f}%",
            f"sys={ours.system * 100:.1f}%",
        ]
        if theirs is not None and theirs.total:
            headline += [
                f"nginx_user={theirs.user * 100:.1f}%",
                f"nginx_sys={theirs.system * 100:.1f}%",
                f"total_ratio={ours.total / theirs.total:.2f}x",
            ]
            ours_w, theirs_w = ours.writes_per_player_s(), theirs.writes_per_player_s()
            if ours_w is not None and theirs_w:
                headline.append(f"writes_ratio={ours_w / theirs_w:.2f}x")
        print(" ".join(headline))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, default=400)
    parser.add_argument("--kind", choices=("flv", "rtmp"), default="flv", help="players")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--no-strace", action="store_true", help="CPU split only")
    parser.add_argument("--skip-nginx", action="store_true", help="measure roi-relay only")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
