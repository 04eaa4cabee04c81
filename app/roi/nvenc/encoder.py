"""The NVENC ROI encoder backend (``h264_nvenc``, ``hevc_nvenc``): our own session over the
driver, because FFmpeg's NVENC wrapper never sets a QP map.

Session: CUDA device type on GPU 0, preset P1-P7 (P4 by default) with low-latency tuning,
CBR at the stream's bitrate with a VBV of ``vbv_seconds``, no B-frames, the caller's GOP as
GOP and IDR period, picture-type decision by the driver except where a keyframe is forced
(the source's keyframes, ``NV_ENC_PIC_FLAG_FORCEIDR``), HEVC with 32x32 CTBs.
``rcParams.qpMapMode = NV_ENC_QP_MAP_DELTA``: every picture carries a signed 8-bit map, one
value per 16x16 macroblock (H.264) or 32x32 CTB (HEVC), built by app/roi/blocks.py with the
rule FFmpeg's x264/x265 wrappers apply; NVENC adds it to rate control's QP.

Frames go in as NV12 through driver-allocated input buffers in host-visible memory
(NvEncCreateInputBuffer/Lock/Unlock); output is read synchronously (no async events), so a
picture's bitstream buffer is locked as soon as the driver says it is done.
"""

from __future__ import annotations

import ctypes
import logging
from collections import deque
from collections.abc import Sequence
from ctypes import byref, c_int8, c_uint32, c_void_p
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType

from app.media.nal import (
    is_keyframe_nal,
    join_length_prefixed,
    nal_type,
    split_annexb,
)
from app.roi import blocks
from app.roi.encoder_base import (
    NAL_LENGTH_SIZE,
    BaseRoiEncoder,
    EncodedPacket,
    EncoderError,
    EncoderSettings,
)
from app.roi.nvenc import api
from app.roi.nvenc.driver import Driver, NvencError, load_driver
from app.roi.regions import Region

log = logging.getLogger(__name__)

NVENC_ENCODERS = {"h264_nvenc": "h264", "hevc_nvenc": "hevc"}
DEFAULT_PRESET = "p4"
# Input/output buffer pairs: enough for the driver to hold a picture or two while the next is
# uploaded (the NVENC samples use a small pool the same way).
BUFFERS = 4

_CODEC_GUIDS = {"h264": api.NV_ENC_CODEC_H264_GUID, "hevc": api.NV_ENC_CODEC_HEVC_GUID}
_PROFILE_GUIDS = {
    "h264": api.NV_ENC_H264_PROFILE_HIGH_GUID,
    "hevc": api.NV_ENC_HEVC_PROFILE_MAIN_GUID,
}
_BLOCK = {"h264": blocks.MACROBLOCK, "hevc": blocks.HEVC_CTB}


@dataclass(slots=True)
class _Buffers:
    input: c_void_p
    output: c_void_p


class NvencEncoder(BaseRoiEncoder):
    """An NVENC session taking ROI regions with every frame (the RoiEncoder interface)."""

    def __init__(
        self, name: str, settings: EncoderSettings, library_dir: Path | None = None
    ) -> None:
        super().__init__(name, settings)
        codec = NVENC_ENCODERS.get(name)
        if codec is None:
            raise EncoderError(f"{name!r} is not an NVENC encoder")
        if codec != settings.codec:
            raise EncoderError(f"encoder {name!r} produces {codec}, not {settings.codec}")
        if settings.bframes:
            raise EncoderError("the NVENC backend encodes without B-frames (bframes must be 0)")
        preset = (settings.preset or DEFAULT_PRESET).lower()
        if preset not in api.NV_ENC_PRESET_GUIDS:
            raise EncoderError(f"NVENC preset must be one of p1..p7, not {preset!r}")
        self.block = _BLOCK[codec]
        self._map_size = len(blocks.delta_qp_map([], settings.width, settings.height, self.block))
        self._encoder = c_void_p()
        self._context: c_void_p | None = None
        self._free: deque[_Buffers] = deque()
        self._busy: deque[_Buffers] = deque()  # submitted, bitstream not read yet
        self._closed = False
        self._frame_index = 0
        try:
            self._driver: Driver = load_driver(library_dir)
            self._context = self._driver.cuda.create_context(0)
            with self._driver.cuda.current(self._context):
                self._open_session(preset)
                self.extradata = self._config_record(split_annexb(self._sequence_params()))
        except NvencError as exc:
            self._release()
            raise EncoderError(f"{name} failed to open: {exc}") from exc
        if self.extradata is None:
            self._release()
            raise EncoderError(f"{name} failed to open: the driver gave no parameter sets")

    # -- session ---------------------------------------------------------------------------

    def _call(self, function: str, *args: object) -> int:
        return self._driver.nvenc.call(function, *args, encoder=self._encoder)

    def _open_session(self, preset: str) -> None:
        settings = self.settings
        params = api.NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS()
        params.version = api.NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER
        params.deviceType = api.NV_ENC_DEVICE_TYPE_CUDA
        params.device = self._context
        params.apiVersion = api.NVENCAPI_VERSION
        self._call("nvEncOpenEncodeSessionEx", byref(params), byref(self._encoder))

        codec_guid = _CODEC_GUIDS[self.codec]
        preset_guid = api.NV_ENC_PRESET_GUIDS[preset]
        tuning = api.NV_ENC_TUNING_INFO_LOW_LATENCY
        preset_config = api.NV_ENC_PRESET_CONFIG()
        preset_config.version = api.NV_ENC_PRESET_CONFIG_VER
        preset_config.presetCfg.version = api.NV_ENC_CONFIG_VER
        self._call(
            "nvEncGetEncodePresetConfigEx",
            self._encoder,
            codec_guid,
            preset_guid,
            tuning,
            byref(preset_config),
        )
        config = api.NV_ENC_CONFIG()
        ctypes.memmove(byref(config), byref(preset_config.presetCfg), ctypes.sizeof(config))
        config.version = api.NV_ENC_CONFIG_VER
        config.profileGUID = _PROFILE_GUIDS[self.codec]
        config.gopLength = settings.gop_frames
        config.frameIntervalP = 1  # I and P only: no B-frames
        rc = config.rcParams
        rc.version = api.NV_ENC_RC_PARAMS_VER
        rc.rateControlMode = api.NV_ENC_PARAMS_RC_CBR
        rc.multiPass = api.NV_ENC_MULTI_PASS_DISABLED
        rc.averageBitRate = settings.bitrate_bps
        rc.maxBitRate = settings.bitrate_bps
        rc.vbvBufferSize = int(settings.bitrate_bps * settings.vbv_seconds)
        rc.vbvInitialDelay = rc.vbvBufferSize
        rc.qpMapMode = api.NV_ENC_QP_MAP_DELTA
        if self.codec == "h264":
            config.encodeCodecConfig.h264Config.idrPeriod = settings.gop_frames
        else:
            config.encodeCodecConfig.hevcConfig.idrPeriod = settings.gop_frames
            config.encodeCodecConfig.hevcConfig.maxCUSize = api.NV_ENC_HEVC_CUSIZE_32x32
        self._config = config  # referenced by the initialise parameters

        init = api.NV_ENC_INITIALIZE_PARAMS()
        init.version = api.NV_ENC_INITIALIZE_PARAMS_VER
        init.encodeGUID = codec_guid
        init.presetGUID = preset_guid
        init.encodeWidth = init.darWidth = init.maxEncodeWidth = settings.width
        init.encodeHeight = init.darHeight = init.maxEncodeHeight = settings.height
        fps = settings.fps.limit_denominator(1001)
        init.frameRateNum = fps.numerator
        init.frameRateDen = fps.denominator
        init.enableEncodeAsync = 0
        init.enablePTD = 1
        init.encodeConfig = ctypes.pointer(config)
        init.tuningInfo = tuning
        init.bufferFormat = api.NV_ENC_BUFFER_FORMAT_NV12
        self._call("nvEncInitializeEncoder", self._encoder, byref(init))

        for _ in range(BUFFERS):
            create_in = api.NV_ENC_CREATE_INPUT_BUFFER()
            create_in.version = api.NV_ENC_CREATE_INPUT_BUFFER_VER
            create_in.width = settings.width
            create_in.height = settings.height
            create_in.bufferFmt = api.NV_ENC_BUFFER_FORMAT_NV12
            self._call("nvEncCreateInputBuffer", self._encoder, byref(create_in))
            create_out = api.NV_ENC_CREATE_BITSTREAM_BUFFER()
            create_out.version = api.NV_ENC_CREATE_BITSTREAM_BUFFER_VER
            # Before the second call can fail, so a failure releases both.
            pair = _Buffers(c_void_p(create_in.inputBuffer), c_void_p())
            self._free.append(pair)
            self._call("nvEncCreateBitstreamBuffer", self._encoder, byref(create_out))
            pair.output = c_void_p(create_out.bitstreamBuffer)

    def _sequence_params(self) -> bytes:
        buffer = ctypes.create_string_buffer(api.NV_MAX_SEQ_HDR_LEN)
        size = c_uint32()
        payload = api.NV_ENC_SEQUENCE_PARAM_PAYLOAD()
        payload.version = api.NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER
        payload.inBufferSize = api.NV_MAX_SEQ_HDR_LEN
        payload.spsppsBuffer = ctypes.cast(buffer, c_void_p)
        payload.outSPSPPSPayloadSize = ctypes.pointer(size)
        self._call("nvEncGetSequenceParams", self._encoder, byref(payload))
        return buffer.raw[: min(size.value, api.NV_MAX_SEQ_HDR_LEN)]

    # -- frames ----------------------------------------------------------------------------

    def qp_map(self, regions: Sequence[Region]) -> bytearray:
        """The delta-QP map sent with a picture carrying ``regions`` (effective regions)."""
        return blocks.delta_qp_map(regions, self.settings.width, self.settings.height, self.block)

    def encode(
        self, frame: av.VideoFrame, regions: Sequence[Region] = (), force_keyframe: bool = False
    ) -> list[EncodedPacket]:
        """Encodes ``frame`` with ``regions`` (the RoiEncoder contract: the ROI rules apply
        again here; a keyframe where ``force_keyframe`` is set or the frame is type I)."""
        if self._closed:
            raise EncoderError(f"{self.name} is closed")
        force_keyframe = force_keyframe or frame.pict_type == PictureType.I
        pts = self._input_pts(frame)
        regions = self._prepare(frame, regions)
        width, height = self.settings.width, self.settings.height
        if (frame.width, frame.height, frame.format.name) != (width, height, "nv12"):
            frame = frame.reformat(width, height, "nv12")
        encoder_pts = self._timeline.admit(pts)
        if not self._free:
            raise EncoderError(f"{self.name}: the driver holds every input buffer")
        pair = self._free.popleft()
        qp_map = (c_int8 * self._map_size).from_buffer(self.qp_map(regions))
        assert self._context is not None
        try:
            with self._driver.cuda.current(self._context):
                pitch = self._upload(pair.input, frame)
                pic = api.NV_ENC_PIC_PARAMS()
                pic.version = api.NV_ENC_PIC_PARAMS_VER
                pic.inputWidth = width
                pic.inputHeight = height
                pic.inputPitch = pitch
                pic.frameIdx = self._frame_index
                pic.inputTimeStamp = encoder_pts
                pic.inputBuffer = pair.input
                pic.outputBitstream = pair.output
                pic.bufferFmt = api.NV_ENC_BUFFER_FORMAT_NV12
                pic.pictureStruct = api.NV_ENC_PIC_STRUCT_FRAME
                if force_keyframe:
                    pic.encodePicFlags = api.NV_ENC_PIC_FLAG_FORCEIDR
                pic.qpDeltaMap = ctypes.cast(qp_map, ctypes.POINTER(c_int8))
                pic.qpDeltaMapSize = self._map_size
                self._frame_index += 1
                self._busy.append(pair)
                status = self._call("nvEncEncodePicture", self._encoder, byref(pic))
                if status == api.NV_ENC_ERR_NEED_MORE_INPUT:
                    return []
                return self._collect()
        except NvencError as exc:
            raise EncoderError(f"{self.name} failed to encode: {exc}") from exc

    def _upload(self, buffer: c_void_p, frame: av.VideoFrame) -> int:
        lock = api.NV_ENC_LOCK_INPUT_BUFFER()
        lock.version = api.NV_ENC_LOCK_INPUT_BUFFER_VER
        lock.inputBuffer = buffer
        self._call("nvEncLockInputBuffer", self._encoder, byref(lock))
        try:
            pitch = int(lock.pitch)
            width, height = self.settings.width, self.settings.height
            if pitch < width or not lock.bufferDataPtr:
                raise NvencError(f"the driver gave an input buffer of pitch {pitch} for {width}")
            # NV12 in the locked buffer: luma rows, then interleaved chroma rows, one pitch apart.
            rows = height + height // 2
            target = np.ctypeslib.as_array(
                ctypes.cast(lock.bufferDataPtr, ctypes.POINTER(ctypes.c_uint8)),
                shape=(rows * pitch,),
            ).reshape(rows, pitch)
            for index, (first, count) in enumerate(((0, height), (height, height // 2))):
                plane = frame.planes[index]
                source = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
                target[first : first + count, :width] = source[:count, :width]
        finally:
            self._call("nvEncUnlockInputBuffer", self._encoder, buffer)
        return pitch

    def _collect(self) -> list[EncodedPacket]:
        """Reads every submitted picture's bitstream, in order (all are done after a
        successful NvEncEncodePicture in synchronous mode)."""
        packets = []
        while self._busy:
            pair = self._busy.popleft()
            lock = api.NV_ENC_LOCK_BITSTREAM()
            lock.version = api.NV_ENC_LOCK_BITSTREAM_VER
            lock.outputBitstream = pair.output
            self._call("nvEncLockBitstream", self._encoder, byref(lock))
            try:
                data = ctypes.string_at(lock.bitstreamBufferPtr, lock.bitstreamSizeInBytes)
                encoder_pts = int(lock.outputTimeStamp)
                picture_type = int(lock.pictureType)
            finally:
                self._call("nvEncUnlockBitstream", self._encoder, pair.output)
            self._free.append(pair)
            packets.append(self._packet(data, encoder_pts, picture_type))
        return packets

    def _packet(self, data: bytes, encoder_pts: int, picture_type: int) -> EncodedPacket:
        nals = split_annexb(data)
        keyframe = picture_type == api.NV_ENC_PIC_TYPE_IDR or any(
            is_keyframe_nal(nal_type(n, self.codec), self.codec) for n in nals
        )
        pts = self._timeline.restore(encoder_pts)
        return EncodedPacket(
            data=join_length_prefixed(nals, NAL_LENGTH_SIZE),
            pts=pts,
            dts=pts,  # no B-frames: decode order is presentation order
            time_base=self.settings.time_base,
            is_keyframe=keyframe,
        )

    def flush(self) -> list[EncodedPacket]:
        """Sends end of stream, returns what the driver still held and closes the session."""
        if self._closed:
            return []
        packets: list[EncodedPacket] = []
        assert self._context is not None
        try:
            with self._driver.cuda.current(self._context):
                pic = api.NV_ENC_PIC_PARAMS()
                pic.version = api.NV_ENC_PIC_PARAMS_VER
                pic.encodePicFlags = api.NV_ENC_PIC_FLAG_EOS
                self._call("nvEncEncodePicture", self._encoder, byref(pic))
                packets = self._collect()
        except NvencError as exc:
            raise EncoderError(f"{self.name} failed to flush: {exc}") from exc
        finally:
            self._release()
        return packets

    def close(self) -> None:
        """Releases the session without draining (flush drains and closes)."""
        self._release()

    def _release(self) -> None:
        if self._closed:
            return
        self._closed = True
        driver = getattr(self, "_driver", None)
        if driver is None or self._context is None:
            return
        try:
            with driver.cuda.current(self._context):
                if self._encoder:
                    for pair in [*self._free, *self._busy]:
                        if pair.input:
                            self._call("nvEncDestroyInputBuffer", self._encoder, pair.input)
                        if pair.output:
                            self._call("nvEncDestroyBitstreamBuffer", self._encoder, pair.output)
                    self._call("nvEncDestroyEncoder", self._encoder)
        except NvencError as exc:
            log.warning("%s: releasing the session failed: %s", self.name, exc)
        finally:
            self._free.clear()
            self._busy.clear()
            self._encoder = c_void_p()
            try:
                driver.cuda.destroy_context(self._context)
            except NvencError as exc:
                log.warning("%s: %s", self.name, exc)
            self._context = None

    def __del__(self) -> None:
        try:
            self._release()
        except Exception:  # interpreter shutdown: the libraries may be gone
            pass
