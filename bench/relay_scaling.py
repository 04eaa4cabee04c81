"""bench/relay.py --workers N: the same player series against roi-relay with one worker and
with N (``roi-relay serve --workers N``), and nginx-rtmp with ``worker_processes 1`` and N
(``rtmp_auto_push on``), all in one run, so the figure is the players N workers hold over the
players one holds, at the same lag limit, beside nginx's CPU per player.

Where the player process needs as much CPU as the servers, the load generator is the limit
before N workers are: on a 2-core machine one relay worker already keeps up with more players
than the player process can read. ``--worker-cpu Q`` gives each server process (each relay
worker, each nginx worker) a CPU quota of Q cores in a cgroup of its own (the kernel's CFS
bandwidth control, cgroup v1 ``cpu.cfs_quota_us`` or v2 ``cpu.max``), as if each had a small
core to itself: one worker then falls behind at a player count the player process can still
drive, and N workers, each with the same quota, show whether the relay scales across them.
Needs write access to the cgroup file system (root, or a delegated subtree).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.relay_latency import measure_latency
from bench.relay_series import Series, StepResult, fmt_ms, run_series, spread
from bench.relay_servers import (
    Clip,
    FfmpegPublisher,
    PlayerFleet,
    Server,
    start_nginx,
    start_roi_relay,
    stop_process,
)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 20_000  # short periods: a throttled worker stalls at most this long at a time


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (the ``--workers`` supervisor's workers, nginx's)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
    return sorted(children)


def _cpu_hierarchy() -> tuple[Path, bool] | None:
    """Where cgroups with a CPU controller are made, and whether it is cgroup v2."""
    v1 = CGROUP_ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        return v1, False
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return CGROUP_ROOT, True
    return None


@dataclass
class CpuQuotas:
    """One cgroup per process, each capped at ``cores`` of CPU; ``release`` undoes it."""

    cores: float
    groups: list[Path] = field(default_factory=list)

    def available(self) -> str | None:
        """Why quotas cannot be set here, or None."""
        where = _cpu_hierarchy()
        if where is None:
            return "no cgroup CPU controller under /sys/fs/cgroup"
        if not os.access(where[0], os.W_OK):
            return f"{where[0]} is not writable (run as root)"
        return None

    def limit(self, pids: list[int]) -> None:
        where = _cpu_hierarchy()
        assert where is not None, self.available()
        base, v2 = where
        quota_us = max(1000, int(self.cores * PERIOD_US))
        for pid in pids:
            group = base / f"roi-relay-bench-{os.getpid()}-{pid}"
            group.mkdir(exist_ok=True)
            if v2:
                (group / "cpu.max").write_text(f"{quota_us} {PERIOD_US}")
            else:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota_us))
            (group / "cgroup.procs").write_text(str(pid))  # all its threads, and new ones
            self.groups.append(group)

    def release(self) -> None:
        where = _cpu_hierarchy()
        for group in self.groups:
            with contextlib.suppress(OSError):
                procs = (group / "cgroup.procs").read_text().split()
                for pid in procs:
                    with contextlib.suppress(OSError):
                        (where[0] if where else CGROUP_ROOT).joinpath("cgroup.procs").write_text(
                            pid
                        )
                group.rmdir()
        self.groups.clear()


@dataclass
class Config:
    label: str
    kind: str  # the players' protocol
    workers: int
    start: Callable[[], Awaitable[Server]]


def _held(series: Series) -> str:
    return f"{series.max_held}" + ("+" if series.never_fell_behind else "")


async def run_scaling(args: argparse.Namespace, clip: Clip, workdir: Path) -> list[str]:
    """The four series (roi-relay and nginx, 1 and N workers), one server at a time; prints
    each step and a summary, and answers the headline's fields."""
    n = args.workers
    quotas = CpuQuotas(args.worker_cpu) if args.worker_cpu else None
    if quotas is not None and (why := quotas.available()) is not None:
        raise SystemExit(f"--worker-cpu: {why}")
    configs = [
        Config("roi-relay 1 worker", "flv", 1, lambda: start_roi_relay(workdir, "relay-1")),
        Config(
            f"roi-relay {n} workers",
            "flv",
            n,
            lambda: start_roi_relay(workdir, f"relay-{n}", workers=n),
        ),
    ]
    if not args.skip_nginx:
        configs += [
            Config("nginx-rtmp 1 worker", "rtmp", 1, lambda: start_nginx(workdir, "nginx-1")),
            Config(
                f"nginx-rtmp {n} workers",
                "rtmp",
                n,
                lambda: start_nginx(workdir, f"nginx-{n}", workers=n),
            ),
        ]
    print(
        f"each server process capped at {args.worker_cpu} of a core (its own cgroup)"
        if quotas
        else "no CPU quota: on a small machine the player process is the limit first",
        flush=True,
    )
    results: dict[str, Series] = {}
    latencies: dict[str, float] = {}
    for config in configs:
        server = await config.start()
        publisher: FfmpegPublisher | None = None
        fleet: PlayerFleet | None = None
        try:
            if config.workers > 1:
                await asyncio.sleep(3)  # every worker listening (the supervisor starts them)
                server.workers = child_pids(server.pid)
                if len(server.workers) != config.workers:
                    print(f"{config.label}: {len(server.workers)} worker processes, not {n}")
            else:
                server.workers = [server.pid]
            if quotas is not None:
                quotas.limit(server.workers)
            if config.kind == "flv":
                lat = await measure_latency(
                    config.label, clip, server.target, "flv", args.latency_seconds
                )
                latencies[config.label] = lat.median()
                print(
                    f"latency {config.label:<22} http-flv median {fmt_ms(lat.median())} ms  "
                    f"p95 {fmt_ms(lat.p95())} ms ({lat.error or f'{len(lat.samples_ms)} tags'})",
                    flush=True,
                )
            publisher = await FfmpegPublisher.start(clip, server.target, workdir)
            fleet = await PlayerFleet.start(server.target)
            results[config.label] = await run_series(
                config.label, config.kind, server, fleet, publisher, clip,
                args.steps, args.step_seconds, args.settle_seconds,
            )  # fmt: skip
        finally:
            if fleet is not None:
                await fleet.stop()
            if publisher is not None:
                await publisher.stop()
            await stop_process(server.proc)
            if quotas is not None:
                quotas.release()

    print("\nscaling summary (CPU as share of one core)")
    for label, series in results.items():
        top = series.step(series.max_held)
        detail = ""
        if top is not None:
            detail = (
                f"  at n={top.players}: server {top.server_cpu:.1%}, cpu/player "
                f"{top.cpu_per_player():.3%}, player process {top.player_proc_cpu:.0%}"
            )
            if len(top.worker_cpu) > 1:
                detail += f", workers {spread(top)}"
        print(f"  {label:<22} most players held {_held(series):>5}{detail}")
    head: list[str] = []
    for name in ("roi-relay", "nginx-rtmp"):
        one = results.get(f"{name} 1 worker")
        many = results.get(f"{name} {n} workers")
        if one is None or many is None:
            continue
        ratio = many.max_held / one.max_held if one.max_held else float("nan")
        bound = "+" if many.never_fell_behind else ""
        print(
            f"  {name}: {n} workers held {many.max_held}{bound} players, 1 worker "
            f"{one.max_held}: {ratio:.2f}x{' (at least: the last step held)' if bound else ''}"
        )
        head.append(f"{name.split('-')[0]}_scaling={ratio:.2f}x{bound}")
    relay_n = results.get(f"roi-relay {n} workers")

    def below_cap(step: StepResult | None) -> bool:
        # A worker at its quota spends what it is given, whatever the players: CPU per
        # player there is the quota over the count, so compare below it.
        cap = 0.9 * quotas.cores if quotas is not None else float("inf")
        return step is not None and step.ok and all(cpu < cap for cpu in step.worker_cpu)

    for nginx_label in (f"nginx-rtmp {n} workers", "nginx-rtmp 1 worker"):
        nginx = results.get(nginx_label)
        if relay_n is None or nginx is None:
            continue
        for fair in (False, True):
            counts = [
                s.players
                for s in relay_n.steps
                if below_cap(s)
                and below_cap(theirs := nginx.step(s.players))
                and not (fair and (s.saturated or (theirs is not None and theirs.saturated)))
            ]
            what = ", neither player process saturated" if fair else ""
            if not counts:
                print(f"  cpu/player against {nginx_label}: no step both held{what} below the cap")
                continue
            count = max(counts)
            mine, theirs = relay_n.step(count), nginx.step(count)
            assert mine is not None and theirs is not None
            per = mine.cpu_per_player() / theirs.cpu_per_player()
            print(
                f"  cpu/player roi-relay {n} workers (http-flv) / {nginx_label} (rtmp) at "
                f"n={count}{what}: {per:.2f}x"
            )
            field = f"cpu_per_player_vs_{nginx_label.replace(' ', '_')}{'_fair' if fair else ''}"
            head.append(f"{field}={per:.2f}x@n={count}")
    head += [f"{k.replace(' ', '_')}_latency_ms={fmt_ms(v)}" for k, v in latencies.items()]
    return head


__all__ = ["CpuQuotas", "child_pids", "run_scaling"]
