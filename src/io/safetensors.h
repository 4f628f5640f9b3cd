/* safetensors.h - memory-mapped safetensors files, single and sharded.
 *
 * File layout: an 8-byte little-endian header length N, N bytes of JSON
 * {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the data; offsets are relative to the first byte after the header.
 *
 * Every header is validated before any tensor is handed out: known dtypes,
 * offsets inside the file, end - begin == product(shape) * dtype size, and
 * the tensors cover the data region with no overlaps and no holes.
 * Tensor data may be unaligned for its type: read it with memcpy
 * (dtype_to_f32 does). */
#ifndef INFER_IO_SAFETENSORS_H
#define INFER_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    char *name;                 /* owned by the set */
    infer_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const unsigned char *data;  /* into the mapping; any alignment */
    size_t nbytes;
    int file;                   /* index of the file it lives in */
} st_tensor;

typedef struct st_set st_set;

/* Validates one safetensors image held in memory (buf, len), e.g. a whole
 * file.  what names it in error messages.  On success and when out/n_out are
 * not NULL, *out is a malloc'ed array of *n_out tensors whose data pointers
 * point into buf (free with st_tensors_free).  Used by st_open_* and by the
 * fuzzer. */
int st_parse(const unsigned char *buf, size_t len, const char *what, st_tensor **out,
             size_t *n_out);
void st_tensors_free(st_tensor *t, size_t n);

/* Opens and maps one .safetensors file. */
int st_open_file(const char *path, st_set **out);

/* Opens the weights of a model folder: model.safetensors.index.json (every
 * shard its weight_map names, and each name must be in the shard it is
 * mapped to), else model.safetensors, else every *.safetensors file in the
 * folder (sorted by name).  Missing weights are INFER_ERR_MISSING. */
int st_open_dir(const char *dir, st_set **out);

void st_close(st_set *set);

/* Unmaps the whole pages inside [p, p + n) if they lie in one of the
 * set's mapped files (else nothing): for weights a backend copied
 * elsewhere.  The mapping stays valid: a page touched again is read again
 * from the file (the page cache keeps it). */
void st_drop(const st_set *set, const void *p, size_t n);

/* Lookup by exact name; NULL if absent. */
const st_tensor *st_find(const st_set *set, const char *name);

size_t st_count(const st_set *set);
const st_tensor *st_get(const st_set *set, size_t i);
/* Path of file index i (for messages). */
const char *st_file_path(const st_set *set, int i);

/* The "__metadata__" value for key in file 0 (or NULL). */
const char *st_metadata(const st_set *set, const char *key);

#endif
