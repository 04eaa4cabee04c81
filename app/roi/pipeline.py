"""The live ROI transcoder, and the controller that decides which streams get one.

A :class:`RoiTranscoder` sits between a stream's source and output tracks (app/hub.py). It
decodes the pushed video, finds regions (the template's recognition model on a detector thread,
or regions the application supplied over REST), re-encodes with lower QP inside them at the
stream's bitrate, and writes each frame's regions as SEI plus ``MediaPacket.roi``. Audio and
metadata pass through untouched, in their original order relative to the video.

Threads: the event loop only queues packets (:meth:`RoiTranscoder.feed`); one worker thread
decodes and encodes; one detector thread runs the model on the newest frame it is given, so
encoding never waits for detection (the tracker carries regions between detections).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Literal

import av
import numpy as np

from app.hub import Hub, Stream
from app.media.flv import TagType, VideoPacketType, build_video_tag, parse_video_tag
from app.media.packet import MediaPacket
from app.media.sei import add_roi_sei
from app.roi.detect import RecognitionModel, load_model
from app.roi.encode import EncodedPacket, RoiEncoder, open_encoder
from app.roi.regions import Region, RoiState, effective_regions, parse_roi, roi_json
from app.roi.track import DetectionScheduler, RegionTracker

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


@dataclass(frozen=True, slots=True)
class RoiConfig:
    """What the transcoder needs from a template version (or from REST-supplied regions)."""

    template: str | None
    model: str | None  # None: no recognition model, regions come only from the application
    delta_qp: int = -6
    max_regions: int = 6
    bitrate_kbps: int | None = None


# FLV FourCC -> (FFmpeg decoder, encoder family / NAL syntax)
_CODECS: dict[str, tuple[str, Literal["h264", "hevc"]]] = {
    "avc1": ("h264", "h264"),
    "hvc1": ("hevc", "hevc"),
}


class _DetectorThread:
    """Runs the recognition model on the newest frame offered; older offers are replaced."""

    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: tuple[np.ndarray, float] | None = None
        self._result: tuple[list[Any], float, float] | None = None
        self.busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"detect {name}", daemon=True)
        self._thread.start()

    def offer(self, image: np.ndarray, scale: float) -> None:
        with self._lock:
            self._pending = (image, scale)
            self.busy = True
        self._wake.set()

    def take(self) -> tuple[list[Any], float, float] | None:
        """(detections, scale of the picture they were found on, seconds the pass took)."""
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
            seconds = time.perf_counter() - started
            with self._lock:
                self._result = (detections, scale, seconds)
                self.busy = self._pending is not None

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=5)


ModelLoader = Callable[[str], Any]
TrackerFactory = Callable[[Any, RoiConfig], Any]


def load_stream_model(name: str) -> RecognitionModel:
    """A recognition model for one stream; one intra-op thread leaves a core to the encoder."""
    return load_model(name, threads=1)


def make_tracker(model: RecognitionModel, config: RoiConfig) -> RegionTracker:
    return RegionTracker(model, config.delta_qp, config.max_regions)


class RoiTranscoder:
    """The ROI stage of one stream (implements app.hub.Processor)."""

    def __init__(
        self,
        stream: Stream,
        config: RoiConfig,
        *,
        encoder_name: str,
        on_give_up: Callable[[str], None],
        load_model: ModelLoader = load_stream_model,
        make_tracker: TrackerFactory = make_tracker,
    ) -> None:
        self.stream = stream
        self.loop = asyncio.get_running_loop()
        self._config = config
        self._encoder_name = encoder_name
        self._load_model = load_model
        self._make_tracker = make_tracker
        self._on_give_up = on_give_up
        self._inbox: queue.SimpleQueue[tuple[MediaPacket, float] | None] = queue.SimpleQueue()
        # Joining a running stream: the decoder needs the header that already went by.
        self._seed_header = stream.source.video_header
        self._override: list[Region] | None = None
        self._override_lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"roi {stream.key}", daemon=True)
        self._thread.start()

    # -- event loop side -------------------------------------------------------------------

    def feed(self, packet: MediaPacket) -> None:
        if not self._stopped:
            self._inbox.put((packet, time.monotonic()))

    async def finish(self) -> None:
        self._inbox.put(None)
        await asyncio.to_thread(self._thread.join)

    def stop(self) -> None:
        """Leave the stream (plain relay takes over at the next source keyframe)."""
        self._stopped = True
        self._inbox.put(None)

    def reconfigure(self, config: RoiConfig) -> None:
        self._config = config

    def set_override(self, regions: list[Region] | None) -> None:
        """Regions the application supplied (kept until changed; [] means none)."""
        with self._override_lock:
            self._override = regions

    @property
    def config(self) -> RoiConfig:
        return self._config

    def _mark_applied(self) -> None:
        # On the loop, which owns `applied`/`reason`: a frame finished in the worker after the
        # controller took this stage off the stream must not mark the stream as ROI-encoded.
        if self.stream.processor is self and not self._stopped:
            self.stream.roi.applied = True
            self.stream.roi.reason = "ROI encoding"

    def _emit(self, packet: MediaPacket) -> None:
        if not self._stopped or self.stream.closed:
            self.loop.call_soon_threadsafe(self.stream.output.push, packet)

    # -- worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        worker = _Worker(self)
        try:
            if self._seed_header is not None:
                worker.open_decoder_for(self._seed_header)
            while True:
                item = self._inbox.get()
                if item is None:
                    break
                if self._stopped:
                    continue
                packet, arrived = item
                worker.handle(packet, arrived)
                if worker.gave_up is not None:
                    self._stopped = True
                    self.loop.call_soon_threadsafe(self._on_give_up, worker.gave_up)
                    break
            if not self._stopped or self.stream.closed:
                worker.flush()
        except Exception as exc:
            log.exception("ROI transcoder of %s failed", self.stream.key)
            self._stopped = True
            self.loop.call_soon_threadsafe(self._on_give_up, f"ROI transcoder failed: {exc}")
        finally:
            worker.close()


class _Worker:
    """Decoder, tracker and encoder state of one transcoder; lives on the worker thread."""

    def __init__(self, owner: RoiTranscoder) -> None:
        self.owner = owner
        self.stream = owner.stream
        self.status = owner.stream.roi
        self.decoder: av.CodecContext | None = None
        self.encoder: RoiEncoder | None = None
        self.codec_tag = ""
        self._nal_codec: Literal["h264", "hevc"] = "h264"
        self.enhanced = False
        self.started = False  # transcoding starts at the first source keyframe
        self.header_sent = False
        self.roi_state = RoiState()
        self.model_name: str | None = None
        self.detector: _DetectorThread | None = None
        self.tracker: Any = None
        self.tracker_key: tuple[Any, ...] | None = None
        self.scheduler = DetectionScheduler(core_share=DETECT_CORE_SHARE)
        self._slow_beat = 0
        self.gave_up: str | None = None
        self.applied = False  # told the loop that ROI frames are going out
        self.gop_frames = 0
        self._frames_since_key = 0
        self._arrivals: dict[int, float] = {}

    # packets ------------------------------------------------------------------------------

    def handle(self, packet: MediaPacket, arrived: float) -> None:
        if packet.kind is not TagType.VIDEO:
            self.owner._emit(packet)
            return
        info = parse_video_tag(packet.payload)
        if info.packet_type is VideoPacketType.SEQUENCE_START:
            self.open_decoder_for(packet)
            if not self.started:
                self.owner._emit(packet)
            return
        if info.packet_type is not VideoPacketType.CODED_FRAMES or self.decoder is None:
            if not self.started:
                self.owner._emit(packet)
            return
        if not self.started:
            if not packet.keyframe:
                self.owner._emit(packet)  # plain relay until a keyframe to start from
                return
            self.started = True
        if packet.keyframe:
            if self._frames_since_key:
                self.gop_frames = self._frames_since_key
            self._frames_since_key = 0
        self._frames_since_key += 1
        lag = time.monotonic() - arrived
        self.status.lag_ms = lag * 1000
        if lag > LAG_PLAIN_RELAY:
            self.gave_up = f"machine cannot keep up (lag {lag:.1f}s): plain relay"
            return
        pts = packet.timestamp + info.composition_time
        self._arrivals[pts] = arrived
        av_packet = av.Packet(packet.payload[info.data_offset :])
        av_packet.pts = pts
        av_packet.dts = packet.timestamp
        av_packet.time_base = Fraction(1, 1000)
        if packet.keyframe:
            av_packet.is_keyframe = True
        for frame in self.decoder.decode(av_packet):
            self._encode(frame, lag)

    def open_decoder_for(self, header: MediaPacket) -> None:
        info = parse_video_tag(header.payload)
        fourcc, config_record = info.codec, header.payload[info.data_offset :]
        if fourcc not in _CODECS:
            self.gave_up = f"codec {fourcc} is not supported for ROI encoding: plain relay"
            return
        self.codec_tag = fourcc
        self._nal_codec = _CODECS[fourcc][1]
        self.enhanced = info.enhanced
        decoder = av.CodecContext.create(_CODECS[fourcc][0], "r")
        decoder.extradata = config_record
        decoder.thread_type = "SLICE"
        self.decoder = decoder
        if self.encoder is not None:
            # A new sequence header (resolution change): the encoder reopens on the next frame.
            self._close_encoder()

    # regions ------------------------------------------------------------------------------

    def _ensure_model(self, config: RoiConfig) -> None:
        if config.model == self.model_name:
            return
        if self.detector is not None:
            self.detector.stop()
            self.detector = None
        self.model_name = config.model
        self.tracker = None
        self.tracker_key = None
        if config.model is not None:
            model = self.owner._load_model(config.model)
            self.detector = _DetectorThread(model, str(self.stream.key))

    def _regions_for(self, frame: av.VideoFrame, lag: float) -> list[Region]:
        config = self.owner.config
        with self.owner._override_lock:
            override = self.owner._override
        if override is not None:
            return self.roi_state.update(
                effective_regions(override, frame.width, frame.height, config.max_regions)
            )
        self._ensure_model(config)
        if self.detector is None:
            return self.roi_state.update([])
        key = (config.delta_qp, config.max_regions, self.model_name)
        if self.tracker is None or self.tracker_key != key:
            self.tracker = self.owner._make_tracker(self.detector.model, config)
            self.tracker_key = key
        result = self.detector.take()
        detections = None if result is None else [_scaled(d, result[1]) for d in result[0]]
        regions = self.tracker.update(detections, frame.width, frame.height)
        if result is not None:
            # After the update: whether the pass only confirmed the tracks sets the next interval.
            seconds = result[2]
            self.scheduler.record(seconds, settled=self.tracker.settled)
            self.status.detect_ms = seconds * 1000
            self.status.detect_every = self.scheduler.every
        self._schedule_detection(frame, lag)
        return self.roi_state.update(
            effective_regions(regions, frame.width, frame.height, config.max_regions)
        )

    def _schedule_detection(self, frame: av.VideoFrame, lag: float) -> None:
        """Offers the frame to the detector on the scheduler's beat, less often under lag."""
        assert self.detector is not None
        due = self.scheduler.should_detect()
        if lag > LAG_NO_DETECTION:
            self.status.degraded = "detection paused: transcoder behind"
            return
        if lag > LAG_SLOWER_DETECTION:
            self.status.degraded = "detection slowed: transcoder behind"
            self._slow_beat = (self._slow_beat + 1) % SLOWED_DETECTION_FACTOR
            due = due and self._slow_beat == 0
        else:
            self.status.degraded = None
        if not due or self.detector.busy:
            return
        scale = min(1.0, DETECT_MAX_SIDE / max(frame.width, frame.height))
        w = max(2, int(frame.width * scale) // 2 * 2)
        h = max(2, int(frame.height * scale) // 2 * 2)
        image = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
        self.detector.offer(image, frame.width / w)

    def _fps(self) -> float:
        """The publisher's frame rate: as declared in its metadata, else as measured."""
        declared = self.stream.metadata.get("framerate") or self.stream.metadata.get("fps")
        if isinstance(declared, int | float) and 1 <= declared <= 240:
            return float(declared)
        _, measured = self.stream.rates()
        return measured if measured >= 1 else 30.0

    # encoding -----------------------------------------------------------------------------

    def _bitrate_bps(self, width: int, height: int) -> int:
        config = self.owner.config
        if config.bitrate_kbps:
            return config.bitrate_kbps * 1000
        meta = self.stream.metadata.get("videodatarate")
        if isinstance(meta, int | float) and meta > 0:
            return int(meta * 1000)
        measured, _ = self.stream.rates()
        if measured > 0:
            return int(measured * 0.95)  # the measured rate includes audio
        return int(width * height * self._fps() * 0.1)

    def _ensure_encoder(self, frame: av.VideoFrame) -> RoiEncoder:
        config = self.owner.config
        want_bitrate = self._bitrate_bps(frame.width, frame.height)
        if (
            self.encoder is not None
            and config.bitrate_kbps
            and (abs(self.encoder.bitrate - want_bitrate) > 1000)
        ):
            self._close_encoder()  # a template edit changed the bitrate: reopen at a keyframe
        if self.encoder is None:
            fps = Fraction(self._fps()).limit_denominator(1001)
            self.scheduler.set_fps(float(fps))
            gop = self.gop_frames or int(round(float(fps) * 2))
            self.encoder = open_encoder(
                _CODECS[self.codec_tag][1],
                frame.width,
                frame.height,
                fps,
                want_bitrate,
                gop * 4,  # source keyframes are forced below; this only bounds drift
                encoder_name=self.owner._encoder_name,
            )
            self.header_sent = False
            log.info(
                "ROI encoding %s with %s at %d kbit/s",
                self.stream.key,
                self.encoder.name,
                want_bitrate // 1000,
            )
        return self.encoder

    def _close_encoder(self) -> None:
        if self.encoder is not None:
            for packet in self.encoder.flush():
                self._emit_encoded(packet, [])
            self.encoder = None

    def _encode(self, frame: av.VideoFrame, lag: float) -> None:
        # Output keyframes follow the publisher's, so GOPs (and HLS segments) line up.
        keyframe = bool(frame.key_frame)
        if keyframe and self.encoder is not None and self._encoder_stale(frame):
            self._close_encoder()
        encoder = self._ensure_encoder(frame)
        regions = self._regions_for(frame, lag)
        started = time.perf_counter()
        packets = encoder.encode(frame, regions, force_keyframe=keyframe)
        self.status.encode_ms = (time.perf_counter() - started) * 1000
        self.status.regions = len(regions)
        if not self.applied:
            self.applied = True
            self.owner.loop.call_soon_threadsafe(self.owner._mark_applied)
        for packet in packets:
            self._emit_encoded(packet, regions)

    def _encoder_stale(self, frame: av.VideoFrame) -> bool:
        assert self.encoder is not None
        return (frame.width, frame.height) != (self.encoder.width, self.encoder.height)

    def _emit_encoded(self, packet: EncodedPacket, regions: list[Region]) -> None:
        encoder = self.encoder
        assert encoder is not None
        if not self.header_sent and encoder.extradata is not None:
            header = build_video_tag(
                self.codec_tag,
                VideoPacketType.SEQUENCE_START,
                encoder.extradata,
                keyframe=True,
                enhanced=self.enhanced,
            )
            self.owner._emit(MediaPacket.from_tag(TagType.VIDEO, packet.dts_ms, header))
            self.header_sent = True
        pts = packet.dts_ms + packet.composition_ms
        config = self.owner.config
        document = roi_json(
            pts,
            encoder.width,
            encoder.height,
            config.template or "",
            self.model_name or "",
            regions,
        )
        body = build_video_tag(
            self.codec_tag,
            VideoPacketType.CODED_FRAMES,
            add_roi_sei(packet.data, self._nal_codec, document),
            keyframe=packet.is_keyframe,
            composition_time=packet.composition_ms,
            enhanced=self.enhanced,
        )
        out = MediaPacket(
            TagType.VIDEO, packet.dts_ms, body, keyframe=packet.is_keyframe, roi=document
        )
        arrived = self._arrivals.pop(pts, None)
        if arrived is not None:
            self.status.lag_ms = (time.monotonic() - arrived) * 1000
        if len(self._arrivals) > 256:  # frames the decoder dropped never come back
            self._arrivals.clear()
        self.owner._emit(out)

    def flush(self) -> None:
        if self.decoder is not None and self.started:
            with contextlib.suppress(av.error.FFmpegError):
                for frame in self.decoder.decode(None):
                    self._encode(frame, 0.0)
        if self.encoder is not None:
            for packet in self.encoder.flush():
                self._emit_encoded(packet, self.roi_state.regions)

    def close(self) -> None:
        if self.detector is not None:
            self.detector.stop()


def _scaled(detection: Any, scale: float) -> Any:
    if scale == 1.0:
        return detection
    x0, y0, x1, y1 = detection.box
    return replace(detection, box=(x0 * scale, y0 * scale, x1 * scale, y1 * scale))


class RoiController:
    """Gives each live stream the stage its template (or REST override) calls for.

    Reacts to streams opening, template changes (create, edit taking effect, delete) and
    application-supplied regions, without the publisher reconnecting.
    """

    def __init__(
        self,
        hub: Hub,
        template_in_force: Callable[[str], Any],
        template_pending: Callable[[str], Any],
        *,
        encoder_name: str,
        load_model: ModelLoader = load_stream_model,
        make_tracker: TrackerFactory = make_tracker,
    ) -> None:
        self.hub = hub
        self._in_force = template_in_force
        self._pending = template_pending
        self._encoder_name = encoder_name
        self._load_model = load_model
        self._make_tracker = make_tracker
        self._overrides: dict[Any, list[Region]] = {}
        self._given_up: set[Any] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        hub.on_stream_opened.append(self._on_opened)
        hub.on_stream_closed.append(self._on_closed)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_opened(self, stream: Stream) -> None:
        self._spawn(self.evaluate(stream))

    def _on_closed(self, stream: Stream) -> None:
        self._overrides.pop(stream.key, None)
        self._given_up.discard(stream.key)

    def templates_changed(self) -> None:
        """Called on the event loop when any template changed or took effect."""
        for stream in self.hub.streams():
            self._spawn(self.evaluate(stream))

    def set_override(self, stream: Stream, text: str) -> list[Region]:
        regions = parse_roi(text)
        self._overrides[stream.key] = regions
        self._given_up.discard(stream.key)
        self._spawn(self.evaluate(stream))
        processor = stream.processor
        if isinstance(processor, RoiTranscoder):
            processor.set_override(regions)
        return regions

    def clear_override(self, stream: Stream) -> None:
        self._overrides.pop(stream.key, None)
        processor = stream.processor
        if isinstance(processor, RoiTranscoder):
            processor.set_override(None)
        self._spawn(self.evaluate(stream))

    async def evaluate(self, stream: Stream) -> None:
        if stream.closed:
            return
        config, reason = await asyncio.to_thread(self._config_for, stream)
        if stream.closed:
            return
        if stream.key in self._given_up:
            config = None
            reason = stream.roi.reason
        current = stream.processor
        stream.roi.template = stream.template_name
        stream.roi.model = config.model if config else None
        if config is None:
            if isinstance(current, RoiTranscoder):
                current.stop()
                stream.set_processor(None)
            stream.roi.applied = False
            stream.roi.reason = reason
            return
        if isinstance(current, RoiTranscoder):
            current.reconfigure(config)
            return
        transcoder = RoiTranscoder(
            stream,
            config,
            encoder_name=self._encoder_name,
            load_model=self._load_model,
            make_tracker=self._make_tracker,
            on_give_up=lambda why: self._give_up(stream, why),
        )
        if stream.key in self._overrides:
            transcoder.set_override(self._overrides[stream.key])
        stream.roi.reason = "starting ROI encoding at the next keyframe"
        stream.set_processor(transcoder)

    def _give_up(self, stream: Stream, why: str) -> None:
        log.warning("stream %s: %s", stream.key, why)
        self._given_up.add(stream.key)
        if isinstance(stream.processor, RoiTranscoder):
            stream.set_processor(None)
        stream.roi.applied = False
        stream.roi.reason = why

    def _config_for(self, stream: Stream) -> tuple[RoiConfig | None, str]:
        name = stream.template_name
        override = stream.key in self._overrides
        if name:
            version = self._in_force(name)
            if version is not None:
                return (
                    RoiConfig(
                        template=name,
                        model=None if override else version.settings.model,
                        delta_qp=version.settings.delta_qp,
                        max_regions=version.settings.max_regions,
                        bitrate_kbps=version.settings.bitrate_kbps,
                    ),
                    "",
                )
            pending = self._pending(name)
            if pending is not None:
                reason = f"template {name} is pending until {pending.effective_at}"
            else:
                reason = f"template {name} does not exist"
        else:
            reason = "no roirecognition template in the push URL"
        if override:
            return RoiConfig(template=name, model=None), ""
        return None, reason + ": relayed unchanged"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for stream in self.hub.streams():
            if isinstance(stream.processor, RoiTranscoder):
                stream.processor.stop()


__all__ = ["RoiConfig", "RoiController", "RoiTranscoder"]
