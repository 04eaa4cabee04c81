"""bench/relay.py's optional runs: the same roi-relay HTTP-FLV series with one feature on, in
its own ``roi-relay serve`` process, so that the plain figures and each option's sit side by
side with their ratios (issue 14: callbacks and the auth hook; issue 15: recording and one
forward).

* record: ``ROI_RELAY_RECORD=live/*`` (fragmented MP4 into the run's data directory);
* forward: ``ROI_RELAY_FORWARD`` to an nginx-rtmp on loopback (the bench's own, or one started
  only as the destination with --skip-nginx);
* callbacks: ``ROI_RELAY_CALLBACK_URL`` to a receiver answering 200 at once
  (tests/hooks/receiver.py, uvicorn on a thread of the bench process);
* hook: ``ROI_RELAY_AUTH_HOOK_URL`` to a receiver answering ``{"code": 0}`` after --hook-ms.

Each option's run ends with a check that the feature really worked (a recording listed, the
forward's byte count near the stream's bitrate, events or hook calls received); a run that
did not is reported as such, not as a figure.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.relay_players import APP, HOST, LOAD_STREAM
from bench.relay_series import Series, common_count, fmt_ms, run_series
from bench.relay_servers import (
    Clip,
    FfmpegPublisher,
    PlayerFleet,
    Server,
    start_nginx,
    start_roi_relay,
    stop_process,
)
from tests.hooks.receiver import Answer, Receiver

OPTIONS = ("record", "forward", "callbacks", "hook")
RECEIVER_SETTINGS = {"callbacks": "ROI_RELAY_CALLBACK_URL", "hook": "ROI_RELAY_AUTH_HOOK_URL"}
# Bytes per second a working forward must at least have sent: well below the clip's 4 Mbit/s.
FORWARD_MIN_BYTES_PER_S = 300_000


@dataclass
class OptionRun:
    """One option's roi-relay process and the check that its feature ran."""

    name: str
    server: Server
    check: Callable[[float], Awaitable[str]]  # seconds the stream ran -> what it did

    @property
    def label(self) -> str:
        return f"roi-relay +{self.name}"


class OptionHelpers:
    """What the options need beside their relay: receivers and a forward destination; one
    set per bench run, stopped at its end."""

    def __init__(self, workdir: Path, hook_ms: float, nginx: Server | None) -> None:
        self.workdir = workdir
        self.hook_ms = hook_ms
        self.nginx = nginx
        self.own_nginx: Server | None = None
        self.receivers: list[Receiver] = []

    def receiver(self, answer_after_s: float) -> Receiver:
        def behaviour(_path: str, _body: dict[str, Any]) -> Answer:
            return 200, {"code": 0}, answer_after_s

        receiver = Receiver(behaviour).start()
        self.receivers.append(receiver)
        return receiver

    async def forward_destination(self) -> Server:
        if self.nginx is None:
            self.own_nginx = self.nginx = await start_nginx(self.workdir, "nginx-destination")
        return self.nginx

    def stop(self) -> None:
        for receiver in self.receivers:
            receiver.stop()


def _api(server: Server, path: str) -> Any:
    assert server.target.http_port is not None
    reply = httpx.get(f"http://{HOST}:{server.target.http_port}/api/v1{path}", timeout=5)
    reply.raise_for_status()
    return reply.json()


async def start_option(name: str, helpers: OptionHelpers) -> OptionRun:
    """Starts the roi-relay process of one option, with what it needs."""
    workdir = helpers.workdir
    if name == "record":
        env = {"ROI_RELAY_RECORD": f"{APP}/*", "ROI_RELAY_RECORD_MIN_FREE_MB": "0"}
        server = await start_roi_relay(workdir, "roi-relay-record", env)

        async def recorded(_seconds: float) -> str:
            recordings = _api(server, "/recordings")
            if not recordings:
                raise RuntimeError("recording on, but no recording is listed")
            return f"{len(recordings)} recording(s) listed"

        return OptionRun(name, server, recorded)
    if name == "forward":
        destination = await helpers.forward_destination()
        url = f"{destination.target.tc_url()}/{LOAD_STREAM}-forwarded"
        env = {"ROI_RELAY_FORWARD": f"{APP}/*={url}"}
        server = await start_roi_relay(workdir, "roi-relay-forward", env)

        async def forwarded(seconds: float) -> str:
            forwards = _api(server, f"/streams/{APP}/{LOAD_STREAM}/forwards")
            sent = forwards[0].get("bytes", 0) if forwards else 0
            if sent < seconds * FORWARD_MIN_BYTES_PER_S:
                raise RuntimeError(f"the forward sent only {sent} bytes: {forwards}")
            return f"forward sent {sent / 1e6:.1f} MB to {destination.target.name}"

        return OptionRun(name, server, forwarded)
    if name in RECEIVER_SETTINGS:
        # callbacks: a receiver answering at once; hook: one answering after --hook-ms.
        delay_s = helpers.hook_ms / 1000 if name == "hook" else 0.0
        receiver = helpers.receiver(delay_s)
        env = {RECEIVER_SETTINGS[name]: f"{receiver.url}/{name}"}
        server = await start_roi_relay(workdir, f"roi-relay-{name}", env)

        async def received(_seconds: float) -> str:
            if not receiver.received:
                raise RuntimeError(f"{RECEIVER_SETTINGS[name]} set, but nothing was POSTed to it")
            return (
                f"{len(receiver.received)} POSTs received, answered after {delay_s * 1000:.0f} ms"
            )

        return OptionRun(name, server, received)
    raise ValueError(f"unknown option {name!r} (one of {', '.join(OPTIONS)})")


def chosen_options(
    record: bool, forward: bool, callbacks: bool, hook_ms: float | None
) -> list[str]:
    wanted = {"record": record, "forward": forward, "callbacks": callbacks}
    wanted["hook"] = hook_ms is not None
    return [name for name in OPTIONS if wanted[name]]


def option_lines(name: str, plain: Series, run: Series, detail: str) -> tuple[str, list[str]]:
    """One option's figures beside the plain run's, with ratios; and its headline fields."""
    extra = run.baseline_cpu - plain.baseline_cpu
    base_ratio = run.baseline_cpu / plain.baseline_cpu if plain.baseline_cpu > 0 else float("inf")
    parts = [
        f"source CPU, publisher only {run.baseline_cpu:.2%} vs {plain.baseline_cpu:.2%} of a core"
        f" ({extra:+.2%}, {base_ratio:.2f}x)"
    ]
    head = [f"{name}_source_cpu={extra:+.2%}"]
    count = common_count(run, plain)
    mine, theirs = (run.step(count), plain.step(count)) if count else (None, None)
    if count and mine is not None and theirs is not None:
        cpu_ratio = mine.server_cpu / theirs.server_cpu if theirs.server_cpu > 0 else float("inf")
        per_ratio = mine.cpu_per_player() / theirs.cpu_per_player() if theirs.players else 0
        first_delta = mine.first_frame_ms - theirs.first_frame_ms
        parts += [
            f"n={count}: server {mine.server_cpu:.1%} vs {theirs.server_cpu:.1%} "
            f"({cpu_ratio:.2f}x)",
            f"cpu/player {mine.cpu_per_player():.2%} vs {theirs.cpu_per_player():.2%} "
            f"({per_ratio:.2f}x)",
            f"first frame {fmt_ms(mine.first_frame_ms)} vs {fmt_ms(theirs.first_frame_ms)} ms "
            f"({first_delta:+.0f} ms)",
        ]
        head += [
            f"{name}_cpu_per_player_ratio={per_ratio:.2f}x@n={count}",
            f"{name}_first_frame_ms={fmt_ms(mine.first_frame_ms)}",
        ]
    else:
        parts.append("no player count held by both")
    alone, plain_alone = run.step(1), plain.step(1)
    if alone is not None and plain_alone is not None and alone.ok and plain_alone.ok:
        # One player joining an otherwise idle relay: the hook's wait shows here undiluted.
        delta = alone.first_frame_ms - plain_alone.first_frame_ms
        parts.append(
            f"first frame at n=1 {fmt_ms(alone.first_frame_ms)} vs "
            f"{fmt_ms(plain_alone.first_frame_ms)} ms ({delta:+.0f} ms)"
        )
        head.append(f"{name}_first_frame_n1_ms={fmt_ms(alone.first_frame_ms)}")
    held = f"{run.max_held}{'+' if run.never_fell_behind else ''}"
    plain_held = f"{plain.max_held}{'+' if plain.never_fell_behind else ''}"
    held_ratio = run.max_held / plain.max_held if plain.max_held else float("nan")
    parts.append(f"most held {held} vs {plain_held} ({held_ratio:.2f}x)")
    head.append(f"{name}_max_players={run.max_held}")
    return f"  +{name:<9} vs plain http-flv: " + "; ".join(parts) + f"  [{detail}]", head


async def run_options(
    args: argparse.Namespace, clip: Clip, workdir: Path, nginx: Server | None
) -> list[tuple[str, Series, str]]:
    """Each option's roi-relay http-flv series, one relay process at a time."""
    helpers = OptionHelpers(workdir, args.hook_ms or 0.0, nginx)
    runs: list[tuple[str, Series, str]] = []
    try:
        for name in args.options:
            option = await start_option(name, helpers)
            publisher = await FfmpegPublisher.start(clip, option.server.target, workdir)
            fleet = await PlayerFleet.start(option.server.target)
            began = time.monotonic()
            try:
                series = await run_series(
                    option.label, "flv", option.server, fleet, publisher, clip,
                    args.steps, args.step_seconds, args.settle_seconds,
                )  # fmt: skip
                try:
                    detail = await option.check(time.monotonic() - began)
                except (RuntimeError, httpx.HTTPError, ValueError, IndexError) as exc:
                    detail = f"CHECK FAILED: {exc}"
            finally:
                await fleet.stop()
                await publisher.stop()
                await stop_process(option.server.proc)
            runs.append((name, series, detail))
    finally:
        helpers.stop()
        if helpers.own_nginx is not None:
            await stop_process(helpers.own_nginx.proc)
    return runs
