"""Opening the ROI stage's video decoder: NVDEC (``h264_cuvid``/``hevc_cuvid``, in PyAV's
wheel) or FFmpeg's CPU decoder, chosen by ``ROI_RELAY_DECODER`` (``auto``, ``cpu``, ``cuda``).

``auto`` takes NVDEC when it opens (an NVIDIA GPU with a driver) and the CPU decoder
otherwise; ``cuda`` asked for and unavailable also decodes on the CPU, with the reason kept
for the stream's status. NVDEC hands back NV12 frames in host memory, which both encoder
paths take (NVENC uploads NV12; the FFmpeg encoders convert).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import av

log = logging.getLogger(__name__)

DECODER_MODES = ("auto", "cpu", "cuda")
DecoderMode = Literal["auto", "cpu", "cuda"]
NVDEC_DECODERS = {"h264": "h264_cuvid", "hevc": "hevc_cuvid"}


class DecoderError(ValueError):
    """A decoder mode or codec this stage does not know."""


@dataclass(slots=True)
class OpenedDecoder:
    context: av.VideoCodecContext
    name: str  # the FFmpeg decoder running: "h264", "h264_cuvid", ...
    # Set when NVDEC was asked for (``cuda``) and could not open: why the CPU decodes instead.
    fallback_reason: str | None = None


def _open(name: str, extradata: bytes, cpu: bool, max_pixels: int | None) -> av.VideoCodecContext:
    context = av.CodecContext.create(name, "r")
    if not isinstance(context, av.VideoCodecContext):
        raise DecoderError(f"{name} is not a video decoder")
    context.extradata = extradata
    if max_pixels is not None:
        context.options = {"max_pixels": str(max_pixels)}
    if cpu:
        context.thread_type = "SLICE"
    else:
        context.open()  # NVDEC: fail now (no GPU, no driver) rather than on the first packet
    return context


def open_decoder(
    codec: str, extradata: bytes, mode: str = "auto", max_pixels: int | None = None
) -> OpenedDecoder:
    """A decoder for ``codec`` (``h264``/``hevc``) configured with ``extradata`` (avcC/hvcC);
    with ``max_pixels``, FFmpeg refuses (as invalid data) pictures larger than that."""
    if mode not in DECODER_MODES:
        raise DecoderError(f"decoder mode must be one of {', '.join(DECODER_MODES)}, not {mode!r}")
    if codec not in NVDEC_DECODERS:
        raise DecoderError(f"no decoder for codec {codec!r}")
    reason = None
    if mode != "cpu":
        name = NVDEC_DECODERS[codec]
        try:
            return OpenedDecoder(_open(name, extradata, cpu=False, max_pixels=max_pixels), name)
        except (av.FFmpegError, OSError, ValueError) as exc:  # EPERM/ENOSYS without a GPU
            reason = f"{name} (NVDEC) unavailable: {exc}"
            level = logging.WARNING if mode == "cuda" else logging.DEBUG
            log.log(level, "%s; decoding on the CPU", reason)
    return OpenedDecoder(
        _open(codec, extradata, cpu=True, max_pixels=max_pixels),
        codec,
        reason if mode == "cuda" else None,
    )
