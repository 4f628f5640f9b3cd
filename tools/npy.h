/* npy.h - writes NumPy .npy files (format version 1.0), atomically.
 *
 * The file is written to a temporary file beside the target, flushed to
 * disk and then renamed over the target, so a reader never sees a partial
 * file and a failed write leaves any old file in place.  Data is written
 * little-endian whatever the host's byte order. */
#ifndef INFER_TOOL_NPY_H
#define INFER_TOOL_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 8

/* Writes a C-order float32 array of shape [shape[0], ..., shape[ndim-1]]
 * ("<f4").  Returns 0, or -1 with a message ("PATH: why") in err. */
int npy_write_f32(const char *path, const float *data, const int64_t *shape, int ndim,
                  char *err, size_t err_size);

/* The same for int32 data ("<i4"). */
int npy_write_i32(const char *path, const int32_t *data, const int64_t *shape, int ndim,
                  char *err, size_t err_size);

/* Formats the .npy v1.0 header (magic, version, length, dict, padding)
 * for the given dtype descr ("<f4") and shape into buf.  Returns its
 * length, a multiple of 64, or 0 if it does not fit in size. */
size_t npy_header(char *buf, size_t size, const char *descr, const int64_t *shape, int ndim);

#endif
