"""When detection runs: the detector thread, the detection interval and the lag steps.

Encoding never waits for detection: the worker offers a frame to the :class:`DetectorThread`
on the :class:`DetectionScheduler`'s beat and takes whatever result is ready (the tracker
carries regions between detections). :class:`DetectionPacer` adds the degradation steps of a
transcoder that falls behind ingest: slower detection, then none, then plain relay
(``LAG_PLAIN_RELAY``, decided by the worker).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

log = logging.getLogger("app.roi")

# Lag thresholds (seconds behind ingest) for the degradation steps.
LAG_SLOWER_DETECTION = 0.3
LAG_NO_DETECTION = 0.8
LAG_PLAIN_RELAY = 2.0
# Longest side of the picture handed to the detector; boxes are scaled back.
DETECT_MAX_SIDE = 640
# Share of one core the detector may use: detection runs every N frames to stay within it
# (settled scenes stretch N further, see DetectionScheduler).
DETECT_CORE_SHARE = 0.05
# Under lag, detection runs on only one of this many scheduled frames.
SLOWED_DETECTION_FACTOR = 4


class DetectionScheduler:
    """Runs detection every N frames, N adapted to the measured detection time and to how
    much the passes still find.

    Detection may use ``core_share`` of one core on average: with a frame interval T and a
    detection time D, N = ceil(D / (T * core_share)). N only drops again once the time has
    fallen clearly (20 %) below what the smaller N needs, so it does not flap.

    A pass that only confirms what the tracker predicted (``settled``) doubles the interval,
    up to ``settled_seconds``; the first pass that finds something new (an object appears or
    goes, or moves off its prediction) returns to the budget's N. A host sitting still is
    then looked at about once a second instead of several times, and a change is still seen
    within one interval.
    """

    def __init__(
        self,
        fps: float = 30.0,
        core_share: float = 0.5,
        min_every: int = 1,
        max_every: int = 60,
        settled_seconds: float = 1.0,
    ) -> None:
        if fps <= 0 or not 0 < core_share <= 4 or not 1 <= min_every <= max_every:
            raise ValueError("need fps > 0, 0 < core_share <= 4, 1 <= min_every <= max_every")
        if settled_seconds < 0:
            raise ValueError("settled_seconds must be >= 0")
        self.fps = fps
        self.core_share = core_share
        self.min_every = min_every
        self.max_every = max_every
        self.settled_seconds = settled_seconds
        self.budget_every = min_every  # N from the CPU budget alone
        self.every = min_every
        self.detect_seconds: float | None = None
        self._backoff = 1
        self._countdown = 0

    def set_fps(self, fps: float) -> None:
        if fps > 0:
            self.fps = fps
            self._retune()

    def should_detect(self) -> bool:
        """Call once per frame: True on the frames that should run detection."""
        if self._countdown <= 0:
            self._countdown = self.every - 1
            return True
        self._countdown -= 1
        return False

    def record(self, seconds: float, settled: bool = False) -> None:
        """Feed the time one detection pass took and whether it only confirmed the tracks."""
        if seconds < 0:
            return
        if self.detect_seconds is None:
            self.detect_seconds = seconds
        else:
            self.detect_seconds = 0.7 * self.detect_seconds + 0.3 * seconds
        self._backoff = min(self._backoff * 2, 1 << 10) if settled else 1
        self._retune()

    def _retune(self) -> None:
        if self.detect_seconds is not None:
            allowance = self.core_share / self.fps  # seconds of detection per frame
            needed = math.ceil(self.detect_seconds / allowance - 1e-9)
            if (
                needed < self.budget_every
                and self.detect_seconds > 0.8 * (self.budget_every - 1) * allowance
            ):
                needed = self.budget_every  # not clearly faster yet
            self.budget_every = max(self.min_every, min(self.max_every, max(1, needed)))
        settled_cap = max(self.budget_every, round(self.settled_seconds * self.fps))
        every = min(self.budget_every * self._backoff, settled_cap)
        self.every = max(self.min_every, min(self.max_every, every))
        self._countdown = min(self._countdown, self.every - 1)


@dataclass(frozen=True, slots=True)
class DetectionResult:
    """One finished pass: the detections, the scale back to the frame, and its duration."""

    detections: list[Any]
    scale: float
    seconds: float


class DetectorThread:
    """Runs the recognition model on the newest frame offered; older offers are replaced."""

    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: tuple[np.ndarray, float] | None = None
        self._result: DetectionResult | None = None
        self._busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"detect {name}", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A frame is waiting or being looked at."""
        with self._lock:
            return self._busy

    def offer(self, image: np.ndarray, scale: float) -> None:
        with self._lock:
            self._pending = (image, scale)
            self._busy = True
        self._wake.set()

    def take(self) -> DetectionResult | None:
        """The pass finished since the last call, if any."""
        with self._lock:
            result, self._result = self._result, None
        return result

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            with self._lock:
                job, self._pending = self._pending, None
            if job is None:
                continue
            image, scale = job
            started = time.perf_counter()
            try:
                detections = list(self.model.detect(image))
            except Exception:
                log.exception("recognition model failed on a frame")
                detections = []
            result = DetectionResult(detections, scale, time.perf_counter() - started)
            with self._lock:
                self._result = result
                self._busy = self._pending is not None

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=5)


def detection_picture(frame: av.VideoFrame) -> tuple[np.ndarray, float]:
    """The frame as the detector gets it (RGB, longest side at most ``DETECT_MAX_SIDE``) and
    the factor that scales its boxes back to the frame."""
    scale = min(1.0, DETECT_MAX_SIDE / max(frame.width, frame.height))
    w = max(2, int(frame.width * scale) // 2 * 2)
    h = max(2, int(frame.height * scale) // 2 * 2)
    image = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
    return image, frame.width / w


class DetectionPacer:
    """The scheduler's beat, thinned out by the transcoder's lag behind ingest.

    ``degraded`` says in words which step is in force (None: detection on schedule).
    """

    def __init__(self, scheduler: DetectionScheduler) -> None:
        self.scheduler = scheduler
        self.degraded: str | None = None
        self._slow_beat = 0

    def due(self, lag: float) -> bool:
        """Call once per frame with the current lag: True when this frame should be offered."""
        due = self.scheduler.should_detect()
        if lag > LAG_NO_DETECTION:
            self.degraded = "detection paused: transcoder behind"
            return False
        if lag > LAG_SLOWER_DETECTION:
            self.degraded = "detection slowed: transcoder behind"
            self._slow_beat = (self._slow_beat + 1) % SLOWED_DETECTION_FACTOR
            return due and self._slow_beat == 0
        self.degraded = None
        return due


__all__ = [
    "DETECT_CORE_SHARE",
    "DETECT_MAX_SIDE",
    "LAG_NO_DETECTION",
    "LAG_PLAIN_RELAY",
    "LAG_SLOWER_DETECTION",
    "DetectionPacer",
    "DetectionResult",
    "DetectionScheduler",
    "DetectorThread",
    "detection_picture",
]
