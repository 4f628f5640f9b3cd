/* st_write.c - writes safetensors files (see st_write.h). */
#include "io/st_write.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

size_t st_out_bytes(const st_out *t)
{
    size_t n = dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

static char *make_header(const st_out *t, size_t n, const char *const *metadata)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    if (metadata && metadata[0]) {
        cJSON *md = cJSON_AddObjectToObject(root, "__metadata__");
        for (size_t i = 0; md && metadata[i] && metadata[i + 1]; i += 2)
            cJSON_AddStringToObject(md, metadata[i], metadata[i + 1]);
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        if (!e) goto fail;
        cJSON_AddStringToObject(e, "dtype", dtype_name(t[i].dtype));
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; shape && d < t[i].ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
        size_t bytes = st_out_bytes(&t[i]);
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        if (!offs) goto fail;
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
fail:
    cJSON_Delete(root);
    return NULL;
}

static int write_data(FILE *f, const st_out *t, size_t i, st_fill_fn fill, void *arg)
{
    size_t bytes = st_out_bytes(t);
    if (t->data) return fwrite(t->data, 1, bytes, f) == bytes ? 0 : -1;
    if (!fill) return -2;
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    if (!buf) return -3;
    int rc = 0;
    for (size_t off = 0; off < bytes && !rc; off += CHUNK) {
        size_t n = bytes - off < CHUNK ? bytes - off : CHUNK;
        if (fill(arg, i, off, buf, n) != 0 || fwrite(buf, 1, n, f) != n) rc = -1;
    }
    free(buf);
    return rc;
}

int st_write_file(const char *path, const st_out *t, size_t n, const char *const *metadata,
                  st_fill_fn fill, void *arg)
{
    char *hdr = make_header(t, n, metadata);
    if (!hdr) return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory building the header", path);
    size_t hlen = strlen(hdr);
    size_t padded = (hlen + 7) / 8 * 8;
    size_t tmp_len = strlen(path) + 5;
    char *tmp = malloc(tmp_len);
    if (!tmp) {
        free(hdr);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    snprintf(tmp, tmp_len, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int rc = INFER_OK;
    if (!f) {
        rc = infer_err(INFER_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    unsigned char len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (unsigned char)((uint64_t)padded >> (8 * b));
    int bad = fwrite(len8, 1, 8, f) != 8 || fwrite(hdr, 1, hlen, f) != hlen;
    for (size_t p = hlen; p < padded && !bad; p++) bad = fputc(' ', f) == EOF;
    for (size_t i = 0; i < n && !bad; i++) bad = write_data(f, &t[i], i, fill, arg) != 0;
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        rc = infer_err(INFER_ERR_IO, "%s: write failed: %s", path, errno ? strerror(errno) : "fill error");
        remove(tmp);
    }
done:
    free(tmp);
    free(hdr);
    return rc;
}
