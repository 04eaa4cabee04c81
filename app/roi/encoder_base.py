"""What every ROI encoder backend shares (app/roi/encode.py's FFmpeg encoders and
app/roi/nvenc's NVENC sessions): the settings, the packet handed on, the error, and the base
class that keeps timestamps and scales regions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import av

from app.media.nal import (
    Codec,
    NalError,
    decoder_config_from_nals,
    join_length_prefixed,
    split_annexb,
)
from app.roi.regions import Region, effective_regions

NAL_LENGTH_SIZE = 4


class EncoderError(RuntimeError):
    """An encoder that cannot be opened or fed (unknown name, codec mismatch, FFmpeg error)."""


@dataclass(frozen=True, slots=True)
class EncoderSettings:
    """Everything that decides how a stream is encoded (one per opened encoder)."""

    codec: Codec
    width: int
    height: int
    fps: Fraction
    bitrate_bps: int
    gop_frames: int
    bframes: int = 0
    preset: str | None = None  # None: DEFAULT_PRESETS for the backend
    aq_mode: int = 1  # never 0: x264/x265 ignore ROI without adaptive quantisation
    aq_strength: float = 1.0
    vbv_seconds: float = 1.0
    threads: int = 0  # 0: the encoder's own choice
    time_base: Fraction = Fraction(1, 1000)  # of pts/dts in and out (FLV milliseconds)

    def validate(self) -> None:
        if self.codec not in ("h264", "hevc"):
            raise EncoderError(f"codec must be 'h264' or 'hevc', not {self.codec!r}")
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise EncoderError(f"picture size {self.width}x{self.height} must be even and > 0")
        if self.fps <= 0 or self.bitrate_bps <= 0 or self.gop_frames <= 0:
            raise EncoderError("fps, bitrate and GOP must be positive")
        if self.bframes < 0 or self.aq_mode <= 0 or self.vbv_seconds <= 0:
            raise EncoderError("bframes >= 0, aq_mode >= 1 and vbv_seconds > 0 are required")


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded frame: length-prefixed (AVCC/HVCC, 4-byte) NAL units, ready for an FLV
    tag after the FLV header; timestamps in ``time_base`` on the publisher's timeline."""

    data: bytes
    pts: int
    dts: int
    time_base: Fraction
    is_keyframe: bool

    def __bytes__(self) -> bytes:
        return self.data

    @property
    def dts_ms(self) -> int:
        return round(self.dts * self.time_base * 1000)

    @property
    def composition_ms(self) -> int:
        """pts - dts in milliseconds (the FLV CompositionTime)."""
        return round((self.pts - self.dts) * self.time_base * 1000)


@dataclass(slots=True)
class Timeline:
    """Keeps encoder input pts strictly increasing while outputs carry the publisher's pts."""

    last_input: int | None = None
    original: dict[int, int] = field(default_factory=dict)

    def admit(self, pts: int) -> int:
        encoder_pts = pts if self.last_input is None else max(pts, self.last_input + 1)
        self.last_input = encoder_pts
        self.original[encoder_pts] = pts
        return encoder_pts

    def restore(self, encoder_pts: int) -> int:
        return self.original.pop(encoder_pts, encoder_pts)


class BaseRoiEncoder:
    """What every ROI encoder backend shares: settings, timestamps, region scaling, the
    sequence header record. Subclasses implement ``encode`` and ``flush``."""

    name: str
    extradata: bytes | None
    # Set when another encoder was asked for and could not open: why this one runs instead.
    fallback_reason: str | None = None

    def __init__(self, name: str, settings: EncoderSettings) -> None:
        settings.validate()
        self.name = name
        self.settings = settings
        self.codec: Codec = settings.codec
        self.roi_supported = True
        self._timeline = Timeline()
        self._next_pts = 0
        self._frame_step = max(1, round(1 / (settings.fps * settings.time_base)))
        self.extradata = None

    @property
    def width(self) -> int:
        return self.settings.width

    @property
    def height(self) -> int:
        return self.settings.height

    @property
    def bitrate(self) -> int:
        """Target bitrate in bit/s."""
        return self.settings.bitrate_bps

    @staticmethod
    def to_length_prefixed(packet: EncodedPacket | av.Packet) -> bytes:
        """The 4-byte length-prefixed NAL units of a packet (ours already are; an FFmpeg
        packet in Annex B is converted)."""
        if isinstance(packet, EncodedPacket):
            return packet.data
        return join_length_prefixed(split_annexb(bytes(packet)), NAL_LENGTH_SIZE)

    def _config_record(self, nals: list[bytes]) -> bytes | None:
        try:
            return decoder_config_from_nals(nals, self.codec, NAL_LENGTH_SIZE)
        except NalError:  # no complete set of parameter sets (yet)
            return None

    def _input_pts(self, frame: av.VideoFrame) -> int:
        time_base = self.settings.time_base
        if frame.pts is None:
            pts = self._next_pts
        elif frame.time_base is not None and frame.time_base != time_base:
            pts = round(frame.pts * frame.time_base / time_base)
        else:
            pts = frame.pts
        self._next_pts = pts + self._frame_step
        return pts

    def _prepare(self, frame: av.VideoFrame, regions: Sequence[Region]) -> list[Region]:
        width, height = self.settings.width, self.settings.height
        if (frame.width, frame.height) != (width, height):
            sx, sy = width / frame.width, height / frame.height
            regions = [
                Region(
                    round(r.top * sy),
                    round(r.left * sx),
                    round(r.bottom * sy),
                    round(r.right * sx),
                    r.qp,
                    r.label,
                    r.score,
                )
                for r in regions
            ]
        return effective_regions(regions, width, height)

    def encode(
        self, frame: av.VideoFrame, regions: Sequence[Region] = (), force_keyframe: bool = False
    ) -> list[EncodedPacket]:
        raise NotImplementedError

    def flush(self) -> list[EncodedPacket]:
        raise NotImplementedError
