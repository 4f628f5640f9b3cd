/* error.h - the per-thread error message behind infer_last_error(). */
#ifndef INFER_CORE_ERROR_H
#define INFER_CORE_ERROR_H

#include "infer.h"

#if defined(__GNUC__)
#define INFER_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define INFER_PRINTF(f, a)
#endif

/* Sets this thread's message from a printf format and returns status, so
 * that a failure reads `return infer_err(INFER_ERR_FORMAT, "%s: ...", path);` */
int infer_err(int status, const char *fmt, ...) INFER_PRINTF(2, 3);

/* Prefixes the current message with "prefix: " and returns status. */
int infer_err_prefix(int status, const char *fmt, ...) INFER_PRINTF(2, 3);

void infer_err_clear(void);

#endif
