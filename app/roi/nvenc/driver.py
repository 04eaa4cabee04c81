"""Loading NVIDIA's driver libraries: CUDA (``libcuda.so.1``) and NVENC
(``libnvidia-encode.so.1``), and turning every status code into a clear message.

Both libraries come with the NVIDIA driver, not with any Python package. They are found by
their sonames through the dynamic loader (``LD_LIBRARY_PATH`` as the process started, the
ldconfig cache), or in one directory given as ``library_dir`` (``ROI_RELAY_NVENC_LIBRARY_DIR``,
for unusual installs and for the tests, which load a fake driver built from C).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from ctypes import POINTER, byref, c_int, c_uint32, c_void_p
from pathlib import Path
from typing import Any

from app.roi.nvenc import api

log = logging.getLogger(__name__)

CUDA_LIBRARY = "libcuda.so.1"
NVENC_LIBRARY = "libnvidia-encode.so.1"

# What an operator can do about the statuses that mean "NVENC cannot run here".
_STATUS_HINTS: dict[str, str] = {
    "NV_ENC_ERR_NO_ENCODE_DEVICE": "no NVENC-capable GPU was found",
    "NV_ENC_ERR_UNSUPPORTED_DEVICE": (
        "this GPU has no NVENC engine (data-centre GPUs such as A100, H100 and H200 have none)"
    ),
    "NV_ENC_ERR_DEVICE_NOT_EXIST": "the CUDA device does not exist",
    "NV_ENC_ERR_INVALID_VERSION": "the NVIDIA driver is too old for NVENC API 11.1 (470.57+)",
    "NV_ENC_ERR_OUT_OF_MEMORY": (
        "out of GPU memory or encode sessions (GeForce cards limit concurrent NVENC sessions)"
    ),
    "NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY": "the driver refused the client key",
    "NV_ENC_ERR_UNSUPPORTED_PARAM": "the GPU does not support a requested encode setting",
    "NV_ENC_ERR_INVALID_PARAM": "an encode parameter was rejected",
    "NV_ENC_ERR_ENCODER_BUSY": "the encoder is busy",
    "NV_ENC_ERR_NEED_MORE_INPUT": "the encoder needs more input before output",
}

_CUDA_HINTS: dict[int, str] = {
    35: "the NVIDIA driver is older than this CUDA interface (CUDA_ERROR_INSUFFICIENT_DRIVER)",
    100: "no CUDA-capable GPU is present (CUDA_ERROR_NO_DEVICE)",
    101: "the CUDA device index is invalid (CUDA_ERROR_INVALID_DEVICE)",
}


class NvencError(RuntimeError):
    """An NVENC or CUDA call that failed, or a driver library that cannot be used."""

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status  # the NVENCSTATUS name, when an NVENC call failed


class DriverMissingError(NvencError):
    """No NVIDIA driver library on this machine: nothing to fall back *from* for ``auto``."""


def status_name(code: int) -> str:
    if 0 <= code < len(api.NVENCSTATUS_NAMES):
        return api.NVENCSTATUS_NAMES[code]
    return f"NVENCSTATUS {code}"


def status_message(function: str, code: int, detail: str = "") -> str:
    """``function`` failed with ``code``: the status name, what it means, the driver's detail."""
    name = status_name(code)
    text = f"{function} failed: {name}"
    hint = _STATUS_HINTS.get(name)
    if hint:
        text += f" ({hint})"
    if detail:
        text += f": {detail}"
    return text


def _load(name: str, library_dir: Path | None) -> ctypes.CDLL:
    target = str(library_dir / name) if library_dir is not None else name
    try:
        return ctypes.CDLL(target)
    except OSError as exc:
        where = f" in {library_dir}" if library_dir is not None else ""
        raise DriverMissingError(
            f"{name} not found{where} (NVIDIA driver not installed?): {exc}"
        ) from exc


class Cuda:
    """The few CUDA driver calls an NVENC session needs: a context on one device."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._lib = library
        for fn in ("cuInit", "cuDeviceGet", "cuCtxCreate_v2", "cuCtxDestroy_v2"):
            if not hasattr(library, fn):
                raise NvencError(f"{CUDA_LIBRARY} has no {fn}: not a CUDA driver library")
        library.cuInit.argtypes = [c_uint32]
        library.cuDeviceGet.argtypes = [POINTER(c_int), c_int]
        library.cuCtxCreate_v2.argtypes = [POINTER(c_void_p), c_uint32, c_int]
        library.cuCtxDestroy_v2.argtypes = [c_void_p]
        library.cuCtxPushCurrent_v2.argtypes = [c_void_p]
        library.cuCtxPopCurrent_v2.argtypes = [POINTER(c_void_p)]
        self._check("cuInit", library.cuInit(0))

    def _check(self, function: str, code: int) -> None:
        if code == 0:
            return
        detail = _CUDA_HINTS.get(code, "")
        name = ctypes.c_char_p()
        getter = getattr(self._lib, "cuGetErrorName", None)
        if getter is not None and getter(c_int(code), byref(name)) == 0 and name.value:
            label = name.value.decode(errors="replace")
        else:
            label = f"CUresult {code}"
        raise NvencError(f"{function} failed: {label}" + (f" ({detail})" if detail else ""))

    def create_context(self, device_index: int = 0) -> c_void_p:
        device = c_int()
        self._check("cuDeviceGet", self._lib.cuDeviceGet(byref(device), device_index))
        context = c_void_p()
        self._check("cuCtxCreate", self._lib.cuCtxCreate_v2(byref(context), 0, device))
        # cuCtxCreate leaves the new context current on this thread; the encoder pushes it
        # around each call instead (it may be called from another thread later).
        self._check("cuCtxPopCurrent", self._lib.cuCtxPopCurrent_v2(byref(c_void_p())))
        return context

    @contextmanager
    def current(self, context: c_void_p) -> Iterator[None]:
        self._check("cuCtxPushCurrent", self._lib.cuCtxPushCurrent_v2(context))
        try:
            yield
        finally:
            self._lib.cuCtxPopCurrent_v2(byref(c_void_p()))

    def destroy_context(self, context: c_void_p) -> None:
        self._check("cuCtxDestroy", self._lib.cuCtxDestroy_v2(context))


_PTR = c_void_p
# Prototypes of the NVENC entry points the encoder calls (all return NVENCSTATUS).
_PROTOTYPES: dict[str, tuple[Any, ...]] = {
    "nvEncOpenEncodeSessionEx": (POINTER(api.NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS), POINTER(_PTR)),
    "nvEncGetEncodePresetConfigEx": (
        _PTR,
        api.GUID,
        api.GUID,
        c_uint32,
        POINTER(api.NV_ENC_PRESET_CONFIG),
    ),
    "nvEncInitializeEncoder": (_PTR, POINTER(api.NV_ENC_INITIALIZE_PARAMS)),
    "nvEncCreateInputBuffer": (_PTR, POINTER(api.NV_ENC_CREATE_INPUT_BUFFER)),
    "nvEncDestroyInputBuffer": (_PTR, _PTR),
    "nvEncCreateBitstreamBuffer": (_PTR, POINTER(api.NV_ENC_CREATE_BITSTREAM_BUFFER)),
    "nvEncDestroyBitstreamBuffer": (_PTR, _PTR),
    "nvEncLockInputBuffer": (_PTR, POINTER(api.NV_ENC_LOCK_INPUT_BUFFER)),
    "nvEncUnlockInputBuffer": (_PTR, _PTR),
    "nvEncEncodePicture": (_PTR, POINTER(api.NV_ENC_PIC_PARAMS)),
    "nvEncLockBitstream": (_PTR, POINTER(api.NV_ENC_LOCK_BITSTREAM)),
    "nvEncUnlockBitstream": (_PTR, _PTR),
    "nvEncGetSequenceParams": (_PTR, POINTER(api.NV_ENC_SEQUENCE_PARAM_PAYLOAD)),
    "nvEncDestroyEncoder": (_PTR,),
}


class Nvenc:
    """The NVENC entry points of one loaded ``libnvidia-encode.so.1``."""

    def __init__(self, library: ctypes.CDLL) -> None:
        for fn in ("NvEncodeAPIGetMaxSupportedVersion", "NvEncodeAPICreateInstance"):
            if not hasattr(library, fn):
                raise NvencError(f"{NVENC_LIBRARY} has no {fn}: not an NVENC library")
        version = c_uint32()
        code = library.NvEncodeAPIGetMaxSupportedVersion(byref(version))
        if code != api.NV_ENC_SUCCESS:
            raise NvencError(
                status_message("NvEncodeAPIGetMaxSupportedVersion", code), status_name(code)
            )
        self.driver_version = (version.value >> 4, version.value & 0xF)
        if version.value < api.NVENCAPI_SUPPORTED_VERSION:
            major, minor = self.driver_version
            raise NvencError(
                f"the NVIDIA driver supports NVENC API {major}.{minor}; API "
                f"{api.NVENCAPI_MAJOR_VERSION}.{api.NVENCAPI_MINOR_VERSION} needs driver 470.57+",
                "NV_ENC_ERR_INVALID_VERSION",
            )
        functions = api.NV_ENCODE_API_FUNCTION_LIST()
        functions.version = api.NV_ENCODE_API_FUNCTION_LIST_VER
        code = library.NvEncodeAPICreateInstance(byref(functions))
        if code != api.NV_ENC_SUCCESS:
            raise NvencError(status_message("NvEncodeAPICreateInstance", code), status_name(code))
        self._calls: dict[str, Any] = {}
        for name, argtypes in _PROTOTYPES.items():
            address = getattr(functions, name)
            if not address:
                raise NvencError(f"the NVENC driver does not provide {name}")
            self._calls[name] = ctypes.CFUNCTYPE(c_int, *argtypes)(address)
        address = functions.nvEncGetLastErrorString
        self._last_error = ctypes.CFUNCTYPE(ctypes.c_char_p, _PTR)(address) if address else None

    def last_error(self, encoder: c_void_p | None) -> str:
        if self._last_error is None or not encoder:
            return ""
        text = self._last_error(encoder)
        return text.decode(errors="replace").strip() if text else ""

    def call(self, name: str, *args: Any, encoder: c_void_p | None = None) -> int:
        """Calls ``name``; raises NvencError with a clear message unless it succeeded (or
        asked for more input, which the caller handles)."""
        code = self._calls[name](*args)
        if code not in (api.NV_ENC_SUCCESS, api.NV_ENC_ERR_NEED_MORE_INPUT):
            raise NvencError(
                status_message(name, code, self.last_error(encoder)), status_name(code)
            )
        return int(code)


class Driver:
    """CUDA + NVENC, loaded once per library directory."""

    def __init__(self, library_dir: Path | None) -> None:
        self.library_dir = library_dir
        self.cuda = Cuda(_load(CUDA_LIBRARY, library_dir))
        self.nvenc = Nvenc(_load(NVENC_LIBRARY, library_dir))


_drivers: dict[Path | None, Driver] = {}
_drivers_lock = threading.Lock()


def load_driver(library_dir: Path | None = None) -> Driver:
    """The driver libraries (from ``library_dir`` when given); raises NvencError with the
    reason when they are missing, too old or not NVIDIA's."""
    with _drivers_lock:
        driver = _drivers.get(library_dir)
        if driver is None:
            driver = Driver(library_dir)
            _drivers[library_dir] = driver
            log.info(
                "NVENC driver loaded (API %d.%d)%s",
                *driver.nvenc.driver_version,
                f" from {library_dir}" if library_dir else "",
            )
        return driver
