"""PyAV (FFmpeg) publisher and player for end-to-end tests, run as a separate process.

PyAV keeps the GIL while it blocks on network I/O, so inside the relay's own process it would
stall the event loop it is talking to; a separate process is also what a real client is.

    python -m tests.support.av_client push URL [--seconds 2] [--image face.png] [--codec x] ...
    python -m tests.support.av_client play URL [--timeout 20] [--sei] [--qp]

Each prints one JSON line with what it sent or decoded. `run_client` calls it from tests.
"""

from __future__ import annotations

import argparse
import fractions
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from tests.support.clips import FACE_PHOTO, TONE_RATE, TONE_SAMPLES, tone_frame

ROOT = Path(__file__).resolve().parents[2]


def pattern_image(index: int, width: int, height: int) -> np.ndarray:
    y = np.arange(height, dtype=np.int32)[:, None]
    x = np.arange(width, dtype=np.int32)[None, :]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = (x + index * 4) & 0xFF
    img[..., 1] = (y + index * 2) & 0xFF
    img[..., 2] = ((x ^ y) + index) & 0xFF
    return img


class PanningImage:
    """A still photo (with a face) slowly panning inside the frame: real content that moves."""

    def __init__(self, path: str, width: int, height: int) -> None:
        frame = next(av.open(path).decode(video=0))
        # Slightly larger than the output so that there is room to pan.
        self.big = frame.reformat(
            width=int(width * 1.1) // 2 * 2, height=int(height * 1.1) // 2 * 2, format="rgb24"
        ).to_ndarray()
        self.width, self.height = width, height

    def __call__(self, index: int) -> np.ndarray:
        span_x = self.big.shape[1] - self.width
        span_y = self.big.shape[0] - self.height
        phase = (index % 100) / 100
        x = int(span_x * abs(1 - 2 * phase))
        y = int(span_y * abs(1 - 2 * phase))
        img = self.big[y : y + self.height, x : x + self.width].copy()
        noise = np.random.default_rng(index).integers(-6, 7, img.shape, dtype=np.int16)
        return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def push(args: argparse.Namespace) -> dict[str, Any]:
    fps, width, height = args.fps, args.width, args.height
    n_frames = int(args.seconds * fps)
    source = PanningImage(args.image, width, height) if args.image else None
    sent = {"video_frames": 0, "audio_frames": 0, "video_packets": 0, "keyframes": 0}
    with av.open(args.url, "w", format="flv") as out:
        video = out.add_stream(args.codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = args.gop or n_frames + 1
        video.codec_context.max_b_frames = 0
        if args.bitrate:
            video.codec_context.bit_rate = args.bitrate * 1000
        if args.codec == "libx264":
            video.codec_context.options = {"preset": "veryfast", "tune": "zerolatency"}
        elif args.codec == "libx265":
            video.codec_context.options = {
                "preset": "ultrafast",
                "x265-params": "log-level=error:bframes=0",
            }
        audio = None
        if args.audio:
            audio = out.add_stream("aac", rate=TONE_RATE)
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
            img = source(i) if source else pattern_image(i, width, height)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts, vf.time_base = i, fractions.Fraction(1, fps)
            mux(video.encode(vf))
            sent["video_frames"] += 1
            while audio is not None and audio_pts < (i + 1) * TONE_RATE / fps:
                mux(audio.encode(tone_frame(audio_pts)))
                audio_pts += TONE_SAMPLES
                sent["audio_frames"] += 1
            delay = start + (i + 1) / fps - time.monotonic()
            if args.realtime and delay > 0:
                time.sleep(delay)
        mux(video.encode(None))
        if audio is not None:
            mux(audio.encode(None))
    return sent


def _block_mask(regions: list[dict[str, int]], shape: tuple[int, int], block: int) -> np.ndarray:
    """Macroblocks touched by any region (FFmpeg rounds regions outwards to blocks)."""
    mask = np.zeros(shape, bool)
    for r in regions:
        mask[
            r["top"] // block : -(-r["bottom"] // block),
            r["left"] // block : -(-r["right"] // block),
        ] = True
    return mask


def play(args: argparse.Namespace) -> dict[str, Any]:
    from app.media.sei import roi_json_from_frame

    got: dict[str, Any] = {
        "video_frames": 0,
        "audio_frames": 0,
        "video_dts": [],
        "audio_dts": [],
        "keyframe_first": None,
        "width": 0,
        "height": 0,
        "codec": "",
        "decode_errors": 0,
        "sei": [],
        "qp_inside": [],
        "qp_outside": [],
    }
    options = {"rw_timeout": str(int(args.timeout * 1_000_000)), "analyzeduration": "500000"}
    with av.open(args.url, "r", format=args.format, options=options, timeout=args.timeout) as src:
        if args.qp and src.streams.video:
            src.streams.video[0].codec_context.options = {"export_side_data": "venc_params"}
        for packet in src.demux():
            kind = packet.stream.type
            if packet.dts is None or kind not in ("audio", "video"):
                continue  # flush packets, and script data such as |RtmpSampleAccess
            ms = int(packet.dts * packet.time_base * 1000)
            if kind == "video":
                if got["keyframe_first"] is None:
                    got["keyframe_first"] = bool(packet.is_keyframe)
                got["video_dts"].append(ms)
                got["codec"] = packet.stream.codec_context.name
            else:
                got["audio_dts"].append(ms)
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                got["decode_errors"] += 1
                continue
            for frame in frames:
                if kind == "audio":
                    got["audio_frames"] += 1
                    continue
                got["video_frames"] += 1
                got["width"], got["height"] = frame.width, frame.height
                document = roi_json_from_frame(frame) if (args.sei or args.qp) else None
                if args.sei:
                    got["sei"].append(document)
                if args.qp and document:
                    regions = json.loads(document)["regions"]
                    params = [sd for sd in frame.side_data if sd.type.name == "VIDEO_ENC_PARAMS"]
                    if regions and params:
                        qp = params[0].qp_map()
                        mask = _block_mask(regions, qp.shape, 16)
                        got["qp_inside"].append(float(qp[mask].mean()))
                        got["qp_outside"].append(float(qp[~mask].mean()))
            if args.max_frames and got["video_frames"] >= args.max_frames:
                break
    return got


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=["push", "play"])
    p.add_argument("url")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--height", type=int, default=108)
    p.add_argument("--codec", default="libx264")
    p.add_argument("--bitrate", type=int, default=0, help="kbit/s")
    p.add_argument("--gop", type=int, default=0)
    p.add_argument("--image", default=None, help="a photo to pan instead of the test pattern")
    p.add_argument("--no-audio", dest="audio", action="store_false")
    p.add_argument("--no-realtime", dest="realtime", action="store_false")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--format", default=None)
    p.add_argument("--sei", action="store_true", help="collect each frame's ROI SEI JSON")
    p.add_argument("--qp", action="store_true", help="mean QP inside/outside the SEI regions")
    p.add_argument("--max-frames", type=int, default=0)
    return p


def client_command(action: str, url: str, *args: str) -> list[str]:
    """The command line of a PyAV client process (run with the repository as cwd)."""
    return [sys.executable, "-m", "tests.support.av_client", action, url, *args]


def client_result(action: str, returncode: int | None, out: str, err: str) -> dict[str, Any]:
    """The JSON line a client printed, once it exited cleanly."""
    assert returncode == 0, f"PyAV {action} failed ({returncode}): {err[-2000:]}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run_client(action: str, url: str, *args: str, timeout: float = 90.0) -> dict[str, Any]:
    return finish_client(start_client(action, url, *args), timeout)


def start_client(action: str, url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        client_command(action, url, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def face_push(url: str, seconds: float, *extra: str) -> subprocess.Popen[str]:
    """Starts pushing the face photo (clips.FACE_PHOTO) panning in a 320x240 frame."""
    return start_client(
        "push", url, "--image", str(FACE_PHOTO), "--width", "320", "--height", "240",
        "--seconds", str(seconds), "--bitrate", "400", "--gop", "25", *extra,
    )  # fmt: skip


# The face box of grace_hopper.jpg (tests/data/labels.json) in a ``face_push``: PanningImage
# scales the 512x600 photo to 352x264 and pans a 320x240 window over it.
FACE_IN_PUSH = (177 * 352 / 512, 106 * 264 / 600, 353 * 352 / 512, 327 * 264 / 600)


def covers_face(region: dict[str, Any], pan_margin: float = 20) -> bool:
    """The region of a ``face_push`` frame holds the centre of the face (the photo pans by
    up to 32x24 px)."""
    cx = (FACE_IN_PUSH[0] + FACE_IN_PUSH[2]) / 2
    cy = (FACE_IN_PUSH[1] + FACE_IN_PUSH[3]) / 2
    return (
        region["left"] - pan_margin <= cx <= region["right"] + pan_margin
        and region["top"] - pan_margin <= cy <= region["bottom"] + pan_margin
    )


def finish_client(proc: subprocess.Popen[str], timeout: float = 90.0) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return client_result("client", proc.returncode, out, err)


def main() -> None:
    args = parser().parse_args()
    result = push(args) if args.action == "push" else play(args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
