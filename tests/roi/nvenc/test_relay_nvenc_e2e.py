"""A live push through the relay with ROI_RELAY_ENCODER=h264_nvenc, against the fake NVIDIA
driver (tests/roi/nvenc/fake; no GPU here): the stream is encoded by the NVENC backend, players
get the fake's pictures with the transcoder's SEI, and each frame's SEI regions are exactly
the blocks the delta-QP map the driver received for that picture boosts. A driver answering
NV_ENC_ERR_UNSUPPORTED_DEVICE (a GPU without NVENC) leaves the stream on libx264, with the
reason in its status and /metrics.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from app.roi import blocks
from app.roi.nvenc import api
from app.roi.regions import Region, effective_regions
from tests.roi.nvenc.fake_driver import read_calls, signed_map, write_stream
from tests.roi.test_decode import nvdec_opens
from tests.roi.test_live_roi_e2e import create_template, face_push
from tests.support.av_client import finish_client, start_client

pytestmark = pytest.mark.slow

W, H = 320, 240


def push_and_play(
    relay, name: str, seconds: float = 4, codec: str = "h264"
) -> tuple[dict, dict, str]:
    extra = ("--codec", "libx265") if codec == "hevc" else ()
    pusher = face_push(f"{relay.rtmp_url}/live/{name}?roirecognition=roinv", seconds, *extra)
    relay.stream_info("live", name)
    time.sleep(0.5)
    player = start_client("play", f"{relay.http_url}/live/{name}.flv", "--sei")
    time.sleep(2)
    info = relay.stream_info("live", name)
    metrics = httpx.get(f"{relay.http_url}/metrics", timeout=5).text
    finish_client(pusher)
    return finish_client(player), info, metrics


def gauges(metrics: str, stream: str) -> dict[str, str]:
    return {
        line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1]
        for line in metrics.splitlines()
        if f'stream="{stream}"' in line and line.startswith("roi_relay_roi_encoder")
    }


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_push_is_encoded_by_nvenc_and_sei_matches_the_maps(
    codec: str, relay_factory, fake_driver_dir: Path, fake_env: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FAKE_NVENC_STREAM", str(write_stream(tmp_path / "au.bin", codec, W, H)))
    # The setting names NVENC; the stream's codec picks h264_nvenc or hevc_nvenc.
    relay = relay_factory(
        template_activation_delay=0, encoder="h264_nvenc", nvenc_library_dir=fake_driver_dir
    )
    create_template(relay.http_url, "nv", model="LiveShows", delta_qp=-8)
    got, info, metrics = push_and_play(relay, "gpu", codec=codec)
    encoder = f"{codec}_nvenc"
    block = blocks.MACROBLOCK if codec == "h264" else blocks.HEVC_CTB

    assert info["roi"]["applied"] is True, info["roi"]
    assert info["roi"]["encoder"] == encoder and info["roi"]["encoder_fallback"] is None
    assert info["roi"]["decoder"] == (f"{codec}_cuvid" if nvdec_opens() else codec)
    # The model's onnxruntime providers, in use order (CPU here; CUDA first with onnxruntime-gpu).
    assert info["roi"]["providers"] and info["roi"]["providers"][-1] == "CPUExecutionProvider"
    assert gauges(metrics, "live/gpu") == {
        f'roi_relay_roi_encoder_info{{encoder="{encoder}",stream="live/gpu"}}': "1.0",
        'roi_relay_roi_encoder_fallback{stream="live/gpu"}': "0.0",
    }
    (init,) = read_calls(fake_env, "nvEncInitializeEncoder")
    assert init["qpMapMode"] == api.NV_ENC_QP_MAP_DELTA and (init["width"], init["height"]) == (
        W,
        H,
    )

    assert got["decode_errors"] == 0 and got["codec"] == codec
    documents = [json.loads(d) for d in got["sei"] if d]
    assert len(documents) >= 0.8 * got["video_frames"] > 20
    pictures = {
        p["timestamp"]: p
        for p in read_calls(fake_env, "nvEncEncodePicture")
        if not p["flags"] & api.NV_ENC_PIC_FLAG_EOS
    }
    columns, rows = blocks.grid(W, H, block)
    with_regions = 0
    for document in documents:
        picture = pictures[document["pts"]]
        assert picture["qpDeltaMapSize"] == columns * rows
        regions = [
            Region(r["top"], r["left"], r["bottom"], r["right"], r["qp"])
            for r in document["regions"]
        ]
        sent = signed_map(picture["qpDeltaMap"])
        expected = blocks.signed(blocks.delta_qp_map(effective_regions(regions, W, H), W, H, block))
        assert sent == expected, document
        if regions:
            with_regions += 1
            assert any(sent)
        else:
            assert not any(sent)
    # Detection slows under load; some frames with regions are enough to compare non-zero maps.
    assert with_regions >= 5, "the face was found"


def test_unsupported_device_falls_back_to_libx264_visibly(
    relay_factory, fake_driver_dir: Path, fake_env: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FAKE_NVENC_STREAM", str(write_stream(tmp_path / "au.bin", "h264", W, H)))
    monkeypatch.setenv("FAKE_NVENC_OPEN_STATUS", str(api.NV_ENC_ERR_UNSUPPORTED_DEVICE))
    relay = relay_factory(
        template_activation_delay=0,
        encoder="h264_nvenc",
        decoder="cuda",
        nvenc_library_dir=fake_driver_dir,
    )
    create_template(relay.http_url, "nv", model="LiveShows", delta_qp=-8)
    got, info, metrics = push_and_play(relay, "nonvenc")

    roi = info["roi"]
    assert roi["applied"] is True, roi
    assert roi["encoder"] == "libx264"
    assert "NV_ENC_ERR_UNSUPPORTED_DEVICE" in roi["encoder_fallback"]
    assert "no NVENC engine" in roi["encoder_fallback"]
    if not nvdec_opens():  # this machine: no GPU, so NVDEC asked for decodes on the CPU
        assert roi["decoder"] == "h264"
        assert "h264_cuvid (NVDEC) unavailable" in roi["decoder_fallback"]
    assert gauges(metrics, "live/nonvenc") == {
        'roi_relay_roi_encoder_info{encoder="libx264",stream="live/nonvenc"}': "1.0",
        'roi_relay_roi_encoder_fallback{stream="live/nonvenc"}': "1.0",
    }
    assert read_calls(fake_env, "nvEncOpenEncodeSessionEx")
    assert not read_calls(fake_env, "nvEncInitializeEncoder")
    assert got["decode_errors"] == 0
    documents = [json.loads(d) for d in got["sei"] if d]
    assert len(documents) >= 0.8 * got["video_frames"] > 20
