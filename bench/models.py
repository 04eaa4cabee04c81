"""Recognition models: latency on a 1280x720 frame and accuracy on the evaluation set.

    .venv/bin/python bench/models.py [--runs 60] [--quick]

Per model (General, LiveShows, NBA2K, HonorOfKings) and thread count (1, 2): median and p99
of a full ``detect`` pass on a 1280x720 frame. Then recall and precision per label at IoU 0.5
on the labelled set of tests/data (tests/data/README.md), after the same de-duplication and
merging the tracker applies (without its padding). The baseline measured in the same run is
RetinaFace on the full 1280x720 input; the models run it at 640x360, and the bench prints the
speed ratio and both recalls, which is the case for the reduced input size.

Budget: at 720p30 a frame lasts 33.3 ms. The live transcoder runs detection on a side thread
every N frames; allowing detection half of one core, a pass of D ms needs
N = ceil(D / 16.7 ms). A pass within 100 ms keeps N <= 6 (5+ detections a second), and the
tracker carries regions between passes.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.roi.detect import RankingPolicy, RecognitionModel, load_model  # noqa: E402
from app.roi.detect.face import RetinaFaceDetector  # noqa: E402
from app.roi.detect.geometry import box_iou  # noqa: E402
from app.roi.track import prepare_detections  # noqa: E402
from tests.data import scenes  # noqa: E402

FRAME_MS = 1000 / 30
CORE_SHARE = 0.5
PASS_BUDGET_MS = 100.0
FACE_BUDGET_MS = 20.0
MIN_FACE_PX = 40
MODELS = ("General", "LiveShows", "NBA2K", "HonorOfKings")


def timed(fn, runs: int) -> tuple[float, float, float]:
    """Wall-clock median and p99, and the median CPU time of the process, in ms.

    The machine is shared: wall time includes waiting for a core another process holds.
    CPU time is what one pass costs a core; for 1 thread it is the "on one core" figure.
    """
    for _ in range(3):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    wall.sort()
    p99 = wall[min(len(wall) - 1, math.ceil(0.99 * len(wall)) - 1)]
    return statistics.median(wall), p99, statistics.median(cpu)


# Labels whose object is formed by merging pieces (words into a scoreboard); for the others
# the merge is a region policy (heroes into a fight zone) and accuracy is per object.
MERGE_FORMS_OBJECT = {"scoreboard", "text"}


def unpadded(model: RecognitionModel) -> RankingPolicy:
    """The model's ranking without padding, merging only where merging forms the object."""
    labels = {
        k: replace(v, pad=0.0, merge_gap=v.merge_gap if k in MERGE_FORMS_OBJECT else 0.0)
        for k, v in model.ranking.labels.items()
    }
    return RankingPolicy(labels=labels, default=replace(model.ranking.default, pad=0.0))


def match(gt: np.ndarray, found: np.ndarray, threshold: float = 0.5) -> int:
    """Greedy one-to-one matching by IoU; returns the number of matched pairs."""
    if not len(gt) or not len(found):
        return 0
    iou = box_iou(gt, found)
    matched = 0
    while iou.size and iou.max() >= threshold:
        g, f = np.unravel_index(int(np.argmax(iou)), iou.shape)
        matched += 1
        iou[g, :] = -1
        iou[:, f] = -1
    return matched


def evaluate(
    model: RecognitionModel, frames: list[scenes.LabelledFrame], labels: tuple[str, ...]
) -> dict[str, tuple[float, float, int, int]]:
    """label -> (recall, precision, ground-truth count, detection count)."""
    ranking = unpadded(model)
    counts = {label: [0, 0, 0] for label in labels}  # matched, gt, found
    for frame in frames:
        h, w = frame.image.shape[:2]
        model.reset()  # each frame is a new picture: no detector may reuse its last result
        found = prepare_detections(model.detect(frame.image), ranking, w, h)
        for label in labels:
            # "host" (LiveShows): the largest face of the picture, found as the one "face".
            truth_label = "face" if label == "host" else label
            gt = np.array(frame.boxes.get(truth_label, []), float).reshape(-1, 4)
            if truth_label == "face":
                gt = gt[np.minimum(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]) >= MIN_FACE_PX]
            if label == "host" and len(gt):
                gt = gt[[int(np.argmax((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])))]]
            boxes = np.array([d.box for d in found if d.label == truth_label], float).reshape(-1, 4)
            counts[label][0] += match(gt, boxes)
            counts[label][1] += len(gt)
            counts[label][2] += len(boxes)
    return {
        label: (m / g if g else math.nan, m / f if f else math.nan, g, f)
        for label, (m, g, f) in counts.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="fewer runs and frames")
    args = parser.parse_args()
    runs = 10 if args.quick else args.runs

    faces = scenes.face_frames(12 if args.quick else 40)
    negatives = scenes.negative_frames()
    court = scenes.court_frames(4 if args.quick else 12)
    moba = scenes.moba_frames(6 if args.quick else 16)
    sample = {
        "General": faces[0].image,
        "LiveShows": faces[0].image,
        "NBA2K": court[0].image,
        "HonorOfKings": moba[0].image,
    }

    print("latency of one full detect pass on a 1280x720 frame (ms; cpu = CPU time per pass)")
    print(
        f"{'model':<14}{'threads':>8}{'median':>9}{'p99':>9}{'cpu':>8}{'N@720p30':>10}{'budget':>8}"
    )
    latency: dict[tuple[str, int], tuple[float, float, float]] = {}
    for name in MODELS:
        for threads in (1, 2):
            model = load_model(name, threads=threads, providers=["CPUExecutionProvider"])
            image = sample[name]
            med, p99, cpu = timed(lambda m=model, i=image: m.detect(i), runs)
            latency[(name, threads)] = (med, p99, cpu)
            # N from the cost on one core (CPU time), the budget being half of one core.
            every = math.ceil(min(med, cpu) / (FRAME_MS * CORE_SHARE))
            ok = "ok" if min(med, cpu) <= PASS_BUDGET_MS else "OVER"
            print(f"{name:<14}{threads:>8}{med:>9.1f}{p99:>9.1f}{cpu:>8.1f}{every:>10}{ok:>8}")

    # Face detector alone: reduced input (as shipped) against the full-resolution baseline.
    general = load_model("General", threads=1, providers=["CPUExecutionProvider"])
    face_det = next(d for d in general.detectors if isinstance(d, RetinaFaceDetector))
    image = faces[0].image
    reduced_ms, reduced_p99, reduced_cpu = timed(lambda: face_det.detect_batch([image]), runs)
    shipped_side = face_det.long_side
    face_det.long_side = 1280
    full_ms, full_p99, full_cpu = timed(lambda: face_det.detect_batch([image]), runs)
    full_recall = evaluate(general, faces + negatives, ("face",))["face"]
    face_det.long_side = shipped_side
    print()
    print("face detector alone, 1 thread (ms): median / p99 / cpu")
    print(f"  full 1280x720 input (baseline): {full_ms:6.1f} / {full_p99:6.1f} / {full_cpu:6.1f}")
    print(
        f"  640x360 input (shipped):        {reduced_ms:6.1f} / {reduced_p99:6.1f} / "
        f"{reduced_cpu:6.1f}"
    )
    print(f"  speed-up vs baseline (cpu): {full_cpu / reduced_cpu:.2f}x")

    print()
    print("accuracy at IoU 0.5: recall / precision (ground truth, detections)")
    quality: dict[tuple[str, str], tuple[float, float, int, int]] = {}
    plan = {
        "General": (faces + negatives, ("face", "person")),
        "LiveShows": (faces + negatives, ("host",)),
        "NBA2K": (court + negatives, ("player", "ball", "scoreboard")),
        "HonorOfKings": (moba + negatives, ("hero",)),
    }
    for name, (frames, labels) in plan.items():
        model = load_model(name, threads=1, providers=["CPUExecutionProvider"])
        for label, result in evaluate(model, frames, labels).items():
            quality[(name, label)] = result
            recall, precision, gt, found = result
            print(
                f"  {name:<13}{label:<11} recall {recall:5.2f}  precision {precision:5.2f}"
                f"  ({gt} true, {found} found)"
            )
    print(
        f"  General    face, full-res input: recall {full_recall[0]:5.2f}  "
        f"precision {full_recall[1]:5.2f}"
    )

    face_recall, face_precision, face_n, _ = quality[("General", "face")]
    # Judged on the cost on one core: the smaller of wall and CPU time (wall time on this
    # shared machine includes waiting for a core; CPU time includes nothing else).
    over = [n for n in MODELS if min(latency[(n, 1)][0], latency[(n, 1)][2]) > PASS_BUDGET_MS]
    face_ms = min(reduced_ms, reduced_cpu)
    targets = face_recall >= 0.9 and face_ms <= FACE_BUDGET_MS and not over
    print()
    print(
        f"headline: face recall {face_recall:.2f} precision {face_precision:.2f} (n={face_n}, "
        f">= {MIN_FACE_PX} px); face detect 1 core {reduced_cpu:.1f} ms cpu "
        f"/ {reduced_ms:.1f} wall "
        f"({full_cpu / reduced_cpu:.1f}x less than full-res {full_cpu:.1f} ms); "
        "full pass 1 thread cpu "
        + ", ".join(f"{n} {latency[(n, 1)][2]:.0f}" for n in MODELS)
        + f" ms (budget {PASS_BUDGET_MS:.0f}); "
        + f"hero recall {quality[('HonorOfKings', 'hero')][0]:.2f}; "
        + ("all targets met" if targets else "TARGETS MISSED")
    )
    return 0 if targets else 1


if __name__ == "__main__":
    raise SystemExit(main())
