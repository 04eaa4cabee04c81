/* A fake libcuda.so.1 for the NVENC tests: the few driver calls the binding makes, recorded.
 * FAKE_CUDA_INIT_STATUS makes cuInit fail with that CUresult (e.g. 100, no device). */
#include <ffnvcodec/dynlink_cuda.h>
#include "fake_log.h"

static int contexts;

CUresult cuInit(unsigned int flags) {
    int status = fake_env_int("FAKE_CUDA_INIT_STATUS", 0);
    fake_log("{\"call\":\"cuInit\",\"flags\":%u,\"status\":%d}", flags, status);
    return (CUresult)status;
}

CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    fake_log("{\"call\":\"cuDeviceGet\",\"ordinal\":%d}", ordinal);
    *device = ordinal;
    return CUDA_SUCCESS;
}

CUresult cuCtxCreate_v2(CUcontext *ctx, unsigned int flags, CUdevice dev) {
    contexts++;
    *ctx = (CUcontext)(size_t)(0x1000 + contexts);
    fake_log("{\"call\":\"cuCtxCreate\",\"device\":%d,\"ctx\":%zu}", dev, (size_t)*ctx);
    return CUDA_SUCCESS;
}

CUresult cuCtxDestroy_v2(CUcontext ctx) {
    fake_log("{\"call\":\"cuCtxDestroy\",\"ctx\":%zu}", (size_t)ctx);
    return CUDA_SUCCESS;
}

CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
    fake_log("{\"call\":\"cuCtxPushCurrent\",\"ctx\":%zu}", (size_t)ctx);
    return CUDA_SUCCESS;
}

CUresult cuCtxPopCurrent_v2(CUcontext *ctx) {
    fake_log("{\"call\":\"cuCtxPopCurrent\"}");
    if (ctx) *ctx = NULL;
    return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult error, const char **name) {
    *name = error == 100 ? "CUDA_ERROR_NO_DEVICE" : "CUDA_ERROR_UNKNOWN";
    return CUDA_SUCCESS;
}
