/* util.c - scratch folders, files and .npy reading for the tests. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "io/st_write.h"
#include "test.h"

char *test_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    size_t n = strlen(base) + strlen(tag) + 32;
    char *p = malloc(n);
    if (!p) return NULL;
    snprintf(p, n, "%s/infer-%s-XXXXXX", base, tag);
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

void test_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            size_t n = strlen(dir) + strlen(e->d_name) + 2;
            char *p = malloc(n);
            if (!p) continue;
            snprintf(p, n, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                test_rmdir(p);
            else
                unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

int test_write_file(const char *dir, const char *name, const void *data, size_t len)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p) return -1;
    snprintf(p, n, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    free(p);
    if (!f) return -1;
    int ok = len == 0 || fwrite(data, 1, len, f) == len;
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : -1;
}

unsigned char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long sz = ftell(f);
    rewind(f);
    unsigned char *buf = malloc(sz > 0 ? (size_t)sz + 1 : 1);
    if (buf && sz > 0 && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[sz > 0 ? sz : 0] = 0;
        if (len) *len = (size_t)(sz > 0 ? sz : 0);
    }
    return buf;
}

int test_dynamic_rope(const char *model_dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    size_t len;
    char *cfg = (char *)test_read_file(path, &len);
    assert_non_null(cfg);
    const int dynamic = strstr(cfg, "\"dynamic\"") != NULL;
    free(cfg);
    return dynamic;
}

/* .npy v1/v2/v3: magic, version, header length, a Python dict literal
 * {'descr': '<f4', 'fortran_order': False, 'shape': (a, b), }, then data. */
int test_npy_load(const char *path, test_npy *out)
{
    memset(out, 0, sizeof *out);
    size_t len;
    unsigned char *buf = test_read_file(path, &len);
    if (!buf) return -1;
    int rc = -1;
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) goto done;
    size_t hlen, hstart;
    if (buf[6] == 1) {
        hlen = buf[8] | (size_t)buf[9] << 8;
        hstart = 10;
    } else {
        if (len < 12) goto done;
        hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        hstart = 12;
    }
    if (hstart + hlen > len) goto done;
    char *hdr = malloc(hlen + 1);
    if (!hdr) goto done;
    memcpy(hdr, buf + hstart, hlen);
    hdr[hlen] = 0;
    const char *d = strstr(hdr, "'descr':");
    const char *s = strstr(hdr, "'shape':");
    if (!d || !s || strstr(hdr, "'fortran_order': True")) {
        free(hdr);
        goto done;
    }
    d = strchr(d + 8, '\'');
    char descr[8] = {0};
    if (d) sscanf(d + 1, "%7[^']", descr);
    s = strchr(s, '(');
    out->ndim = 0;
    size_t n = 1;
    if (s) {
        s++;
        while (*s && *s != ')' && out->ndim < 4) {
            while (*s == ' ' || *s == ',') s++;
            if (*s == ')') break;
            long long v = strtoll(s, (char **)&s, 10);
            out->shape[out->ndim++] = v;
            n *= (size_t)v;
        }
    }
    free(hdr);
    out->n = n;
    const unsigned char *data = buf + hstart + hlen;
    size_t avail = len - hstart - hlen;
    if (!strcmp(descr, "<f4")) {
        if (avail < n * 4) goto done;
        out->dtype = 'f';
        out->f = malloc(n * 4 + 4);
        if (!out->f) goto done;
        memcpy(out->f, data, n * 4);
    } else if (!strcmp(descr, "<i4")) {
        if (avail < n * 4) goto done;
        out->dtype = 'i';
        out->i = malloc(n * 4 + 4);
        if (!out->i) goto done;
        memcpy(out->i, data, n * 4);
    } else if (!strcmp(descr, "<i8")) {
        if (avail < n * 8) goto done;
        out->dtype = 'i';
        out->i = malloc(n * 4 + 4);
        if (!out->i) goto done;
        for (size_t k = 0; k < n; k++) {
            int64_t v;
            memcpy(&v, data + 8 * k, 8);
            out->i[k] = (int32_t)v;
        }
    } else {
        goto done;
    }
    rc = 0;
done:
    free(buf);
    return rc;
}

void test_npy_free(test_npy *a)
{
    free(a->f);
    free(a->i);
    memset(a, 0, sizeof *a);
}

void test_cpu_matmul(int n_threads, int int8, const bk_weight *w, const bk_weight *bias, const float *x, int T,
                     float *y)
{
    const backend_ops *be = &backend_cpu;
    bk_opts o = {.n_threads = n_threads, .cpu_int8 = int8};
    void *ctx = NULL;
    assert_int_equal(be->create(&o, &ctx), 0);
    void *dx = NULL, *dy = NULL;
    size_t xb = (size_t)T * (size_t)w->cols * sizeof(float), yb = (size_t)T * (size_t)w->rows * sizeof(float);
    assert_int_equal(be->alloc(ctx, xb, &dx), 0);
    assert_int_equal(be->alloc(ctx, yb, &dy), 0);
    assert_int_equal(be->upload(ctx, dx, x, xb), 0);
    assert_int_equal(be->matmul(ctx, dy, dx, w, bias, T), 0);
    assert_int_equal(be->download(ctx, y, dy, yb), 0);
    be->free(ctx, dx);
    be->free(ctx, dy);
    be->destroy(ctx);
}

void test_rewrite_weights(const char *dir, test_edit_fn edit)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t len;
    unsigned char *buf = test_read_file(path, &len);
    assert_non_null(buf);
    st_tensor *t;
    size_t n;
    assert_int_equal(st_parse(buf, len, path, &t, &n), 0);
    size_t n_orig = n;
    st_out *o = calloc(n, sizeof *o);
    assert_non_null(o);
    for (size_t i = 0; i < n; i++) {
        o[i].name = t[i].name;
        o[i].dtype = t[i].dtype;
        o[i].ndim = t[i].ndim;
        memcpy(o[i].shape, t[i].shape, sizeof t[i].shape);
        o[i].data = t[i].data;
    }
    edit(o, &n);
    assert_int_equal(st_write_file(path, o, n, NULL, NULL, NULL), 0);
    free(o);
    st_tensors_free(t, n_orig);
    free(buf);
}

size_t test_find_out(st_out *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return i;
    fail_msg("no tensor %s", name);
    return 0;
}

struct cJSON *test_read_json(const char *path)
{
    size_t n;
    unsigned char *text = test_read_file(path, &n);
    if (!text) fail_msg("cannot read %s", path);
    cJSON *j = cJSON_ParseWithLength((const char *)text, n);
    free(text);
    if (!j) fail_msg("%s is not JSON", path);
    return j;
}

int test_shell(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
