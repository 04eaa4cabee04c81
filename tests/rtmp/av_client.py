"""PyAV (FFmpeg 8) RTMP publisher and player, run as a separate process by the end-to-end
tests: PyAV keeps the GIL while it blocks on network I/O, so in the server's own process it
would stall the event loop it is talking to.

    python -m tests.rtmp.av_client push URL [--seconds 2] [--codec libx264] [--gop N] ...
    python -m tests.rtmp.av_client play URL [--timeout 20]

Each prints one JSON line with what it sent or decoded.
"""

from __future__ import annotations

import argparse
import fractions
import json
import time
from typing import Any

import av
import numpy as np


def frame_image(index: int, width: int, height: int) -> np.ndarray:
    y = np.arange(height, dtype=np.int32)[:, None]
    x = np.arange(width, dtype=np.int32)[None, :]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = (x + index * 4) & 0xFF
    img[..., 1] = (y + index * 2) & 0xFF
    img[..., 2] = ((x ^ y) + index) & 0xFF
    return img


def push(args: argparse.Namespace) -> dict[str, Any]:
    fps, width, height = args.fps, args.width, args.height
    n_frames = int(args.seconds * fps)
    sent = {"video_frames": 0, "audio_frames": 0, "video_packets": 0, "keyframes": 0}
    with av.open(args.url, "w", format="flv") as out:
        video = out.add_stream(args.codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = args.gop or n_frames + 1
        video.codec_context.max_b_frames = 0
        if args.codec == "libx264":
            video.codec_context.options = {"preset": "veryfast", "tune": "zerolatency"}
        elif args.codec == "libx265":
            video.codec_context.options = {
                "preset": "ultrafast",
                "x265-params": "log-level=error:bframes=0",
            }
        audio = None
        if args.audio:
            audio = out.add_stream("aac", rate=44100)
            audio.layout = "stereo"
        start = time.monotonic()
        audio_pts = 0

        def mux(packets: list[av.Packet]) -> None:
            for packet in packets:
                if packet.stream.type == "video":
                    sent["video_packets"] += 1
                    sent["keyframes"] += int(packet.is_keyframe)
                out.mux(packet)

        for i in range(n_frames):
            vf = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            vf.pts, vf.time_base = i, fractions.Fraction(1, fps)
            mux(video.encode(vf))
            sent["video_frames"] += 1
            while audio is not None and audio_pts < (i + 1) * 44100 / fps:
                t = (np.arange(1024) + audio_pts) / 44100
                tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(
                    np.stack([tone, tone]), format="fltp", layout="stereo"
                )
                af.sample_rate, af.pts = 44100, audio_pts
                mux(audio.encode(af))
                audio_pts += 1024
                sent["audio_frames"] += 1
            delay = start + (i + 1) / fps - time.monotonic()
            if args.realtime and delay > 0:
                time.sleep(delay)
        mux(video.encode(None))
        if audio is not None:
            mux(audio.encode(None))
    return sent


def play(args: argparse.Namespace) -> dict[str, Any]:
    got: dict[str, Any] = {
        "video_frames": 0,
        "audio_frames": 0,
        "video_dts": [],
        "keyframe_first": None,
        "width": 0,
        "height": 0,
        "codec": "",
        "decode_errors": 0,
    }
    options = {"rw_timeout": str(int(args.timeout * 1_000_000)), "analyzeduration": "500000"}
    with av.open(args.url, "r", format=args.format, options=options, timeout=args.timeout) as src:
        for packet in src.demux():
            kind = packet.stream.type
            if packet.dts is None or kind not in ("audio", "video"):
                continue  # flush packets, and script data such as |RtmpSampleAccess
            if kind == "video":
                if got["keyframe_first"] is None:
                    got["keyframe_first"] = bool(packet.is_keyframe)
                got["video_dts"].append(int(packet.dts * packet.time_base * 1000))
                got["codec"] = packet.stream.codec_context.name
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                got["decode_errors"] += 1
                continue
            for frame in frames:
                if kind == "video":
                    got["video_frames"] += 1
                    got["width"], got["height"] = frame.width, frame.height
                elif kind == "audio":
                    got["audio_frames"] += 1
    return got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["push", "play"])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--height", type=int, default=108)
    parser.add_argument("--codec", default="libx264")
    parser.add_argument("--gop", type=int, default=0)
    parser.add_argument("--no-audio", dest="audio", action="store_false")
    parser.add_argument("--no-realtime", dest="realtime", action="store_false")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--format", default=None)
    args = parser.parse_args()
    result = push(args) if args.action == "push" else play(args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
