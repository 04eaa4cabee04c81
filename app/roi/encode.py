"""Encoder backends that take per-frame ROI regions: libx264, libx265, h264_qsv, hevc_qsv
through FFmpeg (PyAV), and h264_nvenc, hevc_nvenc through our own NVENC binding
(app/roi/nvenc: FFmpeg's NVENC wrapper ignores ROI).

One small interface (:func:`open_encoder` -> :class:`BaseRoiEncoder`: ``encode(frame,
regions)``, ``flush()``, ``extradata``, ``name``, ``fallback_reason``).

NVENC asked for (or ``auto``) opens an NVENC session for the stream; when that fails (no
driver, no NVENC engine, session limit) the stream gets the CPU encoder instead and the
encoder's ``fallback_reason`` says why, so the stream's status can show it.

How regions reach the encoder. FFmpeg's libx264, libx265 and QSV wrappers read
``AV_FRAME_DATA_REGIONS_OF_INTEREST`` frame side data: an array of 28-byte
``AVRegionOfInterest`` entries (uint32 self_size; int32 top, bottom, left, right;
AVRational qoffset). They turn ``qoffset`` into a QP offset by multiplying it by 51 for
8-bit video, so ``qoffset = DeltaQp/51`` is the exact integer DeltaQp. They walk the array
from last to first, so the *first* entry ends up on top where regions overlap: the order of
``effective_regions`` is the order written here. A region covers every 16x16 block it
touches (FFmpeg rounds outwards).

PyAV 18 cannot create frame side data, but a filter graph can: each ``addroi`` filter
appends one entry, so a chain of six gives every frame six slots, which are then rewritten
per frame through ``memoryview(side_data)``. Slots without a region become an all-zero
rectangle (covers no block) after the used ones. No regions, or DeltaQp 0, writes only
empty/zero entries: x264/x265 then add zero offsets, which is plain encoding through the
very same path (tests/roi/test_encode.py checks the bytes are identical).

x264/x265 silently ignore ROI when adaptive quantisation is off (preset ultrafast, aq-mode
0, constant QP), so the options below always set aq-mode explicitly. Live settings: tune
zerolatency (no lookahead, no frame-threading delay, sliced threads), no B-frames unless
asked, ABR with VBV maxrate = bitrate and a 1 s buffer, so the stream keeps its bitrate.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import av.codec.context
import av.filter
from av.sidedata.sidedata import Type as SideDataType
from av.video.frame import PictureType

from app.media.nal import (
    Codec,
    is_keyframe_nal,
    join_length_prefixed,
    nal_type,
    split_annexb,
)
from app.roi.encoder_base import (
    NAL_LENGTH_SIZE,
    BaseRoiEncoder,
    EncodedPacket,
    EncoderError,
    EncoderSettings,
)
from app.roi.nvenc.api import NV_ENC_PRESET_GUIDS
from app.roi.nvenc.driver import DriverMissingError
from app.roi.nvenc.encoder import NvencEncoder
from app.roi.regions import MAX_REGIONS, Region

log = logging.getLogger(__name__)

ROI_SLOTS = MAX_REGIONS
ROI_ENTRY = struct.Struct("<Iiiiiii")  # self_size, top, bottom, left, right, qoffset num/den
ROI_QOFFSET_DEN = 51  # qoffset * 51 = DeltaQp for 8-bit x264/x265/QSV

# Encoders known to honour ROI side data, with the codec they produce.
ROI_ENCODERS: dict[str, Codec] = {
    "libx264": "h264",
    "libx265": "hevc",
    "h264_qsv": "h264",
    "hevc_qsv": "hevc",
}
# Encoded by app/roi/nvenc (a session per stream, so `auto` tries it when a stream opens).
NVENC_ENCODERS: dict[str, Codec] = {"h264_nvenc": "h264", "hevc_nvenc": "hevc"}
# After NVENC, `auto` takes the first that opens: hardware first, leaving the CPU to
# decoding/detection.
AUTO_ORDER: dict[Codec, tuple[str, ...]] = {
    "h264": ("h264_qsv", "libx264"),
    "hevc": ("hevc_qsv", "libx265"),
}
CPU_ENCODERS: dict[Codec, str] = {"h264": "libx264", "hevc": "libx265"}
DEFAULT_PRESETS = {"libx264": "veryfast", "libx265": "superfast", "qsv": "veryfast"}


def encoder_options(name: str, settings: EncoderSettings) -> dict[str, str]:
    """FFmpeg AVOptions of a backend; shared with benches that run the plain encoder."""
    bitrate = settings.bitrate_bps
    vbv = {"maxrate": str(bitrate), "bufsize": str(int(bitrate * settings.vbv_seconds))}
    if name == "libx264":
        params = [
            f"aq-mode={settings.aq_mode}",
            f"aq-strength={settings.aq_strength:g}",
            "rc-lookahead=0",
            "sync-lookahead=0",
        ]
        return {
            "preset": settings.preset or DEFAULT_PRESETS["libx264"],
            "tune": "zerolatency",
            "x264-params": ":".join(params),
            **vbv,
        }
    if name == "libx265":
        params = [
            f"aq-mode={settings.aq_mode}",
            f"aq-strength={settings.aq_strength:g}",
            "rc-lookahead=0",
            "log-level=error",  # x265 prints its banner straight to stderr otherwise
        ]
        return {
            "preset": settings.preset or DEFAULT_PRESETS["libx265"],
            "tune": "zerolatency",
            "x265-params": ":".join(params),
            **vbv,
        }
    if name.endswith("_qsv"):
        return {"preset": settings.preset or DEFAULT_PRESETS["qsv"], "async_depth": "1", **vbv}
    return dict(vbv)


def _pixel_format(name: str) -> str:
    return "nv12" if name.endswith("_qsv") else "yuv420p"


def _open_codec_context(name: str, settings: EncoderSettings) -> av.VideoCodecContext:
    try:
        context = av.CodecContext.create(name, "w")
    except (av.FFmpegError, ValueError) as exc:  # UnknownCodecError is a ValueError
        raise EncoderError(f"encoder {name!r} is not available: {exc}") from exc
    if not isinstance(context, av.VideoCodecContext):
        raise EncoderError(f"{name!r} is not a video encoder")
    context.width = settings.width
    context.height = settings.height
    context.pix_fmt = _pixel_format(name)
    context.time_base = settings.time_base
    context.framerate = settings.fps
    context.bit_rate = settings.bitrate_bps
    context.gop_size = settings.gop_frames
    context.max_b_frames = settings.bframes
    context.thread_count = settings.threads
    # Parameter sets go to extradata (the FLV sequence header), not in front of keyframes.
    context.flags |= av.codec.context.Flags.global_header
    context.options = encoder_options(name, settings)
    try:
        context.open()
    except av.FFmpegError as exc:
        raise EncoderError(f"encoder {name!r} failed to open: {exc}") from exc
    return context


class RoiSideData:
    """A filter graph giving each frame six ROI slots, rewritten per frame."""

    def __init__(self, width: int, height: int, pix_fmt: str, time_base: Fraction) -> None:
        self._graph = av.filter.Graph()
        node = self._graph.add_buffer(
            width=width, height=height, format=av.VideoFormat(pix_fmt), time_base=time_base
        )
        for _ in range(ROI_SLOTS):
            slot = self._graph.add("addroi", "x=0:y=0:w=0:h=0:qoffset=0")
            node.link_to(slot)
            node = slot
        sink = self._graph.add("buffersink")
        node.link_to(sink)
        self._graph.configure()

    def attach(self, frame: av.VideoFrame, regions: Sequence[Region]) -> av.VideoFrame:
        """``frame`` with ROI side data holding ``regions`` in order (at most six)."""
        if len(regions) > ROI_SLOTS:
            raise ValueError(f"at most {ROI_SLOTS} regions per frame")
        self._graph.vpush(frame)
        out = self._graph.vpull()
        try:
            # (PyAV 18's stub types the side-data Type enum as a TypedDict.)
            side_data = out.side_data[SideDataType.REGIONS_OF_INTEREST]  # type: ignore[typeddict-item]
        except KeyError:
            raise EncoderError("addroi filters gave no ROI side data") from None
        view = memoryview(side_data).cast("B")
        slots = len(view) // ROI_ENTRY.size
        if slots < ROI_SLOTS or len(view) % ROI_ENTRY.size:
            raise EncoderError(f"unexpected ROI side data of {len(view)} bytes")
        for index in range(slots):
            region = regions[index] if index < len(regions) else None
            if region is None:
                entry = (ROI_ENTRY.size, 0, 0, 0, 0, 0, 1)
            else:
                entry = (
                    ROI_ENTRY.size,
                    region.top,
                    region.bottom,
                    region.left,
                    region.right,
                    region.qp,
                    ROI_QOFFSET_DEN,
                )
            ROI_ENTRY.pack_into(view, index * ROI_ENTRY.size, *entry)
        return out


class RoiEncoder(BaseRoiEncoder):
    """An FFmpeg encoder (libx264, libx265, QSV) that takes ROI regions with every frame."""

    def __init__(self, name: str, settings: EncoderSettings) -> None:
        super().__init__(name, settings)
        codec = ROI_ENCODERS.get(name)
        if codec is not None and codec != settings.codec:
            raise EncoderError(f"encoder {name!r} produces {codec}, not {settings.codec}")
        # Other FFmpeg encoders (FFmpeg's NVENC, ...) open, but drop ROI side data.
        self.roi_supported = codec is not None
        self._context = _open_codec_context(name, settings)
        self._pix_fmt = _pixel_format(name)
        self._roi = RoiSideData(settings.width, settings.height, self._pix_fmt, settings.time_base)
        # The avcC/hvcC record for the FLV sequence header (None until known).
        self.extradata = self._config_record(split_annexb(self._context.extradata or b""))

    def encode(
        self, frame: av.VideoFrame, regions: Sequence[Region] = (), force_keyframe: bool = False
    ) -> list[EncodedPacket]:
        """Encodes ``frame`` with ``regions`` (picture coordinates of ``frame``; the ROI rules
        are applied again here, so at most six take effect). Returns the packets ready now.

        The frame becomes a keyframe when ``force_keyframe`` is set or its ``pict_type`` is
        I (so a pipeline can make the output GOP follow the publisher's keyframes); other
        picture types are left to the encoder's own GOP and scene-cut decisions.
        """
        force_keyframe = force_keyframe or frame.pict_type == PictureType.I
        pts = self._input_pts(frame)
        regions = self._prepare(frame, regions)
        if (frame.width, frame.height, frame.format.name) != (
            self.settings.width,
            self.settings.height,
            self._pix_fmt,
        ):
            frame = frame.reformat(self.settings.width, self.settings.height, self._pix_fmt)
        encoder_pts = self._timeline.admit(pts)
        frame.pts = encoder_pts
        frame.time_base = self.settings.time_base
        tagged = self._roi.attach(frame, regions)
        tagged.pts = encoder_pts
        tagged.time_base = self.settings.time_base
        # x264/x265 obey any picture type on the frame (P, B too): only I is passed on.
        tagged.pict_type = PictureType.I if force_keyframe else PictureType.NONE
        try:
            packets = self._context.encode(tagged)
        except av.FFmpegError as exc:
            raise EncoderError(f"{self.name} failed to encode: {exc}") from exc
        return [self._convert(packet) for packet in packets]

    def flush(self) -> list[EncodedPacket]:
        """Drains the encoder; it takes no frames afterwards."""
        try:
            packets = self._context.encode(None)
        except av.FFmpegError as exc:
            raise EncoderError(f"{self.name} failed to flush: {exc}") from exc
        return [self._convert(packet) for packet in packets]

    def _convert(self, packet: av.Packet) -> EncodedPacket:
        nals = split_annexb(bytes(packet))
        if self.extradata is None:  # encoders that only put parameter sets in band
            self.extradata = self._config_record(nals)
        keyframe = packet.is_keyframe or any(
            is_keyframe_nal(nal_type(n, self.codec), self.codec) for n in nals
        )
        pts = self._timeline.restore(packet.pts if packet.pts is not None else 0)
        if self.settings.bframes == 0 or packet.dts is None:
            dts = pts
        else:
            dts = min(packet.dts, pts)
        return EncodedPacket(
            data=join_length_prefixed(nals, NAL_LENGTH_SIZE),
            pts=pts,
            dts=dts,
            time_base=self.settings.time_base,
            is_keyframe=keyframe,
        )


def _settings_for_probe(codec: Codec) -> EncoderSettings:
    return EncoderSettings(codec, 320, 240, Fraction(30), 300_000, 30)


@cache
def probe_encoders(codec: Codec) -> tuple[str, ...]:
    """The ROI-capable encoders for ``codec`` that open and encode a frame here, best first.

    QSV needs Intel hardware and a driver; where there is none, opening fails and it is
    simply left out. Cached: the answer does not change while the process runs.
    """
    working = []
    for name in AUTO_ORDER[codec]:
        try:
            encoder = RoiEncoder(name, _settings_for_probe(codec))
            frame = av.VideoFrame(320, 240, "yuv420p")
            frame.pts = 0
            encoder.encode(frame)
            encoder.flush()
        except (EncoderError, av.FFmpegError, OSError) as exc:
            log.info("encoder %s unavailable: %s", name, exc)
            continue
        working.append(name)
    return tuple(working)


def resolve_encoder(codec: Codec, encoder_name: str = "auto") -> str:
    """The FFmpeg encoder to use for ``codec``: ``auto`` probes; a name must fit the codec."""
    if encoder_name == "auto":
        working = probe_encoders(codec)
        if not working:
            raise EncoderError(f"no ROI-capable {codec} encoder opens on this machine")
        return working[0]
    known = ROI_ENCODERS.get(encoder_name)
    if known is not None and known != codec:
        raise EncoderError(f"encoder {encoder_name!r} produces {known}, not {codec}")
    return encoder_name


def open_encoder(
    codec: Codec,
    width: int,
    height: int,
    fps: Fraction,
    bitrate_bps: int,
    gop_frames: int,
    encoder_name: str = "auto",
    bframes: int = 0,
    *,
    preset: str | None = None,
    aq_mode: int = 1,
    aq_strength: float = 1.0,
    vbv_seconds: float = 1.0,
    threads: int = 0,
    time_base: Fraction = Fraction(1, 1000),
    nvenc_library_dir: Path | None = None,
) -> BaseRoiEncoder:
    """Opens an ROI encoder (``encoder_name`` ``auto``: NVENC when a session opens, else the
    first FFmpeg encoder that opens here).

    ``h264_nvenc``/``hevc_nvenc`` mean "NVENC": the one for ``codec`` is opened. When NVENC
    cannot open, the CPU encoder (or, for ``auto``, the probed one) is returned with
    ``fallback_reason`` set. Raises EncoderError for bad settings, an
    unknown encoder or an FFmpeg one that fails to open.
    """
    settings = EncoderSettings(
        codec=codec,
        width=width,
        height=height,
        fps=Fraction(fps),
        bitrate_bps=bitrate_bps,
        gop_frames=gop_frames,
        bframes=bframes,
        preset=preset,
        aq_mode=aq_mode,
        aq_strength=aq_strength,
        vbv_seconds=vbv_seconds,
        threads=threads,
        time_base=time_base,
    )
    settings.validate()
    if encoder_name != "auto" and encoder_name not in NVENC_ENCODERS:
        return RoiEncoder(resolve_encoder(codec, encoder_name), settings)

    nvenc_name = f"{codec}_nvenc"
    # No B-frames on NVENC; a preset meant for x264/x265 leaves NVENC on its default.
    preset = settings.preset if settings.preset in NV_ENC_PRESET_GUIDS else None
    try:
        return NvencEncoder(
            nvenc_name, replace(settings, bframes=0, preset=preset), nvenc_library_dir
        )
    except EncoderError as exc:
        reason: str | None = str(exc)
        if encoder_name == "auto" and isinstance(exc.__cause__, DriverMissingError):
            # No NVIDIA driver at all: `auto` simply means the CPU here, not a fallback.
            reason = None
    # The caller logs the encoder it got, with this reason (one line per stream).
    fallback = CPU_ENCODERS[codec] if encoder_name != "auto" else resolve_encoder(codec)
    encoder = RoiEncoder(fallback, settings)
    encoder.fallback_reason = reason
    return encoder
