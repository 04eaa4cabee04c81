"""HLS muxing cost: the relay's Python MPEG-TS segmenter against FFmpeg's C muxer.

    .venv/bin/python bench/hls_mux.py [--seconds 4] [--runs 3]

The relay muxes HLS for every live stream (app/outputs/hls.py), on the event loop, so its cost
per frame matters. The input is a 1280x720 H.264 + AAC clip at two bitrates (a moving
picture with light noise, and pure noise as a worst case), muxed into 1 s TS segments by
HlsSegmenter. The baseline, in the same run, is FFmpeg's mpegts muxer (through PyAV)
remuxing the same FLV into one TS in memory (which includes FFmpeg's FLV demuxing and PyAV's
per-packet overhead, the way a relay built on PyAV would pay them). Figures: microseconds per
video frame and the share of one core at 30 fps.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.media.flv import TagType  # noqa: E402
from app.outputs.hls import HlsSegmenter  # noqa: E402
from tests.support.clips import encode_flv, flv_packets  # noqa: E402

FPS = 30


def moving(index: int, width: int, height: int) -> np.ndarray:
    y = np.arange(height, dtype=np.int32)[:, None]
    x = np.arange(width, dtype=np.int32)[None, :]
    base = ((x * 3 + y * 2 + index * 8) % 256).astype(np.uint8)
    noise = np.random.default_rng(index).integers(0, 24, (height, width), dtype=np.uint8)
    return np.repeat((base // 2 + noise)[..., None], 3, axis=2)


def noise(index: int, width: int, height: int) -> np.ndarray:
    return np.random.default_rng(index).integers(0, 255, (height, width, 3), dtype=np.uint8)


def relay_mux(flv: bytes, runs: int) -> float:
    packets = flv_packets(flv)
    best = float("inf")
    for _ in range(runs):
        segmenter = HlsSegmenter(1.0)
        start = time.perf_counter()
        for packet in packets:
            segmenter.feed(packet, 0.0)
        segmenter.finish()
        best = min(best, time.perf_counter() - start)
    return best


def ffmpeg_mux(flv: bytes, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        with (
            av.open(io.BytesIO(flv), format="flv") as src,
            av.open(io.BytesIO(), "w", format="mpegts") as out,
        ):
            mapping = {s.index: out.add_stream_from_template(s) for s in src.streams}
            for packet in src.demux():
                if packet.dts is None:
                    continue
                packet.stream = mapping[packet.stream.index]
                out.mux(packet)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{'content':<10}{'Mbit/s':>8}{'relay us/frame':>16}{'ffmpeg us/frame':>17}"
        f"{'ratio':>7}{'core % @30fps':>15}"
    )
    headline = []
    for name, draw in (("moving", moving), ("noise", noise)):
        flv = encode_flv(args.seconds, FPS, 1280, 720, gop=FPS, draw=draw)
        packets = flv_packets(flv)
        frames = sum(1 for p in packets if p.kind is TagType.VIDEO and not p.sequence_header)
        mbps = sum(p.size for p in packets) * 8 / args.seconds / 1e6
        relay = relay_mux(flv, args.runs) / frames * 1e6
        ffmpeg = ffmpeg_mux(flv, args.runs) / frames * 1e6
        share = relay * FPS / 1e6 * 100
        print(
            f"{name:<10}{mbps:>8.1f}{relay:>16.0f}{ffmpeg:>17.0f}{relay / ffmpeg:>7.2f}"
            f"{share:>15.2f}"
        )
        headline.append(
            f"{name} {mbps:.0f} Mbit/s: {relay:.0f} us/frame "
            f"({relay / ffmpeg:.1f}x FFmpeg, {share:.2f}% of a core)"
        )
    print("HLS muxing: " + "; ".join(headline))


if __name__ == "__main__":
    main()
