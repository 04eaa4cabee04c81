"""Proof that ROI regions reach the encoders, and that the encoder interface keeps the
publisher's timestamps, the bitrate and plain encoding when there is nothing to favour.

The QP proof decodes our H.264 output with FFmpeg's ``export_side_data=venc_params``
(PyAV 18 exposes it as ``VideoEncParams.qp_map()``, one QP per macroblock). FFmpeg's HEVC
decoder exports no encoding parameters, so for libx265 the proof is the picture itself:
at the same bitrate the regions come out much closer to the source and the rest a bit
further from it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction

import av
import av.logging
import numpy as np
import pytest
from av.video.frame import PictureType

from app.media.flv import (
    FLV_FILE_HEADER,
    TagType,
    VideoPacketType,
    build_video_tag,
    flv_tag,
)
from app.media.nal import annexb_to_length_prefixed, parse_decoder_config
from app.media.sei import add_roi_sei, roi_json_from_frame
from app.roi.encode import (
    ROI_ENTRY,
    ROI_QOFFSET_DEN,
    RoiEncoder,
    RoiSideData,
    encoder_options,
    open_encoder,
    probe_encoders,
    resolve_encoder,
)
from app.roi.encoder_base import EncodedPacket, EncoderError, EncoderSettings
from app.roi.regions import Region, parse_roi_json, roi_json

W, H = 320, 240
FPS = Fraction(30)
MS = Fraction(1, 1000)
# Fresh noise in every frame: every macroblock is coded (no skips carrying an old QP) and
# adaptive quantisation sees the same activity everywhere, so QP differences come from ROI.
NOISE_BITRATE = 4_000_000


def noise_frames(count: int, seed: int = 0, start_ms: int = 0) -> Iterator[av.VideoFrame]:
    rng = np.random.default_rng(seed)
    for index in range(count):
        yuv = np.full((H * 3 // 2, W), 128, np.uint8)
        yuv[:H] = rng.integers(60, 196, (H, W), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = start_ms + round(index * 1000 / FPS)
        frame.time_base = MS
        yield frame


def scene_frames(count: int) -> Iterator[av.VideoFrame]:
    """A moving, textured picture that compresses like camera footage (for rate tests)."""
    yy, xx = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(7)
    texture = rng.integers(0, 40, (H, W + 4 * count), dtype=np.int16)
    for index in range(count):
        shift = 4 * index
        luma = 100 + 60 * np.sin((xx + shift) / 17.0) * np.cos(yy / 23.0)
        luma = luma + texture[:, shift : shift + W]
        yuv = np.full((H * 3 // 2, W), 128, np.uint8)
        yuv[:H] = np.clip(luma, 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = round(index * 1000 / FPS)
        frame.time_base = MS
        yield frame


def encode_all(
    encoder: RoiEncoder, frames: Iterator[av.VideoFrame], regions: list[Region]
) -> list[EncodedPacket]:
    packets: list[EncodedPacket] = []
    for frame in frames:
        packets += encoder.encode(frame, regions)
    return packets + encoder.flush()


def decoder_for(encoder: RoiEncoder, export_qp: bool = False) -> av.VideoCodecContext:
    decoder = av.CodecContext.create(encoder.codec, "r")
    assert isinstance(decoder, av.VideoCodecContext)
    decoder.extradata = encoder.extradata
    if export_qp:
        decoder.options = {"export_side_data": "venc_params"}
    return decoder


def decode_all(decoder: av.VideoCodecContext, packets: list[EncodedPacket]) -> list[av.VideoFrame]:
    frames = []
    for packet in packets:
        frames += decoder.decode(av.Packet(packet.data))
    return frames + decoder.decode(None)


def qp_maps(encoder: RoiEncoder, packets: list[EncodedPacket]) -> list[np.ndarray]:
    maps = []
    for frame in decode_all(decoder_for(encoder, export_qp=True), packets):
        (params,) = [sd for sd in frame.side_data if sd.type.name == "VIDEO_ENC_PARAMS"]
        maps.append(params.qp_map())
    return maps


def block_mask(regions: list[Region], shape: tuple[int, int]) -> np.ndarray:
    """Macroblocks touched by any region (FFmpeg rounds regions outwards to blocks)."""
    mask = np.zeros(shape, bool)
    for r in regions:
        mask[r.top // 16 : -(-r.bottom // 16), r.left // 16 : -(-r.right // 16)] = True
    return mask


@pytest.fixture
def ffmpeg_log() -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg's warnings and errors during the test."""
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    with av.logging.Capture() as logs:
        yield logs
    av.logging.set_level(previous)


def warnings_in(logs: list[tuple[int, str, str]]) -> list[str]:
    return [message for level, _, message in logs if level <= av.logging.WARNING]


# --- opening --------------------------------------------------------------------------------


def test_probe_finds_the_software_encoders_and_survives_missing_hardware() -> None:
    h264 = probe_encoders("h264")
    hevc = probe_encoders("hevc")
    assert "libx264" in h264 and "libx265" in hevc
    # QSV needs an Intel GPU; it may or may not be here, but probing it must not raise.
    assert set(h264) <= {"h264_qsv", "libx264"} and set(hevc) <= {"hevc_qsv", "libx265"}
    assert resolve_encoder("h264") == h264[0]
    assert resolve_encoder("hevc", "libx265") == "libx265"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codec": "h264", "encoder_name": "libx265"}, "produces hevc"),
        ({"codec": "hevc", "encoder_name": "libx264"}, "produces h264"),
        ({"codec": "h264", "encoder_name": "no_such_encoder"}, "not available"),
        ({"codec": "h264", "width": 321}, "even"),
        ({"codec": "h264", "bitrate_bps": 0}, "positive"),
        ({"codec": "vp9"}, "codec"),
        ({"codec": "h264", "aq_mode": 0}, "aq_mode"),
    ],
)
def test_bad_settings_raise_a_clear_error(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "width": W,
        "height": H,
        "fps": FPS,
        "bitrate_bps": 500_000,
        "gop_frames": 30,
    }
    arguments.update(kwargs)
    with pytest.raises(EncoderError, match=message):
        open_encoder(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(("codec", "name"), [("h264", "libx264"), ("hevc", "libx265")])
def test_extradata_is_the_flv_sequence_header_record(codec: str, name: str) -> None:
    encoder = open_encoder(codec, 640, 360, FPS, 800_000, 60, name)  # type: ignore[arg-type]
    assert encoder.name == name and encoder.roi_supported
    assert encoder.extradata is not None and encoder.extradata[0] == 1
    config = parse_decoder_config(encoder.extradata, codec)  # type: ignore[arg-type]
    info = config.sps_info()
    assert (info.width, info.height) == (640, 360)
    assert config.pps and (codec == "h264" or config.vps)


# --- side data ------------------------------------------------------------------------------


def test_side_data_slots_hold_exact_deltas_in_order_and_empty_slots_after() -> None:
    attach = RoiSideData(W, H, "yuv420p", MS)
    regions = [Region(16, 32, 64, 96, -7), Region(0, 0, 8, 8, 12)]
    for frame_regions in (regions, [], regions[:1]):
        (frame,) = list(noise_frames(1))
        out = attach.attach(frame, frame_regions)
        (side,) = [sd for sd in out.side_data if sd.type.name == "REGIONS_OF_INTEREST"]
        raw = bytes(side)
        entries = [ROI_ENTRY.unpack_from(raw, i * ROI_ENTRY.size) for i in range(6)]
        assert len(raw) == 6 * ROI_ENTRY.size == 168
        expected = [
            (28, r.top, r.bottom, r.left, r.right, r.qp, ROI_QOFFSET_DEN) for r in frame_regions
        ]
        expected += [(28, 0, 0, 0, 0, 0, 1)] * (6 - len(frame_regions))
        assert entries == expected
        assert out.pts == frame.pts


# --- proof that regions reach the encoder ---------------------------------------------------


@pytest.mark.parametrize("delta", [-4, -8, -12])
def test_h264_qp_inside_regions_is_lower_by_delta(delta: int, ffmpeg_log) -> None:
    regions = [Region(64, 96, 160, 224, delta), Region(176, 16, 224, 80, delta)]
    encoder = open_encoder("h264", W, H, FPS, NOISE_BITRATE, 60, "libx264")
    maps = qp_maps(encoder, encode_all(encoder, noise_frames(20), regions))
    mask = block_mask(regions, maps[0].shape)
    differences = [m[mask].mean() - m[~mask].mean() for m in maps]
    assert len(maps) == 20
    assert np.mean(differences) == pytest.approx(delta, abs=0.5)
    assert all(abs(d - delta) <= 1.0 for d in differences)
    assert warnings_in(ffmpeg_log) == []


def test_h264_qp_is_even_without_regions(ffmpeg_log) -> None:
    regions = [Region(64, 96, 160, 224, -8)]
    encoder = open_encoder("h264", W, H, FPS, NOISE_BITRATE, 60, "libx264")
    maps = qp_maps(encoder, encode_all(encoder, noise_frames(20), []))
    mask = block_mask(regions, maps[0].shape)
    assert abs(np.mean([m[mask].mean() - m[~mask].mean() for m in maps])) < 0.3
    assert warnings_in(ffmpeg_log) == []


def test_h264_unaligned_region_covers_every_block_it_touches() -> None:
    region = Region(70, 100, 150, 210, -10)  # blocks rows 4..9, columns 6..13
    encoder = open_encoder("h264", W, H, FPS, NOISE_BITRATE, 60, "libx264")
    maps = qp_maps(encoder, encode_all(encoder, noise_frames(10), [region]))
    mask = block_mask([region], maps[0].shape)
    assert mask.sum() == 6 * 8
    for m in maps:
        assert m[mask].mean() - m[~mask].mean() == pytest.approx(-10, abs=1.0)


def test_h264_first_region_wins_where_regions_overlap() -> None:
    first = Region(64, 64, 128, 128, -12)
    second = Region(96, 96, 160, 160, -4)  # overlaps the bottom-right quarter of `first`
    encoder = open_encoder("h264", W, H, FPS, NOISE_BITRATE, 60, "libx264")
    maps = qp_maps(encoder, encode_all(encoder, noise_frames(10), [first, second]))
    shape = maps[0].shape
    overlap = block_mask([Region(96, 96, 128, 128)], shape)
    only_second = block_mask([second], shape) & ~block_mask([first], shape)
    outside = ~block_mask([first, second], shape)
    for m in maps:
        assert m[overlap].mean() - m[outside].mean() == pytest.approx(-12, abs=1.0)
        assert m[only_second].mean() - m[outside].mean() == pytest.approx(-4, abs=1.0)


def test_ultrafast_preset_keeps_adaptive_quantisation_so_roi_still_applies(ffmpeg_log) -> None:
    # x264's ultrafast preset turns AQ off, which makes it drop ROI with a warning; our
    # options set aq-mode after the preset.
    region = Region(64, 96, 160, 224, -8)
    encoder = open_encoder("h264", W, H, FPS, NOISE_BITRATE, 60, "libx264", preset="ultrafast")
    maps = qp_maps(encoder, encode_all(encoder, noise_frames(10), [region]))
    mask = block_mask([region], maps[0].shape)
    assert np.mean([m[mask].mean() - m[~mask].mean() for m in maps]) == pytest.approx(-8, abs=1)
    assert not any("Adaptive quantization" in w for w in warnings_in(ffmpeg_log))


def test_without_adaptive_quantisation_x264_drops_roi_with_a_warning(ffmpeg_log) -> None:
    """The failure our options prevent, shown on an encoder opened without them."""
    context = av.CodecContext.create("libx264", "w")
    assert isinstance(context, av.VideoCodecContext)
    context.width, context.height, context.pix_fmt = W, H, "yuv420p"
    context.time_base, context.framerate, context.bit_rate = MS, FPS, 500_000
    context.options = {"preset": "ultrafast", "tune": "zerolatency"}  # ultrafast: aq-mode 0
    context.open()
    attach = RoiSideData(W, H, "yuv420p", MS)
    for frame in noise_frames(2):
        context.encode(attach.attach(frame, [Region(0, 0, 32, 32, -5)]))
    assert any("Adaptive quantization must be enabled" in w for w in warnings_in(ffmpeg_log))


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def test_hevc_regions_get_the_quality_at_the_same_bitrate(ffmpeg_log) -> None:
    region = Region(64, 96, 160, 224, -8)
    sources = [f.to_ndarray()[:H] for f in noise_frames(15)]
    results = {}
    for name, regions in (("plain", []), ("roi", [region])):
        encoder = open_encoder("hevc", W, H, FPS, NOISE_BITRATE, 60, "libx265")
        packets = encode_all(encoder, noise_frames(15), regions)
        decoded = [f.to_ndarray()[:H] for f in decode_all(decoder_for(encoder), packets)]
        inside = np.mean(
            [
                psnr(s[64:160, 96:224], d[64:160, 96:224])
                for s, d in zip(sources, decoded, strict=True)
            ]
        )
        whole = np.mean([psnr(s, d) for s, d in zip(sources, decoded, strict=True)])
        results[name] = (inside, whole, sum(len(p.data) for p in packets))
    # Six QP steps halve the quantiser step twice over: several dB inside the region.
    assert results["roi"][0] - results["plain"][0] > 3.0
    assert results["roi"][1] < results["plain"][1] + 0.2  # the bits came from elsewhere
    assert results["roi"][2] == pytest.approx(results["plain"][2], rel=0.1)
    assert warnings_in(ffmpeg_log) == []


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_no_regions_and_delta_zero_are_plain_encoding_byte_for_byte(codec: str) -> None:
    name = "libx264" if codec == "h264" else "libx265"
    outputs = []
    for regions in ([], [Region(64, 96, 160, 224, 0)]):
        encoder = open_encoder(codec, W, H, FPS, 600_000, 30, name, threads=1)  # type: ignore[arg-type]
        outputs.append([p.data for p in encode_all(encoder, scene_frames(12), regions)])
    # The same encoder opened directly, without the ROI filter graph.
    settings = EncoderSettings(codec, W, H, FPS, 600_000, 30, threads=1)  # type: ignore[arg-type]
    plain = av.CodecContext.create(name, "w")
    assert isinstance(plain, av.VideoCodecContext)
    plain.width, plain.height, plain.pix_fmt = W, H, "yuv420p"
    plain.time_base, plain.framerate, plain.bit_rate = MS, FPS, 600_000
    plain.gop_size, plain.max_b_frames, plain.thread_count = 30, 0, 1
    plain.flags |= av.codec.context.Flags.global_header
    plain.options = encoder_options(name, settings)
    plain.open()
    direct = []
    for frame in scene_frames(12):
        direct += [bytes(p) for p in plain.encode(frame)]
    direct += [bytes(p) for p in plain.encode(None)]
    assert outputs[0] == outputs[1]
    assert outputs[0] == [annexb_to_length_prefixed(d) for d in direct]


# --- rate control and timestamps ------------------------------------------------------------


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_bitrate_is_kept_with_and_without_regions(codec: str) -> None:
    bitrate = 400_000
    seconds = 90 / 30
    for regions in ([], [Region(60, 80, 180, 240, -8)]):
        encoder = open_encoder(codec, W, H, FPS, bitrate, 30)  # type: ignore[arg-type]
        packets = encode_all(encoder, scene_frames(90), regions)
        actual = sum(len(p.data) for p in packets) * 8 / seconds
        assert actual == pytest.approx(bitrate, rel=0.15), (regions, actual)


def test_output_carries_the_publishers_timestamps() -> None:
    encoder = open_encoder("h264", W, H, FPS, 500_000, 30, "libx264")
    stamps = [1000, 1033, 1067, 1100, 1100, 1150, 1300, 1333]  # a repeat and a gap
    packets = []
    for stamp, frame in zip(stamps, scene_frames(len(stamps)), strict=True):
        frame.pts = stamp
        packets += encoder.encode(frame, [])
    packets += encoder.flush()
    assert [p.pts for p in packets] == stamps
    assert [p.dts for p in packets] == stamps
    assert all(p.composition_ms == 0 for p in packets)
    assert packets[0].is_keyframe and not any(p.is_keyframe for p in packets[1:])


def test_frames_in_another_time_base_are_rescaled() -> None:
    encoder = open_encoder("h264", W, H, FPS, 500_000, 30, "libx264")
    packets = []
    for index, frame in enumerate(noise_frames(5)):
        frame.pts = index * 3000  # 90 kHz
        frame.time_base = Fraction(1, 90000)
        packets += encoder.encode(frame)
    packets += encoder.flush()
    assert [p.dts_ms for p in packets] == [0, 33, 67, 100, 133]


def test_configured_b_frames_give_decode_order_timestamps() -> None:
    encoder = open_encoder("h264", W, H, FPS, 800_000, 30, "libx264", bframes=2)
    packets = encode_all(encoder, scene_frames(20), [])
    assert sorted(p.pts for p in packets) == [round(i * 1000 / 30) for i in range(20)]
    dts = [p.dts for p in packets]
    assert dts == sorted(dts) and all(p.dts <= p.pts for p in packets)
    assert any(p.pts != p.dts for p in packets)  # some frames really are reordered


def test_gop_and_forced_keyframes() -> None:
    encoder = open_encoder("h264", W, H, FPS, 500_000, 10, "libx264")
    packets = []
    for index, frame in enumerate(scene_frames(25)):
        # A decoder marks the publisher's keyframes I; other picture types must not leak.
        frame.pict_type = {17: PictureType.I, 5: PictureType.B}.get(index, PictureType.P)
        packets += encoder.encode(frame, force_keyframe=index == 13)
    packets += encoder.flush()
    keyframes = [i for i, p in enumerate(packets) if p.is_keyframe]
    assert keyframes == [0, 10, 13, 17]  # a forced keyframe restarts the GOP count
    assert len(packets) == 25 and all(p.pts == p.dts for p in packets)


def test_frames_of_another_size_or_format_are_converted_and_regions_scaled() -> None:
    encoder = open_encoder("h264", W, H, FPS, NOISE_BITRATE, 30, "libx264")
    region_big = Region(128, 192, 320, 448, -10)  # on a 640x480 picture: 64,96-160,224 here
    packets = []
    for frame in noise_frames(6):
        big = frame.reformat(640, 480, "rgb24")
        packets += encoder.encode(big, [region_big])
    packets += encoder.flush()
    maps = qp_maps(encoder, packets)
    mask = block_mask([Region(64, 96, 160, 224)], maps[0].shape)
    assert all(m[mask].mean() - m[~mask].mean() == pytest.approx(-10, abs=1) for m in maps)


# --- SEI through FLV ------------------------------------------------------------------------


def roi_flv(codec: str) -> tuple[bytes, list[str]]:
    """An FLV file written the way the relay writes its output tags, with ROI SEI."""
    encoder = open_encoder(codec, W, H, FPS, 800_000, 30)  # type: ignore[arg-type]
    fourcc = "avc1" if codec == "h264" else "hvc1"
    enhanced = codec == "hevc"
    assert encoder.extradata is not None
    out = bytearray(FLV_FILE_HEADER)
    header = build_video_tag(
        fourcc,
        VideoPacketType.SEQUENCE_START,
        encoder.extradata,
        keyframe=True,
        enhanced=enhanced,
    )
    out += flv_tag(TagType.VIDEO, 0, header)
    sent = []
    for index, frame in enumerate(scene_frames(15)):
        regions = [Region(40 + index, 60, 140 + index, 200, -6, "face", 0.91)]
        for packet in encoder.encode(frame, regions):
            text = roi_json(packet.pts, W, H, "roiface1", "LiveShows", regions)
            sent.append(text)
            body = build_video_tag(
                fourcc,
                VideoPacketType.CODED_FRAMES,
                add_roi_sei(packet.data, encoder.codec, text),
                keyframe=packet.is_keyframe,
                composition_time=packet.composition_ms,
                enhanced=enhanced,
            )
            out += flv_tag(TagType.VIDEO, packet.dts_ms, body)
    assert encoder.flush() == []  # no delay: every frame came out at once
    return bytes(out), sent


def sei_of(data: bytes, fmt: str) -> list[str | None]:
    with av.open(io.BytesIO(data), format=fmt) as container:
        return [roi_json_from_frame(frame) for frame in container.decode(video=0)]


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_roi_sei_survives_flv_and_a_remux_by_ffmpeg(codec: str) -> None:
    flv, sent = roi_flv(codec)
    received = sei_of(flv, "flv")
    assert received == sent
    first = parse_roi_json(received[0] or "")
    assert first.template == "roiface1" and first.regions[0].label == "face"
    assert (first.width, first.height) == (W, H)
    # FFmpeg's own FLV and MPEG-TS muxers keep it too (packets copied, not re-encoded).
    for fmt in ("flv", "mpegts"):
        remuxed = io.BytesIO()
        with av.open(io.BytesIO(flv), format="flv") as source:
            with av.open(remuxed, "w", format=fmt) as target:
                stream = target.add_stream_from_template(source.streams.video[0])
                for packet in source.demux(source.streams.video[0]):
                    if packet.dts is None:
                        continue
                    packet.stream = stream
                    target.mux(packet)
        assert sei_of(remuxed.getvalue(), fmt) == sent
