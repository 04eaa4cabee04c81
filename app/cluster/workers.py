"""``roi-relay serve --workers N``: N relay processes behind the same public ports.

Each worker binds the public RTMP and HTTP ports with SO_REUSEPORT (the kernel spreads new
connections over the listening sockets, no hand-off process in the data path), listens on
loopback at free ports of its own for pulls and forwarded API calls, and is a cluster node on
the same database (the SQLite file by default): a player who lands on another worker than the
publisher is served through one edge pull per stream and worker, exactly as between machines.
The parent only supervises: it restarts a worker that dies and stops them all on a signal.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from app.config import Settings

log = logging.getLogger("app.cluster")


def _child_args(argv: list[str]) -> list[str]:
    """``argv`` without ``--workers`` (a flag would override the child's environment)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out


def run_workers(settings: Settings, count: int, argv: list[str]) -> int:
    if settings.rtmp_port == 0 or settings.http_port == 0:
        log.error("--workers needs fixed RTMP and HTTP ports (0 would give each its own)")
        return 2
    base_id = settings.node_id or f"{os.uname().nodename}-{os.getpid()}"
    args = [sys.executable, "-m", "app.cli", *_child_args(argv)]

    def start(index: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            ROI_RELAY_WORKERS="1",
            ROI_RELAY_CLUSTER="true",
            ROI_RELAY_REUSE_PORT="true",
            ROI_RELAY_NODE_ID=f"{base_id}-w{index}",
            ROI_RELAY_INTERNAL_HOST=settings.internal_host or "127.0.0.1",
        )
        # Each worker advertises its own internal listeners, never a shared address.
        env.pop("ROI_RELAY_NODE_URL", None)
        env.pop("ROI_RELAY_NODE_RTMP_URL", None)
        return subprocess.Popen(args, env=env)

    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workers = [start(i) for i in range(count)]
    log.info(
        "started %d workers on RTMP %d, HTTP %d", count, settings.rtmp_port, settings.http_port
    )
    while not stopping:
        time.sleep(0.2)
        for index, proc in enumerate(workers):
            if proc.poll() is not None and not stopping:
                log.error("worker %d exited with %s: restarting it", index, proc.returncode)
                time.sleep(1.0)
                workers[index] = start(index)
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in workers:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


__all__ = ["run_workers"]
