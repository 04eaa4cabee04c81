"""Relay fan-out: CPU per player, the most players held, and publish-to-play latency, for
roi-relay beside nginx with Debian's libnginx-mod-rtmp, both measured in the same run.

    .venv/bin/python bench/relay.py [--quick] [--steps 1,10,25,50,100,200,400] [--step-seconds 8]
        [--skip-nginx] [--record] [--forward] [--callbacks] [--hook-ms 50]

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
player over a publisher-only baseline, and the median time the step's new players took from
connecting to their first video frame (bench/relay_series.py). A step keeps up when every
player at its end is within 1 s of the publisher's newest timestamp (ffmpeg's -progress),
advanced its media time with the wall clock, lost no frames (tag count per media second), and
received at least 85 % of the clip's bitrate. Past several hundred players the player process
itself nears a full core: its CPU is printed, and a step where it saturates one says so (the
figure is then the bench's).

Latency is a separate, idle-server measurement: the bench publishes the clip's FLV tags in
real time with that RTMP client publishing and records the wall time each tag was
sent; one player records the wall time each tag arrived. Latency = arrival - send (median,
95th percentile) for roi-relay HTTP-FLV, roi-relay RTMP and nginx RTMP (bench/relay_latency.py).

Scaling (bench/relay_scaling.py): --workers N runs instead the player series against roi-relay
with 1 and with N workers and nginx-rtmp with worker_processes 1 and N (rtmp_auto_push on),
printing each worker's CPU at each step and the players N workers held over one's;
--worker-cpu Q caps each server process at Q of a core so that the workers, not the player
process, are what falls behind on a small machine.

Options (bench/relay_options.py): --record, --forward, --callbacks and --hook-ms each add one
roi-relay HTTP-FLV series with that feature on, in its own relay process after the plain
series, and print its figures beside the plain HTTP-FLV run's with ratios: the source's CPU
with only the publisher (what recording or one forward costs the source), server CPU and CPU
per player at the largest count both held, the most players held, and first-frame time.

The machine is shared: the load average and how busy both cores were are printed beside the
figures. The last line holds the headline figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.relay_latency import measure_latency  # noqa: E402
from bench.relay_options import chosen_options, option_lines, run_options  # noqa: E402
from bench.relay_scaling import run_scaling  # noqa: E402
from bench.relay_series import Series, common_count, fmt_ms, run_series  # noqa: E402
from bench.relay_servers import (  # noqa: E402
    CLIP_FPS,
    CLIP_SECONDS,
    KEYFRAME_SECONDS,
    NGINX_MODULE,
    FfmpegPublisher,
    PlayerFleet,
    Server,
    encode_clip,
    start_nginx,
    start_roi_relay,
    stop_process,
)

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
    parser.add_argument(
        "--write-merge-ms",
        type=float,
        default=20.0,
        help="ROI_RELAY_WRITE_MERGE_MS for every roi-relay process: players get this many ms "
        "of packets per write (default 20, the server's; 0: those of one publisher read)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="scaling run: roi-relay with 1 and with N workers (--workers N), nginx-rtmp with "
        "worker_processes 1 and N (rtmp_auto_push on); bench/relay_scaling.py",
    )
    parser.add_argument(
        "--worker-cpu",
        type=float,
        help="with --workers: cap each server process at this share of a core (a cgroup "
        "each), so that workers, not the player process, are the limit",
    )
    parser.add_argument(
        "--edge",
        action="store_true",
        help="also measure latency through an edge: publish to one cluster node, play on another",
    )
    options = parser.add_argument_group(
        "options", "each one adds a roi-relay http-flv series with it on, printed beside the plain"
    )
    options.add_argument("--record", action="store_true", help="recording on (ROI_RELAY_RECORD)")
    options.add_argument(
        "--forward", action="store_true", help="one forward on, to nginx-rtmp (ROI_RELAY_FORWARD)"
    )
    options.add_argument(
        "--callbacks", action="store_true", help="event callbacks to a receiver attached"
    )
    options.add_argument(
        "--hook-ms", type=float, help="the auth hook on, answering after this many ms"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    default_steps = "1,10,25,50,100,200,400"
    if args.workers > 1:
        default_steps = "100,200,300,400,600,800,1000,1200,1400,1600"
    args.steps = [
        int(v) for v in (args.steps or ("1,10,40" if quick else default_steps)).split(",")
    ]
    args.step_seconds = args.step_seconds or (3.0 if quick else 8.0)
    args.latency_seconds = args.latency_seconds or (3.0 if quick else 6.0)
    args.settle_seconds = 0.5 if quick else 1.0
    args.options = chosen_options(args.record, args.forward, args.callbacks, args.hook_ms)
    return args


def ratio_at_common(
    roi: Series, nginx: Series | None, unsaturated: bool = False
) -> tuple[int, float] | None:
    """CPU per player of one series over another (roi-relay over nginx, an option's run over
    the plain one) at the largest player count both held (``unsaturated``: where the player
    process was the limit of neither)."""
    count = None if nginx is None else common_count(roi, nginx, unsaturated)
    if nginx is None or count is None:
        return None
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


async def edge_latencies(
    workdir: Path, clip: Any, servers: list[Server], seconds: float
) -> list[Any]:
    """Two cluster nodes on one SQLite file: publish to the origin, play on the edge."""
    env = {
        "ROI_RELAY_CLUSTER": "true",
        "ROI_RELAY_DATABASE_URL": f"sqlite:///{workdir / 'cluster.db'}",
        "ROI_RELAY_HEARTBEAT_SECONDS": "0.5",
    }
    origin = await start_roi_relay(workdir, "origin", {**env, "ROI_RELAY_NODE_ID": "o"})
    edge = await start_roi_relay(workdir, "edge", {**env, "ROI_RELAY_NODE_ID": "e"})
    servers += [origin, edge]
    await asyncio.sleep(2)  # both heartbeats in the directory
    return [
        await measure_latency(
            f"edge {kind}", clip, origin.target, kind, seconds, play_target=edge.target
        )
        for kind in ("flv", "rtmp")
    ]


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
        if args.workers > 1:
            head = await run_scaling(args, clip, workdir)
            load = f"load={load_before[0]:.1f}/{os.getloadavg()[0]:.1f}"
            print(f"  total run time {time.monotonic() - started:.0f} s", flush=True)
            cap = f"worker_cpu={args.worker_cpu}" if args.worker_cpu else "worker_cpu=uncapped"
            merge = f"write_merge_ms={args.write_merge_ms:g}"
            print(" ".join([*head, f"workers={args.workers}", cap, merge, load]), flush=True)
            return 0
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
        if args.edge:
            latencies += await edge_latencies(workdir, clip, servers, args.latency_seconds)
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
        fair: dict[str, tuple[int, float] | None] = {}
        for name, ratio in (("http-flv", flv_ratio), ("rtmp", rtmp_ratio)):
            roi_series = results[f"roi-relay {name}"]
            fair[name] = ratio_at_common(roi_series, nginx_series, unsaturated=True)
            for at, what in ((ratio, ""), (fair[name], ", neither player process saturated")):
                if at is None:
                    continue
                verdict = "within" if at[1] <= 1.5 else "NOT within"
                marginal = marginal_ratio(roi_series, nginx_series, at[0])
                print(
                    f"  cpu/player roi-relay {name} / nginx-rtmp at n={at[0]}{what}: "
                    f"{at[1]:.1f}x ({verdict} the 1.5x aim); over the publisher-only "
                    f"baselines: {'n/a' if marginal is None else f'{marginal:.1f}x'}"
                )

        option_head: list[str] = []
        if args.options:
            option_runs = await run_options(args, clip, workdir, nginx)
            print("\noptions, each in its own roi-relay process, beside the plain run above")
            for name, series, detail in option_runs:
                line, head = option_lines(name, results["roi-relay http-flv"], series, detail)
                print(line, flush=True)
                option_head += head
        print(f"  total run time {time.monotonic() - started:.0f} s", flush=True)

        lat_by = {lat.label: lat for lat in latencies}

        def ratio_text(ratio: tuple[int, float] | None) -> str:
            return "n/a" if ratio is None else f"{ratio[1]:.1f}x@n={ratio[0]}"

        nginx_latency = lat_by.get("nginx-rtmp rtmp")
        headline = [
            f"cpu_per_player_ratio={ratio_text(flv_ratio)}",
            f"rtmp_cpu_per_player_ratio={ratio_text(rtmp_ratio)}",
            f"unsaturated_ratio={ratio_text(fair['http-flv'])}/{ratio_text(fair['rtmp'])}",
            f"roi_relay_max_players={results['roi-relay http-flv'].max_held}",
            f"roi_relay_rtmp_max_players={results['roi-relay rtmp'].max_held}",
            f"nginx_max_players={nginx_series.max_held if nginx_series else 'n/a'}",
            f"latency_flv_ms={fmt_ms(lat_by['roi-relay http-flv'].median())}",
            f"latency_rtmp_ms={fmt_ms(lat_by['roi-relay rtmp'].median())}",
            f"nginx_latency_ms={fmt_ms(nginx_latency.median()) if nginx_latency else 'n/a'}",
            *(
                [f"edge_latency_flv_ms={fmt_ms(lat_by['edge flv'].median())}"]
                if "edge flv" in lat_by
                else []
            ),
            *option_head,
            f"write_merge_ms={args.write_merge_ms:g}",
            f"load={load_before[0]:.1f}/{os.getloadavg()[0]:.1f}",
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
    os.environ["ROI_RELAY_WRITE_MERGE_MS"] = f"{args.write_merge_ms:g}"  # every roi-relay
    if not NGINX_MODULE.exists() and not args.skip_nginx:
        print(f"{NGINX_MODULE} is missing: apt-get install libnginx-mod-rtmp (or --skip-nginx)")
        return 2
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
