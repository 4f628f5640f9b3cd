/* test_safetensors.c - the safetensors parser and loader: valid single and
 * sharded folders read back byte for byte, and every kind of bad file
 * rejected with the right status and a message naming file and tensor.
 *
 * Files are built in memory by a small writer (below) and written to a
 * scratch folder. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "test.h"

/* ------------------------------------------------------------------ */
/* A small safetensors writer                                           */
/* ------------------------------------------------------------------ */

typedef struct spec {
    const char *name;
    const char *dtype;
    const char *shape; /* the JSON list's inside: "2, 3" */
    const void *data;
    size_t nbytes;
} spec;

/* A buffer that grows; aborts the test when out of memory. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n + 1);
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_printf(sbuf *b, const char *fmt, ...) INFER_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    assert_true(k >= 0 && (size_t)k < sizeof tmp);
    sb_add(b, tmp, (size_t)k);
}

/* 8-byte length + header + data: the image of a file. */
static unsigned char *image_raw(const char *header, size_t hlen, const void *data, size_t dlen,
                                size_t *len)
{
    *len = 8 + hlen + dlen;
    unsigned char *img = malloc(*len + 1);
    assert_non_null(img);
    uint64_t h = hlen;
    for (int i = 0; i < 8; i++) img[i] = (unsigned char)(h >> (8 * i));
    memcpy(img + 8, header, hlen);
    if (dlen) memcpy(img + 8 + hlen, data, dlen);
    return img;
}

/* A well-formed file of the tensors in s (laid out in order), with an
 * optional __metadata__ object and pad spaces after the JSON. */
static unsigned char *image_of(const spec *s, size_t n, const char *meta, size_t pad, size_t *len)
{
    sbuf h = {0}, d = {0};
    sb_add(&h, "{", 1);
    if (meta) sb_printf(&h, "\"__metadata__\":%s%s", meta, n ? "," : "");
    for (size_t i = 0; i < n; i++) {
        sb_printf(&h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}",
                  i ? "," : "", s[i].name, s[i].dtype, s[i].shape, d.n, d.n + s[i].nbytes);
        sb_add(&d, s[i].data ? s[i].data : "", s[i].nbytes);
    }
    sb_add(&h, "}", 1);
    for (size_t i = 0; i < pad; i++) sb_add(&h, " ", 1);
    unsigned char *img = image_raw(h.p, h.n, d.p, d.n, len);
    free(h.p);
    free(d.p);
    return img;
}

/* A file whose header is given verbatim, followed by dlen bytes 0..255. */
static unsigned char *image_header(const char *header, size_t dlen, size_t *len)
{
    unsigned char *data = malloc(dlen + 1);
    assert_non_null(data);
    for (size_t i = 0; i < dlen; i++) data[i] = (unsigned char)i;
    unsigned char *img = image_raw(header, strlen(header), data, dlen, len);
    free(data);
    return img;
}

static void write_or_fail(const char *dir, const char *name, const void *data, size_t len)
{
    assert_int_equal(test_write_file(dir, name, data, len), 0);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Checks a failure's status and that its message names each of want[]. */
static void expect_err(int rc, int status, const char *want1, const char *want2)
{
    const char *msg = infer_last_error();
    if (rc != status || (want1 && !strstr(msg, want1)) || (want2 && !strstr(msg, want2)))
        print_error("got %s \"%s\", wanted %s naming '%s' and '%s'\n", infer_status_name(rc), msg,
                    infer_status_name(status), want1 ? want1 : "", want2 ? want2 : "");
    assert_int_equal(rc, status);
    if (want1) assert_non_null(strstr(msg, want1));
    if (want2) assert_non_null(strstr(msg, want2));
}

/* ------------------------------------------------------------------ */
/* Valid files                                                          */
/* ------------------------------------------------------------------ */

static const float f32v[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, -7.0f};
static const uint16_t f16v[4] = {0x3c00, 0xc100, 0x7bff, 0x0001};
static const uint16_t bf16v[3] = {0x3f80, 0x4000, 0xbf80};
static const uint32_t u32v[2] = {0xdeadbeefu, 7u};
static const int32_t i32v[3] = {-1, 2147483647, -2147483647 - 1};
static const uint8_t u8v[5] = {0, 1, 127, 128, 255};
static const int8_t i8v[2] = {-128, 127};
static const uint8_t boolv[3] = {1, 0, 1};

static const spec mixed[] = {
    {"model.embed.weight", "F32", "2, 3", f32v, sizeof f32v},
    {"a.f16", "F16", "4", f16v, sizeof f16v},
    {"a.bf16", "BF16", "1, 3", bf16v, sizeof bf16v},
    {"q.u32", "U32", "2", u32v, sizeof u32v},
    {"q.i32", "I32", "3", i32v, sizeof i32v},
    {"q.u8", "U8", "5", u8v, sizeof u8v},
    {"q.i8", "I8", "2", i8v, sizeof i8v},
    {"mask", "BOOL", "3, 1", boolv, sizeof boolv},
    {"empty", "F32", "0, 4", NULL, 0},
    {"scalar", "I32", "", i32v, 4},
};
#define N_MIXED (sizeof mixed / sizeof mixed[0])

/* Every tensor of mixed[] is in set, byte for byte. */
static void check_mixed(const st_set *set, int file)
{
    for (size_t i = 0; i < N_MIXED; i++) {
        const st_tensor *t = st_find(set, mixed[i].name);
        assert_non_null(t);
        assert_string_equal(t->name, mixed[i].name);
        assert_int_equal(t->dtype, dtype_parse(mixed[i].dtype));
        assert_int_equal(t->nbytes, mixed[i].nbytes);
        assert_int_equal(t->file, file);
        if (t->nbytes) assert_memory_equal(t->data, mixed[i].data, t->nbytes);
    }
    const st_tensor *t = st_find(set, "model.embed.weight");
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    float f[6];
    dtype_to_f32(f, t->data, DT_F32, 6);
    assert_memory_equal(f, f32v, sizeof f);
    dtype_to_f32(f, st_find(set, "a.f16")->data, DT_F16, 4);
    assert_true(f[0] == 1.0f && f[1] == -2.5f && f[2] == 65504.0f);
    dtype_to_f32(f, st_find(set, "a.bf16")->data, DT_BF16, 3);
    assert_true(f[0] == 1.0f && f[1] == 2.0f && f[2] == -1.0f);
    int32_t i32;
    memcpy(&i32, st_find(set, "q.i32")->data + 8, 4);
    assert_int_equal(i32, -2147483647 - 1);
    uint32_t u32;
    memcpy(&u32, st_find(set, "q.u32")->data, 4);
    assert_int_equal(u32, 0xdeadbeefu);
    assert_int_equal(st_find(set, "scalar")->ndim, 0);
    assert_int_equal(st_find(set, "empty")->shape[0], 0);
    assert_null(st_find(set, "model.embed"));
    assert_null(st_find(set, "model.embed.weight2"));
    assert_null(st_find(set, ""));
}

static void valid_single_file(void **state)
{
    (void)state;
    char *dir = test_tmpdir("st");
    /* Pad the header to an odd length: every tensor's data is unaligned. */
    for (size_t pad = 0; pad < 8; pad++) {
        size_t len;
        const char *meta = "{\"format\":\"pt\",\"note\":\"x\"}";
        unsigned char *img = image_of(mixed, N_MIXED, meta, pad, &len);
        write_or_fail(dir, "w.safetensors", img, len);
        char *path = join(dir, "w.safetensors");
        st_set *set = NULL;
        int rc = st_open_file(path, &set);
        if (rc) print_error("%s\n", infer_last_error());
        assert_int_equal(rc, INFER_OK);
        assert_int_equal(st_count(set), N_MIXED);
        for (size_t i = 0; i < N_MIXED; i++) /* header order */
            assert_string_equal(st_get(set, i)->name, mixed[i].name);
        assert_null(st_get(set, N_MIXED));
        check_mixed(set, 0);
        assert_string_equal(st_file_path(set, 0), path);
        assert_null(st_file_path(set, 1));
        assert_string_equal(st_metadata(set, "format"), "pt");
        assert_string_equal(st_metadata(set, "note"), "x");
        assert_null(st_metadata(set, "absent"));
        st_close(set);

        /* The same image parsed in memory. */
        st_tensor *t = NULL;
        size_t n = 0;
        assert_int_equal(st_parse(img, len, "mem", &t, &n), INFER_OK);
        assert_int_equal(n, N_MIXED);
        assert_true(t[0].data >= img && t[0].data + t[0].nbytes <= img + len);
        st_tensors_free(t, n);
        assert_int_equal(st_parse(img, len, "mem", NULL, NULL), INFER_OK);
        free(img);
        free(path);
    }
    test_rmdir(dir);
    free(dir);
}

static void empty_header_and_nulls(void **state)
{
    (void)state;
    size_t len;
    unsigned char *img = image_raw("{}", 2, NULL, 0, &len);
    st_tensor *t = NULL;
    size_t n = 99;
    assert_int_equal(st_parse(img, len, "e", &t, &n), INFER_OK);
    assert_int_equal(n, 0);
    st_tensors_free(t, n);
    free(img);
    st_close(NULL);
    st_tensors_free(NULL, 0);
    assert_null(st_find(NULL, "x"));
    assert_int_equal(st_count(NULL), 0);
    assert_null(st_metadata(NULL, "format"));
}

static void many_tensors_lookup(void **state)
{
    (void)state;
    enum { N = 5000 };
    spec *s = calloc(N, sizeof *s);
    char (*names)[48] = calloc(N, sizeof *names);
    uint8_t *vals = malloc(N);
    assert_true(s && names && vals);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.up_proj.weight", i);
        vals[i] = (uint8_t)(i * 7);
        s[i] = (spec){names[i], "U8", "1", &vals[i], 1};
    }
    size_t len;
    unsigned char *img = image_of(s, N, NULL, 0, &len);
    char *dir = test_tmpdir("st");
    write_or_fail(dir, "model.safetensors", img, len);
    st_set *set = NULL;
    assert_int_equal(st_open_dir(dir, &set), INFER_OK);
    assert_int_equal(st_count(set), N);
    assert_null(st_metadata(set, "format"));
    for (int i = 0; i < N; i++) {
        const st_tensor *t = st_find(set, names[i]);
        assert_non_null(t);
        assert_string_equal(t->name, names[i]);
        assert_int_equal(t->data[0], vals[i]);
    }
    assert_null(st_find(set, "model.layers.5000.mlp.up_proj.weight"));
    st_close(set);
    test_rmdir(dir);
    free(dir);
    free(img);
    free(s);
    free(names);
    free(vals);
}

/* A 2 GiB BF16 tensor (a sparse file) opens at once: the data is mapped,
 * never read. */
/* A 2 GiB (sparse) file opens: its data is mapped, never read.  How long
 * loading takes is measured by bench/bench_load.c, not here. */
static void big_file_opens(void **state)
{
    (void)state;
    const uint64_t rows = 32768, cols = 32768; /* 2 GiB of BF16 */
    char hdr[160];
    int k = snprintf(hdr, sizeof hdr,
                     "{\"w\":{\"dtype\":\"BF16\",\"shape\":[%llu,%llu],\"data_offsets\":[0,%llu]}}",
                     (unsigned long long)rows, (unsigned long long)cols,
                     (unsigned long long)(rows * cols * 2));
    size_t len;
    unsigned char *img = image_raw(hdr, (size_t)k, NULL, 0, &len);
    char *dir = test_tmpdir("st");
    char *path = join(dir, "big.safetensors");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, img, len), (ssize_t)len);
    int trunc_ok = ftruncate(fd, (off_t)(len + rows * cols * 2)) == 0;
    close(fd);
    free(img);
    if (trunc_ok) {
        st_set *set = NULL;
        assert_int_equal(st_open_file(path, &set), INFER_OK);
        assert_int_equal(st_find(set, "w")->nbytes, rows * cols * 2);
        st_close(set);
    }
    test_rmdir(dir);
    free(path);
    free(dir);
}

/* st_drop unmaps a tensor's whole pages and loses nothing: the bytes read
 * again are the file's; a range outside the set's files is ignored. */
static void drop_keeps_bytes(void **state)
{
    (void)state;
    const size_t n = 3 * 4096 + 100;
    unsigned char *data = malloc(n), *copy = malloc(n);
    assert_true(data && copy);
    for (size_t i = 0; i < n; i++) data[i] = (unsigned char)(i * 131u + 7u);
    char hdr[128];
    int k = snprintf(hdr, sizeof hdr, "{\"w\":{\"dtype\":\"U8\",\"shape\":[%zu],\"data_offsets\":[0,%zu]}}", n, n);
    size_t len;
    unsigned char *img = image_raw(hdr, (size_t)k, data, n, &len);
    char *dir = test_tmpdir("st");
    write_or_fail(dir, "d.safetensors", img, len);
    char *path = join(dir, "d.safetensors");
    st_set *set = NULL;
    assert_int_equal(st_open_file(path, &set), INFER_OK);
    const st_tensor *t = st_find(set, "w");
    assert_non_null(t);
    memcpy(copy, t->data, n);
    st_drop(set, t->data, t->nbytes);
    assert_memory_equal(t->data, data, n);
    st_drop(set, copy, n); /* not the set's: nothing happens */
    assert_memory_equal(copy, data, n);
    st_drop(set, NULL, 0);
    st_close(set);
    test_rmdir(dir);
    free(path);
    free(dir);
    free(img);
    free(data);
    free(copy);
}

/* ------------------------------------------------------------------ */
/* Folders                                                              */
/* ------------------------------------------------------------------ */

static const spec shard1[] = {
    {"model.embed_tokens.weight", "BF16", "3", bf16v, sizeof bf16v},
    {"model.layers.0.w", "F32", "2, 3", f32v, sizeof f32v},
};
static const spec shard2[] = {
    {"model.norm.weight", "F16", "2, 2", f16v, sizeof f16v},
    {"lm_head.weight", "U8", "5", u8v, sizeof u8v},
};

static void write_spec(const char *dir, const char *name, const spec *s, size_t n, const char *meta)
{
    size_t len;
    unsigned char *img = image_of(s, n, meta, 3, &len);
    write_or_fail(dir, name, img, len);
    free(img);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    write_or_fail(dir, name, text, strlen(text));
}

static const char *good_index =
    "{\"metadata\": {\"total_size\": 34}, \"weight_map\": {"
    "\"lm_head.weight\": \"model-00002-of-00002.safetensors\","
    "\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\","
    "\"model.layers.0.w\": \"model-00001-of-00002.safetensors\","
    "\"model.norm.weight\": \"model-00002-of-00002.safetensors\"}}";

static void check_two_shards(const st_set *set, const char *name1, const char *name2)
{
    assert_int_equal(st_count(set), 4);
    for (size_t i = 0; i < 2; i++) {
        const st_tensor *a = st_find(set, shard1[i].name), *b = st_find(set, shard2[i].name);
        assert_non_null(a);
        assert_non_null(b);
        assert_memory_equal(a->data, shard1[i].data, a->nbytes);
        assert_memory_equal(b->data, shard2[i].data, b->nbytes);
        assert_non_null(strstr(st_file_path(set, a->file), name1));
        assert_non_null(strstr(st_file_path(set, b->file), name2));
    }
    assert_null(st_find(set, "model.layers.1.w"));
    assert_null(st_file_path(set, 2));
}

static void sharded_index(void **state)
{
    (void)state;
    char *dir = test_tmpdir("st");
    write_spec(dir, "model-00001-of-00002.safetensors", shard1, 2, "{\"format\":\"pt\"}");
    write_spec(dir, "model-00002-of-00002.safetensors", shard2, 2, "{\"format\":\"other\"}");
    write_text(dir, "model.safetensors.index.json", good_index);
    write_text(dir, "extra.safetensors", "junk, never opened");
    st_set *set = NULL;
    int rc = st_open_dir(dir, &set);
    if (rc) print_error("%s\n", infer_last_error());
    assert_int_equal(rc, INFER_OK);
    check_two_shards(set, "model-00001-of-00002", "model-00002-of-00002");
    assert_int_equal(st_find(set, "model.embed_tokens.weight")->file, 0);
    assert_int_equal(st_find(set, "lm_head.weight")->file, 1);
    assert_string_equal(st_metadata(set, "format"), "pt"); /* file 0's */
    st_close(set);
    test_rmdir(dir);
    free(dir);
}

static void fallback_all_files(void **state)
{
    (void)state;
    char *dir = test_tmpdir("st");
    write_spec(dir, "b.safetensors", shard2, 2, NULL);
    write_spec(dir, "a.safetensors", shard1, 2, NULL);
    write_text(dir, "config.json", "{}");
    st_set *set = NULL;
    assert_int_equal(st_open_dir(dir, &set), INFER_OK);
    check_two_shards(set, "/a.safetensors", "/b.safetensors");
    assert_int_equal(st_find(set, "model.norm.weight")->file, 1); /* sorted by name */
    st_close(set);

    /* model.safetensors wins over the other files. */
    write_spec(dir, "model.safetensors", mixed, N_MIXED, NULL);
    assert_int_equal(st_open_dir(dir, &set), INFER_OK);
    assert_int_equal(st_count(set), N_MIXED);
    check_mixed(set, 0);
    st_close(set);
    test_rmdir(dir);
    free(dir);

    /* A name in two files. */
    dir = test_tmpdir("st");
    write_spec(dir, "x.safetensors", shard1, 2, NULL);
    write_spec(dir, "y.safetensors", shard1 + 1, 1, NULL);
    set = (st_set *)1;
    expect_err(st_open_dir(dir, &set), INFER_ERR_FORMAT, "model.layers.0.w", "y.safetensors");
    assert_null(set);
    test_rmdir(dir);
    free(dir);
}

static void no_weights(void **state)
{
    (void)state;
    char *dir = test_tmpdir("st");
    write_text(dir, "config.json", "{}");
    write_text(dir, "notes.safetensors.txt", "x");
    st_set *set = NULL;
    int rc = st_open_dir(dir, &set);
    char want[600];
    snprintf(want, sizeof want,
             "%s: no model.safetensors, model.safetensors.index.json or *.safetensors file", dir);
    expect_err(rc, INFER_ERR_MISSING, want, NULL);
    assert_null(set);
    test_rmdir(dir);
    expect_err(st_open_dir(dir, &set), INFER_ERR_IO, dir, NULL); /* no folder at all */
    free(dir);
}

/* A folder with the two good shards and the given index. */
static int open_with_index(const char *index, char **dir_out)
{
    char *dir = test_tmpdir("st");
    write_spec(dir, "model-00001-of-00002.safetensors", shard1, 2, NULL);
    write_spec(dir, "model-00002-of-00002.safetensors", shard2, 2, NULL);
    write_text(dir, "model.safetensors.index.json", index);
    st_set *set = (st_set *)1;
    int rc = st_open_dir(dir, &set);
    assert_null(set);
    *dir_out = dir;
    return rc;
}

static void bad_index(void **state)
{
    (void)state;
    static const struct {
        const char *index;
        int status;
        const char *want1, *want2;
    } cases[] = {
        {"{\"weight_map\": {\"model.norm.weight\": \"model-00003-of-00003.safetensors\"}}",
         INFER_ERR_MISSING, "model-00003-of-00003.safetensors", "index.json"},
        {"{\"weight_map\": {\"model.layers.9.w\": \"model-00001-of-00002.safetensors\"}}",
         INFER_ERR_MISSING, "model.layers.9.w", "model-00001-of-00002.safetensors"},
        {"{\"weight_map\": {\"lm_head.weight\": \"model-00001-of-00002.safetensors\"}}",
         INFER_ERR_MISSING, "lm_head.weight", "model-00001-of-00002.safetensors"},
        {"{\"weight_map\": {\"lm_head.weight\": \"../model-00001-of-00002.safetensors\"}}",
         INFER_ERR_FORMAT, "lm_head.weight", "index.json"},
        {"{\"weight_map\": {\"lm_head.weight\": \"..\"}}", INFER_ERR_FORMAT, "lm_head.weight",
         "index.json"},
        {"{\"weight_map\": {\"lm_head.weight\": 3}}", INFER_ERR_FORMAT, "lm_head.weight", NULL},
        {"{\"weight_map\": {}}", INFER_ERR_FORMAT, "index.json", NULL},
        {"{\"metadata\": {}}", INFER_ERR_FORMAT, "weight_map", "index.json"},
        {"{\"weight_map\": ", INFER_ERR_FORMAT, "index.json", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir;
        int rc = open_with_index(cases[i].index, &dir);
        expect_err(rc, cases[i].status, cases[i].want1, cases[i].want2);
        test_rmdir(dir);
        free(dir);
    }
}

static void shards_sharing_a_name(void **state)
{
    (void)state;
    char *dir = test_tmpdir("st");
    write_spec(dir, "s1.safetensors", shard1, 2, NULL);
    write_spec(dir, "s2.safetensors", shard1, 1, NULL);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\": {\"model.layers.0.w\": \"s1.safetensors\","
               "\"model.embed_tokens.weight\": \"s2.safetensors\"}}");
    st_set *set = NULL;
    expect_err(st_open_dir(dir, &set), INFER_ERR_FORMAT, "model.embed_tokens.weight",
               "s2.safetensors");
    assert_null(set);
    test_rmdir(dir);
    free(dir);
}

/* ------------------------------------------------------------------ */
/* Bad files                                                            */
/* ------------------------------------------------------------------ */

/* Writes img to dir/name, opens it, checks the status and that the
 * message names the file and want (when not NULL). */
static void expect_bad_file(const char *dir, const unsigned char *img, size_t len, int status,
                            const char *want)
{
    write_or_fail(dir, "bad.safetensors", img, len);
    char *path = join(dir, "bad.safetensors");
    st_set *set = (st_set *)1;
    expect_err(st_open_file(path, &set), status, path, want);
    assert_null(set);
    /* The same bytes in memory fail alike. */
    st_tensor *t = (st_tensor *)1;
    size_t n = 7;
    expect_err(st_parse(img, len, "mem.safetensors", &t, &n), status, "mem.safetensors", want);
    assert_null(t);
    assert_int_equal(n, 0);
    free(path);
}

static void bad_headers(void **state)
{
    (void)state;
#define T(name, shape, dtype, b, e) \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":[" shape "],\"data_offsets\":[" b "," e "]}"
    static const struct {
        const char *header;
        size_t dlen;
        int status;
        const char *want;
    } cases[] = {
        {"not json", 0, INFER_ERR_FORMAT, "not valid JSON"},
        {"[1, 2]", 0, INFER_ERR_FORMAT, "not a JSON object"},
        {"\"x\"", 0, INFER_ERR_FORMAT, "not a JSON object"},
        {"{" T("w", "2", "F32", "0", "8") "} x", 8, INFER_ERR_FORMAT, "after its JSON"},
        {"{" T("model.w", "4", "F8_E4M3", "0", "4") "}", 4, INFER_ERR_UNSUPPORTED, "'model.w'"},
        {"{" T("model.w", "4", "F8_E4M3", "0", "4") "}", 4, INFER_ERR_UNSUPPORTED, "F8_E4M3"},
        {"{" T("model.norm.weight", "64", "BF16", "0", "10") "}", 10, INFER_ERR_FORMAT,
         "tensor 'model.norm.weight': data_offsets [0, 10] hold 10 bytes but shape [64] of BF16 "
         "needs 128"},
        {"{" T("w.out", "4", "F32", "0", "16") "}", 8, INFER_ERR_FORMAT, "'w.out'"},
        {"{" T("a", "4", "U8", "0", "4") "," T("b.over", "4", "U8", "2", "6") "}", 6,
         INFER_ERR_FORMAT, "'b.over'"},
        {"{" T("a", "2", "U8", "0", "2") "," T("b.hole", "2", "U8", "4", "6") "}", 6,
         INFER_ERR_FORMAT, "'b.hole'"},
        {"{" T("a.first", "2", "U8", "0", "2") "}", 5, INFER_ERR_FORMAT, "'a.first'"},
        {"{" T("dup.w", "2", "U8", "0", "2") "," T("dup.w", "2", "U8", "2", "4") "}", 4,
         INFER_ERR_FORMAT, "'dup.w'"},
        {"{" T("neg.w", "2", "U8", "-2", "0") "}", 0, INFER_ERR_FORMAT, "'neg.w'"},
        {"{" T("frac.w", "2", "U8", "0.5", "2.5") "}", 2, INFER_ERR_FORMAT, "'frac.w'"},
        {"{" T("big.w", "2", "U8", "0", "9007199254740994") "}", 2, INFER_ERR_FORMAT, "'big.w'"},
        {"{" T("inf.w", "2", "U8", "0", "1e999") "}", 2, INFER_ERR_FORMAT, "'inf.w'"},
        {"{" T("rev.w", "0", "U8", "2", "0") "}", 2, INFER_ERR_FORMAT, "'rev.w'"},
        {"{" T("shape.neg", "-2", "U8", "0", "0") "}", 0, INFER_ERR_FORMAT, "'shape.neg'"},
        {"{" T("shape.frac", "1.5", "U8", "0", "0") "}", 0, INFER_ERR_FORMAT, "'shape.frac'"},
        {"{" T("shape.str", "\"2\"", "U8", "0", "2") "}", 2, INFER_ERR_FORMAT, "'shape.str'"},
        {"{" T("shape.huge", "4294967296, 4294967296, 4294967296", "U8", "0", "0") "}", 0,
         INFER_ERR_FORMAT, "'shape.huge'"},
        {"{" T("dims.9", "1,1,1,1,1,1,1,1,1", "U8", "0", "1") "}", 1, INFER_ERR_UNSUPPORTED,
         "'dims.9'"},
        {"{\"no.dtype\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, INFER_ERR_FORMAT,
         "'no.dtype'"},
        {"{\"no.shape\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, INFER_ERR_FORMAT,
         "'no.shape'"},
        {"{\"no.offsets\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, INFER_ERR_FORMAT, "'no.offsets'"},
        {"{\"three.offsets\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1,
         INFER_ERR_FORMAT, "'three.offsets'"},
        {"{\"not.obj\":[1,2]}", 0, INFER_ERR_FORMAT, "'not.obj'"},
        {"{\"__metadata__\":{\"format\":1}}", 0, INFER_ERR_FORMAT, "'format'"},
        {"{\"__metadata__\":[]}", 0, INFER_ERR_FORMAT, "__metadata__"},
        {"{}", 3, INFER_ERR_FORMAT, "no tensors"},
    };
#undef T
    char *dir = test_tmpdir("st");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        unsigned char *img = image_header(cases[i].header, cases[i].dlen, &len);
        expect_bad_file(dir, img, len, cases[i].status, cases[i].want);
        free(img);
    }
    test_rmdir(dir);
    free(dir);
}

static void bad_lengths(void **state)
{
    (void)state;
    char *dir = test_tmpdir("st");
    expect_bad_file(dir, (const unsigned char *)"", 0, INFER_ERR_FORMAT, "file is 0 bytes");
    expect_bad_file(dir, (const unsigned char *)"\x02\0\0\0\0\0\0", 7, INFER_ERR_FORMAT,
                    "file is 7 bytes, too short for a safetensors header");

    /* Header length larger than the file. */
    size_t len;
    unsigned char *img = image_of(mixed, N_MIXED, NULL, 0, &len);
    unsigned char *cut = malloc(len);
    assert_non_null(cut);
    memcpy(cut, img, len);
    cut[0] = 0xff;
    cut[1] = 0xff;
    expect_bad_file(dir, cut, len, INFER_ERR_FORMAT, "header length");
    /* Absurd header length. */
    memset(cut, 0xff, 8);
    expect_bad_file(dir, cut, len, INFER_ERR_FORMAT, "header length");
    /* Truncated: header cut short, then the data cut short by one byte. */
    expect_bad_file(dir, img, 40, INFER_ERR_FORMAT, "header length");
    expect_bad_file(dir, img, len - 1, INFER_ERR_FORMAT, "'scalar'");
    /* Trailing bytes after the data: not covered by any tensor. */
    unsigned char *more = malloc(len + 4);
    assert_non_null(more);
    memcpy(more, img, len);
    memset(more + len, 0, 4);
    expect_bad_file(dir, more, len + 4, INFER_ERR_FORMAT, "'scalar'");
    free(more);
    free(cut);
    free(img);

    /* I/O failures name the path. */
    char *missing = join(dir, "absent.safetensors");
    st_set *set = (st_set *)1;
    expect_err(st_open_file(missing, &set), INFER_ERR_IO, missing, NULL);
    assert_null(set);
    expect_err(st_open_file(dir, &set), INFER_ERR_IO, dir, NULL);
    free(missing);
    test_rmdir(dir);
    free(dir);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(valid_single_file),  cmocka_unit_test(empty_header_and_nulls),
    cmocka_unit_test(many_tensors_lookup), cmocka_unit_test(big_file_opens),
    cmocka_unit_test(drop_keeps_bytes),
    cmocka_unit_test(sharded_index),      cmocka_unit_test(fallback_all_files),
    cmocka_unit_test(no_weights),         cmocka_unit_test(bad_index),
    cmocka_unit_test(shards_sharing_a_name), cmocka_unit_test(bad_headers),
    cmocka_unit_test(bad_lengths),
};

TEST_GROUP(test_safetensors, tests)
