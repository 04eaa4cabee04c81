"""The players of bench/relay.py, and the separate process that holds them.

Players are cheap asyncio connections, all in ONE process per server under test so that they
do not swamp the two cores: an HTTP-FLV player is a GET read with h11 and app/media/flv.py's
FLV reader; an RTMP player is tests/support/rtmp_client.py's AsyncRtmpClient. Each records
the media bytes, tag count and newest media timestamp it received.

    python bench/relay_players.py --name roi-relay --rtmp-port P [--http-port P]

reads JSON commands on stdin (grow, snap, reset, quit) and answers each with one JSON line;
bench/relay_servers.py's PlayerFleet is the other end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.media.flv import FlvError, FlvFileReader, TagType  # noqa: E402
from tests.support.rtmp_client import AsyncRtmpClient  # noqa: E402

HOST = "127.0.0.1"
APP = "live"
LOAD_STREAM = "bench"
MEDIA_KINDS = (TagType.AUDIO, TagType.VIDEO)
CONNECT_BATCH = 25
START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Target:
    """Where a server under test listens."""

    name: str
    rtmp_port: int
    http_port: int | None  # None: no HTTP-FLV (nginx-rtmp)

    def tc_url(self) -> str:
        return f"rtmp://{HOST}:{self.rtmp_port}/{APP}"


class PlayerStats:
    """What one player received: media payload bytes, tags, the newest media timestamp and,
    for the latency player, the arrival time of each (kind, timestamp)."""

    __slots__ = (
        "arrivals",
        "first_video_at",
        "started_at",
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
        self.started_at = time.monotonic()  # connect-to-first-frame counts from here
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
        if kind == TagType.VIDEO and self.first_video_at is None:
            self.first_video_at = now
        if self.arrivals is not None:
            self.arrivals.setdefault((kind, timestamp), now)

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason

    def on_closed(self) -> None:
        self.closed = True


class HttpFlvPlayer(asyncio.Protocol):
    """GET /{app}/{stream}.flv and count the tags of the endless FLV body."""

    def __init__(self, path: str, stats: PlayerStats) -> None:
        self.path = path
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self._http = h11.Connection(h11.CLIENT)
        self._flv = FlvFileReader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = h11.Request(
            method="GET", target=self.path, headers=[("Host", HOST), ("Connection", "close")]
        )
        transport.write(self._http.send(request) + self._http.send(h11.EndOfMessage()))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self._http.receive_data(data)
        try:
            while True:
                event = self._http.next_event()
                if isinstance(event, h11.Data):
                    for tag in self._flv.feed(event.data):
                        self.stats.on_tag(tag.kind, tag.timestamp, len(tag.body), now)
                elif isinstance(event, h11.Response) and event.status_code != 200:
                    self._stop(f"HTTP status {event.status_code}")
                    return
                elif event is h11.NEED_DATA or not isinstance(event, h11.Response):
                    return  # more bytes to come, or the body ended
        except (h11.ProtocolError, FlvError) as exc:
            self._stop(f"{type(exc).__name__}: {exc}")

    def _stop(self, reason: str) -> None:
        self.stats.fail(reason)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed = True


def rtmp_client(target: Target, stream: str, stats: PlayerStats, publish: bool) -> AsyncRtmpClient:
    return AsyncRtmpClient(
        target.tc_url(),
        stream,
        publish=publish,
        on_media=stats.on_tag,
        on_error=stats.fail,
        on_closed=stats.on_closed,
    )


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
            lambda: rtmp_client(target, stream, stats, publish=False), HOST, target.rtmp_port
        )
    return transport


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
                already = len(players)
                missing = request["count"] - already
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
                first_frame_ms = [
                    (s.first_video_at - s.started_at) * 1000
                    for s, _ in players[already:]
                    if s.first_video_at is not None
                ]
                answer(
                    {
                        "players": len(players),
                        "playing": playing,
                        "errors": errors[:3],
                        "first_frame_ms": first_frame_ms,
                    }
                )
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--rtmp-port", type=int, required=True)
    parser.add_argument("--http-port", type=int)
    args = parser.parse_args()
    asyncio.run(player_process_main(Target(args.name, args.rtmp_port, args.http_port)))


if __name__ == "__main__":
    main()
