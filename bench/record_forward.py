"""The source relay's CPU cost of recording and of one forward, beside the plain relay.

    .venv/bin/python bench/record_forward.py [--seconds 20] [--rounds 2]

Setup: a 1280x720 30 fps clip (libx264 CBR 4 Mbit/s, a keyframe every 2 s, AAC) is encoded
once with Debian's ffmpeg and pushed with ``ffmpeg -re -c copy`` to roi-relay run as
``python -m app.cli serve`` (no ROI template: the costs measured are the outputs' own). Three
configurations, alternating for ``--rounds`` rounds: plain (no players), recording on
(``ROI_RELAY_RECORD=live/*``, fragmented MP4), one forward on (to Debian's nginx-rtmp on
loopback). The figure is the relay's CPU time (all threads, /proc/PID/task/*/schedstat) per
second of wall time while the clip is pushed, median over the rounds, and the extra over
plain, in per cent of one core. Separate module from bench/relay.py (being split elsewhere);
it shares nothing but the method.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
NGINX_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def make_clip(folder: Path, seconds: int) -> Path:
    clip = folder / "clip.flv"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", "4M", "-maxrate", "4M",
         "-bufsize", "4M", "-g", "60", "-bf", "0", "-c:a", "aac", "-f", "flv", str(clip)],
        check=True,
    )  # fmt: skip
    return clip


def start_nginx(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    conf = folder / "nginx.conf"
    conf.write_text(
        f"load_module {NGINX_MODULE};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {folder}/nginx.pid;\nerror_log {folder}/logs/error.log warn;\n"
        "events { worker_connections 64; }\n"
        f"rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n"
    )
    proc = subprocess.Popen(
        ["nginx", "-p", str(folder), "-c", str(conf), "-e", str(folder / "logs/error.log")]
    )
    wait_port(port)
    return proc, port


def run_once(clip: Path, work: Path, env: dict[str, str]) -> float:
    rtmp, http = free_port(), free_port()
    data = Path(tempfile.mkdtemp(dir=work))
    relay = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=ROOT,
        env={
            **os.environ,
            "ROI_RELAY_HOST": "127.0.0.1",
            "ROI_RELAY_RTMP_PORT": str(rtmp),
            "ROI_RELAY_HTTP_PORT": str(http),
            "ROI_RELAY_DATA_DIR": str(data),
            "ROI_RELAY_LOG_LEVEL": "warning",
            "ROI_RELAY_RECORD_MIN_FREE_MB": "0",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(http)
        pusher = subprocess.Popen(
            ["ffmpeg", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
             "-f", "flv", f"rtmp://127.0.0.1:{rtmp}/live/bench"],
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while httpx.get(f"http://127.0.0.1:{http}/api/v1/streams/live/bench").status_code != 200:
            assert time.monotonic() < deadline, "stream never went live"
            time.sleep(0.05)
        time.sleep(1.0)  # past the start: recorder threads, forward handshakes
        cpu0, wall0 = cpu_seconds(relay.pid), time.monotonic()
        pusher.wait()
        cpu1, wall1 = cpu_seconds(relay.pid), time.monotonic()
        info = httpx.get(f"http://127.0.0.1:{http}/api/v1/recordings").json()
        if env.get("ROI_RELAY_RECORD") and not info:
            raise RuntimeError("recording configuration recorded nothing")
        if env.get("ROI_RELAY_FORWARD"):
            forwards = httpx.get(
                f"http://127.0.0.1:{http}/api/v1/streams/live/bench/forwards"
            ).json()
            sent = forwards[0].get("bytes", 0)
            if sent < (wall1 - wall0) * 300_000:  # well below 4 Mbit/s: not forwarding
                raise RuntimeError(f"the forward sent only {sent} bytes: {forwards}")
        return (cpu1 - cpu0) / (wall1 - wall0)
    finally:
        relay.terminate()
        relay.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = make_clip(work, args.seconds)
        nginx, nginx_port = start_nginx(work / "nginx")
        configs = {
            "plain": {},
            "recording": {"ROI_RELAY_RECORD": "live/*"},
            "1 forward": {"ROI_RELAY_FORWARD": f"live/*=rtmp://127.0.0.1:{nginx_port}/live/bench"},
        }
        figures: dict[str, list[float]] = {name: [] for name in configs}
        try:
            for _ in range(args.rounds):
                for name, env in configs.items():
                    figures[name].append(run_once(clip, work, env))
        finally:
            nginx.terminate()
            nginx.wait(10)
    load = os.getloadavg()[0]
    plain = statistics.median(figures["plain"])
    print(f"720p30 4 Mbit/s push, {args.seconds} s x {args.rounds} rounds, load {load:.2f}")
    print(f"{'configuration':<12} {'CPU % of a core':>16} {'extra over plain':>17} {'ratio':>6}")
    for name, values in figures.items():
        value = statistics.median(values)
        print(
            f"{name:<12} {value * 100:>15.2f}% {(value - plain) * 100:>+16.2f}% "
            f"{value / plain:>6.2f}"
        )


if __name__ == "__main__":
    main()
