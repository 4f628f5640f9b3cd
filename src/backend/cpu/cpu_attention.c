/* cpu_attention.c - causal grouped-query attention on the cpu, with
 * sliding windows and score softcapping.  One task per (head, query); the
 * dot products and the weighted sums of values use AVX-512 or AVX2 where
 * the cpu has them (chosen at run time, as gemm.c does). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/cpu/gemm.h"
#include "core/error.h"

/* ---- Vector helpers: a . b, and o += w * v, over n floats ---- */

typedef struct vec_ops {
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *o, float w, const float *v, int n);
    /* o[0, d) = sum over i < n of w[i] * the row (row0 + i) % cap of vbase
     * (row stride `stride` floats); NULL: axpy per row */
    void (*wsum)(float *o, const float *w, const float *vbase, size_t stride, int row0, int cap, int n, int d);
    /* s[i] = q . the row (row0 + i) % cap of kbase, for i < n; NULL: dot
     * per row */
    void (*scores)(float *s, const float *q, const float *kbase, size_t stride, int row0, int cap, int n, int d);
} vec_ops;

static float dot_c(const float *a, const float *b, int n) { return cpu_dot(a, b, (size_t)n); }

static void axpy_c(float *o, float w, const float *v, int n)
{
    for (int e = 0; e < n; e++) o[e] += w * v[e];
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static float dot_avx512(const float *a, const float *b, int n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

__attribute__((target("avx512f"))) static void axpy_avx512(float *o, float w, const float *v, int n)
{
    __m512 wv = _mm512_set1_ps(w);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(o + i, k, _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(k, v + i), _mm512_maskz_loadu_ps(k, o + i)));
    }
}

/* wsum, NV vectors of 16 at a time held in registers across the rows */
static inline __attribute__((always_inline, target("avx512f"))) void wsum_avx512_nv(
    const int NV, float *o, const float *w, const float *vbase, size_t stride, int row0, int cap, int n)
{
    __m512 acc[8];
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) acc[j] = _mm512_setzero_ps();
    for (int i = 0, row = row0; i < n; i++) {
        const float *v = vbase + (size_t)row * stride;
        const __m512 wv = _mm512_set1_ps(w[i]);
#pragma GCC unroll 8
        for (int j = 0; j < NV; j++) acc[j] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(v + 16 * j), acc[j]);
        if (++row == cap) row = 0;
    }
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) _mm512_storeu_ps(o + 16 * j, acc[j]);
}

__attribute__((target("avx512f"))) static void wsum_avx512(float *o, const float *w, const float *vbase, size_t stride,
                                                           int row0, int cap, int n, int d)
{
    int e = 0;
    for (; e + 128 <= d; e += 128) wsum_avx512_nv(8, o + e, w, vbase + e, stride, row0, cap, n);
    for (; e + 64 <= d; e += 64) wsum_avx512_nv(4, o + e, w, vbase + e, stride, row0, cap, n);
    for (; e + 16 <= d; e += 16) wsum_avx512_nv(1, o + e, w, vbase + e, stride, row0, cap, n);
    if (e < d) {
        for (int k = e; k < d; k++) o[k] = 0.0f;
        for (int i = 0, row = row0; i < n; i++) {
            axpy_avx512(o + e, w[i], vbase + (size_t)row * stride + e, d - e);
            if (++row == cap) row = 0;
        }
    }
}

/* scores with q held in NV registers */
static inline __attribute__((always_inline, target("avx512f"))) void scores_avx512_nv(
    const int NV, float *s, const float *q, const float *kbase, size_t stride, int row0, int cap, int n)
{
    __m512 qv[8];
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) qv[j] = _mm512_loadu_ps(q + 16 * j);
    for (int i = 0, row = row0; i < n; i++) {
        const float *k = kbase + (size_t)row * stride;
        __m512 a0 = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k)), a1 = _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int j = 1; j < NV; j++) {
            if (j & 1)
                a1 = _mm512_fmadd_ps(qv[j], _mm512_loadu_ps(k + 16 * j), a1);
            else
                a0 = _mm512_fmadd_ps(qv[j], _mm512_loadu_ps(k + 16 * j), a0);
        }
        s[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        if (++row == cap) row = 0;
    }
}

__attribute__((target("avx512f"))) static void scores_avx512(float *s, const float *q, const float *kbase,
                                                             size_t stride, int row0, int cap, int n, int d)
{
    if (d == 128 || d == 64 || d == 256) {
        if (d == 64)
            scores_avx512_nv(4, s, q, kbase, stride, row0, cap, n);
        else
            scores_avx512_nv(8, s, q, kbase, stride, row0, cap, n);
        if (d == 256) { /* the second half */
            for (int i = 0, row = row0; i < n; i++) {
                s[i] += dot_avx512(q + 128, kbase + (size_t)row * stride + 128, 128);
                if (++row == cap) row = 0;
            }
        }
        return;
    }
    for (int i = 0, row = row0; i < n; i++) {
        s[i] = dot_avx512(q, kbase + (size_t)row * stride, d);
        if (++row == cap) row = 0;
    }
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    __m256 s = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

__attribute__((target("avx2,fma"))) static void axpy_avx2(float *o, float w, const float *v, int n)
{
    __m256 wv = _mm256_set1_ps(w);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, _mm256_fmadd_ps(wv, _mm256_loadu_ps(v + i), _mm256_loadu_ps(o + i)));
    for (; i < n; i++) o[i] += w * v[i];
}
#endif

static vec_ops vec_best(void)
{
#if defined(__x86_64__) || defined(__i386__)
    gemm_isa isa = gemm_isa_best();
    if (isa == GEMM_ISA_AVX512) return (vec_ops){dot_avx512, axpy_avx512, wsum_avx512, scores_avx512};
    if (isa == GEMM_ISA_AVX2) return (vec_ops){dot_avx2, axpy_avx2, NULL, NULL};
#endif
    return (vec_ops){dot_c, axpy_c, NULL, NULL};
}

/* One query against n keys: o[0, d) = softmax(scale q . k_i, softcapped)
 * weighted sum of v_i, key i in row (row0 + i) % cap of kbase and vbase
 * (row stride `stride` floats); score: n floats of scratch. */
static void attend(float *score, const float *qv, const float *kbase, const float *vbase, size_t stride, int row0,
                   int cap, int n, int d, float scale, float softcap, float *o)
{
    const vec_ops vo = vec_best();
    float mx = -INFINITY;
    if (vo.scores) vo.scores(score, qv, kbase, stride, row0, cap, n, d);
    for (int i = 0, row = row0; i < n; i++) {
        float s = (vo.scores ? score[i] : vo.dot(qv, kbase + (size_t)row * stride, d)) * scale;
        if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
        score[i] = s;
        if (s > mx) mx = s;
        if (++row == cap) row = 0;
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        score[i] = expf(score[i] - mx);
        sum += score[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) score[i] *= inv;
    if (vo.wsum) {
        vo.wsum(o, score, vbase, stride, row0, cap, n, d);
        return;
    }
    for (int e = 0; e < d; e++) o[e] = 0.0f;
    for (int i = 0, row = row0; i < n; i++) {
        vo.axpy(o, score[i], vbase + (size_t)row * stride, d);
        if (++row == cap) row = 0;
    }
}

typedef struct attn_job {
    cpu_ctx *c;
    float *out;
    const float *q, *k, *v;
    const bk_attn *p;
    int failed;
} attn_job;

static void attn_task(void *arg, int task, int worker)
{
    attn_job *j = arg;
    const bk_attn *p = j->p;
    int h = task % p->n_heads;
    int t = task / p->n_heads;
    int kvh = h / (p->n_heads / p->n_kv_heads);
    int d = p->head_dim;
    size_t q_stride = (size_t)p->n_heads * d, kv_stride = (size_t)p->n_kv_heads * d;
    int pos = p->S - p->T + t;
    int lo = 0;
    if (p->window > 0 && pos - p->window + 1 > 0) lo = pos - p->window + 1;
    int n = pos - lo + 1;
    float *score = cpu_scratch_get(j->c, worker, (size_t)n);
    if (!score) {
        j->failed = 1;
        return;
    }
    const float *qv = j->q + (size_t)t * q_stride + (size_t)h * d;
    /* the rows never wrap: a capacity past the last one */
    attend(score, qv, j->k + (size_t)kvh * d, j->v + (size_t)kvh * d, kv_stride, lo, lo + n, n, d, p->scale, p->softcap,
           j->out + (size_t)t * q_stride + (size_t)h * d);
}

int cpu_attention(void *ctx, void *out, const void *q, const void *k, const void *v,
                  const bk_attn *p)
{
    if (p->T <= 0) return INFER_OK;
    if (p->S < p->T || p->n_kv_heads <= 0 || p->n_heads % p->n_kv_heads != 0)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "attention: bad shape (T %d, S %d, heads %d/%d)",
                         p->T, p->S, p->n_heads, p->n_kv_heads);
    const int nb = p->batch > 1 ? p->batch : 1;
    const size_t qn = (size_t)p->T * p->n_heads * p->head_dim, kn = (size_t)p->S * p->n_kv_heads * p->head_dim;
    for (int b = 0; b < nb; b++) {
        attn_job j = {ctx, (float *)out + b * qn, (const float *)q + b * qn, (const float *)k + b * kn,
                      (const float *)v + b * kn, p, 0};
        pool_run(j.c->pool, p->T * p->n_heads, attn_task, &j);
        if (j.failed) return infer_err(INFER_ERR_OUT_OF_MEMORY, "attention: out of memory for scratch");
    }
    return INFER_OK;
}

/* ---- Ragged batches over KV caches ---- */

typedef struct kv_job {
    cpu_ctx *c;
    float *out;
    const float *q, *kc, *vc;
    const bk_attn_kv *p;
    const int32_t *q_start, *kv_len, *slot;
    int failed;
} kv_job;

static void kv_task(void *arg, int task, int worker)
{
    kv_job *j = arg;
    const bk_attn_kv *p = j->p;
    int h = task % p->n_heads;
    int r = task / p->n_heads;
    int b = bk_row_seq(j->q_start, p->B, r);
    int n_new = j->q_start[b + 1] - j->q_start[b];
    int len = j->kv_len[b];
    int pos = len - n_new + (r - j->q_start[b]);
    int kvh = h / (p->n_heads / p->n_kv_heads);
    int d = p->head_dim;
    size_t q_stride = (size_t)p->n_heads * d, kv_stride = (size_t)p->n_kv_heads * d;
    int lo = len - p->cap > 0 ? len - p->cap : 0;
    if (p->window > 0 && pos - p->window + 1 > lo) lo = pos - p->window + 1;
    int n = pos - lo + 1;
    float *o = j->out + (size_t)r * q_stride + (size_t)h * d;
    if (n <= 0) {
        for (int e = 0; e < d; e++) o[e] = 0.0f;
        return;
    }
    float *score = cpu_scratch_get(j->c, worker, (size_t)n);
    if (!score) {
        j->failed = 1;
        return;
    }
    const float *qv = j->q + (size_t)r * q_stride + (size_t)h * d;
    const float *kbase = j->kc + (size_t)j->slot[b] * p->cap * kv_stride + (size_t)kvh * d;
    const float *vbase = j->vc + (size_t)j->slot[b] * p->cap * kv_stride + (size_t)kvh * d;
    /* position lo + i lives in row (lo + i) % cap */
    attend(score, qv, kbase, vbase, kv_stride, lo % p->cap, p->cap, n, d, p->scale, p->softcap, o);
}

static int kv_check(const bk_attn_kv *p, const int32_t *q_start, const int32_t *kv_len)
{
    if (p->B <= 0 || p->cap <= 0 || p->n_kv_heads <= 0 || p->n_heads % p->n_kv_heads != 0 ||
        q_start[0] != 0 || q_start[p->B] != p->N)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "attention: bad batch (B %d, N %d, cap %d, heads %d/%d)",
                         p->B, p->N, p->cap, p->n_heads, p->n_kv_heads);
    for (int b = 0; b < p->B; b++) {
        int n = q_start[b + 1] - q_start[b];
        /* a ring must keep every key a new query sees */
        int need = p->window > 0 ? p->window + n - 1 : kv_len[b];
        if (n < 0 || kv_len[b] < n || (kv_len[b] > p->cap && need > p->cap))
            return infer_err(INFER_ERR_INVALID_ARGUMENT,
                             "attention: sequence %d has %d new tokens, %d in the cache of %d rows", b, n,
                             kv_len[b], p->cap);
    }
    return INFER_OK;
}

int cpu_kv_store(void *ctx, void *kcache, void *vcache, const void *k, const void *v,
                 const bk_attn_kv *p)
{
    (void)ctx;
    const int32_t *q_start = p->q_start, *kv_len = p->kv_len, *slot = p->slot;
    int rc = kv_check(p, q_start, kv_len);
    if (rc) return rc;
    size_t w = (size_t)p->n_kv_heads * p->head_dim;
    for (int b = 0; b < p->B; b++) {
        int n = q_start[b + 1] - q_start[b];
        for (int i = 0; i < n; i++) {
            int pos = kv_len[b] - n + i;
            size_t row = (size_t)slot[b] * p->cap + (size_t)(pos % p->cap);
            memcpy((float *)kcache + row * w, (const float *)k + (size_t)(q_start[b] + i) * w, w * 4);
            memcpy((float *)vcache + row * w, (const float *)v + (size_t)(q_start[b] + i) * w, w * 4);
        }
    }
    return INFER_OK;
}

int cpu_attention_kv(void *ctx, void *out, const void *q, const void *kcache, const void *vcache,
                     const bk_attn_kv *p)
{
    if (p->N <= 0) return INFER_OK;
    kv_job j = {ctx, out, q, kcache, vcache, p, p->q_start, p->kv_len, p->slot, 0};
    int rc = kv_check(p, j.q_start, j.kv_len);
    if (rc) return rc;
    pool_run(j.c->pool, p->N * p->n_heads, kv_task, &j);
    if (j.failed) return infer_err(INFER_ERR_OUT_OF_MEMORY, "attention: out of memory for scratch");
    return INFER_OK;
}
