"""Relay fan-out: CPU per player, the most players held, and publish-to-play latency, for
roi-relay beside nginx with Debian's libnginx-mod-rtmp, both measured in the same run.

    .venv/bin/python bench/relay.py [--quick] [--steps 1,10,25,50,100,200,400] [--step-seconds 8]

Setup: a 10 s 1280x720 30 fps clip is encoded once with Debian's ffmpeg CLI (libx264 CBR
4 Mbit/s, a keyframe every 2 s, AAC audio) and pushed in a loop by ``ffmpeg -re -stream_loop
-1 ... -c copy -f flv rtmp://...``. Servers run as subprocesses on 127.0.0.1: roi-relay as
``python -m app.cli serve`` (plain relay, no ROI template) and nginx with only the RTMP module,
one process (``master_process off``), from a config in a temporary directory.

Players are cheap asyncio connections, all in ONE separate player process per server under
test, so that they do not swamp the two cores (bench/relay_players.py): HTTP-FLV players read
the body with h11 and the relay's own FLV reader (app/media/flv.py); RTMP players are the
asyncio client of tests/support/rtmp_client.py, built on the project's sans-IO handshake,
chunk and AMF0 code. Each records the media bytes, tag count and newest media timestamp it
received. The servers, the clip and the publisher are in bench/relay_servers.py.

Per server and player count (1, 10, 25, 50, 100, 200, 400; growth stops at the first step
that falls behind) the bench prints the server's CPU time per second of wall time (all threads,
from /proc/PID/task/*/schedstat), that divided by the players, and the marginal cost per
player over a publisher-only baseline. A step keeps up when every player at its end is within
1 s of the publisher's newest timestamp (ffmpeg's -progress), advanced its media time with the
wall clock, lost no frames (tag count per media second), and received at least 85 % of the
clip's bitrate. Past several hundred players the player process itself nears a full core: its
CPU is printed, and a step where it saturates one says so (the figure is then the bench's).

Latency is a separate, idle-server measurement: the bench publishes the clip's FLV tags in
real time with that RTMP client publishing and records the wall time each tag was
sent; one player records the wall time each tag arrived. Latency = arrival - send (median,
95th percentile) for roi-relay HTTP-FLV, roi-relay RTMP and nginx RTMP.

The machine is shared: the load average and how busy both cores were are printed beside the
figures. The last line holds the headline figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.relay_players import (  # noqa: E402
    HOST,
    MEDIA_KINDS,
    PlayerStats,
    Target,
    open_player,
    rtmp_client,
)
from bench.relay_servers import (  # noqa: E402
    CLIP_FPS,
    CLIP_SECONDS,
    KEYFRAME_SECONDS,
    NGINX_MODULE,
    OUT_CHUNK_SIZE,
    Clip,
    FfmpegPublisher,
    PlayerFleet,
    Server,
    cpu_seconds,
    encode_clip,
    machine_jiffies,
    start_nginx,
    start_roi_relay,
    stop_process,
    tail,
)

MAX_LAG_MS = 1000.0  # a player further behind the publisher than this has fallen behind
MIN_ADVANCE = 0.9  # media time received per wall second
MIN_TAG_RATIO = 0.95  # tags received per media second / tags in the clip per media second
MIN_BITRATE_RATIO = 0.85  # received bitrate / clip bitrate
# Above this share of a core the player process itself may be what falls behind.
PLAYERS_SATURATED = 0.9
QUIET_CPU = 0.15  # share of a core below which a server counts as idle between series
QUIET_LIMIT_S = 30.0


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
                    player_transport = await open_player(target, kind, stream, player_stats)
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
    if not NGINX_MODULE.exists() and not args.skip_nginx:
        print(f"{NGINX_MODULE} is missing: apt-get install libnginx-mod-rtmp (or --skip-nginx)")
        return 2
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
