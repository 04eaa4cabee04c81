"""The ROI transcoder's worker thread: decode, find regions, ROI-encode, write SEI.

The worker knows nothing of the hub. It is built with what it needs (settings the loop may
change, a sink for what it produces, a model loader) and runs :meth:`TranscodeWorker.run` on
its own thread over an inbox of packets. Everything it gives back (output packets, stats
snapshots, "ROI frames are going out", "giving up") goes through the sink, whose callables
hand it to the event loop; whatever it needs to know about the publisher (declared and
measured rates) comes in the inbox with the packets.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av

from app.media.flv import TagType, VideoPacketType, build_video_tag, parse_video_tag
from app.media.nal import NalError, parse_decoder_config
from app.media.packet import MediaPacket
from app.media.sei import add_roi_sei
from app.roi.config import PictureLimit, RoiConfig
from app.roi.decode import open_decoder
from app.roi.detect import RecognitionModel, load_model
from app.roi.encode import open_encoder
from app.roi.encoder_base import BaseRoiEncoder, EncodedPacket
from app.roi.regions import Region, RoiState, effective_regions, roi_json
from app.roi.scheduling import (
    DETECT_CORE_SHARE,
    LAG_PLAIN_RELAY,
    DetectionPacer,
    DetectionScheduler,
    DetectorThread,
    detection_picture,
)
from app.roi.status import RoiStats
from app.roi.track import RegionTracker

log = logging.getLogger("app.roi")

# FLV FourCC -> (FFmpeg decoder, encoder family / NAL syntax)
_CODECS: dict[str, tuple[str, Literal["h264", "hevc"]]] = {
    "avc1": ("h264", "h264"),
    "hvc1": ("hevc", "hevc"),
}

# Decoder errors that mean "this frame is damaged": that GOP is relayed plain, ROI resumes at
# the next keyframe that decodes (with a fresh decoder). EOF: the decoder was drained and
# takes nothing more.
CORRUPT_FRAME_ERRORS = (
    av.error.InvalidDataError,
    av.error.PatchWelcomeError,
    av.error.EOFError,
)

ModelLoader = Callable[[str], Any]
TrackerFactory = Callable[[Any, RoiConfig], Any]


def load_stream_model(name: str) -> RecognitionModel:
    """A recognition model for one stream; one intra-op thread leaves a core to the encoder."""
    return load_model(name, threads=1)


def make_tracker(model: RecognitionModel, config: RoiConfig) -> RegionTracker:
    return RegionTracker(model, config.settings.delta_qp, config.settings.max_regions)


@dataclass(frozen=True, slots=True)
class SourceFacts:
    """What the publisher declared and what the hub measured, read on the event loop."""

    declared_fps: float | None = None
    declared_kbps: float | None = None
    measured_bps: float = 0.0
    measured_fps: float = 0.0


@dataclass(frozen=True, slots=True)
class Fed:
    """One inbox item: a source packet, when it arrived, and the facts as of then (or None
    when they have not been read again since the last item that had them)."""

    packet: MediaPacket
    arrived: float
    facts: SourceFacts | None = None


class End(enum.Enum):
    """Inbox sentinels: the publisher left (flush what is pending) or the stage was removed."""

    FLUSH = "flush"
    DROP = "drop"


Inbox = queue.SimpleQueue[Fed | End]


@dataclass(frozen=True, slots=True)
class WorkerSink:
    """Where the worker's results go; each callable is safe to call from the worker thread."""

    packet: Callable[[MediaPacket], None]
    stats: Callable[[RoiStats], None]
    # ROI-encoded frames are going out (again), from the encoder named
    encoding: Callable[[str], None]
    gave_up: Callable[[str], None]
    relaying_plain: Callable[[str], None]  # why this GOP goes out as the publisher sent it


class WorkerControls:
    """What the event loop may change while the worker runs: the config and the regions the
    application supplied. One lock keeps the two consistent for each frame."""

    def __init__(self, config: RoiConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._override: list[Region] | None = None

    def set_config(self, config: RoiConfig) -> None:
        with self._lock:
            self._config = config

    def set_override(self, regions: list[Region] | None) -> None:
        with self._lock:
            self._override = None if regions is None else list(regions)

    def current(self) -> tuple[RoiConfig, list[Region] | None]:
        with self._lock:
            return self._config, self._override


class TranscodeWorker:
    """Decoder, tracker and encoder state of one transcoder; lives on the worker thread."""

    def __init__(
        self,
        name: str,
        controls: WorkerControls,
        sink: WorkerSink,
        *,
        encoder_name: str,
        stop: threading.Event,
        seed_header: MediaPacket | None = None,
        load_model: ModelLoader = load_stream_model,
        make_tracker: TrackerFactory = make_tracker,
        decoder_mode: str = "auto",
        nvenc_library_dir: Path | None = None,
        picture_limit: PictureLimit = PictureLimit(),
    ) -> None:
        self.name = name
        self._picture_limit = picture_limit
        self._controls = controls
        self._sink = sink
        self._encoder_name = encoder_name
        self._decoder_mode = decoder_mode
        self._nvenc_library_dir = nvenc_library_dir
        self._stop = stop
        # Joining a running stream: the decoder needs the header that already went by.
        self._seed_header = seed_header
        self._load_model = load_model
        self._make_tracker = make_tracker
        self.decoder: av.VideoCodecContext | None = None
        self.encoder: BaseRoiEncoder | None = None
        self.codec_tag = ""
        self._nal_codec: Literal["h264", "hevc"] = "h264"
        self.enhanced = False
        self.started = False  # transcoding starts at the first source keyframe
        self.header_sent = False
        self.roi_state = RoiState()
        self.model_name: str | None = None
        self.detector: DetectorThread | None = None
        self.tracker: Any = None
        self.tracker_key: tuple[Any, ...] | None = None
        self.scheduler = DetectionScheduler(core_share=DETECT_CORE_SHARE)
        self.pacer = DetectionPacer(self.scheduler)
        self.gave_up: str | None = None
        self.facts = SourceFacts()
        self.stats = RoiStats()
        self._published: RoiStats | None = None
        self._encoding = False  # told the loop that ROI frames are going out
        self.gop_frames = 0
        self._frames_since_key = 0
        self._arrivals: dict[int, float] = {}
        self.source_header: MediaPacket | None = None
        # A frame of this GOP did not decode: its packets go out as the publisher sent them.
        self.corrupt_gop = False

    # the thread ---------------------------------------------------------------------------

    def run(self, inbox: Inbox) -> None:
        """The worker thread's body: packets until an End, then flush if asked to."""
        try:
            if self._seed_header is not None:
                self.open_decoder_for(self._seed_header)
            item: Fed | End = End.DROP
            while self.gave_up is None:
                item = inbox.get()
                if isinstance(item, End):
                    break
                if not self._stop.is_set():  # once removed, drain the inbox without work
                    self.handle(item)
            if self.gave_up is not None:
                self._publish()
                self._sink.gave_up(self.gave_up)
                return
            if item is End.FLUSH:
                self.flush()
        except Exception as exc:
            log.exception("ROI transcoder of %s failed", self.name)
            self._sink.gave_up(f"ROI transcoder failed: {exc}")
        finally:
            self.close()

    def _publish(self) -> None:
        if self.stats != self._published:
            self._published = self.stats
            self._sink.stats(self.stats)

    # packets ------------------------------------------------------------------------------

    def handle(self, item: Fed) -> None:
        packet = item.packet
        if item.facts is not None:
            self.facts = item.facts
        if packet.kind is not TagType.VIDEO:
            self._sink.packet(packet)
            return
        info = parse_video_tag(packet.payload)
        if info.packet_type is VideoPacketType.SEQUENCE_START:
            self.open_decoder_for(packet)
            if not self.started:
                self._sink.packet(packet)
            return
        if info.packet_type is not VideoPacketType.CODED_FRAMES or self.decoder is None:
            if not self.started:
                self._sink.packet(packet)
            return
        if not self.started:
            if not packet.keyframe:
                self._sink.packet(packet)  # plain relay until a keyframe to start from
                return
            self.started = True
        if self.corrupt_gop:
            if not packet.keyframe:
                self._sink.packet(packet)
                return
            self.corrupt_gop = False  # try ROI again from this keyframe
            self._encoding = False
        if packet.keyframe:
            if self._frames_since_key:
                self.gop_frames = self._frames_since_key
            self._frames_since_key = 0
        self._frames_since_key += 1
        lag = time.monotonic() - item.arrived
        self.stats = replace(self.stats, lag_ms=lag * 1000)
        if lag > LAG_PLAIN_RELAY:
            self.gave_up = f"machine cannot keep up (lag {lag:.1f}s): plain relay"
            return
        pts = packet.timestamp + info.composition_time
        self._arrivals[pts] = item.arrived
        data = packet.payload[info.data_offset :]
        if not data:
            # An empty packet is FFmpeg's "drain" signal, after which the decoder takes
            # nothing more: an empty frame is a damaged frame like any other.
            self._relay_rest_of_gop(packet, ValueError("empty frame"))
            self._publish()
            return
        av_packet = av.Packet(data)
        av_packet.pts = pts
        av_packet.dts = packet.timestamp
        av_packet.time_base = Fraction(1, 1000)
        if packet.keyframe:
            av_packet.is_keyframe = True
        try:
            frames = self.decoder.decode(av_packet)
        except CORRUPT_FRAME_ERRORS as exc:
            self._relay_rest_of_gop(packet, exc)
        else:
            for frame in frames:
                self._encode(frame, lag)
        self._publish()

    def _relay_rest_of_gop(self, packet: MediaPacket, exc: Exception) -> None:
        """A frame did not decode: what was encoded goes out, then the source's header and
        this GOP as the publisher sent it; ROI resumes at the next keyframe that decodes."""
        log.info("ROI %s: undecodable frame at %d ms (%s)", self.name, packet.timestamp, exc)
        self._close_encoder()
        if self.source_header is not None:
            self._sink.packet(self.source_header)
            self.open_decoder_for(self.source_header)  # a fresh decoder for the next keyframe
        self._sink.packet(packet)
        self.corrupt_gop = True
        self._arrivals.clear()
        self.stats = replace(self.stats, corrupt_gops=self.stats.corrupt_gops + 1)
        self._sink.relaying_plain(
            f"corrupt frame at {packet.timestamp} ms: plain relay until the next keyframe"
        )

    def open_decoder_for(self, header: MediaPacket) -> None:
        info = parse_video_tag(header.payload)
        fourcc, config_record = info.codec, header.payload[info.data_offset :]
        if fourcc not in _CODECS:
            self.gave_up = f"codec {fourcc} is not supported for ROI encoding: plain relay"
            return
        limit = self._picture_limit
        size = _declared_size(config_record, _CODECS[fourcc][1])
        if size is not None and limit.refuses(*size):
            self.gave_up = (
                f"picture {size[0]}x{size[1]} is larger than the ROI stage decodes "
                f"({limit.pixels / 1e6:.1f} Mpixel, {limit.side} px a side): plain relay"
            )
            return
        self.codec_tag = fourcc
        self._nal_codec = _CODECS[fourcc][1]
        self.enhanced = info.enhanced
        self.source_header = header
        # Parameter sets inside the frames may declare another size: FFmpeg refuses (as
        # undecodable data) to allocate a picture larger than the limit.
        opened = open_decoder(
            _CODECS[fourcc][0], config_record, self._decoder_mode, max_pixels=limit.pixels
        )
        self.decoder = opened.context
        self.stats = replace(
            self.stats, decoder=opened.name, decoder_fallback=opened.fallback_reason
        )
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
            model = self._load_model(config.model)
            self.detector = DetectorThread(model, self.name)
            providers = getattr(model, "providers", None)
            self.stats = replace(
                self.stats, providers=tuple(providers) if providers is not None else None
            )

    def _regions_for(
        self, frame: av.VideoFrame, lag: float, config: RoiConfig, override: list[Region] | None
    ) -> list[Region]:
        if override is not None:
            return self.roi_state.update(
                effective_regions(override, frame.width, frame.height, config.settings.max_regions)
            )
        self._ensure_model(config)
        if self.detector is None:
            return self.roi_state.update([])
        key = (config.settings.delta_qp, config.settings.max_regions, self.model_name)
        if self.tracker is None or self.tracker_key != key:
            self.tracker = self._make_tracker(self.detector.model, config)
            self.tracker_key = key
        result = self.detector.take()
        detections = (
            None if result is None else [_scaled(d, result.scale) for d in result.detections]
        )
        regions = self.tracker.update(detections, frame.width, frame.height)
        if result is not None:
            # After the update: whether the pass only confirmed the tracks sets the next interval.
            self.scheduler.record(result.seconds, settled=self.tracker.settled)
            self.stats = replace(
                self.stats, detect_ms=result.seconds * 1000, detect_every=self.scheduler.every
            )
        due = self.pacer.due(lag)
        self.stats = replace(self.stats, degraded=self.pacer.degraded)
        if due and not self.detector.busy:
            self.detector.offer(*detection_picture(frame))
        return self.roi_state.update(
            effective_regions(regions, frame.width, frame.height, config.settings.max_regions)
        )

    def _fps(self) -> float:
        """The publisher's frame rate: as declared in its metadata, else as measured."""
        declared = self.facts.declared_fps
        if declared is not None and 1 <= declared <= 240:
            return declared
        measured = self.facts.measured_fps
        return measured if measured >= 1 else 30.0

    # encoding -----------------------------------------------------------------------------

    def _bitrate_bps(self, config: RoiConfig, width: int, height: int) -> int:
        if config.settings.bitrate_kbps:
            return config.settings.bitrate_kbps * 1000
        if self.facts.declared_kbps:
            return int(self.facts.declared_kbps * 1000)
        if self.facts.measured_bps > 0:
            return int(self.facts.measured_bps * 0.95)  # the measured rate includes audio
        return int(width * height * self._fps() * 0.1)

    def _ensure_encoder(self, frame: av.VideoFrame, config: RoiConfig) -> BaseRoiEncoder:
        want_bitrate = self._bitrate_bps(config, frame.width, frame.height)
        if (
            self.encoder is not None
            and config.settings.bitrate_kbps
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
                encoder_name=self._encoder_name,
                nvenc_library_dir=self._nvenc_library_dir,
            )
            self.header_sent = False
            fallback = self.encoder.fallback_reason
            # One line: the encoder, and why not NVENC when it was asked for (or auto).
            log.log(
                logging.WARNING if fallback and self._encoder_name != "auto" else logging.INFO,
                "ROI encoding %s with %s at %d kbit/s%s",
                self.name,
                self.encoder.name,
                want_bitrate // 1000,
                f" (NVENC unavailable: {fallback})" if fallback else "",
            )
            self.stats = replace(self.stats, encoder=self.encoder.name, encoder_fallback=fallback)
        return self.encoder

    def _close_encoder(self) -> None:
        if self.encoder is not None:
            config, _ = self._controls.current()
            for packet in self.encoder.flush():
                self._emit_encoded(packet, [], config)
            self.encoder = None

    def _encode(self, frame: av.VideoFrame, lag: float) -> None:
        config, override = self._controls.current()
        # Output keyframes follow the publisher's, so GOPs (and HLS segments) line up.
        keyframe = bool(frame.key_frame)
        if keyframe and self.encoder is not None and self._encoder_stale(frame):
            self._close_encoder()
        encoder = self._ensure_encoder(frame, config)
        regions = self._regions_for(frame, lag, config, override)
        started = time.perf_counter()
        packets = encoder.encode(frame, regions, force_keyframe=keyframe)
        self.stats = replace(
            self.stats, encode_ms=(time.perf_counter() - started) * 1000, regions=len(regions)
        )
        if not self._encoding:
            self._encoding = True
            self._sink.encoding(encoder.name)
        for packet in packets:
            self._emit_encoded(packet, regions, config)

    def _encoder_stale(self, frame: av.VideoFrame) -> bool:
        assert self.encoder is not None
        return (frame.width, frame.height) != (self.encoder.width, self.encoder.height)

    def _emit_encoded(
        self, packet: EncodedPacket, regions: list[Region], config: RoiConfig
    ) -> None:
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
            self._sink.packet(MediaPacket.from_tag(TagType.VIDEO, packet.dts_ms, header))
            self.header_sent = True
        pts = packet.dts_ms + packet.composition_ms
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
            self.stats = replace(self.stats, lag_ms=(time.monotonic() - arrived) * 1000)
        if len(self._arrivals) > 256:  # frames the decoder dropped never come back
            self._arrivals.clear()
        self._sink.packet(out)

    def flush(self) -> None:
        if self.decoder is not None and self.started:
            with contextlib.suppress(av.error.FFmpegError):
                for frame in self.decoder.decode(None):
                    self._encode(frame, 0.0)
        if self.encoder is not None:
            config, _ = self._controls.current()
            for packet in self.encoder.flush():
                self._emit_encoded(packet, self.roi_state.regions, config)
        self._publish()

    def close(self) -> None:
        if self.detector is not None:
            self.detector.stop()


def _declared_size(config_record: bytes, codec: Literal["h264", "hevc"]) -> tuple[int, int] | None:
    try:
        sps = parse_decoder_config(config_record, codec).sps_info()
    except (NalError, ValueError, IndexError):
        return None  # the decoder judges it (and max_pixels bounds what it allocates)
    return sps.width, sps.height


def _scaled(detection: Any, scale: float) -> Any:
    if scale == 1.0:
        return detection
    x0, y0, x1, y1 = detection.box
    return replace(detection, box=(x0 * scale, y0 * scale, x1 * scale, y1 * scale))


__all__ = [
    "End",
    "Fed",
    "Inbox",
    "SourceFacts",
    "TranscodeWorker",
    "WorkerControls",
    "WorkerSink",
    "load_stream_model",
    "make_tracker",
]
