"""SEI user_data_unregistered messages carrying the per-frame ROI JSON to players.

Each encoded frame gets one SEI NAL unit (H.264 type 6, H.265 prefix SEI type 39) holding a
user_data_unregistered message (payload type 5): our fixed 16-byte UUID, then the compact
ROI JSON of docs/roi-rules.md in UTF-8. It goes right before the frame's first slice NAL, where
SEI belongs in an access unit, so it survives FLV, MPEG-TS and MP4 remuxing; FFmpeg decoders
hand it to applications as ``SEI_UNREGISTERED`` frame side data (UUID + payload).

Pure functions on bytes, apart from :func:`roi_json_from_frame`, which reads a decoded
PyAV frame's side data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from app.media.nal import (
    H264_NAL_SEI,
    HEVC_NAL_PREFIX_SEI,
    HEVC_NAL_SUFFIX_SEI,
    Codec,
    NalError,
    escape_rbsp,
    is_vcl,
    join_length_prefixed,
    nal_type,
    split_length_prefixed,
    unescape_rbsp,
)

if TYPE_CHECKING:
    import av
    from av.sidedata.sidedata import SideDataContainer

ROI_SEI_UUID = uuid.UUID("a35c7405-e906-4ec6-89e0-30ff9368d21e")
SEI_USER_DATA_UNREGISTERED = 5


def _ff_coded(value: int) -> bytes:
    """SEI payload type/size coding: 0xFF per 255, then the remainder."""
    return b"\xff" * (value // 255) + bytes([value % 255])


def build_sei_nal(messages: list[tuple[int, bytes]], codec: Codec) -> bytes:
    """One SEI NAL unit (header, escaped sei_messages, rbsp trailing bits)."""
    rbsp = b"".join(
        _ff_coded(kind) + _ff_coded(len(payload)) + payload for kind, payload in messages
    )
    rbsp += b"\x80"  # rbsp_stop_one_bit and alignment
    if codec == "h264":
        header = bytes([H264_NAL_SEI])  # nal_ref_idc 0: SEI is never a reference
    elif codec == "hevc":
        header = bytes([HEVC_NAL_PREFIX_SEI << 1, 1])  # layer 0, TemporalId 0
    else:
        raise ValueError(f"codec must be 'h264' or 'hevc', not {codec!r}")
    return header + escape_rbsp(rbsp)


def build_user_data_unregistered(
    payload: bytes, codec: Codec, uuid_bytes: bytes = ROI_SEI_UUID.bytes
) -> bytes:
    if len(uuid_bytes) != 16:
        raise ValueError("user_data_unregistered needs a 16-byte UUID")
    return build_sei_nal([(SEI_USER_DATA_UNREGISTERED, uuid_bytes + payload)], codec)


def build_roi_sei(roi_json: str, codec: Codec) -> bytes:
    """The SEI NAL unit carrying one frame's ROI JSON."""
    return build_user_data_unregistered(roi_json.encode("utf-8"), codec)


def is_sei_nal(nal: bytes, codec: Codec) -> bool:
    kind = nal_type(nal, codec)
    if codec == "h264":
        return kind == H264_NAL_SEI
    return kind in (HEVC_NAL_PREFIX_SEI, HEVC_NAL_SUFFIX_SEI)


def parse_sei_messages(nal: bytes, codec: Codec) -> list[tuple[int, bytes]]:
    """The (payload type, payload) messages of an SEI NAL unit; raises NalError if torn."""
    if not is_sei_nal(nal, codec):
        raise NalError("not an SEI NAL unit")
    rbsp = unescape_rbsp(nal[1 if codec == "h264" else 2 :])
    messages = []
    pos = 0
    # more_rbsp_data(): anything but the final 0x80 (stop bit) left means another message.
    while pos < len(rbsp) and rbsp[pos:] != b"\x80":
        values = []
        for _ in range(2):  # payload type, then payload size
            value = 0
            while pos < len(rbsp) and rbsp[pos] == 0xFF:
                value += 255
                pos += 1
            if pos >= len(rbsp):
                raise NalError("SEI message header runs past the NAL unit")
            value += rbsp[pos]
            pos += 1
            values.append(value)
        kind, size = values
        if pos + size > len(rbsp):
            raise NalError(f"SEI payload of {size} bytes runs past the NAL unit")
        messages.append((kind, rbsp[pos : pos + size]))
        pos += size
    return messages


def insert_sei(avcc_frame: bytes, codec: Codec, sei_nal: bytes, length_size: int = 4) -> bytes:
    """``avcc_frame`` (length-prefixed NAL units of one access unit) with ``sei_nal`` put
    before its first slice NAL. A frame without a slice gets the SEI at the end."""
    nals = split_length_prefixed(avcc_frame, length_size)
    index = next(
        (i for i, nal in enumerate(nals) if nal and is_vcl(nal_type(nal, codec), codec)),
        len(nals),
    )
    nals.insert(index, sei_nal)
    return join_length_prefixed(nals, length_size)


def add_roi_sei(avcc_frame: bytes, codec: Codec, roi_json: str, length_size: int = 4) -> bytes:
    """``avcc_frame`` carrying ``roi_json`` in an SEI before its first slice."""
    return insert_sei(avcc_frame, codec, build_roi_sei(roi_json, codec), length_size)


def _user_data_payloads(nals: list[bytes], codec: Codec) -> Iterator[bytes]:
    for nal in nals:
        if not nal or not is_sei_nal(nal, codec):
            continue
        try:
            messages = parse_sei_messages(nal, codec)
        except NalError:
            continue  # a torn SEI from some other source is not ours to judge
        for kind, payload in messages:
            if kind == SEI_USER_DATA_UNREGISTERED:
                yield payload


def roi_json_from_user_data(user_data: bytes) -> str | None:
    """The ROI JSON of a user_data_unregistered payload (UUID + data), None if not ours."""
    if len(user_data) < 16 or user_data[:16] != ROI_SEI_UUID.bytes:
        return None
    return user_data[16:].decode("utf-8", errors="replace")


def extract_roi_sei(avcc_frame: bytes, codec: Codec, length_size: int = 4) -> str | None:
    """The ROI JSON carried by a length-prefixed frame, or None when it has none."""
    nals = split_length_prefixed(avcc_frame, length_size)
    for payload in _user_data_payloads(nals, codec):
        text = roi_json_from_user_data(payload)
        if text is not None:
            return text
    return None


def roi_json_from_frame(frame: av.VideoFrame) -> str | None:
    """The ROI JSON of a decoded frame (FFmpeg's SEI_UNREGISTERED side data), or None."""
    # PyAV's stubs declare Frame.side_data as a TypedDict; it is a SideDataContainer.
    container = cast("SideDataContainer", frame.side_data)
    for side_data in container:
        if side_data.type.name == "SEI_UNREGISTERED":
            text = roi_json_from_user_data(bytes(side_data))
            if text is not None:
                return text
    return None
