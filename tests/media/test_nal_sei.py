"""NAL framing, emulation prevention, SPS/avcC/hvcC and the ROI SEI, checked against
FFmpeg's own encoders, muxers and decoders where they can judge."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.media.nal import (
    NalError,
    annexb_to_length_prefixed,
    build_avcc,
    build_hvcc,
    escape_rbsp,
    is_vcl,
    join_annexb,
    join_length_prefixed,
    length_prefixed_to_annexb,
    nal_type,
    parse_avcc,
    parse_hvcc,
    parse_sps,
    split_annexb,
    split_length_prefixed,
    unescape_rbsp,
)
from app.media.sei import (
    ROI_SEI_UUID,
    SEI_USER_DATA_UNREGISTERED,
    add_roi_sei,
    build_roi_sei,
    build_sei_nal,
    build_user_data_unregistered,
    extract_roi_sei,
    insert_sei,
    parse_sei_messages,
    roi_json_from_frame,
)
from app.roi.encode import open_encoder
from app.roi.regions import Region, roi_json

# --- framing --------------------------------------------------------------------------------


def test_split_annexb_handles_both_start_codes_and_trailing_zeros() -> None:
    stream = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x00\x01\x65\xcc\xdd\x00"
    assert split_annexb(stream) == [b"\x67\xaa", b"\x68\xbb", b"\x65\xcc\xdd"]
    assert split_annexb(b"") == []
    assert split_annexb(b"\x00\x00\x01") == []


def test_length_prefixed_split_and_join() -> None:
    nals = [b"\x67\x01", b"\x68", b"\x65" + bytes(300)]
    for size in (1, 2, 3, 4):
        if size == 1:
            with pytest.raises(NalError, match="does not fit"):
                join_length_prefixed(nals, size)
            continue
        data = join_length_prefixed(nals, size)
        assert split_length_prefixed(data, size) == nals
    with pytest.raises(ValueError, match="length_size"):
        split_length_prefixed(b"", 5)


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00\x00", b"\x00\x00\x00\x05\x65\x01", b"\x00\x00\x00\x01\x65\x00\x00"],
)
def test_torn_length_prefixed_data_raises(data: bytes) -> None:
    with pytest.raises(NalError):
        split_length_prefixed(data)


nal_bodies = st.binary(min_size=1, max_size=64).map(lambda b: escape_rbsp(b) + b"\x80")
nal_units = st.builds(lambda head, body: bytes([head]) + body, st.integers(1, 0x7F), nal_bodies)


@given(st.lists(nal_units, max_size=8))
def test_annexb_and_length_prefixed_convert_both_ways(nals: list[bytes]) -> None:
    avcc = join_length_prefixed(nals)
    assert annexb_to_length_prefixed(length_prefixed_to_annexb(avcc)) == avcc
    assert split_annexb(join_annexb(nals)) == nals


@given(st.binary(max_size=300))
def test_emulation_prevention_round_trips_and_hides_start_codes(rbsp: bytes) -> None:
    escaped = escape_rbsp(rbsp)
    assert unescape_rbsp(escaped) == rbsp
    body = escaped + b"\x80"  # as in a NAL unit: the stop bit ends it
    for forbidden in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02"):
        assert forbidden not in body


def test_emulation_prevention_known_vectors() -> None:
    assert escape_rbsp(b"\x00\x00\x01") == b"\x00\x00\x03\x01"
    assert escape_rbsp(b"\x00\x00\x00\x00") == b"\x00\x00\x03\x00\x00"
    assert escape_rbsp(b"\x00\x00\x00\x00\x00") == b"\x00\x00\x03\x00\x00\x03\x00"
    assert escape_rbsp(b"\x00\x00\x04") == b"\x00\x00\x04"
    assert unescape_rbsp(b"\x00\x00\x03\x03") == b"\x00\x00\x03"


def test_nal_types() -> None:
    assert nal_type(b"\x65", "h264") == 5 and is_vcl(5, "h264") and not is_vcl(6, "h264")
    assert nal_type(b"\x40\x01", "hevc") == 32 and not is_vcl(32, "hevc")
    assert nal_type(b"\x26\x01", "hevc") == 19 and is_vcl(19, "hevc")
    with pytest.raises(NalError):
        nal_type(b"", "h264")


# --- parameter sets against FFmpeg ----------------------------------------------------------


def encoded_stream(
    codec: str, width: int, height: int, params: str = ""
) -> tuple[bytes, list[bytes]]:
    """FFmpeg's own avcC/hvcC (from its MP4 muxer) and the Annex B parameter sets."""
    name = "libx264" if codec == "h264" else "libx265"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream(name, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        options = {"preset": "ultrafast"}
        if codec == "hevc":
            params = ":".join(p for p in (params, "log-level=error") if p)
        if params:
            options[f"{name[3:]}-params"] = params
        stream.codec_context.options = options
        stream.codec_context.max_b_frames = 0
        ramp = np.add.outer(np.arange(height * 3 // 2), np.arange(width)) % 256
        frame = av.VideoFrame.from_ndarray(ramp.astype(np.uint8), format="yuv420p")
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        annexb = stream.codec_context.extradata
    with av.open(io.BytesIO(buffer.getvalue())) as container:
        record = container.streams.video[0].codec_context.extradata
    assert record is not None and annexb is not None
    # The MP4 muxer asks for a global header: x264/x265 put Annex B parameter sets there.
    assert annexb.startswith(b"\x00\x00")
    nals = split_annexb(annexb)
    return record, nals


@pytest.mark.parametrize(
    ("width", "height", "params"),
    [(1280, 720, ""), (1920, 1080, ""), (426, 240, ""), (176, 144, "cqm=jvt")],
)
def test_h264_sps_and_avcc_match_ffmpeg(width: int, height: int, params: str) -> None:
    record, nals = encoded_stream("h264", width, height, params)
    ffmpeg = parse_avcc(record)
    info = parse_sps(ffmpeg.sps[0], "h264")
    assert (info.width, info.height) == (width, height)
    assert (info.profile_idc, info.level_idc) == (record[1], record[3])
    ours = build_avcc(ffmpeg.sps, ffmpeg.pps)
    assert ours == record
    sps = [n for n in nals if nal_type(n, "h264") == 7]
    assert sps == ffmpeg.sps


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (1920, 1080), (426, 240)])
def test_h265_sps_and_hvcc_agree_with_ffmpeg(width: int, height: int) -> None:
    record, _ = encoded_stream("hevc", width, height)
    ffmpeg = parse_hvcc(record)
    info = parse_sps(ffmpeg.sps[0], "hevc")
    assert (info.width, info.height) == (width, height)
    assert info.profile_bytes == record[1:13]  # general profile, tier, flags and level
    ours = parse_hvcc(build_hvcc(ffmpeg.vps, ffmpeg.sps, ffmpeg.pps))
    assert (ours.vps, ours.sps, ours.pps) == (ffmpeg.vps, ffmpeg.sps, ffmpeg.pps)
    built = build_hvcc(ffmpeg.vps, ffmpeg.sps, ffmpeg.pps)
    assert built[:13] == record[:13]
    assert built[16:21] == record[16:21]  # chroma format, bit depths, frame rate
    assert built[21] & 0x3F == record[21] & 0x3F  # sub-layers, nesting, length size


@pytest.mark.parametrize(
    "record", [b"", b"\x01", b"\x02" + bytes(30), b"\x01\x64\x00\x1f\xff\xe1\x00\x10\x67"]
)
def test_torn_avcc_raises(record: bytes) -> None:
    with pytest.raises(NalError):
        parse_avcc(record)


def test_torn_hvcc_raises() -> None:
    record, _ = encoded_stream("hevc", 320, 240)
    for cut in (5, 23, 30, len(record) - 1):
        with pytest.raises(NalError):
            parse_hvcc(record[:cut])


# --- SEI ------------------------------------------------------------------------------------


def test_sei_nal_layout() -> None:
    h264 = build_user_data_unregistered(b"{}", "h264")
    assert h264[:3] == bytes([6, SEI_USER_DATA_UNREGISTERED, 18])
    assert h264[3:19] == ROI_SEI_UUID.bytes and h264[19:] == b"{}\x80"
    hevc = build_user_data_unregistered(b"{}", "hevc")
    assert hevc[:2] == b"\x4e\x01" and hevc[2:] == h264[1:]  # prefix SEI, same message


@pytest.mark.parametrize("size", [0, 254, 255, 256, 600])
@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_sei_messages_round_trip_with_long_sizes_and_zero_bytes(codec: str, size: int) -> None:
    payload = bytes(size)  # all zeros: needs emulation prevention all along
    messages = [(5, ROI_SEI_UUID.bytes + payload), (300, b"\x00\x00\x01x")]
    nal = build_sei_nal(messages, codec)  # type: ignore[arg-type]
    assert b"\x00\x00\x00" not in nal and b"\x00\x00\x01" not in nal
    assert parse_sei_messages(nal, codec) == messages  # type: ignore[arg-type]


def test_torn_sei_raises() -> None:
    nal = build_roi_sei('{"a":1}', "h264")
    with pytest.raises(NalError):
        parse_sei_messages(nal[:10], "h264")
    with pytest.raises(NalError):
        parse_sei_messages(b"\x65\x00", "h264")


def avcc(*nals: bytes) -> bytes:
    return join_length_prefixed(list(nals))


@pytest.mark.parametrize(
    ("codec", "before", "slices"),
    [
        (
            "h264",
            [b"\x09\xf0", b"\x67\x64", b"\x68\xee", b"\x06\x05\x01\x00\x80"],
            [b"\x65\x88", b"\x65\x99"],
        ),
        ("h264", [], [b"\x41\x9a"]),
        (
            "hevc",
            [b"\x46\x01\x10", b"\x40\x01\x0c", b"\x42\x01\x01", b"\x44\x01\xc1"],
            [b"\x26\x01\xaf"],
        ),
        ("hevc", [], [b"\x02\x01\xd0"]),
    ],
)
def test_sei_goes_before_the_first_slice(
    codec: str, before: list[bytes], slices: list[bytes]
) -> None:
    sei = build_roi_sei('{"pts":1}', codec)  # type: ignore[arg-type]
    out = insert_sei(avcc(*before, *slices), codec, sei)  # type: ignore[arg-type]
    assert split_length_prefixed(out) == [*before, sei, *slices]
    assert extract_roi_sei(out, codec) == '{"pts":1}'  # type: ignore[arg-type]


def test_sei_without_a_slice_is_appended_and_a_2_byte_length_is_honoured() -> None:
    sei = build_roi_sei("{}", "h264")
    out = insert_sei(join_length_prefixed([b"\x67\x64"], 2), "h264", sei, length_size=2)
    assert split_length_prefixed(out, 2) == [b"\x67\x64", sei]
    assert extract_roi_sei(out, "h264", length_size=2) == "{}"


def test_foreign_user_data_is_not_taken_for_ours() -> None:
    foreign = build_user_data_unregistered(b"x264 - core", "h264", uuid_bytes=bytes(range(16)))
    frame = avcc(foreign, b"\x65\x88")
    assert extract_roi_sei(frame, "h264") is None
    assert extract_roi_sei(add_roi_sei(frame, "h264", "[1]"), "h264") == "[1]"


@given(st.text(max_size=700), st.sampled_from(["h264", "hevc"]))
def test_any_text_round_trips_through_sei(text: str, codec: str) -> None:
    slice_nal = b"\x65\x88" if codec == "h264" else b"\x26\x01\xaf"
    out = add_roi_sei(avcc(slice_nal), codec, text)  # type: ignore[arg-type]
    assert extract_roi_sei(out, codec) == text  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_ffmpeg_decoders_hand_back_the_sei_exactly(codec: str) -> None:
    """A long JSON (size coded with 0xFF bytes) read back as SEI_UNREGISTERED side data."""
    regions = [
        Region(10 * i, 10 * i, 10 * i + 8, 10 * i + 8, -i, "scoreboard-" + "x" * 20, 0.5)
        for i in range(6)
    ]
    text = roi_json(123456, 320, 240, "roiabc", "NBA2K", regions)
    assert len(text) > 255
    encoder = open_encoder(codec, 320, 240, Fraction(25), 300_000, 25)  # type: ignore[arg-type]
    decoder = av.CodecContext.create(codec, "r")
    decoder.extradata = encoder.extradata
    frame = av.VideoFrame.from_ndarray(np.full((360, 320), 100, np.uint8), format="yuv420p")
    frame.pts = 0
    packets = encoder.encode(frame) + encoder.flush()
    decoded = []
    for packet in packets:
        decoded += decoder.decode(av.Packet(add_roi_sei(packet.data, encoder.codec, text)))
    decoded += decoder.decode(None)
    assert [roi_json_from_frame(f) for f in decoded] == [text]
