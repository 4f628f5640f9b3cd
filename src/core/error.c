/* error.c - per-thread error messages. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ERR_CAP 1024

static _Thread_local char err_msg[ERR_CAP];

const char *infer_last_error(void) { return err_msg; }

void infer_err_clear(void) { err_msg[0] = '\0'; }

int infer_err(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return status;
}

int infer_err_prefix(int status, const char *fmt, ...)
{
    char prefix[ERR_CAP];
    char old[ERR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_msg, sizeof old);
    snprintf(err_msg, sizeof err_msg, "%.500s: %.500s", prefix, old);
    return status;
}

const char *infer_status_name(int status)
{
    switch (status) {
    case INFER_OK: return "INFER_OK";
    case INFER_ERR_INVALID_ARGUMENT: return "INFER_ERR_INVALID_ARGUMENT";
    case INFER_ERR_IO: return "INFER_ERR_IO";
    case INFER_ERR_FORMAT: return "INFER_ERR_FORMAT";
    case INFER_ERR_UNSUPPORTED: return "INFER_ERR_UNSUPPORTED";
    case INFER_ERR_MISSING: return "INFER_ERR_MISSING";
    case INFER_ERR_SHAPE: return "INFER_ERR_SHAPE";
    case INFER_ERR_OUT_OF_RANGE: return "INFER_ERR_OUT_OF_RANGE";
    case INFER_ERR_OUT_OF_MEMORY: return "INFER_ERR_OUT_OF_MEMORY";
    case INFER_ERR_BACKEND: return "INFER_ERR_BACKEND";
    case INFER_ERR_CANCELLED: return "INFER_ERR_CANCELLED";
    default: return "INFER_ERR_UNKNOWN";
    }
}

const char *infer_version(void) { return INFER_VERSION_STRING; }
