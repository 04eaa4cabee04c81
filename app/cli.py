"""`roi-relay serve`: flags mirror the ROI_RELAY_* environment variables."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.config import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roi-relay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the relay (RTMP + HTTP)")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = "ROI_RELAY_" + name.upper()
        serve.add_argument(
            flag, dest=name, default=None, help=f"(env {env}, default {field.default!r})"
        )
    return parser


_M_ARENA_MAX = -8  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3


def _mallopt(param: int, value: int) -> bool:
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    return bool(mallopt(param, value))


def bound_malloc_arenas(arenas: int) -> bool:
    """Caps glibc's malloc arenas, as ``MALLOC_ARENA_MAX`` would: decoder, encoder and
    detector threads otherwise each get an arena of their own, and memory freed in one is not
    reused by another (fragmentation, not a leak: mutated media sessions levelled off at
    804 MB instead of 354 MB with 2 arenas). Must run before those threads start; a
    ``MALLOC_ARENA_MAX`` in the environment (read by glibc at start-up) wins."""
    if arenas <= 0 or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return _mallopt(_M_ARENA_MAX, arenas)


def fix_mmap_threshold(threshold: int) -> bool:
    """Serves blocks of at least ``threshold`` bytes from mmap, as ``MALLOC_MMAP_THRESHOLD_``
    would. glibc's own threshold starts at 128 KiB but rises to the size of each large block
    freed (up to 32 MiB), after which message buffers, frames and packets of a few hundred
    KiB to MiB come from the heaps, where blocks of every size and lifetime leave holes
    that are never returned: in mutated media sessions the main heap kept growing. Fixed,
    large blocks go back to the system when freed. ``MALLOC_MMAP_THRESHOLD_`` wins."""
    if threshold <= 0 or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return _mallopt(_M_MMAP_THRESHOLD, threshold)


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (a container's ``--cpus``), if any."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # cgroup v1
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cores(root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may run on (its CPU affinity), fewer under a cgroup quota:
    what ``--workers auto`` starts, so a container limited to 2 CPUs on a 64-core host
    runs 2 workers, not 64."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    limit = _cgroup_cpu_limit(root)
    if limit is not None:
        return max(1, min(cores or 1, math.ceil(limit)))
    return cores or 1


def worker_count(value: str, free_ports: bool = False) -> int:
    """The processes ``--workers value`` starts; ``auto`` is the available cores, or one when
    ``free_ports`` (a public port of 0: workers can share only a port named in advance)."""
    if value.strip().lower() == "auto":
        return 1 if free_ports else available_cores()
    try:
        count = int(value)
    except ValueError:
        raise SystemExit(f"--workers must be a number or auto, not {value!r}") from None
    if count < 1:
        raise SystemExit("--workers must be at least 1")
    return count


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop ``roi-relay serve`` runs on: uvloop for ``auto`` when it imports (its sockets,
    transports and callbacks are libuv's C, the per-packet fan-out's hot path), asyncio's own
    for ``asyncio``; ``uvloop`` asked for and missing is an error."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("ROI_RELAY_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k != "command" and v is not None
    }
    settings = Settings(**overrides)
    bound_malloc_arenas(settings.malloc_arena_max)
    fix_mmap_threshold(settings.malloc_mmap_threshold)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    workers = worker_count(settings.workers, 0 in (settings.rtmp_port, settings.http_port))
    if workers > 1:
        from app.cluster.workers import run_workers

        raise SystemExit(run_workers(settings, workers, sys.argv[1:] if argv is None else argv))
    from app.server import Relay

    async def run() -> None:
        relay = Relay(settings)
        task = asyncio.create_task(relay.serve_forever())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner:
        runner.run(run())


if __name__ == "__main__":
    main()
