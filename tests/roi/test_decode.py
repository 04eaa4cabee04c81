"""ROI_RELAY_DECODER: NVDEC when it opens, else the CPU decoder (with the reason when cuda
was asked for). This machine has no NVIDIA GPU, so NVDEC never opens here: the tests check
the fallback and that the CPU decoder decodes; NVDEC itself is untested without a GPU."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest

from app.roi.decode import DecoderError, open_decoder
from app.roi.encode import open_encoder


def nvdec_opens() -> bool:
    try:
        av.CodecContext.create("h264_cuvid", "r").open()
    except (av.FFmpegError, OSError, ValueError):
        return False
    return True


@pytest.mark.parametrize("codec", ["h264", "hevc"])
@pytest.mark.parametrize("mode", ["auto", "cpu", "cuda"])
def test_decoder_modes(codec: str, mode: str) -> None:
    encoder = open_encoder(
        codec, 320, 240, Fraction(30), 300_000, 30, "libx264" if codec == "h264" else "libx265"
    )  # type: ignore[arg-type]
    frame = av.VideoFrame(320, 240, "yuv420p")
    frame.pts = 0
    packets = encoder.encode(frame, force_keyframe=True) + encoder.flush()
    assert encoder.extradata is not None
    opened = open_decoder(codec, encoder.extradata, mode)
    if nvdec_opens() and mode != "cpu":
        assert opened.name == f"{codec}_cuvid" and opened.fallback_reason is None
    else:
        assert opened.name == codec
        if mode == "cuda":
            assert opened.fallback_reason is not None
            assert f"{codec}_cuvid (NVDEC) unavailable" in opened.fallback_reason
        else:
            assert opened.fallback_reason is None
    decoded = [f for p in packets for f in opened.context.decode(av.Packet(p.data))]
    decoded += opened.context.decode(None)
    assert [(f.width, f.height) for f in decoded] == [(320, 240)]


def test_unknown_mode_is_named() -> None:
    with pytest.raises(DecoderError, match="decoder mode must be one of auto, cpu, cuda"):
        open_decoder("h264", b"", "gpu")
