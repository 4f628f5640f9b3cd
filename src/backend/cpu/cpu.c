/* cpu.c - the cpu backend: float32 activations over weights kept in their
 * stored dtype (f32, f16, bf16) where they lie in the mapped files.
 * Matrix products are in cpu_matmul.c, attention in cpu_attention.c. */
#include "backend/cpu/cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

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
    for (int i = 0; i < c->n_workers; i++) free(c->scratch[i].p);
    free(c->scratch);
    free(c);
}

float *cpu_scratch_get(cpu_ctx *c, int worker, size_t n)
{
    cpu_scratch *s = &c->scratch[worker];
    if (s->cap < n) {
        float *p = malloc(n * sizeof *p);
        if (!p) return NULL;
        free(s->p);
        s->p = p;
        s->cap = n;
    }
    return s->p;
}

float *cpu_vector_f32(const bk_weight *w, size_t n)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (v) dtype_to_f32(v, w->data, w->dtype, n);
    return v;
}

/* Allocations carry their size in a header so that free can account them. */
#define ALLOC_HDR 64

static int cpu_alloc(void *ctx, size_t bytes, void **out)
{
    cpu_ctx *c = ctx;
    *out = NULL;
    if (bytes > SIZE_MAX - ALLOC_HDR)
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "cpu backend: cannot allocate %zu bytes", bytes);
    unsigned char *p = aligned_alloc(ALLOC_HDR, (bytes + 2 * ALLOC_HDR - 1) / ALLOC_HDR * ALLOC_HDR);
    if (!p) return infer_err(INFER_ERR_OUT_OF_MEMORY, "cpu backend: cannot allocate %zu bytes", bytes);
    memcpy(p, &bytes, sizeof bytes);
    size_t now = atomic_fetch_add(&c->active, bytes) + bytes;
    size_t peak = atomic_load(&c->peak);
    while (now > peak && !atomic_compare_exchange_weak(&c->peak, &peak, now)) {
    }
    *out = p + ALLOC_HDR;
    return INFER_OK;
}

static void cpu_free(void *ctx, void *ptr)
{
    cpu_ctx *c = ctx;
    if (!ptr) return;
    unsigned char *p = (unsigned char *)ptr - ALLOC_HDR;
    size_t bytes;
    memcpy(&bytes, p, sizeof bytes);
    atomic_fetch_sub(&c->active, bytes);
    free(p);
}

static int cpu_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    if (bytes) memcpy(dst, src, bytes);
    return INFER_OK;
}

static int cpu_sync(void *ctx) { return INFER_OK; }

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
        dtype_to_f32(row, (const unsigned char *)emb->data + (size_t)id[t] * row_bytes, emb->dtype, dim);
        if (scale != 1.0f)
            for (size_t i = 0; i < dim; i++) row[i] *= scale;
    }
    return INFER_OK;
}

typedef struct norm_job {
    float *y;
    const float *x;
    const float *g;
    int rows, dim;
    float eps;
} norm_job;

static void norm_task(void *arg, int task, int worker)
{
    const norm_job *j = arg;
    const float *x = j->x + (size_t)task * j->dim;
    float *y = j->y + (size_t)task * j->dim;
    double ss = 0.0;
    for (int i = 0; i < j->dim; i++) ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / j->dim + j->eps));
    for (int i = 0; i < j->dim; i++) y[i] = x[i] * r * j->g[i];
}

static int cpu_rmsnorm(void *ctx, void *y, const void *x, const bk_weight *w, int rows, int dim,
                       float eps, int plus_one)
{
    cpu_ctx *c = ctx;
    float *g = cpu_vector_f32(w, (size_t)dim);
    if (!g) return infer_err(INFER_ERR_OUT_OF_MEMORY, "rmsnorm: out of memory");
    if (plus_one)
        for (int i = 0; i < dim; i++) g[i] += 1.0f;
    norm_job j = {y, x, g, rows, dim, eps};
    if ((size_t)rows * dim < 16384)
        for (int r = 0; r < rows; r++) norm_task(&j, r, 0);
    else
        pool_run(c->pool, rows, norm_task, &j);
    free(g);
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

static float gelu_tanh(float x)
{
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static int cpu_glu(void *ctx, void *outv, const void *gatev, const void *upv, size_t n, bk_act act)
{
    float *out = outv;
    const float *g = gatev, *u = upv;
    if (act == BK_ACT_SILU)
        for (size_t i = 0; i < n; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    else
        for (size_t i = 0; i < n; i++) out[i] = gelu_tanh(g[i]) * u[i];
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
    .weight_prepare = NULL,
    .weight_release = NULL,
    .synchronize = cpu_sync,
    .embed = cpu_embed,
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .glu = cpu_glu,
    .add = cpu_add,
    .softcap = cpu_softcap,
    .download_f32 = cpu_download_f32,
};
