/* Call recorder shared by the fake CUDA and NVENC libraries (test-only, see README there).
 * Each call appends one JSON object per line to $FAKE_NVENC_LOG. */
#ifndef FAKE_LOG_H
#define FAKE_LOG_H
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void fake_log(const char *fmt, ...) {
    const char *path = getenv("FAKE_NVENC_LOG");
    if (!path || !*path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

static int fake_env_int(const char *name, int fallback) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : fallback;
}
#endif
