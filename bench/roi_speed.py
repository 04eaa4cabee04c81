"""Speed of the live ROI transcoder (decode, detect, ROI encode) against an FFmpeg CLI
transcode with the same encoder settings, measured in the same run.

    .venv/bin/python bench/roi_speed.py [--sizes 720,1080] [--seconds 20] [--repeat 3]
                                        [--encoder libx264|h264_nvenc]

``--encoder h264_nvenc`` runs the relay's side on the NVENC backend (the baseline stays the
libx264 CLI, so the ratio shows the CPU NVENC saves); where NVENC cannot open (no NVIDIA
driver, a GPU without NVENC such as A100/H100/H200) it says so and measures nothing (exit 2).

For each size it pushes a clip with a face (a photo from tests/data panning with noise, encoded
once with the Debian ffmpeg CLI) through:

Both sides run ``--repeat`` times (alternating) and their medians are compared.

* throughput: the relay's own RoiTranscoder (app/roi/transcoder.py) fed as fast as it drains,
  giving the process CPU time and the real-time factor (clip seconds per wall second);
* baseline: `ffmpeg -i clip -c:v libx264 <the same options> -f null -`, its CPU time from
  getrusage(RUSAGE_CHILDREN);
* latency (720p): the same transcoder fed at the publisher's real pace; the time from a frame
  entering the stage to its ROI-encoded frame leaving it is what ROI adds between ingest and
  players (median and p99).

The last line holds the headline figures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.hub import Hub, StreamKey  # noqa: E402
from app.media.flv import TagType, VideoPacketType, parse_video_tag  # noqa: E402
from app.media.packet import MediaPacket  # noqa: E402
from app.roi.config import RoiConfig  # noqa: E402
from app.roi.encode import encoder_options, resolve_encoder  # noqa: E402
from app.roi.encoder_base import EncoderError, EncoderSettings  # noqa: E402
from app.roi.transcoder import RoiTranscoder  # noqa: E402
from app.templates.rules import TemplateSettings  # noqa: E402
from tests.support.clips import face_clip, flv_packets  # noqa: E402

SIZES = {720: (1280, 720), 1080: (1920, 1080)}
BITRATE_KBPS = {720: 2500, 1080: 4500}


def ffmpeg_baseline(path: Path, width: int, height: int, bitrate_kbps: int) -> float:
    """CPU seconds of the Debian ffmpeg CLI doing the transcode with our encoder options."""
    name = resolve_encoder("h264", "libx264")
    settings = EncoderSettings("h264", width, height, Fraction(30), bitrate_kbps * 1000, 240)
    options = encoder_options(name, settings)
    args = []
    for key, value in options.items():
        args += [f"-{key}", str(value)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(path),
            "-c:v",
            name,
            *args,
            "-force_key_frames",
            "source",
            "-c:a",
            "copy",
            "-f",
            "null",
            "-",
        ],
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def nvenc_unavailable(name: str) -> str | None:
    """Why the NVENC backend cannot open here, or None when it can."""
    from app.roi.nvenc.encoder import NvencEncoder

    settings = EncoderSettings("h264", 320, 240, Fraction(30), 300_000, 30)
    try:
        encoder = NvencEncoder(name, settings, Settings().nvenc_library_dir)
    except EncoderError as exc:
        return str(exc)
    encoder.close()
    return None


async def run_transcoder(
    packets: list[MediaPacket], model: str, realtime: bool, encoder: str = "libx264"
) -> tuple[float, float, list[float], dict[str, object]]:
    """Feeds the clip through a RoiTranscoder: (CPU s, wall s, per-frame latency, status)."""
    hub = Hub()
    stream = hub.open_publisher(StreamKey("bench", "roi"), {"roirecognition": "bench"}, "bench")
    stream.set_metadata({"framerate": 30})
    transcoder = RoiTranscoder(
        stream,
        RoiConfig(template="bench", settings=TemplateSettings(model=model, delta_qp=-6)),
        encoder_name=encoder,
        nvenc_library_dir=Settings().nvenc_library_dir,
        on_give_up=lambda why: print(f"  transcoder gave up: {why}", file=sys.stderr),
    )
    stream.set_processor(transcoder)
    fed: dict[int, float] = {}
    latencies: list[float] = []
    out_frames = 0
    done = asyncio.Event()
    drained = asyncio.Event()
    total_frames = sum(1 for p in packets if is_frame(p))

    def on_output(packet: MediaPacket) -> None:
        nonlocal out_frames
        if packet.kind is TagType.VIDEO and packet.roi is not None:
            out_frames += 1
            sent = fed.pop(packet.timestamp, None)
            if sent is not None:
                latencies.append(time.perf_counter() - sent)
            drained.set()
            if out_frames >= total_frames:
                done.set()

    stream.output.listeners.append(on_output)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    start = time.perf_counter()
    in_flight_cap = 3
    for packet in packets:
        if realtime:
            delay = start + packet.timestamp / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        elif is_frame(packet):
            # As fast as it drains, without building a queue that the stage would shed.
            while len(fed) >= in_flight_cap:
                drained.clear()
                await drained.wait()
        if is_frame(packet):
            fed[packet.timestamp] = time.perf_counter()
        stream.source.push(packet)
    try:
        await asyncio.wait_for(done.wait(), timeout=120)
    except TimeoutError:
        print(f"  only {out_frames}/{total_frames} frames came out", file=sys.stderr)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    status = {
        k: round(v, 2) if isinstance(v, float) else v
        for k, v in dataclasses.asdict(transcoder.stats).items()
    }
    stream.close()
    await hub.wait_closed()
    return cpu, wall, latencies, status


def is_frame(packet: MediaPacket) -> bool:
    """A coded video frame (not a sequence header, nor FFmpeg's end-of-sequence tag)."""
    return (
        packet.kind is TagType.VIDEO
        and parse_video_tag(packet.payload).packet_type is VideoPacketType.CODED_FRAMES
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="720,1080")
    # Long enough that the per-stream start (model load, encoder open) weighs as little as it
    # does on a live stream.
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", default="LiveShows")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (medians)")
    parser.add_argument(
        "--encoder",
        default="libx264",
        choices=["libx264", "h264_nvenc"],
        help="the relay side's ROI encoder (the baseline is always the libx264 CLI)",
    )
    args = parser.parse_args()
    if args.encoder == "h264_nvenc":
        reason = nvenc_unavailable(args.encoder)
        if reason is not None:
            print(
                f"h264_nvenc is not available on this machine, nothing measured: {reason}\n"
                "NVENC needs an NVIDIA GPU with an NVENC engine (GeForce/RTX, RTX workstation, "
                "T4/L4/A10; not A100/H100/H200) and driver 470.57+."
            )
            sys.exit(2)
    print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f} model={args.model}")
    headline: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            width, height = SIZES[size]
            clip = Path(tmp) / f"clip{size}.flv"
            face_clip(clip, width, height, args.seconds, BITRATE_KBPS[size])
            packets = flv_packets(clip, media_only=True)
            frames = sum(1 for p in packets if is_frame(p))
            duration = frames / 30
            # Each side runs --repeat times, alternating, and the medians are compared: one run
            # of the CLI alone varies by several per cent on a shared 2-core machine.
            base_runs, our_runs = [], []
            for _ in range(args.repeat):
                base_runs.append(ffmpeg_baseline(clip, width, height, BITRATE_KBPS[size]))
                our_runs.append(
                    asyncio.run(run_transcoder(packets, args.model, False, args.encoder))
                )
            base_cpu = statistics.median(base_runs)
            cpu, wall, _, status = sorted(our_runs, key=lambda run: run[0])[len(our_runs) // 2]
            ratio = cpu / base_cpu
            rtf = duration / wall
            print(
                f"{size}p30 (median of {args.repeat}): ffmpeg CLI {base_cpu:.2f} s CPU "
                f"[{' '.join(f'{b:.2f}' for b in base_runs)}] | roi-relay {cpu:.2f} s CPU "
                f"[{' '.join(f'{r[0]:.2f}' for r in our_runs)}] "
                f"({ratio:.2f}x), {wall:.2f} s wall for {duration:.1f} s of video "
                f"(real-time factor {rtf:.2f}) | detect {status['detect_ms']} ms, "
                f"encode {status['encode_ms']} ms per frame, regions {status['regions']} | "
                f"encoder {status['encoder']}, decoder {status['decoder']}"
            )
            if status["encoder"] != args.encoder:
                print(f"  NOTE: ran on {status['encoder']}: {status['encoder_fallback']}")
            headline += [f"cpu_ratio_{size}p={ratio:.2f}x", f"rtf_{size}p={rtf:.2f}"]
            if size == 720:
                _, _, lat, status = asyncio.run(
                    run_transcoder(packets, args.model, True, args.encoder)
                )
                p50, p99 = statistics.median(lat) * 1000, percentile(lat, 0.99) * 1000
                print(
                    f"720p30 at the publisher's pace: added latency median {p50:.1f} ms, "
                    f"p99 {p99:.1f} ms over {len(lat)} frames (lag {status['lag_ms']} ms)"
                )
                headline += [f"latency_720p_p50_ms={p50:.1f}", f"latency_720p_p99_ms={p99:.1f}"]
    print(" ".join(headline))


if __name__ == "__main__":
    main()
