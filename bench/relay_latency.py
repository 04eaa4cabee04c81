"""bench/relay.py's latency measurement: publish-to-play time on an idle server. The bench
publishes the clip's FLV tags in real time with tests/support/rtmp_client.py's client and
records the wall time each tag was sent; one player records when each tag arrived."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.relay_players import (
    HOST,
    MEDIA_KINDS,
    PlayerStats,
    Target,
    open_player,
    rtmp_client,
)
from bench.relay_servers import OUT_CHUNK_SIZE, Clip


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
    label: str,
    clip: Clip,
    target: Target,
    kind: str,
    seconds: float,
    play_target: Target | None = None,
) -> Latency:
    """Publishes the clip's tags in real time with our own RTMP client while one player
    records when each tag arrives (on ``play_target``, an edge node, when given)."""
    loop = asyncio.get_running_loop()
    stream = f"latency-{kind}"
    publisher = rtmp_client(target, stream, PlayerStats(), publish=True)
    transport, _ = await loop.create_connection(lambda: publisher, HOST, target.rtmp_port)
    player_stats = PlayerStats(record_arrivals=True)
    player_transport: Any = None
    sent: dict[tuple[int, int], float] = {}
    try:
        await asyncio.wait_for(publisher.ready, 10)
        publisher.use_chunk_size(OUT_CHUNK_SIZE)
        script = clip.script_tag()
        if script is not None:
            publisher.send_metadata(script.payload)
        start = time.monotonic()
        end = start + seconds + 1.0
        player_at = start + 1.0  # the stream must be live before an HTTP-FLV GET
        loop_index = 0
        while time.monotonic() < end:
            offset = loop_index * clip.period_ms
            for tag in clip.tags:
                if tag.kind not in MEDIA_KINDS or (loop_index and tag.sequence_header):
                    continue
                ts = tag.timestamp + offset
                delay = start + ts / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if player_transport is None and time.monotonic() >= player_at:
                    player_transport = await open_player(
                        play_target or target, kind, stream, player_stats
                    )
                if time.monotonic() >= end:
                    break
                publisher.send_media(tag.kind, ts, tag.payload)
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
