/* cpu.c - the cpu backend: float32 activations over weights kept in their
 * stored dtype (f32, f16, bf16) where they lie in the mapped files.
 * Matrix products are in cpu_matmul.c, attention in cpu_attention.c. */
#include "backend/cpu/cpu.h"
#include "backend/mem_counter.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "backend/cpu/qgemm.h"
#include "core/error.h"

/* ---- Memory accounting ----
 *
 * Process-wide: every context of the backend counts into the same
 * counters, which the public infer_get_*_memory("cpu") calls read.
 * Counted: the buffers of cpu_alloc (activations, KV caches, the model's
 * scratch) and the kernels' per-worker scratch; not the mapped weight
 * files, nor the short-lived host arrays of a single op.  The memory limit
 * binds cpu_alloc, which fails cleanly rather than pass it; kernel scratch
 * (a few rows per worker, kept until the context goes) is counted but not
 * refused.  There is no reuse cache: freed memory goes back to the C
 * library at once, so the cache holds 0 bytes and clear_cache has nothing
 * to do; the cache and wired limits are stored and returned, and bind
 * nothing. */
static bk_counters mem;

static int cpu_available(void) { return 1; }

static int cpu_create(const bk_opts *opts, void **out)
{
    *out = NULL;
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!c) return infer_err(INFER_ERR_OUT_OF_MEMORY, "cpu backend: out of memory");
    int rc = pool_create(opts ? opts->n_threads : 0, &c->pool);
    if (rc) {
        free(c);
        return rc;
    }
    c->n_workers = pool_size(c->pool);
    c->int8 = opts ? opts->cpu_int8 != 0 : 0;
    pthread_mutex_init(&c->act_lock, NULL);
    c->scratch = calloc((size_t)c->n_workers, sizeof *c->scratch);
    if (!c->scratch) {
        pool_destroy(c->pool);
        free(c);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "cpu backend: out of memory");
    }
    *out = c;
    return INFER_OK;
}

static void cpu_destroy(void *ctx)
{
    cpu_ctx *c = ctx;
    if (!c) return;
    pool_destroy(c->pool);
    for (int i = 0; i < c->n_workers; i++) {
        free(c->scratch[i].p);
        bkc_give(&mem, c->scratch[i].cap * sizeof(float));
    }
    free(c->act.p);
    bkc_give(&mem, c->act.cap * sizeof(float));
    pthread_mutex_destroy(&c->act_lock);
    free(c->scratch);
    free(c);
}

static float *scratch_grow(cpu_scratch *s, size_t n)
{
    if (s->cap < n) {
        if (n > SIZE_MAX / sizeof(float)) return NULL;
        float *p = malloc(n * sizeof *p);
        if (!p) return NULL;
        free(s->p);
        bkc_give(&mem, s->cap * sizeof *p);
        bkc_count(&mem, n * sizeof *p);
        s->p = p;
        s->cap = n;
    }
    return s->p;
}

float *cpu_scratch_get(cpu_ctx *c, int worker, size_t n) { return scratch_grow(&c->scratch[worker], n); }

float *cpu_act_get(cpu_ctx *c, size_t n) { return scratch_grow(&c->act, n); }

float *cpu_vector_f32(const bk_weight *w, size_t n)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (v) dtype_to_f32(v, w->data, w->dtype, n);
    return v;
}

/* Allocations carry their size in a header so that free can account them. */
#define ALLOC_HDR 64

/* Counts bytes against the memory limit, or says what (doing) would pass
 * it. */
static int take_bytes(size_t bytes, const char *doing)
{
    size_t limit, active;
    if (!bkc_take(&mem, bytes, &limit, &active))
        return infer_err(INFER_ERR_OUT_OF_MEMORY,
                         "cpu backend: %s %zu bytes would pass the memory limit of %zu bytes (%zu active)", doing,
                         bytes, limit, active);
    return INFER_OK;
}

static int cpu_alloc(void *ctx, size_t bytes, void **out)
{
    *out = NULL;
    if (bytes > SIZE_MAX - 2 * ALLOC_HDR)
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "cpu backend: cannot allocate %zu bytes", bytes);
    int rc = take_bytes(bytes, "allocating");
    if (rc) return rc;
    unsigned char *p = aligned_alloc(ALLOC_HDR, (bytes + 2 * ALLOC_HDR - 1) / ALLOC_HDR * ALLOC_HDR);
    if (!p) {
        bkc_give(&mem, bytes);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "cpu backend: cannot allocate %zu bytes", bytes);
    }
    memcpy(p, &bytes, sizeof bytes);
    /* Zeroed now, which maps every page at once: a KV cache touched a row
     * at a time would otherwise take a page fault every few tokens in the
     * decode loop (tens of microseconds each on a virtual machine). */
    memset(p + ALLOC_HDR, 0, bytes);
    *out = p + ALLOC_HDR;
    return INFER_OK;
}

static void cpu_free(void *ctx, void *ptr)
{
    if (!ptr) return;
    unsigned char *p = (unsigned char *)ptr - ALLOC_HDR;
    size_t bytes;
    memcpy(&bytes, p, sizeof bytes);
    bkc_give(&mem, bytes);
    free(p);
}

static int cpu_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    if (bytes) memcpy(dst, src, bytes);
    return INFER_OK;
}

static int cpu_sync(void *ctx) { return INFER_OK; }

/* The process-wide counters: ctx is not needed. */
static void cpu_memory(void *ctx, size_t *active, size_t *peak)
{
    *active = bkc_get(&mem, BK_MEM_ACTIVE);
    *peak = bkc_get(&mem, BK_MEM_PEAK);
}

/* No reuse cache: BK_MEM_CACHE stays 0. */
static size_t cpu_mem_get(bk_mem what) { return bkc_get(&mem, what); }

static int cpu_mem_set(bk_mem what, size_t value, size_t *previous)
{
    return bkc_set(&mem, what, value, previous, "cpu");
}

static int cpu_clear_cache(void) { return INFER_OK; }

static int cpu_reset_peak(void)
{
    bkc_reset_peak(&mem);
    return INFER_OK;
}

/* ---- Device information ---- */

/* The value of the first "key: value" line of a /proc text file (blanks
 * around it trimmed) into buf; 0 if there is none. */
static int proc_field(const char *path, const char *key, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0, klen = strlen(key);
    int found = 0;
    while (!found && getline(&line, &cap, f) > 0) {
        if (strncmp(line, key, klen) != 0) continue;
        char *v = line + klen;
        while (*v == ' ' || *v == '\t') v++;
        if (*v != ':') continue;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        size_t n = strlen(v);
        while (n > 0 && isspace((unsigned char)v[n - 1])) n--;
        if (n >= size) n = size - 1;
        memcpy(buf, v, n);
        buf[n] = '\0';
        found = 1;
    }
    free(line);
    fclose(f);
    return found;
}

/* A /proc/meminfo size ("16303428 kB") in bytes; 0 if absent. */
static size_t meminfo_bytes(const char *key)
{
    char v[64];
    if (!proc_field("/proc/meminfo", key, v, sizeof v)) return 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    while (*end == ' ') end++;
    unsigned long long unit = !strcmp(end, "kB") ? 1024 : 1;
    return n > SIZE_MAX / unit ? SIZE_MAX : (size_t)(n * unit);
}

/* "avx512f avx2 fma f16c": the instruction sets the kernels may use. */
static void cpu_features(char *buf, size_t size)
{
    buf[0] = '\0';
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    __builtin_cpu_init();
    const struct {
        const char *name;
        int on;
    } f[] = {
        {"avx512f", __builtin_cpu_supports("avx512f")},
        {"avx2", __builtin_cpu_supports("avx2")},
        {"fma", __builtin_cpu_supports("fma")},
        /* from cpuid: not every compiler's __builtin_cpu_supports knows it */
        {"f16c", __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0},
    };
    size_t used = 0;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (!f[i].on) continue;
        int n = snprintf(buf + used, size - used, "%s%s", used ? " " : "", f[i].name);
        if (n < 0 || (size_t)n >= size - used) break;
        used += (size_t)n;
    }
#else
    (void)size;
#endif
}

/* Name from /proc/cpuinfo ("cpu" if it has none), RAM from /proc/meminfo
 * (MemAvailable as free) or else sysinfo(), online cores, features. */
static int cpu_device_info(infer_device_info *out)
{
    if (!proc_field("/proc/cpuinfo", "model name", out->name, sizeof out->name) || !out->name[0])
        snprintf(out->name, sizeof out->name, "cpu");
    out->memory_total = meminfo_bytes("MemTotal");
    out->memory_free = meminfo_bytes("MemAvailable");
    struct sysinfo si;
    if ((!out->memory_total || !out->memory_free) && sysinfo(&si) == 0) {
        size_t unit = si.mem_unit ? si.mem_unit : 1;
        if (!out->memory_total) out->memory_total = (size_t)si.totalram * unit;
        if (!out->memory_free) out->memory_free = ((size_t)si.freeram + si.bufferram) * unit;
    }
    out->compute_major = out->compute_minor = 0;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    out->multiprocessors = n > 0 ? (int)n : 1;
    cpu_features(out->features, sizeof out->features);
    return INFER_OK;
}

static int cpu_embed(void *ctx, void *out, const void *ids, int T, const bk_weight *emb,
                     float scale)
{
    float *y = out;
    const int32_t *id = ids;
    size_t dim = (size_t)emb->cols;
    size_t row_bytes = dim * dtype_size(emb->dtype);
    for (int t = 0; t < T; t++) {
        if (id[t] < 0 || id[t] >= emb->rows)
            return infer_err(INFER_ERR_OUT_OF_RANGE, "token id %d at position %d is outside the vocabulary [0, %lld)",
                             id[t], t, (long long)emb->rows);
        float *row = y + (size_t)t * dim;
        if (emb->dtype == DT_U32) /* only the rows used are dequantized */
            q_dequant_row(emb, id[t], 0, (int64_t)dim, row);
        else
            dtype_to_f32(row, (const unsigned char *)emb->data + (size_t)id[t] * row_bytes, emb->dtype, dim);
        if (scale != 1.0f)
            for (size_t i = 0; i < dim; i++) row[i] *= scale;
    }
    return INFER_OK;
}

typedef struct norm_job {
    float *y;
    const float *x;
    const bk_weight *w;
    int rows, dim;
    float eps, one;
} norm_job;

static void norm_task(void *arg, int task, int worker)
{
    (void)worker;
    const norm_job *j = arg;
    const float *x = j->x + (size_t)task * j->dim;
    float *y = j->y + (size_t)task * j->dim;
    /* the sum of squares in double, four chains (a decode step runs a few
     * norms a layer on one thread while the others wait) */
    double s4[4] = {0.0, 0.0, 0.0, 0.0};
    int i = 0;
    for (; i + 4 <= j->dim; i += 4)
        for (int k = 0; k < 4; k++) s4[k] += (double)x[i + k] * x[i + k];
    for (; i < j->dim; i++) s4[0] += (double)x[i] * x[i];
    const double ss = (s4[0] + s4[1]) + (s4[2] + s4[3]);
    const float r = (float)(1.0 / sqrt(ss / j->dim + j->eps)), one = j->one;
    /* the weight read where it lies, as dtype_to_f32 reads it (no float32
     * copy a call) */
    const unsigned char *g = j->w->data;
    if (j->w->dtype == DT_BF16) {
        for (i = 0; i < j->dim; i++) {
            uint16_t h;
            memcpy(&h, g + 2 * (size_t)i, 2);
            y[i] = x[i] * r * (bf16_to_f32(h) + one);
        }
    } else if (j->w->dtype == DT_F16) {
        for (i = 0; i < j->dim; i++) {
            uint16_t h;
            memcpy(&h, g + 2 * (size_t)i, 2);
            y[i] = x[i] * r * (f16_to_f32(h) + one);
        }
    } else {
        for (i = 0; i < j->dim; i++) {
            float f;
            memcpy(&f, g + 4 * (size_t)i, 4);
            y[i] = x[i] * r * (f + one);
        }
    }
}

static int cpu_rmsnorm(void *ctx, void *y, const void *x, const bk_weight *w, int rows, int dim, float eps,
                       int plus_one)
{
    cpu_ctx *c = ctx;
    if (w->dtype != DT_F32 && w->dtype != DT_BF16 && w->dtype != DT_F16)
        return infer_err(INFER_ERR_UNSUPPORTED, "rmsnorm: weight dtype %s is not supported", dtype_name(w->dtype));
    norm_job j = {y, x, w, rows, dim, eps, plus_one ? 1.0f : 0.0f};
    if ((size_t)rows * dim < 16384)
        for (int r = 0; r < rows; r++) norm_task(&j, r, 0);
    else
        pool_run(c->pool, rows, norm_task, &j);
    return INFER_OK;
}

static int cpu_rope(void *ctx, void *xv, const void *posv, int T, int n_heads, int head_dim,
                    const void *inv_freq, float attn_factor)
{
    float *x = xv;
    const int32_t *pos = posv;
    const float *f = inv_freq;
    int half = head_dim / 2;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            /* the angle in float32, as transformers forms it */
            float angle = (float)pos[t] * f[i];
            float cs = (float)cos((double)angle) * attn_factor;
            float sn = (float)sin((double)angle) * attn_factor;
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((size_t)t * n_heads + h) * head_dim;
                float a = v[i], b = v[i + half];
                v[i] = a * cs - b * sn;
                v[i + half] = b * cs + a * sn;
            }
        }
    }
    return INFER_OK;
}

static int cpu_add(void *ctx, void *yv, const void *av, size_t n)
{
    float *y = yv;
    const float *a = av;
    for (size_t i = 0; i < n; i++) y[i] += a[i];
    return INFER_OK;
}

static int cpu_softcap(void *ctx, void *xv, size_t n, float cap)
{
    float *x = xv;
    for (size_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap);
    return INFER_OK;
}

/* ---- Weights ----
 *
 * Weights are used where they lie (the mapped files), but for one case:
 * with int8 activations on a cpu with a tiled decode kernel (AVX-512 VNNI
 * or AVX2), 4- and 8-bit matrices
 * are repacked into the tiled layout of the decode kernel (qgemm.h) in a
 * buffer of their own, counted like cpu_alloc's (the model then unmaps
 * their pages in the file mapping: model_weights_prepare). */

typedef struct tile_job {
    const bk_weight *w;
    uint8_t *data;
    int64_t tiles, per;
} tile_job;

static void tile_task(void *arg, int task, int worker)
{
    (void)worker;
    const tile_job *j = arg;
    int64_t t0 = (int64_t)task * j->per, t1 = t0 + j->per < j->tiles ? t0 + j->per : j->tiles;
    if (t0 < t1) q_tile_pack(j->w, t0, t1, j->data);
}

/* Bytes of a tiled weight's buffer (values, scales and biases: qgemm.h),
 * whole 2 MiB pages. */
static size_t tiled_bytes(const bk_weight *w)
{
    size_t huge = (size_t)2 << 20;
    return (q_tile_bytes(w) + huge - 1) / huge * huge;
}

/* A weight buffer: mapped pages of their own, in 2 MiB pages where the
 * kernel gives them (a decode step streams every weight: 4 KiB pages cost
 * a TLB miss every 4 KiB, dearer still in a virtual machine), not zeroed
 * (the packing writes every byte), counted like cpu_alloc's. */
static int weight_alloc(size_t bytes, void **out)
{
    int rc = take_bytes(bytes, "repacking a weight into");
    if (rc) return rc;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        bkc_give(&mem, bytes);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "cpu backend: cannot map %zu bytes for a repacked weight", bytes);
    }
#ifdef MADV_HUGEPAGE
    (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    *out = p;
    return INFER_OK;
}

static int cpu_weight_prepare(void *ctx, bk_weight *w)
{
    cpu_ctx *c = ctx;
    if (!c->int8 || !q_tile_fast() || !q_tile_ok(w)) return INFER_OK;
    void *buf = NULL;
    int rc = weight_alloc(tiled_bytes(w), &buf);
    if (rc) return rc;
    tile_job j = {w, buf, w->rows / BK_TILE_ROWS, 0};
    int tasks = (int)(j.tiles < 64 ? j.tiles : 64);
    j.per = (j.tiles + tasks - 1) / tasks;
    pool_run(c->pool, tasks, tile_task, &j);
    w->data = j.data;
    w->scales = w->biases = NULL;
    w->tiled = 1;
    return INFER_OK;
}

static void cpu_weight_release(void *ctx, bk_weight *w)
{
    if (!w->tiled) return;
    size_t total = tiled_bytes(w);
    munmap((void *)(uintptr_t)w->data, total);
    bkc_give(&mem, total);
    w->data = w->scales = w->biases = NULL;
    w->tiled = 0;
}

static int cpu_gather_rows(void *ctx, void *dst, const void *src, const void *idxv, int n, size_t width)
{
    (void)ctx;
    const int32_t *idx = idxv;
    for (int i = 0; i < n; i++)
        memmove((float *)dst + (size_t)i * width, (const float *)src + (size_t)idx[i] * width, width * 4);
    return INFER_OK;
}

static int cpu_download_f32(void *ctx, float *dst, const void *src, size_t n)
{
    if (n) memcpy(dst, src, n * sizeof *dst);
    return INFER_OK;
}

const backend_ops backend_cpu = {
    .name = "cpu",
    .available = cpu_available,
    .create = cpu_create,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .weight_prepare = cpu_weight_prepare,
    .weight_release = cpu_weight_release,
    .synchronize = cpu_sync,
    .memory = cpu_memory,
    .mem_get = cpu_mem_get,
    .mem_set = cpu_mem_set,
    .clear_cache = cpu_clear_cache,
    .reset_peak = cpu_reset_peak,
    .device_info = cpu_device_info,
    .bandwidth = cpu_bandwidth,
    .embed = cpu_embed,
    .matmul = cpu_matmul,
    .matmul_n = cpu_matmul_n,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .kv_store = cpu_kv_store,
    .attention_kv = cpu_attention_kv,
    .gather_rows = cpu_gather_rows,
    .glu = cpu_glu,
    .add = cpu_add,
    .softcap = cpu_softcap,
    .matmul_dx = cpu_matmul_dx,
    .matmul_dw = cpu_matmul_dw,
    .rmsnorm_back = cpu_rmsnorm_back,
    .attention_back = cpu_attention_back,
    .glu_back = cpu_glu_back,
    .softcap_back = cpu_softcap_back,
    .cross_entropy = cpu_cross_entropy,
    .axpy = cpu_axpy,
    .scale = cpu_scale,
    .dropout = cpu_dropout,
    .sumsq = cpu_sumsq,
    .adamw = cpu_adamw,
    .download_f32 = cpu_download_f32,
};
