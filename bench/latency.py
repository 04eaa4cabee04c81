"""Publisher-to-player delay over HTTP-FLV, HLS and WebRTC (WHEP), from timestamps burned
into the pushed frames.

    .venv/bin/python bench/latency.py [--seconds 8] [--hls-seconds 12] [--no-browser]

A real relay (RTMP + HTTP, as app/server.py composes it) runs on loopback. A PyAV publisher
pushes H.264 over RTMP at 25 fps (640x360, a keyframe a second, no B-frames) and writes the
wall-clock time in ms into each frame as two rows of 40 black/white 16x16 blocks (two copies,
read back only when they agree). Players read the blocks of each frame they show:

* baseline: PyAV reading HTTP-FLV and decoding as fast as frames come (no player buffer),
  the delivery delay any player starts from;
* the web player (/play/{app}/{stream}) in headless Debian Chromium on WHEP, HTTP-FLV (MSE)
  and native HLS: the delay to the moment the browser puts the frame on screen
  (requestVideoFrameCallback's expectedDisplayTime), which includes each transport's buffer.

The first seconds of each player are left out (joining replays the cached GOP). Figures are
medians and 90th percentiles in ms; ratios are against the baseline of the same run. The
WebRTC target is < 500 ms publisher to browser on loopback.
"""

from __future__ import annotations

import argparse
import fractions
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.browser import CHROMIUM, chromium  # noqa: E402
from tests.support.relay_harness import RunningRelay  # noqa: E402

WIDTH, HEIGHT, FPS = 640, 360, 25
BLOCK = 16
BITS = WIDTH // BLOCK  # 40 bits a row: ms since the epoch modulo 2**40 (34 years)
WARM_UP_S = 2.0


def stamp_frame(index: int, ms: int) -> np.ndarray:
    """A moving grey picture with ``ms`` in rows 0 and 1 of blocks (white = 1)."""
    y = np.arange(HEIGHT, dtype=np.int32)[:, None]
    x = np.arange(WIDTH, dtype=np.int32)[None, :]
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    img[...] = ((x + y + index * 4) % 128 + 64).astype(np.uint8)[..., None]
    for row in (0, 1):
        for bit in range(BITS):
            on = (ms >> (BITS - 1 - bit)) & 1
            img[row * BLOCK : (row + 1) * BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = (
                235 if on else 16
            )
    return img


def read_stamp(gray: np.ndarray) -> int | None:
    """The ms written by ``stamp_frame``, or None when the two copies disagree."""
    values = []
    for row in (0, 1):
        centres = gray[row * BLOCK + 4 : row * BLOCK + 12, :].reshape(8, BITS, BLOCK)[:, :, 4:12]
        bits = centres.mean(axis=(0, 2)) > 128
        values.append(int("".join("1" if b else "0" for b in bits), 2))
    if values[0] != values[1]:
        return None
    return unwrap(values[0])


def unwrap(low: int) -> int:
    """Full epoch ms from the low 40 bits, taking the turn closest to now."""
    now = int(time.time() * 1000)
    turn = 1 << BITS
    value = (now - now % turn) + low
    return min((value - turn, value, value + turn), key=lambda v: abs(v - now))


def publish(url: str, seconds: float) -> None:
    """Pushes stamped frames to ``url`` in real time (run in its own process: PyAV keeps the
    GIL while it blocks on the network, which would stall a relay in the same process)."""
    with av.open(url, "w", format="flv") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = FPS
        stream.codec_context.max_b_frames = 0
        stream.codec_context.options = {"preset": "veryfast", "tune": "zerolatency"}
        start = time.monotonic()
        index = 0
        while time.monotonic() - start < seconds:
            frame = av.VideoFrame.from_ndarray(
                stamp_frame(index, int(time.time() * 1000)), format="rgb24"
            )
            frame.pts = index
            frame.time_base = fractions.Fraction(1, FPS)
            out.mux(stream.encode(frame))
            index += 1
            delay = start + index / FPS - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def pyav_player(url: str, seconds: float) -> list[float]:
    """Delays seen by a PyAV decoder reading ``url`` as fast as it arrives (own process)."""
    delays: list[float] = []
    options = {"fflags": "nobuffer", "flags": "low_delay", "probesize": "32768"}
    started = time.monotonic()
    with av.open(url, options=options, timeout=20) as container:
        video = container.streams.video[0]
        video.thread_type = "SLICE"
        for frame in container.decode(video):
            now = time.time() * 1000
            elapsed = time.monotonic() - started
            if elapsed > seconds:
                break
            ms = read_stamp(frame.to_ndarray(format="gray"))
            if ms is not None and elapsed > WARM_UP_S:
                delays.append(now - ms)
    return delays


def in_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


MEASURE_JS = """
([bits, block, warmUp]) => new Promise((resolve) => {
  const video = document.getElementById('video');
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  window.latencySamples = [];
  const began = performance.now();
  const onFrame = (now, meta) => {
    const w = video.videoWidth, h = video.videoHeight;
    if (w && h) {
      canvas.width = w; canvas.height = block * 2;
      ctx.drawImage(video, 0, 0, w, h, 0, 0, w, h);
      const data = ctx.getImageData(0, 0, w, block * 2).data;
      const rows = [];
      for (let row = 0; row < 2; row++) {
        let value = 0n;
        for (let bit = 0; bit < bits; bit++) {
          let sum = 0, n = 0;
          for (let y = row * block + 4; y < row * block + 12; y++) {
            for (let x = bit * block + 4; x < bit * block + 12; x++) {
              sum += data[(y * w + x) * 4 + 1];
              n++;
            }
          }
          value = (value << 1n) | (sum / n > 128 ? 1n : 0n);
        }
        rows.push(value);
      }
      if (rows[0] === rows[1] && now - began > warmUp) {
        const shown = performance.timeOrigin + meta.expectedDisplayTime;
        const turn = 2n ** BigInt(bits);
        const nowMs = BigInt(Math.round(shown));
        let stamp = nowMs - (nowMs % turn) + rows[0];
        if (stamp > nowMs + turn / 2n) stamp -= turn;
        window.latencySamples.push(shown - Number(stamp));
      }
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  resolve(true);
})
"""


def browser_player(browser, base: str, transport: str, seconds: float) -> list[float]:
    page = browser.new_page(viewport={"width": 800, "height": 600})
    try:
        page.goto(f"{base}/play/live/bench?transport={transport}&danmaku=0")
        page.wait_for_function(
            f"window.roiPlayer && roiPlayer.status === 'playing ({transport})'", timeout=30_000
        )
        page.evaluate(MEASURE_JS, [BITS, BLOCK, WARM_UP_S * 1000])
        time.sleep(seconds)
        return list(page.evaluate("window.latencySamples"))
    finally:
        page.close()


def summary(delays: list[float]) -> tuple[float, float]:
    if not delays:
        return float("nan"), float("nan")
    ordered = sorted(delays)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per WHEP/FLV player")
    parser.add_argument("--hls-seconds", type=float, default=12.0, help="for the HLS player")
    parser.add_argument("--no-browser", action="store_true", help="only the PyAV baseline")
    parser.add_argument("--publish", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--play", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        publish(args.publish, args.seconds)
        return
    if args.play:
        print(json.dumps(pyav_player(args.play, args.seconds)), flush=True)
        return

    browser_seconds = 0.0 if args.no_browser else 2 * args.seconds + args.hls_seconds + 30
    with tempfile.TemporaryDirectory() as data_dir:
        relay = RunningRelay(Path(data_dir), hls_segment_seconds=1.0, hls_window=6)
        publisher = in_process(
            "--publish",
            f"{relay.rtmp_url}/live/bench",
            "--seconds",
            str(args.seconds + 3 + browser_seconds),
        )
        results: dict[str, list[float]] = {}
        try:
            time.sleep(1.5)
            print("PyAV HTTP-FLV baseline ...", file=sys.stderr, flush=True)
            player = in_process(
                "--play", f"{relay.http_url}/live/bench.flv", "--seconds", str(args.seconds)
            )
            out, _ = player.communicate(timeout=args.seconds + 30)
            results["baseline (PyAV HTTP-FLV)"] = json.loads(out.strip().splitlines()[-1])
            if not args.no_browser and CHROMIUM.exists():
                with chromium() as browser:
                    for transport, seconds in (
                        ("whep", args.seconds),
                        ("flv", args.seconds),
                        ("hls", args.hls_seconds),
                    ):
                        print(f"browser {transport} ...", file=sys.stderr, flush=True)
                        results[f"browser {transport}"] = browser_player(
                            browser, relay.http_url, transport, seconds
                        )
        finally:
            publisher.kill()
            publisher.wait(10)
            relay.stop()

    base_median, _ = summary(results["baseline (PyAV HTTP-FLV)"])
    print(f"{'player':<28}{'frames':>8}{'median ms':>12}{'p90 ms':>10}{'x baseline':>12}")
    for name, delays in results.items():
        median, p90 = summary(delays)
        ratio = median / base_median if base_median > 0 else float("nan")
        print(f"{name:<28}{len(delays):>8}{median:>12.0f}{p90:>10.0f}{ratio:>12.2f}")
    figures = {name: summary(delays)[0] for name, delays in results.items()}
    whep = figures.get("browser whep", float("nan"))
    verdict = "met" if whep < 500 else "NOT met"
    print(
        "latency median ms: "
        + ", ".join(f"{name}={value:.0f}" for name, value in figures.items())
        + f"; WHEP < 500 ms target {verdict}"
    )


if __name__ == "__main__":
    main()
