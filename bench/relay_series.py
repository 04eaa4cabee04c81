"""bench/relay.py's scaling series: grow the players of one server step by step and measure
at each step the server's CPU, whether every player kept up, and how long each new player
took from connecting to its first video frame."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from bench.relay_servers import (
    Clip,
    FfmpegPublisher,
    PlayerFleet,
    Server,
    cpu_seconds,
    machine_jiffies,
    tail,
    tree_cpu_seconds,
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
    worker_cpu_s: list[float] = field(default_factory=list)


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
    first_frame_ms: float = float("nan")  # median connect-to-first-video-frame of its joiners
    worker_cpu: list[float] = field(default_factory=list)  # each worker's share of a core

    @property
    def ok(self) -> bool:
        return self.kept_up == self.players

    @property
    def saturated(self) -> bool:
        """The player process was near a full core: the step measured the load generator too
        (players that read late let a server write more per call)."""
        return self.player_proc_cpu > PLAYERS_SATURATED

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
        server_cpu_s=tree_cpu_seconds(server.pid),
        publisher_cpu_s=cpu_seconds(publisher.proc.pid),
        machine=machine_jiffies(),
        publisher_ms=publisher.newest_ms(answer["t"]),
        worker_cpu_s=[cpu_seconds(pid) for pid in server.workers],
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
        worker_cpu=[(y - x) / wall for x, y in zip(a.worker_cpu_s, b.worker_cpu_s, strict=True)],
    )


async def wait_quiet(server: Server, limit_s: float = QUIET_LIMIT_S) -> float:
    """Waits until the server's CPU falls to its idle level (an overloaded server may still be
    working through queues of players that left); returns how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        before = tree_cpu_seconds(server.pid)
        await asyncio.sleep(0.5)
        if (tree_cpu_seconds(server.pid) - before) / 0.5 < QUIET_CPU:
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
    await asyncio.sleep(step_s)  # the options' source-CPU figures are this window's
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
        if grown["first_frame_ms"]:
            step.first_frame_ms = statistics.median(grown["first_frame_ms"])
        if step.saturated:
            step.reasons.append("player process saturated: figures limited by the load generator")
        series.steps.append(step)
        marginal = (step.server_cpu - series.baseline_cpu) / count
        print(
            f"{label:<20} n={count:>4}  server {step.server_cpu:6.1%}  "
            f"cpu/player {step.cpu_per_player():6.2%}  marginal/player {marginal:6.2%}  "
            f"kept up {step.kept_up:>3}/{count:<3}  first frame {fmt_ms(step.first_frame_ms)} ms  "
            f"worst lag {step.worst_lag_ms:5.0f} ms  "
            f"recv {step.mean_mbps:4.2f} Mbit/s (min {step.min_mbps:4.2f})  "
            f"players proc {step.player_proc_cpu:5.1%}  machine {step.machine_busy:4.0%}"
            + (f"  workers {spread(step)}" if len(step.worker_cpu) > 1 else "")
            + (f"  [{', '.join(step.reasons)}]" if step.reasons else ""),
            flush=True,
        )
        if not step.ok:
            break
    await fleet.request("reset")
    return series


def spread(step: StepResult) -> str:
    """Each worker's CPU at a step, as shares of a core: how the load is spread."""
    return "/".join(f"{cpu:.0%}" for cpu in step.worker_cpu)


def fmt_ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"


def common_count(mine: Series, theirs: Series, unsaturated: bool = False) -> int | None:
    """The largest player count both series held (with ``unsaturated``: and where neither
    step's player process was the limit)."""
    common = [
        s.players
        for s in mine.steps
        if s.ok
        and (t := theirs.step(s.players))
        and t.ok
        and not (unsaturated and (s.saturated or t.saturated))
    ]
    return max(common, default=None)
