"""The part of NVIDIA's NVENC API (``nvEncodeAPI.h``, API 11.1) this binding uses, as ctypes.

Only the fields the encoder sets or reads are named; the rest of each structure is kept as
anonymous padding (``_bits`` for a word of C bit-fields, ``_tail`` for everything after the
last named field) so that every structure has exactly the C size. Names, values and layouts
follow Debian's ``ffnvcodec/nvEncodeAPI.h`` (package libffmpeg-nvenc-dev);
tests/roi/nvenc/test_layout.py compiles a C program against that header and checks every
named field's offset, every structure's size and every constant here.
"""

from __future__ import annotations

import ctypes
import uuid
from ctypes import c_int8, c_uint8, c_uint16, c_uint32, c_uint64, c_void_p
from typing import Any

NVENCAPI_MAJOR_VERSION = 11
NVENCAPI_MINOR_VERSION = 1
NVENCAPI_VERSION = NVENCAPI_MAJOR_VERSION | (NVENCAPI_MINOR_VERSION << 24)
# NvEncodeAPIGetMaxSupportedVersion answers (major << 4) | minor.
NVENCAPI_SUPPORTED_VERSION = (NVENCAPI_MAJOR_VERSION << 4) | NVENCAPI_MINOR_VERSION


def struct_version(ver: int, high_bit: bool = False) -> int:
    """NVENCAPI_STRUCT_VERSION(ver), with ``| (1u << 31)`` for the structures that add it."""
    value = NVENCAPI_VERSION | (ver << 16) | (0x7 << 28)
    return value | (1 << 31) if high_bit else value


NV_ENC_RC_PARAMS_VER = struct_version(1)
NV_ENC_CONFIG_VER = struct_version(7, True)
NV_ENC_INITIALIZE_PARAMS_VER = struct_version(5, True)
NV_ENC_PRESET_CONFIG_VER = struct_version(4, True)
NV_ENC_PIC_PARAMS_VER = struct_version(4, True)
NV_ENC_LOCK_BITSTREAM_VER = struct_version(1)
NV_ENC_LOCK_INPUT_BUFFER_VER = struct_version(1)
NV_ENC_CREATE_INPUT_BUFFER_VER = struct_version(1)
NV_ENC_CREATE_BITSTREAM_BUFFER_VER = struct_version(1)
NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER = struct_version(1)
NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER = struct_version(1)
NV_ENCODE_API_FUNCTION_LIST_VER = struct_version(2)

NV_MAX_SEQ_HDR_LEN = 512

# Enumerations (values as in the header).
NV_ENC_DEVICE_TYPE_CUDA = 0x1
NV_ENC_PARAMS_RC_CONSTQP = 0x0
NV_ENC_PARAMS_RC_VBR = 0x1
NV_ENC_PARAMS_RC_CBR = 0x2
NV_ENC_MULTI_PASS_DISABLED = 0x0
NV_ENC_QP_MAP_DISABLED = 0x0
NV_ENC_QP_MAP_DELTA = 0x2
NV_ENC_TUNING_INFO_LOW_LATENCY = 2
NV_ENC_TUNING_INFO_ULTRA_LOW_LATENCY = 3
NV_ENC_BUFFER_FORMAT_NV12 = 0x1
NV_ENC_PIC_STRUCT_FRAME = 0x1
NV_ENC_PIC_TYPE_IDR = 0x3
NV_ENC_PIC_FLAG_FORCEINTRA = 0x1
NV_ENC_PIC_FLAG_FORCEIDR = 0x2
NV_ENC_PIC_FLAG_OUTPUT_SPSPPS = 0x4
NV_ENC_PIC_FLAG_EOS = 0x8
NV_ENC_HEVC_CUSIZE_32x32 = 3

# NVENCSTATUS, in header order (NV_ENC_SUCCESS = 0, then one more per code).
NVENCSTATUS_NAMES: tuple[str, ...] = (
    "NV_ENC_SUCCESS",
    "NV_ENC_ERR_NO_ENCODE_DEVICE",
    "NV_ENC_ERR_UNSUPPORTED_DEVICE",
    "NV_ENC_ERR_INVALID_ENCODERDEVICE",
    "NV_ENC_ERR_INVALID_DEVICE",
    "NV_ENC_ERR_DEVICE_NOT_EXIST",
    "NV_ENC_ERR_INVALID_PTR",
    "NV_ENC_ERR_INVALID_EVENT",
    "NV_ENC_ERR_INVALID_PARAM",
    "NV_ENC_ERR_INVALID_CALL",
    "NV_ENC_ERR_OUT_OF_MEMORY",
    "NV_ENC_ERR_ENCODER_NOT_INITIALIZED",
    "NV_ENC_ERR_UNSUPPORTED_PARAM",
    "NV_ENC_ERR_LOCK_BUSY",
    "NV_ENC_ERR_NOT_ENOUGH_BUFFER",
    "NV_ENC_ERR_INVALID_VERSION",
    "NV_ENC_ERR_MAP_FAILED",
    "NV_ENC_ERR_NEED_MORE_INPUT",
    "NV_ENC_ERR_ENCODER_BUSY",
    "NV_ENC_ERR_EVENT_NOT_REGISTERD",
    "NV_ENC_ERR_GENERIC",
    "NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY",
    "NV_ENC_ERR_UNIMPLEMENTED",
    "NV_ENC_ERR_RESOURCE_REGISTER_FAILED",
    "NV_ENC_ERR_RESOURCE_NOT_REGISTERED",
    "NV_ENC_ERR_RESOURCE_NOT_MAPPED",
)
NVENCSTATUS: dict[str, int] = {name: code for code, name in enumerate(NVENCSTATUS_NAMES)}
NV_ENC_SUCCESS = 0
NV_ENC_ERR_NO_ENCODE_DEVICE = NVENCSTATUS["NV_ENC_ERR_NO_ENCODE_DEVICE"]
NV_ENC_ERR_UNSUPPORTED_DEVICE = NVENCSTATUS["NV_ENC_ERR_UNSUPPORTED_DEVICE"]
NV_ENC_ERR_NEED_MORE_INPUT = NVENCSTATUS["NV_ENC_ERR_NEED_MORE_INPUT"]


class GUID(ctypes.Structure):
    _fields_ = [
        ("Data1", c_uint32),
        ("Data2", c_uint16),
        ("Data3", c_uint16),
        ("Data4", c_uint8 * 8),
    ]

    @classmethod
    def parse(cls, text: str) -> GUID:
        raw = uuid.UUID(text).bytes  # big-endian fields, as the GUID is written
        return cls(
            int.from_bytes(raw[0:4], "big"),
            int.from_bytes(raw[4:6], "big"),
            int.from_bytes(raw[6:8], "big"),
            (c_uint8 * 8)(*raw[8:]),
        )

    def __str__(self) -> str:
        tail = bytes(self.Data4)
        return str(
            uuid.UUID(
                bytes=self.Data1.to_bytes(4, "big")
                + self.Data2.to_bytes(2, "big")
                + self.Data3.to_bytes(2, "big")
                + tail
            )
        )


NV_ENC_CODEC_H264_GUID = GUID.parse("6BC82762-4E63-4ca4-AA85-1E50F321F6BF")
NV_ENC_CODEC_HEVC_GUID = GUID.parse("790CDC88-4522-4d7b-9425-BDA9975F7603")
NV_ENC_CODEC_PROFILE_AUTOSELECT_GUID = GUID.parse("BFD6F8E7-233C-4341-8B3E-4818523803F4")
NV_ENC_H264_PROFILE_HIGH_GUID = GUID.parse("E7CBC309-4F7A-4b89-AF2A-D537C92BE310")
NV_ENC_HEVC_PROFILE_MAIN_GUID = GUID.parse("B514C39A-B55B-40fa-878F-F1253B4DFDEC")
NV_ENC_PRESET_GUIDS: dict[str, GUID] = {
    "p1": GUID.parse("FC0A8D3E-45F8-4CF8-80C7-298871590EBF"),
    "p2": GUID.parse("F581CFB8-88D6-4381-93F0-DF13F9C27DAB"),
    "p3": GUID.parse("36850110-3A07-441F-94D5-3670631F91F6"),
    "p4": GUID.parse("90A7B826-DF06-4862-B9D2-CD6D73A08681"),
    "p5": GUID.parse("21C6E6B4-297A-4CBA-998F-B6CBDE72ADE3"),
    "p6": GUID.parse("8E75C279-6299-4AB6-8302-0B215A335CF5"),
    "p7": GUID.parse("84848C12-6F71-4C13-931B-53E283F57974"),
}


def _padded(
    name: str, fields: list[tuple[Any, ...]], size: int, base: type = ctypes.Structure
) -> Any:
    """A structure (or union) with ``fields`` and anonymous padding up to ``size`` bytes."""
    probe = type(name + "Probe", (base,), {"_fields_": fields})
    # A union's members overlap: its padding member is the whole size.
    tail = size if base is ctypes.Union else size - ctypes.sizeof(probe)
    if tail < 0:
        raise TypeError(f"{name}: named fields take {ctypes.sizeof(probe)} > {size} bytes")
    padding = [("_tail", c_uint8 * tail)] if tail else []
    return type(name, (base,), {"_fields_": fields + padding})


class NV_ENC_QP(ctypes.Structure):
    _fields_ = [("qpInterP", c_uint32), ("qpInterB", c_uint32), ("qpIntra", c_uint32)]


NV_ENC_RC_PARAMS = _padded(
    "NV_ENC_RC_PARAMS",
    [
        ("version", c_uint32),
        ("rateControlMode", c_uint32),
        ("constQP", NV_ENC_QP),
        ("averageBitRate", c_uint32),
        ("maxBitRate", c_uint32),
        ("vbvBufferSize", c_uint32),
        ("vbvInitialDelay", c_uint32),
        ("_bits", c_uint32),  # enableMinQP ... reservedBitFields
        ("minQP", NV_ENC_QP),
        ("maxQP", NV_ENC_QP),
        ("initialRCQP", NV_ENC_QP),
        ("temporallayerIdxMask", c_uint32),
        ("temporalLayerQP", c_uint8 * 8),
        ("targetQuality", c_uint8),
        ("targetQualityLSB", c_uint8),
        ("lookaheadDepth", c_uint16),
        ("lowDelayKeyFrameScale", c_uint8),
        ("reserved1", c_uint8 * 3),
        ("qpMapMode", c_uint32),
        ("multiPass", c_uint32),
    ],
    128,
)

# The codec configurations up to the fields set here (the union gives them their full size).
NV_ENC_CONFIG_H264_HEAD = type(
    "NV_ENC_CONFIG_H264_HEAD",
    (ctypes.Structure,),
    {"_fields_": [("_bits", c_uint32), ("level", c_uint32), ("idrPeriod", c_uint32)]},
)
NV_ENC_CONFIG_HEVC_HEAD = type(
    "NV_ENC_CONFIG_HEVC_HEAD",
    (ctypes.Structure,),
    {
        "_fields_": [
            ("level", c_uint32),
            ("tier", c_uint32),
            ("minCUSize", c_uint32),
            ("maxCUSize", c_uint32),
            ("_bits", c_uint32),
            ("idrPeriod", c_uint32),
        ]
    },
)
NV_ENC_CODEC_CONFIG = _padded(
    "NV_ENC_CODEC_CONFIG",
    [
        ("h264Config", NV_ENC_CONFIG_H264_HEAD),
        ("hevcConfig", NV_ENC_CONFIG_HEVC_HEAD),
        ("_align", c_void_p),
    ],
    1792,
    ctypes.Union,
)

NV_ENC_CONFIG = _padded(
    "NV_ENC_CONFIG",
    [
        ("version", c_uint32),
        ("profileGUID", GUID),
        ("gopLength", c_uint32),
        ("frameIntervalP", ctypes.c_int32),
        ("monoChromeEncoding", c_uint32),
        ("frameFieldMode", c_uint32),
        ("mvPrecision", c_uint32),
        ("rcParams", NV_ENC_RC_PARAMS),
        ("encodeCodecConfig", NV_ENC_CODEC_CONFIG),
    ],
    3584,
)

NV_ENC_INITIALIZE_PARAMS = _padded(
    "NV_ENC_INITIALIZE_PARAMS",
    [
        ("version", c_uint32),
        ("encodeGUID", GUID),
        ("presetGUID", GUID),
        ("encodeWidth", c_uint32),
        ("encodeHeight", c_uint32),
        ("darWidth", c_uint32),
        ("darHeight", c_uint32),
        ("frameRateNum", c_uint32),
        ("frameRateDen", c_uint32),
        ("enableEncodeAsync", c_uint32),
        ("enablePTD", c_uint32),
        ("_bits", c_uint32),  # reportSliceOffsets ... reservedBitFields
        ("privDataSize", c_uint32),
        ("privData", c_void_p),
        ("encodeConfig", ctypes.POINTER(NV_ENC_CONFIG)),
        ("maxEncodeWidth", c_uint32),
        ("maxEncodeHeight", c_uint32),
        ("maxMEHintCountsPerBlock", c_uint32 * 8),
        ("tuningInfo", c_uint32),
        ("bufferFormat", c_uint32),
    ],
    1808,
)

NV_ENC_PRESET_CONFIG = _padded(
    "NV_ENC_PRESET_CONFIG",
    [("version", c_uint32), ("presetCfg", NV_ENC_CONFIG)],
    5128,
)

NV_ENC_CODEC_PIC_PARAMS = _padded(
    "NV_ENC_CODEC_PIC_PARAMS", [("_align", c_void_p)], 1536, ctypes.Union
)

NV_ENC_PIC_PARAMS = _padded(
    "NV_ENC_PIC_PARAMS",
    [
        ("version", c_uint32),
        ("inputWidth", c_uint32),
        ("inputHeight", c_uint32),
        ("inputPitch", c_uint32),
        ("encodePicFlags", c_uint32),
        ("frameIdx", c_uint32),
        ("inputTimeStamp", c_uint64),
        ("inputDuration", c_uint64),
        ("inputBuffer", c_void_p),
        ("outputBitstream", c_void_p),
        ("completionEvent", c_void_p),
        ("bufferFmt", c_uint32),
        ("pictureStruct", c_uint32),
        ("pictureType", c_uint32),
        ("codecPicParams", NV_ENC_CODEC_PIC_PARAMS),
        ("meHintCountsPerBlock", c_uint32 * 8),
        ("meExternalHints", c_void_p),
        ("reserved1", c_uint32 * 6),
        ("reserved2", c_void_p * 2),
        ("qpDeltaMap", ctypes.POINTER(c_int8)),
        ("qpDeltaMapSize", c_uint32),
    ],
    3344,
)

NV_ENC_LOCK_BITSTREAM = _padded(
    "NV_ENC_LOCK_BITSTREAM",
    [
        ("version", c_uint32),
        ("_bits", c_uint32),  # doNotWait, ltrFrame, getRCStats, reservedBitFields
        ("outputBitstream", c_void_p),
        ("sliceOffsets", ctypes.POINTER(c_uint32)),
        ("frameIdx", c_uint32),
        ("hwEncodeStatus", c_uint32),
        ("numSlices", c_uint32),
        ("bitstreamSizeInBytes", c_uint32),
        ("outputTimeStamp", c_uint64),
        ("outputDuration", c_uint64),
        ("bitstreamBufferPtr", c_void_p),
        ("pictureType", c_uint32),
        ("pictureStruct", c_uint32),
        ("frameAvgQP", c_uint32),
    ],
    1544,
)

NV_ENC_LOCK_INPUT_BUFFER = _padded(
    "NV_ENC_LOCK_INPUT_BUFFER",
    [
        ("version", c_uint32),
        ("_bits", c_uint32),  # doNotWait, reservedBitFields
        ("inputBuffer", c_void_p),
        ("bufferDataPtr", c_void_p),
        ("pitch", c_uint32),
    ],
    1544,
)

NV_ENC_CREATE_INPUT_BUFFER = _padded(
    "NV_ENC_CREATE_INPUT_BUFFER",
    [
        ("version", c_uint32),
        ("width", c_uint32),
        ("height", c_uint32),
        ("memoryHeap", c_uint32),
        ("bufferFmt", c_uint32),
        ("reserved", c_uint32),
        ("inputBuffer", c_void_p),
        ("pSysMemBuffer", c_void_p),
    ],
    776,
)

NV_ENC_CREATE_BITSTREAM_BUFFER = _padded(
    "NV_ENC_CREATE_BITSTREAM_BUFFER",
    [
        ("version", c_uint32),
        ("size", c_uint32),
        ("memoryHeap", c_uint32),
        ("reserved", c_uint32),
        ("bitstreamBuffer", c_void_p),
        ("bitstreamBufferPtr", c_void_p),
    ],
    776,
)

NV_ENC_SEQUENCE_PARAM_PAYLOAD = _padded(
    "NV_ENC_SEQUENCE_PARAM_PAYLOAD",
    [
        ("version", c_uint32),
        ("inBufferSize", c_uint32),
        ("spsId", c_uint32),
        ("ppsId", c_uint32),
        ("spsppsBuffer", c_void_p),
        ("outSPSPPSPayloadSize", ctypes.POINTER(c_uint32)),
    ],
    1544,
)

NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS = _padded(
    "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS",
    [
        ("version", c_uint32),
        ("deviceType", c_uint32),
        ("device", c_void_p),
        ("reserved", c_void_p),
        ("apiVersion", c_uint32),
    ],
    1552,
)

# The function table, in header order; "reserved1" is a gap the header keeps.
FUNCTION_LIST_ENTRIES: tuple[str, ...] = (
    "nvEncOpenEncodeSession",
    "nvEncGetEncodeGUIDCount",
    "nvEncGetEncodeProfileGUIDCount",
    "nvEncGetEncodeProfileGUIDs",
    "nvEncGetEncodeGUIDs",
    "nvEncGetInputFormatCount",
    "nvEncGetInputFormats",
    "nvEncGetEncodeCaps",
    "nvEncGetEncodePresetCount",
    "nvEncGetEncodePresetGUIDs",
    "nvEncGetEncodePresetConfig",
    "nvEncInitializeEncoder",
    "nvEncCreateInputBuffer",
    "nvEncDestroyInputBuffer",
    "nvEncCreateBitstreamBuffer",
    "nvEncDestroyBitstreamBuffer",
    "nvEncEncodePicture",
    "nvEncLockBitstream",
    "nvEncUnlockBitstream",
    "nvEncLockInputBuffer",
    "nvEncUnlockInputBuffer",
    "nvEncGetEncodeStats",
    "nvEncGetSequenceParams",
    "nvEncRegisterAsyncEvent",
    "nvEncUnregisterAsyncEvent",
    "nvEncMapInputResource",
    "nvEncUnmapInputResource",
    "nvEncDestroyEncoder",
    "nvEncInvalidateRefFrames",
    "nvEncOpenEncodeSessionEx",
    "nvEncRegisterResource",
    "nvEncUnregisterResource",
    "nvEncReconfigureEncoder",
    "reserved1",
    "nvEncCreateMVBuffer",
    "nvEncDestroyMVBuffer",
    "nvEncRunMotionEstimationOnly",
    "nvEncGetLastErrorString",
    "nvEncSetIOCudaStreams",
    "nvEncGetEncodePresetConfigEx",
    "nvEncGetSequenceParamEx",
)
NV_ENCODE_API_FUNCTION_LIST = _padded(
    "NV_ENCODE_API_FUNCTION_LIST",
    [("version", c_uint32), ("reserved", c_uint32)]
    + [(entry, c_void_p) for entry in FUNCTION_LIST_ENTRIES],
    2552,
)

# Every structure the binding passes, for the layout test: name in the header -> ctypes type.
STRUCTS: dict[str, Any] = {
    "GUID": GUID,
    "NV_ENC_QP": NV_ENC_QP,
    "NV_ENC_RC_PARAMS": NV_ENC_RC_PARAMS,
    "NV_ENC_CODEC_CONFIG": NV_ENC_CODEC_CONFIG,
    "NV_ENC_CONFIG": NV_ENC_CONFIG,
    "NV_ENC_INITIALIZE_PARAMS": NV_ENC_INITIALIZE_PARAMS,
    "NV_ENC_PRESET_CONFIG": NV_ENC_PRESET_CONFIG,
    "NV_ENC_CODEC_PIC_PARAMS": NV_ENC_CODEC_PIC_PARAMS,
    "NV_ENC_PIC_PARAMS": NV_ENC_PIC_PARAMS,
    "NV_ENC_LOCK_BITSTREAM": NV_ENC_LOCK_BITSTREAM,
    "NV_ENC_LOCK_INPUT_BUFFER": NV_ENC_LOCK_INPUT_BUFFER,
    "NV_ENC_CREATE_INPUT_BUFFER": NV_ENC_CREATE_INPUT_BUFFER,
    "NV_ENC_CREATE_BITSTREAM_BUFFER": NV_ENC_CREATE_BITSTREAM_BUFFER,
    "NV_ENC_SEQUENCE_PARAM_PAYLOAD": NV_ENC_SEQUENCE_PARAM_PAYLOAD,
    "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS": NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS,
    "NV_ENCODE_API_FUNCTION_LIST": NV_ENCODE_API_FUNCTION_LIST,
}
# Fields inside the codec-config union, checked through NV_ENC_CONFIG (C names).
NESTED_FIELDS: dict[str, tuple[str, ...]] = {
    "NV_ENC_CONFIG": (
        "rcParams.qpMapMode",
        "rcParams.averageBitRate",
        "encodeCodecConfig.h264Config.idrPeriod",
        "encodeCodecConfig.hevcConfig.idrPeriod",
        "encodeCodecConfig.hevcConfig.maxCUSize",
    ),
}
# Version macros and enumerators checked against the header: every integer constant here
# named as in the header.
CONSTANTS: dict[str, int] = {
    name: value
    for name, value in dict(globals()).items()
    if name.startswith(("NV_ENC", "NVENCAPI_", "NV_MAX"))
    and isinstance(value, int)
    and name != "NVENCAPI_SUPPORTED_VERSION"  # ours: the encoding of GetMaxSupportedVersion
} | NVENCSTATUS
GUIDS: dict[str, GUID] = {
    "NV_ENC_CODEC_H264_GUID": NV_ENC_CODEC_H264_GUID,
    "NV_ENC_CODEC_HEVC_GUID": NV_ENC_CODEC_HEVC_GUID,
    "NV_ENC_CODEC_PROFILE_AUTOSELECT_GUID": NV_ENC_CODEC_PROFILE_AUTOSELECT_GUID,
    "NV_ENC_H264_PROFILE_HIGH_GUID": NV_ENC_H264_PROFILE_HIGH_GUID,
    "NV_ENC_HEVC_PROFILE_MAIN_GUID": NV_ENC_HEVC_PROFILE_MAIN_GUID,
    **{f"NV_ENC_PRESET_{key.upper()}_GUID": guid for key, guid in NV_ENC_PRESET_GUIDS.items()},
}
