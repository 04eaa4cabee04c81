"""H.264/H.265 NAL units: Annex B and length-prefixed (AVCC/HVCC) framing, emulation
prevention, SPS fields, and the avcC/hvcC decoder configuration records of FLV/MP4.

Pure functions on bytes; nothing here does I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Codec = Literal["h264", "hevc"]

H264_NAL_SLICE = 1
H264_NAL_IDR = 5
H264_NAL_SEI = 6
H264_NAL_SPS = 7
H264_NAL_PPS = 8
H264_NAL_AUD = 9

HEVC_NAL_VPS = 32
HEVC_NAL_SPS = 33
HEVC_NAL_PPS = 34
HEVC_NAL_AUD = 35
HEVC_NAL_PREFIX_SEI = 39
HEVC_NAL_SUFFIX_SEI = 40

# H.264 profiles whose SPS carries chroma format and bit depth (and whose avcC has them too).
_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


class NalError(ValueError):
    """Bytes that do not hold the NAL structure they claim to."""


def _codec(codec: str) -> Codec:
    if codec not in ("h264", "hevc"):
        raise ValueError(f"codec must be 'h264' or 'hevc', not {codec!r}")
    return codec  # type: ignore[return-value]


# --- NAL header -----------------------------------------------------------------------------


def nal_type(nal: bytes, codec: Codec) -> int:
    if not nal:
        raise NalError("empty NAL unit")
    if _codec(codec) == "h264":
        return nal[0] & 0x1F
    return (nal[0] >> 1) & 0x3F


def nal_header_size(codec: Codec) -> int:
    return 1 if _codec(codec) == "h264" else 2


def is_vcl(kind: int, codec: Codec) -> bool:
    """Whether a NAL type carries slice data (the picture itself)."""
    if _codec(codec) == "h264":
        return 1 <= kind <= 5
    return kind <= 31


def is_keyframe_nal(kind: int, codec: Codec) -> bool:
    """IDR (H.264) or IRAP (H.265: BLA, IDR, CRA) slice."""
    if _codec(codec) == "h264":
        return kind == H264_NAL_IDR
    return 16 <= kind <= 23


# --- framing --------------------------------------------------------------------------------


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes), start codes removed.

    Trailing zero bytes of a unit belong to the byte stream, not the NAL, and are dropped.
    """
    nals = []
    pos = data.find(b"\x00\x00\x01")
    if pos < 0:
        return [data.rstrip(b"\x00")] if data.strip(b"\x00") else []
    while pos >= 0:
        start = pos + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt < 0 else nxt
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        pos = nxt
    return nals


def join_annexb(nals: Iterable[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of AVCC/HVCC data (each unit preceded by its big-endian length)."""
    if length_size not in (1, 2, 3, 4):
        raise ValueError(f"length_size must be 1..4, not {length_size}")
    nals = []
    pos = 0
    end = len(data)
    while pos < end:
        if pos + length_size > end:
            raise NalError(f"truncated NAL length at offset {pos}")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if pos + size > end:
            raise NalError(f"NAL unit of {size} bytes at offset {pos} runs past the data")
        nals.append(data[pos : pos + size])
        pos += size
    return nals


def join_length_prefixed(nals: Iterable[bytes], length_size: int = 4) -> bytes:
    if length_size not in (1, 2, 3, 4):
        raise ValueError(f"length_size must be 1..4, not {length_size}")
    limit = 1 << (8 * length_size)
    parts = []
    for nal in nals:
        if len(nal) >= limit:
            raise NalError(f"NAL unit of {len(nal)} bytes does not fit a {length_size}-byte length")
        parts.append(len(nal).to_bytes(length_size, "big"))
        parts.append(nal)
    return b"".join(parts)


def annexb_to_length_prefixed(data: bytes, length_size: int = 4) -> bytes:
    return join_length_prefixed(split_annexb(data), length_size)


def length_prefixed_to_annexb(data: bytes, length_size: int = 4) -> bytes:
    return join_annexb(split_length_prefixed(data, length_size))


# --- emulation prevention -------------------------------------------------------------------


def escape_rbsp(rbsp: bytes) -> bytes:
    """Adds emulation-prevention bytes: no 00 00 0x (x <= 3) may appear inside a NAL unit."""
    if b"\x00\x00" not in rbsp:
        return rbsp
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def unescape_rbsp(ebsp: bytes) -> bytes:
    """Removes emulation-prevention bytes (the 03 of each 00 00 03)."""
    if b"\x00\x00\x03" not in ebsp:
        return ebsp
    out = bytearray()
    zeros = 0
    for byte in ebsp:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


# --- bit reading (SPS) ----------------------------------------------------------------------


class BitReader:
    """MSB-first bit reader with Exp-Golomb codes, over an RBSP (already unescaped)."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            byte_index = self._pos >> 3
            if byte_index >= len(self._data):
                raise NalError("read past the end of the NAL unit")
            value = (value << 1) | ((self._data[byte_index] >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def flag(self) -> bool:
        return bool(self.bits(1))

    def ue(self) -> int:
        zeros = 0
        while self.bits(1) == 0:
            zeros += 1
            if zeros > 31:
                raise NalError("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """What the relay needs from a sequence parameter set."""

    width: int
    height: int
    profile_idc: int
    level_idc: int
    chroma_format_idc: int = 1
    bit_depth_luma: int = 8
    bit_depth_chroma: int = 8
    # H.264: the constraint-flags byte. H.265: the 12 bytes of general profile/tier/level.
    profile_bytes: bytes = b""
    max_sub_layers: int = 1
    temporal_id_nesting: bool = True


def _checked_size(width: int, height: int) -> tuple[int, int]:
    # Cropping (or a conformance window) larger than the coded picture leaves nothing.
    if width <= 0 or height <= 0:
        raise NalError(f"SPS describes a {width}x{height} picture")
    return width, height


def _skip_h264_scaling_list(reader: BitReader, size: int) -> None:
    last = 8
    nxt = 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + reader.se() + 256) % 256
        last = nxt if nxt != 0 else last


def parse_h264_sps(nal: bytes) -> SpsInfo:
    """Width/height (after cropping), profile, level, chroma format and bit depth."""
    if nal_type(nal, "h264") != H264_NAL_SPS:
        raise NalError("not an H.264 SPS")
    rbsp = unescape_rbsp(nal[1:])
    reader = BitReader(rbsp)
    profile_idc = reader.bits(8)
    constraints = reader.bits(8)
    level_idc = reader.bits(8)
    reader.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    bit_depth_luma = bit_depth_chroma = 8
    separate_colour_plane = False
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = reader.ue()
        if chroma_format_idc == 3:
            separate_colour_plane = reader.flag()
        bit_depth_luma = reader.ue() + 8
        bit_depth_chroma = reader.ue() + 8
        reader.flag()  # qpprime_y_zero_transform_bypass_flag
        if reader.flag():  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if reader.flag():
                    _skip_h264_scaling_list(reader, 16 if index < 6 else 64)
    reader.ue()  # log2_max_frame_num_minus4
    poc_type = reader.ue()
    if poc_type == 0:
        reader.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        reader.flag()
        reader.se()
        reader.se()
        for _ in range(reader.ue()):
            reader.se()
    reader.ue()  # max_num_ref_frames
    reader.flag()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = reader.ue() + 1
    height_units = reader.ue() + 1
    frame_mbs_only = reader.flag()
    if not frame_mbs_only:
        reader.flag()  # mb_adaptive_frame_field_flag
    reader.flag()  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = height_units * 16 * (1 if frame_mbs_only else 2)
    if reader.flag():  # frame_cropping_flag
        crop_left, crop_right, crop_top, crop_bottom = (reader.ue() for _ in range(4))
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        sub_width = 2 if chroma_array_type in (1, 2) else 1
        sub_height = 2 if chroma_array_type == 1 else 1
        crop_x = sub_width if chroma_array_type else 1
        crop_y = (sub_height if chroma_array_type else 1) * (1 if frame_mbs_only else 2)
        width -= crop_x * (crop_left + crop_right)
        height -= crop_y * (crop_top + crop_bottom)
    width, height = _checked_size(width, height)
    return SpsInfo(
        width=width,
        height=height,
        profile_idc=profile_idc,
        level_idc=level_idc,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        profile_bytes=bytes([constraints]),
    )


def parse_h265_sps(nal: bytes) -> SpsInfo:
    """Width/height (after the conformance window), general profile/tier/level, chroma
    format, bit depth and sub-layer count."""
    if nal_type(nal, "hevc") != HEVC_NAL_SPS:
        raise NalError("not an H.265 SPS")
    rbsp = unescape_rbsp(nal[2:])
    reader = BitReader(rbsp)
    reader.bits(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = reader.bits(3)
    temporal_id_nesting = reader.flag()
    # profile_tier_level(1, max_sub_layers_minus1): the general part is 12 whole bytes.
    general = bytes(reader.bits(8) for _ in range(12))
    sub_profile_present = []
    sub_level_present = []
    for _ in range(max_sub_layers_minus1):
        sub_profile_present.append(reader.flag())
        sub_level_present.append(reader.flag())
    if max_sub_layers_minus1 > 0:
        reader.bits(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in zip(sub_profile_present, sub_level_present, strict=True):
        if profile_present:
            reader.bits(88)
        if level_present:
            reader.bits(8)
    reader.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = reader.ue()
    separate_colour_plane = chroma_format_idc == 3 and reader.flag()
    width = reader.ue()
    height = reader.ue()
    if reader.flag():  # conformance_window_flag
        left, right, top, bottom = (reader.ue() for _ in range(4))
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        sub_width = 2 if chroma_array_type in (1, 2) else 1
        sub_height = 2 if chroma_array_type == 1 else 1
        width -= sub_width * (left + right)
        height -= sub_height * (top + bottom)
    bit_depth_luma = reader.ue() + 8
    bit_depth_chroma = reader.ue() + 8
    width, height = _checked_size(width, height)
    return SpsInfo(
        width=width,
        height=height,
        profile_idc=general[0] & 0x1F,
        level_idc=general[11],
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        profile_bytes=general,
        max_sub_layers=max_sub_layers_minus1 + 1,
        temporal_id_nesting=temporal_id_nesting,
    )


def parse_sps(nal: bytes, codec: Codec) -> SpsInfo:
    return parse_h264_sps(nal) if _codec(codec) == "h264" else parse_h265_sps(nal)


# --- decoder configuration records (avcC / hvcC) --------------------------------------------


@dataclass(frozen=True, slots=True)
class DecoderConfig:
    """An avcC or hvcC record: its NAL length size and parameter sets (VPS only for H.265)."""

    codec: Codec
    length_size: int
    vps: list[bytes] = field(default_factory=list)
    sps: list[bytes] = field(default_factory=list)
    pps: list[bytes] = field(default_factory=list)
    other: list[bytes] = field(default_factory=list)  # e.g. SEI arrays of an hvcC

    def sps_info(self) -> SpsInfo:
        if not self.sps:
            raise NalError("decoder configuration has no SPS")
        return parse_sps(self.sps[0], self.codec)

    def parameter_sets(self) -> list[bytes]:
        """VPS, SPS and PPS in decoding order (to put in front of a keyframe)."""
        return [*self.vps, *self.sps, *self.pps]


def build_avcc(sps: list[bytes], pps: list[bytes], length_size: int = 4) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) from SPS/PPS NAL units."""
    if not sps or not pps:
        raise NalError("an avcC record needs at least one SPS and one PPS")
    info = parse_h264_sps(sps[0])
    out = bytearray([1, sps[0][1], sps[0][2], sps[0][3], 0xFC | (length_size - 1), 0xE0 | len(sps)])
    for nal in sps:
        out += struct.pack(">H", len(nal)) + nal
    out.append(len(pps))
    for nal in pps:
        out += struct.pack(">H", len(nal)) + nal
    if info.profile_idc in _H264_HIGH_PROFILES:
        out += bytes(
            [
                0xFC | info.chroma_format_idc,
                0xF8 | (info.bit_depth_luma - 8),
                0xF8 | (info.bit_depth_chroma - 8),
                0,  # numOfSequenceParameterSetExt
            ]
        )
    return bytes(out)


def build_hvcc(vps: list[bytes], sps: list[bytes], pps: list[bytes], length_size: int = 4) -> bytes:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1) from VPS/SPS/PPS NAL units."""
    if not vps or not sps or not pps:
        raise NalError("an hvcC record needs at least one VPS, SPS and PPS")
    info = parse_h265_sps(sps[0])
    out = bytearray([1])
    out += info.profile_bytes  # profile space/tier/idc, compatibility, constraints, level
    out += struct.pack(">H", 0xF000)  # min_spatial_segmentation_idc unknown (0)
    out.append(0xFC)  # parallelismType unknown
    out.append(0xFC | info.chroma_format_idc)
    out.append(0xF8 | (info.bit_depth_luma - 8))
    out.append(0xF8 | (info.bit_depth_chroma - 8))
    out += struct.pack(">H", 0)  # avgFrameRate unknown
    out.append(
        ((info.max_sub_layers & 7) << 3)
        | (int(info.temporal_id_nesting) << 2)
        | (length_size - 1)  # constantFrameRate 0
    )
    arrays = [(HEVC_NAL_VPS, vps), (HEVC_NAL_SPS, sps), (HEVC_NAL_PPS, pps)]
    out.append(len(arrays))
    for kind, nals in arrays:
        out.append(0x80 | kind)  # array_completeness: the record holds all of them
        out += struct.pack(">H", len(nals))
        for nal in nals:
            out += struct.pack(">H", len(nal)) + nal
    return bytes(out)


def _read_sized_nal(record: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """A NAL unit with a 16-bit length at ``pos``; returns it and the position after it."""
    if pos + 2 > len(record):
        raise NalError(f"truncated {what} record")
    (size,) = struct.unpack_from(">H", record, pos)
    nal = record[pos + 2 : pos + 2 + size]
    if size == 0 or len(nal) != size:
        raise NalError(f"truncated {what} record")
    return nal, pos + 2 + size


def parse_avcc(record: bytes) -> DecoderConfig:
    if len(record) < 7:
        raise NalError("truncated avcC record")
    if record[0] != 1:
        raise NalError(f"avcC configurationVersion {record[0]} is not 1")
    length_size = (record[4] & 3) + 1
    pos = 6
    sps = []
    for _ in range(record[5] & 0x1F):
        nal, pos = _read_sized_nal(record, pos, "avcC")
        sps.append(nal)
    if pos >= len(record):
        raise NalError("truncated avcC record")
    count = record[pos]
    pos += 1
    pps = []
    for _ in range(count):
        nal, pos = _read_sized_nal(record, pos, "avcC")
        pps.append(nal)
    return DecoderConfig("h264", length_size, sps=sps, pps=pps)


def parse_hvcc(record: bytes) -> DecoderConfig:
    if len(record) < 23:
        raise NalError("truncated hvcC record")
    if record[0] != 1:
        raise NalError(f"hvcC configurationVersion {record[0]} is not 1")
    config = DecoderConfig("hevc", (record[21] & 3) + 1)
    by_kind = {HEVC_NAL_VPS: config.vps, HEVC_NAL_SPS: config.sps, HEVC_NAL_PPS: config.pps}
    pos = 23
    for _ in range(record[22]):
        if pos + 3 > len(record):
            raise NalError("truncated hvcC record")
        target = by_kind.get(record[pos] & 0x3F, config.other)
        (count,) = struct.unpack_from(">H", record, pos + 1)
        pos += 3
        for _ in range(count):
            nal, pos = _read_sized_nal(record, pos, "hvcC")
            target.append(nal)
    return config


def parse_decoder_config(record: bytes, codec: Codec) -> DecoderConfig:
    return parse_avcc(record) if _codec(codec) == "h264" else parse_hvcc(record)


def decoder_config_from_nals(nals: Iterable[bytes], codec: Codec, length_size: int = 4) -> bytes:
    """avcC/hvcC record from the parameter sets among ``nals`` (other NAL types ignored)."""
    codec = _codec(codec)
    vps: list[bytes] = []
    sps: list[bytes] = []
    pps: list[bytes] = []
    if codec == "h264":
        kinds = {H264_NAL_SPS: sps, H264_NAL_PPS: pps}
    else:
        kinds = {HEVC_NAL_VPS: vps, HEVC_NAL_SPS: sps, HEVC_NAL_PPS: pps}
    for nal in nals:
        target = kinds.get(nal_type(nal, codec))
        if target is not None and nal not in target:
            target.append(nal)
    if codec == "h264":
        return build_avcc(sps, pps, length_size)
    return build_hvcc(vps, sps, pps, length_size)
