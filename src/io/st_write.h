/* st_write.h - writing safetensors files.
 *
 * The header lists tensors in the order given, with consecutive
 * data_offsets; it is padded with spaces to a multiple of 8 bytes, as the
 * reference writer does.  The file is written to PATH.tmp and renamed, so a
 * failed write leaves no partial file behind. */
#ifndef INFER_IO_ST_WRITE_H
#define INFER_IO_ST_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

typedef struct st_out {
    const char *name;
    infer_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data; /* nbytes of data, or NULL to ask the fill callback */
} st_out;

/* Fills buf (n bytes) with the bytes [offset, offset + n) of tensor i. */
typedef int (*st_fill_fn)(void *arg, size_t i, size_t offset, void *buf, size_t n);

/* Bytes of tensor data: product(shape) * dtype size. */
size_t st_out_bytes(const st_out *t);

/* metadata: NULL or pairs {key0, value0, key1, value1, ..., NULL}. */
int st_write_file(const char *path, const st_out *tensors, size_t n, const char *const *metadata,
                  st_fill_fn fill, void *arg);

#endif
