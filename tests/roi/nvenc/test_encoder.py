"""The NVENC backend against a fake NVIDIA driver (tests/roi/nvenc/fake, built with gcc
against Debian's nvEncodeAPI.h). NO GPU: this checks the call sequence, the structures and
the per-picture delta-QP maps the binding hands the driver, not NVENC's own encoding.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from app.roi.encode import open_encoder
from app.roi.encoder_base import EncoderError, EncoderSettings
from app.roi.nvenc import api
from app.roi.nvenc.driver import status_message
from app.roi.nvenc.encoder import NvencEncoder
from app.roi.regions import Region, effective_regions
from tests.roi.nvenc.fake_driver import read_calls, signed_map, write_stream

W, H = 200, 120  # not a multiple of 16 or 32: partial blocks at the right and bottom edges
FPS = Fraction(30)
BITRATE = 400_000
GOP = 30
REGIONS_PER_FRAME: list[list[Region]] = [
    [Region(10, 20, 40, 60, -6)],
    [],
    [Region(0, 0, 20, 20, -10), Region(8, 8, 50, 70, -4)],  # overlap: the first one wins
    [Region(100, 180, 120, 200, 7)],  # touches the partial blocks
    [],
    [Region(33, 47, 34, 48, -51)],  # one pixel: still its whole block
]
KEYFRAMES = {0, 4}


def touched_blocks(regions: list[Region], block: int) -> dict[tuple[int, int], int]:
    """Independent statement of FFmpeg's x264 rule: every block a region touches, first wins."""
    cells: dict[tuple[int, int], int] = {}
    rows, columns = -(-H // block), -(-W // block)
    for region in regions:
        for row in range(region.top // block, min(rows, -(-region.bottom // block))):
            for column in range(region.left // block, min(columns, -(-region.right // block))):
                cells.setdefault((row, column), region.qp)
    return {cell: qp for cell, qp in cells.items() if qp != 0}


def frames() -> list[av.VideoFrame]:
    out = []
    for index in range(len(REGIONS_PER_FRAME)):
        image = np.zeros((H, W, 3), np.uint8)
        image[..., 0] = 40 + 20 * index
        image[..., 1] = 90
        image[..., 2] = 200 - 10 * index
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index * 33
        frame.time_base = Fraction(1, 1000)
        out.append(frame)
    return out


def run_session(codec: str, library_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAKE_NVENC_STREAM", str(write_stream(tmp_path / "au.bin", codec, W, H)))
    encoder = open_encoder(
        codec, W, H, FPS, BITRATE, GOP, f"{codec}_nvenc", nvenc_library_dir=library_dir
    )  # type: ignore[arg-type]
    assert isinstance(encoder, NvencEncoder), encoder.fallback_reason
    source = frames()
    packets = []
    for index, (frame, regions) in enumerate(zip(source, REGIONS_PER_FRAME, strict=True)):
        packets += encoder.encode(frame, regions, force_keyframe=index in KEYFRAMES)
    packets += encoder.flush()
    return encoder, source, packets


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_session_calls_and_maps(
    codec: str,
    fake_driver_dir: Path,
    fake_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoder, source, packets = run_session(codec, fake_driver_dir, tmp_path, monkeypatch)
    calls = read_calls(fake_env)
    (header,) = read_calls(fake_env, "header")
    versions = header["versions"]

    (session,) = read_calls(fake_env, "nvEncOpenEncodeSessionEx")
    assert session["version"] == versions["NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER"]
    assert session["apiVersion"] == versions["NVENCAPI_VERSION"]
    assert session["deviceType"] == api.NV_ENC_DEVICE_TYPE_CUDA
    (created,) = read_calls(fake_env, "cuCtxCreate")
    assert session["device"] == created["ctx"]

    (preset,) = read_calls(fake_env, "nvEncGetEncodePresetConfigEx")
    codec_guid = str(api.NV_ENC_CODEC_H264_GUID if codec == "h264" else api.NV_ENC_CODEC_HEVC_GUID)
    assert preset["version"] == versions["NV_ENC_PRESET_CONFIG_VER"]
    assert preset["configVersion"] == versions["NV_ENC_CONFIG_VER"]
    assert preset["codec"] == codec_guid
    assert preset["preset"] == str(api.NV_ENC_PRESET_GUIDS["p4"])
    assert preset["tuning"] == api.NV_ENC_TUNING_INFO_LOW_LATENCY

    (init,) = read_calls(fake_env, "nvEncInitializeEncoder")
    assert init["version"] == versions["NV_ENC_INITIALIZE_PARAMS_VER"]
    assert init["configVersion"] == versions["NV_ENC_CONFIG_VER"]
    assert init["rcVersion"] == versions["NV_ENC_RC_PARAMS_VER"]
    assert init["qpMapMode"] == api.NV_ENC_QP_MAP_DELTA
    assert init["rateControlMode"] == api.NV_ENC_PARAMS_RC_CBR
    assert init["averageBitRate"] == init["maxBitRate"] == BITRATE
    assert init["vbvBufferSize"] == BITRATE  # 1 s
    assert (init["gopLength"], init["idrPeriod"], init["frameIntervalP"]) == (GOP, GOP, 1)
    assert (init["width"], init["height"]) == (W, H)
    assert (init["frameRateNum"], init["frameRateDen"]) == (30, 1)
    assert (init["enablePTD"], init["enableEncodeAsync"]) == (1, 0)
    assert init["tuningInfo"] == api.NV_ENC_TUNING_INFO_LOW_LATENCY
    assert init["bufferFormat"] == api.NV_ENC_BUFFER_FORMAT_NV12
    assert init["codec"] == codec_guid
    assert init["maxCUSize"] == (api.NV_ENC_HEVC_CUSIZE_32x32 if codec == "hevc" else 0)

    for name, macro in [
        ("nvEncCreateInputBuffer", "NV_ENC_CREATE_INPUT_BUFFER_VER"),
        ("nvEncCreateBitstreamBuffer", "NV_ENC_CREATE_BITSTREAM_BUFFER_VER"),
        ("nvEncLockInputBuffer", "NV_ENC_LOCK_INPUT_BUFFER_VER"),
        ("nvEncLockBitstream", "NV_ENC_LOCK_BITSTREAM_VER"),
        ("nvEncGetSequenceParams", "NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER"),
        ("nvEncEncodePicture", "NV_ENC_PIC_PARAMS_VER"),
    ]:
        recorded = read_calls(fake_env, name)
        assert recorded and all(c["version"] == versions[macro] for c in recorded), name

    pictures = read_calls(fake_env, "nvEncEncodePicture")
    *coded, eos = pictures
    assert len(coded) == len(source)
    block = 16 if codec == "h264" else 32
    map_size = (-(-W // block)) * (-(-H // block))
    for index, (picture, regions, frame) in enumerate(
        zip(coded, REGIONS_PER_FRAME, source, strict=True)
    ):
        assert picture["qpDeltaMapSize"] == map_size
        values = signed_map(picture["qpDeltaMap"])
        columns = -(-W // block)
        nonzero = {divmod(i, columns): v for i, v in enumerate(values) if v}
        assert nonzero == touched_blocks(effective_regions(regions, W, H), block), index
        if not regions:
            assert values == [0] * map_size
        flags = picture["flags"]
        assert flags == (api.NV_ENC_PIC_FLAG_FORCEIDR if index in KEYFRAMES else 0)
        assert (picture["inputWidth"], picture["inputHeight"]) == (W, H)
        assert picture["inputPitch"] == 256  # the fake's pitch, not the width
        assert picture["input"] and picture["output"] and not picture["inputLocked"]
        assert picture["pictureStruct"] == api.NV_ENC_PIC_STRUCT_FRAME
        nv12 = frame.reformat(format="nv12")
        planes = [np.frombuffer(p, np.uint8).reshape(-1, p.line_size) for p in nv12.planes]
        assert picture["luma"] == pytest.approx(planes[0][:H, :W].mean(), abs=0.01)
        assert picture["chroma"] == pytest.approx(planes[1][: H // 2, :W].mean(), abs=0.01)
    assert eos["flags"] == api.NV_ENC_PIC_FLAG_EOS
    assert not eos["input"] and not eos["output"]

    # Drained, then everything released in order: buffers, session, CUDA context.
    tail = [c["call"] for c in calls[calls.index(eos) :] if not c["call"].startswith("cuCtxP")]
    assert tail[-1] == "cuCtxDestroy" and tail[-2] == "nvEncDestroyEncoder"
    assert tail.count("nvEncDestroyInputBuffer") == tail.count("nvEncDestroyBitstreamBuffer") == 4

    # The packets are the fake's access units, decodable with the extradata the driver gave.
    assert len(packets) == len(source)
    assert [p.pts for p in packets] == [f.pts for f in source]
    assert all(p.is_keyframe and p.dts == p.pts for p in packets)
    assert encoder.extradata is not None
    decoder = av.CodecContext.create(codec, "r")
    decoder.extradata = encoder.extradata
    decoded = []
    for packet in packets:
        decoded += decoder.decode(av.Packet(packet.data))
    decoded += decoder.decode(None)
    assert [(f.width, f.height) for f in decoded] == [(W, H)] * len(source)


def test_held_pictures_come_out_in_order(
    fake_driver_dir: Path, fake_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NV_ENC_ERR_NEED_MORE_INPUT: nothing yet; the next success gives both, in order, and
    end of stream gives what is still held."""
    monkeypatch.setenv("FAKE_NVENC_HOLD", "1")
    source = frames()[:5]
    monkeypatch.setenv("FAKE_NVENC_STREAM", str(write_stream(tmp_path / "au.bin", "h264", W, H)))
    encoder = open_encoder(
        "h264", W, H, FPS, BITRATE, GOP, "h264_nvenc", nvenc_library_dir=fake_driver_dir
    )
    batches = [encoder.encode(frame) for frame in source] + [encoder.flush()]
    assert [len(batch) for batch in batches] == [0, 2, 0, 2, 0, 1]
    assert [p.pts for batch in batches for p in batch] == [f.pts for f in source]
    locks = read_calls(fake_env, "nvEncLockBitstream")
    assert all(lock["filled"] for lock in locks) and len(locks) == len(source)


def test_every_status_has_a_message() -> None:
    for code, name in enumerate(api.NVENCSTATUS_NAMES[1:], start=1):
        assert status_message("nvEncEncodePicture", code).startswith(
            f"nvEncEncodePicture failed: {name}"
        )
    assert "GeForce" in status_message("x", api.NVENCSTATUS["NV_ENC_ERR_OUT_OF_MEMORY"])
    assert "470.57" in status_message("x", api.NVENCSTATUS["NV_ENC_ERR_INVALID_VERSION"])
    assert status_message("x", 99) == "x failed: NVENCSTATUS 99"


def test_unsupported_device_fails_clearly_and_falls_back(
    fake_driver_dir: Path, fake_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NVENC_STREAM", str(write_stream(tmp_path / "au.bin", "h264", W, H)))
    monkeypatch.setenv("FAKE_NVENC_OPEN_STATUS", str(api.NV_ENC_ERR_UNSUPPORTED_DEVICE))
    settings = EncoderSettings("h264", W, H, FPS, BITRATE, GOP)
    with pytest.raises(EncoderError) as raised:
        NvencEncoder("h264_nvenc", settings, fake_driver_dir)
    message = str(raised.value)
    assert "nvEncOpenEncodeSessionEx failed: NV_ENC_ERR_UNSUPPORTED_DEVICE" in message
    assert "no NVENC engine" in message
    # The CUDA context made for the session is released again.
    assert len(read_calls(fake_env, "cuCtxCreate")) == len(read_calls(fake_env, "cuCtxDestroy"))

    encoder = open_encoder(
        "h264", W, H, FPS, BITRATE, GOP, "h264_nvenc", nvenc_library_dir=fake_driver_dir
    )
    assert encoder.name == "libx264"
    assert encoder.fallback_reason is not None
    assert "NV_ENC_ERR_UNSUPPORTED_DEVICE" in encoder.fallback_reason
    packets = encoder.encode(frames()[0], REGIONS_PER_FRAME[0]) + encoder.flush()
    assert packets


def _private_copy(source: Path, tmp_path: Path) -> Path:
    """A copy of the fake libraries at another path: loaded afresh (the binding caches a
    driver that loaded successfully per directory)."""
    target = tmp_path / "driver-copy"
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("FAKE_CUDA_INIT_STATUS", "100", "cuInit failed: CUDA_ERROR_NO_DEVICE"),
        ("FAKE_NVENC_MAX_VERSION", str((11 << 4) | 0), "needs driver 470.57+"),
    ],
)
def test_driver_problems_have_clear_messages(
    variable: str,
    value: str,
    expected: str,
    fake_driver_dir: Path,
    fake_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, value)
    encoder = open_encoder(
        "h264",
        W,
        H,
        FPS,
        BITRATE,
        GOP,
        "auto",
        nvenc_library_dir=_private_copy(fake_driver_dir, tmp_path),
    )
    assert encoder.name != "h264_nvenc"
    assert encoder.fallback_reason is not None and expected in encoder.fallback_reason


def test_missing_driver_is_named_when_nvenc_was_asked_for(tmp_path: Path) -> None:
    encoder = open_encoder(
        "h264", W, H, FPS, BITRATE, GOP, "h264_nvenc", nvenc_library_dir=tmp_path
    )
    assert encoder.name == "libx264"
    assert encoder.fallback_reason is not None
    assert f"libcuda.so.1 not found in {tmp_path}" in encoder.fallback_reason


def test_auto_without_a_driver_is_the_cpu_not_a_fallback(tmp_path: Path) -> None:
    # A machine with no NVIDIA driver asked for nothing NVENC: no fallback to report.
    encoder = open_encoder("h264", W, H, FPS, BITRATE, GOP, "auto", nvenc_library_dir=tmp_path)
    assert encoder.name == "libx264" and encoder.fallback_reason is None


def test_sonames_found_through_the_library_path(fake_driver_dir: Path, tmp_path: Path) -> None:
    """Without a library directory the binding loads the sonames, so LD_LIBRARY_PATH (read at
    process start, hence a subprocess) reaches the fake."""
    stream = write_stream(tmp_path / "au.bin", "h264", W, H)
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": str(fake_driver_dir),
        "FAKE_NVENC_STREAM": str(stream),
        "FAKE_NVENC_LOG": str(tmp_path / "calls.jsonl"),
    }
    code = (
        "from fractions import Fraction\n"
        "from app.roi.encode import open_encoder\n"
        f"e = open_encoder('h264', {W}, {H}, Fraction(30), 300000, 30, 'auto')\n"
        "print(e.name, e.fallback_reason)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "h264_nvenc", done.stdout
    assert read_calls(tmp_path / "calls.jsonl", "nvEncInitializeEncoder")
