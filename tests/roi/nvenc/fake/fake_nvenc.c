/* A fake libnvidia-encode.so.1 for the NVENC tests, built against Debian's nvEncodeAPI.h.
 *
 * It implements the entry points the binding uses, records every call with the fields the
 * tests check (struct versions, rate control, QP map mode, each picture's flags and delta-QP
 * map) to $FAKE_NVENC_LOG, and answers with a real bitstream: $FAKE_NVENC_STREAM holds
 * records of (uint32 little-endian length, bytes), the first the Annex B parameter sets, then
 * one Annex B access unit per frame (all IDR, so any of them decodes on its own); picture n
 * gets access unit n modulo their count.
 *
 * $FAKE_NVENC_HOLD=1 answers NV_ENC_ERR_NEED_MORE_INPUT for every even picture.
 * $FAKE_NVENC_OPEN_STATUS makes NvEncOpenEncodeSessionEx answer that NVENCSTATUS (e.g. 2,
 * NV_ENC_ERR_UNSUPPORTED_DEVICE, as on a GPU without NVENC); $FAKE_NVENC_MAX_VERSION
 * changes what NvEncodeAPIGetMaxSupportedVersion reports.
 */
#include <stdint.h>
#include <string.h>
#include <ffnvcodec/nvEncodeAPI.h>
#include "fake_log.h"

#define MAX_UNITS 4096
#define PITCH_ALIGN 256

typedef struct { uint8_t *data; uint32_t size; } Unit;
static Unit units[MAX_UNITS];
static int unit_count = -1;
static char loaded_path[4096];

typedef struct { uint8_t *pixels; uint32_t width, height, pitch; int locked; } Input;
typedef struct { const Unit *unit; uint64_t timestamp; int filled; } Output;

static int session_token;

/* (Re)reads $FAKE_NVENC_STREAM when it names another file than last time. */
static void load_units(void) {
    const char *path = getenv("FAKE_NVENC_STREAM");
    if (unit_count >= 0 && path && strcmp(path, loaded_path) == 0) return;
    for (int i = 0; i < unit_count; i++) free(units[i].data);
    unit_count = 0;
    snprintf(loaded_path, sizeof loaded_path, "%s", path ? path : "");
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) return;
    uint8_t len[4];
    while (unit_count < MAX_UNITS && fread(len, 1, 4, f) == 4) {
        uint32_t n = len[0] | len[1] << 8 | len[2] << 16 | (uint32_t)len[3] << 24;
        units[unit_count].data = malloc(n);
        units[unit_count].size = n;
        if (fread(units[unit_count].data, 1, n, f) != n) break;
        unit_count++;
    }
    fclose(f);
}

static void guid_text(const GUID *g, char *out) {
    sprintf(out, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", g->Data1, g->Data2, g->Data3,
            g->Data4[0], g->Data4[1], g->Data4[2], g->Data4[3], g->Data4[4], g->Data4[5],
            g->Data4[6], g->Data4[7]);
}

NVENCSTATUS NVENCAPI NvEncodeAPIGetMaxSupportedVersion(uint32_t *version) {
    *version = (uint32_t)fake_env_int("FAKE_NVENC_MAX_VERSION",
                                      (NVENCAPI_MAJOR_VERSION << 4) | NVENCAPI_MINOR_VERSION);
    fake_log("{\"call\":\"NvEncodeAPIGetMaxSupportedVersion\",\"answer\":%u}", *version);
    return NV_ENC_SUCCESS;
}

static void log_header_versions(void) {
    /* The header's version macros, for the tests to compare every recorded version with. */
    fake_log("{\"call\":\"header\",\"versions\":{"
             "\"NVENCAPI_VERSION\":%u,\"NV_ENCODE_API_FUNCTION_LIST_VER\":%u,"
             "\"NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER\":%u,\"NV_ENC_PRESET_CONFIG_VER\":%u,"
             "\"NV_ENC_CONFIG_VER\":%u,\"NV_ENC_RC_PARAMS_VER\":%u,"
             "\"NV_ENC_INITIALIZE_PARAMS_VER\":%u,\"NV_ENC_CREATE_INPUT_BUFFER_VER\":%u,"
             "\"NV_ENC_CREATE_BITSTREAM_BUFFER_VER\":%u,\"NV_ENC_LOCK_INPUT_BUFFER_VER\":%u,"
             "\"NV_ENC_PIC_PARAMS_VER\":%u,\"NV_ENC_LOCK_BITSTREAM_VER\":%u,"
             "\"NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER\":%u}}",
             NVENCAPI_VERSION, NV_ENCODE_API_FUNCTION_LIST_VER,
             NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER, NV_ENC_PRESET_CONFIG_VER, NV_ENC_CONFIG_VER,
             NV_ENC_RC_PARAMS_VER, NV_ENC_INITIALIZE_PARAMS_VER, NV_ENC_CREATE_INPUT_BUFFER_VER,
             NV_ENC_CREATE_BITSTREAM_BUFFER_VER, NV_ENC_LOCK_INPUT_BUFFER_VER,
             NV_ENC_PIC_PARAMS_VER, NV_ENC_LOCK_BITSTREAM_VER, NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER);
}

static NVENCSTATUS NVENCAPI open_session_ex(NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS *p, void **enc) {
    int status = fake_env_int("FAKE_NVENC_OPEN_STATUS", 0);
    log_header_versions();
    fake_log("{\"call\":\"nvEncOpenEncodeSessionEx\",\"version\":%u,\"deviceType\":%u,"
             "\"device\":%zu,\"apiVersion\":%u,\"status\":%d}",
             p->version, p->deviceType, (size_t)p->device, p->apiVersion, status);
    if (status) return (NVENCSTATUS)status;
    *enc = &session_token;
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI preset_config_ex(void *enc, GUID codec, GUID preset,
                                             NV_ENC_TUNING_INFO tuning, NV_ENC_PRESET_CONFIG *c) {
    char codec_text[40], preset_text[40];
    guid_text(&codec, codec_text);
    guid_text(&preset, preset_text);
    fake_log("{\"call\":\"nvEncGetEncodePresetConfigEx\",\"version\":%u,\"configVersion\":%u,"
             "\"codec\":\"%s\",\"preset\":\"%s\",\"tuning\":%d}",
             c->version, c->presetCfg.version, codec_text, preset_text, tuning);
    /* What a preset answers, roughly: VBR, B-frames, a long GOP (the binding must override). */
    c->presetCfg.gopLength = 250;
    c->presetCfg.frameIntervalP = 3;
    c->presetCfg.rcParams.rateControlMode = NV_ENC_PARAMS_RC_VBR;
    c->presetCfg.rcParams.averageBitRate = 5000000;
    c->presetCfg.encodeCodecConfig.h264Config.idrPeriod = 250;
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI initialize(void *enc, NV_ENC_INITIALIZE_PARAMS *p) {
    NV_ENC_CONFIG *c = p->encodeConfig;
    char codec_text[40], preset_text[40];
    guid_text(&p->encodeGUID, codec_text);
    guid_text(&p->presetGUID, preset_text);
    int hevc = memcmp(&p->encodeGUID, &NV_ENC_CODEC_HEVC_GUID, sizeof(GUID)) == 0;
    uint32_t idr = hevc ? c->encodeCodecConfig.hevcConfig.idrPeriod
                        : c->encodeCodecConfig.h264Config.idrPeriod;
    fake_log("{\"call\":\"nvEncInitializeEncoder\",\"version\":%u,\"configVersion\":%u,"
             "\"rcVersion\":%u,\"codec\":\"%s\",\"preset\":\"%s\",\"width\":%u,\"height\":%u,"
             "\"frameRateNum\":%u,\"frameRateDen\":%u,\"enablePTD\":%u,\"enableEncodeAsync\":%u,"
             "\"tuningInfo\":%d,\"bufferFormat\":%d,\"gopLength\":%u,\"frameIntervalP\":%d,"
             "\"rateControlMode\":%d,\"averageBitRate\":%u,\"maxBitRate\":%u,"
             "\"vbvBufferSize\":%u,\"qpMapMode\":%d,\"idrPeriod\":%u,\"maxCUSize\":%d}",
             p->version, c->version, c->rcParams.version, codec_text, preset_text,
             p->encodeWidth, p->encodeHeight, p->frameRateNum, p->frameRateDen, p->enablePTD,
             p->enableEncodeAsync, p->tuningInfo, p->bufferFormat, c->gopLength,
             c->frameIntervalP, c->rcParams.rateControlMode, c->rcParams.averageBitRate,
             c->rcParams.maxBitRate, c->rcParams.vbvBufferSize, c->rcParams.qpMapMode, idr,
             hevc ? (int)c->encodeCodecConfig.hevcConfig.maxCUSize : 0);
    load_units();
    return unit_count > 1 ? NV_ENC_SUCCESS : NV_ENC_ERR_INVALID_PARAM;
}

static NVENCSTATUS NVENCAPI create_input(void *enc, NV_ENC_CREATE_INPUT_BUFFER *p) {
    Input *in = calloc(1, sizeof *in);
    in->width = p->width;
    in->height = p->height;
    in->pitch = (p->width + PITCH_ALIGN - 1) / PITCH_ALIGN * PITCH_ALIGN;
    in->pixels = calloc(in->pitch, p->height * 3 / 2);
    p->inputBuffer = in;
    fake_log("{\"call\":\"nvEncCreateInputBuffer\",\"version\":%u,\"width\":%u,\"height\":%u,"
             "\"bufferFmt\":%d}", p->version, p->width, p->height, p->bufferFmt);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI destroy_input(void *enc, NV_ENC_INPUT_PTR buffer) {
    Input *in = buffer;
    fake_log("{\"call\":\"nvEncDestroyInputBuffer\"}");
    free(in->pixels);
    free(in);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI create_bitstream(void *enc, NV_ENC_CREATE_BITSTREAM_BUFFER *p) {
    p->bitstreamBuffer = calloc(1, sizeof(Output));
    fake_log("{\"call\":\"nvEncCreateBitstreamBuffer\",\"version\":%u}", p->version);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI destroy_bitstream(void *enc, NV_ENC_OUTPUT_PTR buffer) {
    fake_log("{\"call\":\"nvEncDestroyBitstreamBuffer\"}");
    free(buffer);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI lock_input(void *enc, NV_ENC_LOCK_INPUT_BUFFER *p) {
    Input *in = p->inputBuffer;
    in->locked = 1;
    p->bufferDataPtr = in->pixels;
    p->pitch = in->pitch;
    fake_log("{\"call\":\"nvEncLockInputBuffer\",\"version\":%u}", p->version);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI unlock_input(void *enc, NV_ENC_INPUT_PTR buffer) {
    ((Input *)buffer)->locked = 0;
    fake_log("{\"call\":\"nvEncUnlockInputBuffer\"}");
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI encode_picture(void *enc, NV_ENC_PIC_PARAMS *p) {
    Input *in = p->inputBuffer;
    Output *out = p->outputBitstream;
    /* Mean luma and mean chroma of the uploaded picture: shows the NV12 upload is right. */
    double luma = 0, chroma = 0;
    if (in) {
        for (uint32_t y = 0; y < in->height; y++)
            for (uint32_t x = 0; x < in->width; x++) luma += in->pixels[y * in->pitch + x];
        for (uint32_t y = 0; y < in->height / 2; y++)
            for (uint32_t x = 0; x < in->width; x++)
                chroma += in->pixels[(in->height + y) * in->pitch + x];
        luma /= (double)in->width * in->height;
        chroma /= (double)in->width * (in->height / 2);
    }
    size_t n = p->qpDeltaMap ? p->qpDeltaMapSize : 0;
    char *map = malloc(n * 2 + 1);
    for (size_t i = 0; i < n; i++) sprintf(map + 2 * i, "%02x", (uint8_t)p->qpDeltaMap[i]);
    map[n * 2] = 0;
    fake_log("{\"call\":\"nvEncEncodePicture\",\"version\":%u,\"flags\":%u,\"frameIdx\":%u,"
             "\"timestamp\":%llu,\"inputWidth\":%u,\"inputHeight\":%u,\"inputPitch\":%u,"
             "\"bufferFmt\":%d,\"pictureStruct\":%d,\"input\":%s,\"output\":%s,"
             "\"inputLocked\":%d,\"luma\":%.2f,\"chroma\":%.2f,\"qpDeltaMapSize\":%u,"
             "\"qpDeltaMap\":\"%s\"}",
             p->version, p->encodePicFlags, p->frameIdx, (unsigned long long)p->inputTimeStamp,
             p->inputWidth, p->inputHeight, p->inputPitch, p->bufferFmt, p->pictureStruct,
             in ? "true" : "false", out ? "true" : "false", in ? in->locked : 0, luma, chroma,
             p->qpDeltaMapSize, p->qpDeltaMap ? map : "");
    free(map);
    if (p->encodePicFlags & NV_ENC_PIC_FLAG_EOS) return NV_ENC_SUCCESS;
    if (!in || !out) return NV_ENC_ERR_INVALID_PTR;
    if (p->version != NV_ENC_PIC_PARAMS_VER) return NV_ENC_ERR_INVALID_VERSION;
    out->unit = &units[1 + p->frameIdx % (unit_count - 1)];
    out->timestamp = p->inputTimeStamp;
    out->filled = 1;
    /* $FAKE_NVENC_HOLD=1: every even picture is held (as with reordering or lookahead): the
     * client must wait for the next success, then read both bitstreams in order. */
    if (fake_env_int("FAKE_NVENC_HOLD", 0) && p->frameIdx % 2 == 0) return NV_ENC_ERR_NEED_MORE_INPUT;
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI lock_bitstream(void *enc, NV_ENC_LOCK_BITSTREAM *p) {
    Output *out = p->outputBitstream;
    fake_log("{\"call\":\"nvEncLockBitstream\",\"version\":%u,\"filled\":%d}", p->version,
             out->filled);
    if (!out->filled) return NV_ENC_ERR_INVALID_CALL;
    p->bitstreamBufferPtr = out->unit->data;
    p->bitstreamSizeInBytes = out->unit->size;
    p->outputTimeStamp = out->timestamp;
    p->pictureType = NV_ENC_PIC_TYPE_IDR;
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI unlock_bitstream(void *enc, NV_ENC_OUTPUT_PTR buffer) {
    ((Output *)buffer)->filled = 0;
    fake_log("{\"call\":\"nvEncUnlockBitstream\"}");
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI sequence_params(void *enc, NV_ENC_SEQUENCE_PARAM_PAYLOAD *p) {
    fake_log("{\"call\":\"nvEncGetSequenceParams\",\"version\":%u,\"inBufferSize\":%u}",
             p->version, p->inBufferSize);
    load_units();
    if (unit_count < 1 || units[0].size > p->inBufferSize) return NV_ENC_ERR_NOT_ENOUGH_BUFFER;
    memcpy(p->spsppsBuffer, units[0].data, units[0].size);
    *p->outSPSPPSPayloadSize = units[0].size;
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI destroy_encoder(void *enc) {
    fake_log("{\"call\":\"nvEncDestroyEncoder\"}");
    return NV_ENC_SUCCESS;
}

static const char *NVENCAPI last_error(void *enc) { return "fake driver detail"; }

NVENCSTATUS NVENCAPI NvEncodeAPICreateInstance(NV_ENCODE_API_FUNCTION_LIST *list) {
    fake_log("{\"call\":\"NvEncodeAPICreateInstance\",\"version\":%u}", list->version);
    if (list->version != NV_ENCODE_API_FUNCTION_LIST_VER) return NV_ENC_ERR_INVALID_VERSION;
    list->nvEncOpenEncodeSessionEx = open_session_ex;
    list->nvEncGetEncodePresetConfigEx = preset_config_ex;
    list->nvEncInitializeEncoder = initialize;
    list->nvEncCreateInputBuffer = create_input;
    list->nvEncDestroyInputBuffer = destroy_input;
    list->nvEncCreateBitstreamBuffer = create_bitstream;
    list->nvEncDestroyBitstreamBuffer = destroy_bitstream;
    list->nvEncLockInputBuffer = lock_input;
    list->nvEncUnlockInputBuffer = unlock_input;
    list->nvEncEncodePicture = encode_picture;
    list->nvEncLockBitstream = lock_bitstream;
    list->nvEncUnlockBitstream = unlock_bitstream;
    list->nvEncGetSequenceParams = sequence_params;
    list->nvEncDestroyEncoder = destroy_encoder;
    list->nvEncGetLastErrorString = last_error;
    return NV_ENC_SUCCESS;
}
