"""FLV video frames to self-contained Annex-B access units (for MPEG-TS and RTP), sans-IO.

MPEG-TS (HLS) and RTP (WebRTC) carry H.264/H.265 as Annex-B with the parameter sets
in-band, while FLV carries them once, in the sequence header. Each FLV frame therefore
becomes an access unit of its own: an access unit delimiter first (MPEG-TS and Apple's HLS
rules want one), the parameter sets before every keyframe (a player joining at any segment,
or a WebRTC receiver starting at a keyframe, can decode at once), then the frame's NAL
units unchanged, the ROI SEI included. NAL parsing itself is app/media/nal.py's.
"""

from __future__ import annotations

from app.media.flv import FlvError, VideoPacketType, parse_video_tag
from app.media.nal import (
    H264_NAL_AUD,
    H264_NAL_PPS,
    H264_NAL_SPS,
    HEVC_NAL_AUD,
    HEVC_NAL_PPS,
    HEVC_NAL_SPS,
    HEVC_NAL_VPS,
    DecoderConfig,
    NalError,
    join_annexb,
    nal_type,
    parse_decoder_config,
    split_length_prefixed,
)

# FLV FourCC -> the codec names of app/media/nal.py.
NAL_CODECS = {"avc1": "h264", "hvc1": "hevc"}

# Access unit delimiters with primary_pic_type "any", so they fit every frame.
_AUD = {"h264": b"\x09\xf0", "hevc": b"\x46\x01\x50"}
_AUD_TYPE = {"h264": H264_NAL_AUD, "hevc": HEVC_NAL_AUD}
_PARAMETER_SET_TYPES = {
    "h264": (H264_NAL_SPS, H264_NAL_PPS),
    "hevc": (HEVC_NAL_VPS, HEVC_NAL_SPS, HEVC_NAL_PPS),
}


class VideoConfigError(FlvError):
    """A video sequence header or frame that cannot become Annex-B here."""


def parse_video_config(payload: bytes) -> DecoderConfig:
    """The avcC/hvcC configuration of an FLV video sequence-header tag body.

    Raises VideoConfigError for codecs other than H.264/H.265 or a malformed record.
    """
    tag = parse_video_tag(payload)
    if tag.packet_type is not VideoPacketType.SEQUENCE_START:
        raise VideoConfigError("not a video sequence header")
    codec = NAL_CODECS.get(tag.codec)
    if codec is None:
        raise VideoConfigError(f"video codec {tag.codec} is not H.264 or H.265")
    try:
        return parse_decoder_config(payload[tag.data_offset :], codec)  # type: ignore[arg-type]
    except NalError as exc:
        raise VideoConfigError(f"bad {tag.codec} sequence header: {exc}") from exc


def frame_nal_units(config: DecoderConfig, payload: bytes) -> list[bytes]:
    """The NAL units of one FLV coded-frame tag body (empty units skipped)."""
    tag = parse_video_tag(payload)
    try:
        nals = split_length_prefixed(payload[tag.data_offset :], config.length_size)
    except NalError as exc:
        raise VideoConfigError(f"bad video frame: {exc}") from exc
    return [nal for nal in nals if nal]


def access_unit(config: DecoderConfig, nals: list[bytes], keyframe: bool) -> bytes:
    """One Annex-B access unit: AUD, parameter sets before a keyframe, the frame's NAL units.

    Delimiters already in the frame are dropped (a second one would split the frame in
    two); the parameter sets are not repeated when the frame already carries them.
    """
    codec = config.codec
    aud_type = _AUD_TYPE[codec]
    body = [nal for nal in nals if nal_type(nal, codec) != aud_type]
    units = [_AUD[codec]]
    set_types = _PARAMETER_SET_TYPES[codec]
    if keyframe and not any(nal_type(nal, codec) in set_types for nal in body):
        units.extend(config.parameter_sets())
    units.extend(body)
    return join_annexb(units)
