/* gemm_avx2.c - AVX2 + FMA kernels of gemm_nt: a 6 x 16 micro-kernel (12
 * ymm accumulators), 8 x 8 transposes for packing, and dot products for
 * small M.  Built for the baseline ISA with per-function target attributes;
 * gemm.c calls these only when the cpu has AVX2, FMA and F16C. */
#include "backend/cpu/gemm.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include <string.h>

#include "backend/cpu/avx2_inl.h"

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline, target("avx2,fma,f16c")))

enum { MR = 6, NR = 16 };

INL float load1(const unsigned char *p, infer_dtype dt)
{
    if (dt == DT_F32) {
        float f;
        memcpy(&f, p, sizeof f);
        return f;
    }
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return dt == DT_BF16 ? bf16_to_f32(h) : _cvtsh_ss(h);
}

/* ---- Packing ---- */

INL void pack_b_body(int n, int kc, const unsigned char *B, const infer_dtype dt, size_t ldb,
                     float *Bp)
{
    const size_t es = dt == DT_F32 ? 4 : 2;
    const int k8 = kc & ~7;
    for (int p = 0; p < n; p += NR) {
        float *panel = Bp + (size_t)p * kc;
        for (int h = 0; h < NR; h += 8) {
            int rows = n - p - h;
            if (rows > 8) rows = 8;
            if (rows <= 0) {
                for (int k = 0; k < kc; k++)
                    _mm256_store_ps(panel + (size_t)k * NR + h, _mm256_setzero_ps());
                continue;
            }
            const unsigned char *b0 = B + (size_t)(p + h) * ldb;
            for (int k = 0; k < k8; k += 8) {
                __m256 r[8];
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++)
                    r[j] = j < rows ? avx2_load8(b0 + j * ldb + (size_t)k * es, dt) : _mm256_setzero_ps();
                avx2_tr8(r);
#pragma GCC unroll 8
                for (int t = 0; t < 8; t++) _mm256_store_ps(panel + (size_t)(k + t) * NR + h, r[t]);
            }
            for (int k = k8; k < kc; k++)
                for (int j = 0; j < 8; j++)
                    panel[(size_t)k * NR + h + j] = j < rows ? load1(b0 + j * ldb + (size_t)k * es, dt) : 0.0f;
        }
    }
}

TGT static void pack_b_f32(int n, int kc, const unsigned char *B, size_t ldb, float *Bp)
{
    pack_b_body(n, kc, B, DT_F32, ldb, Bp);
}
TGT static void pack_b_bf16(int n, int kc, const unsigned char *B, size_t ldb, float *Bp)
{
    pack_b_body(n, kc, B, DT_BF16, ldb, Bp);
}
TGT static void pack_b_f16(int n, int kc, const unsigned char *B, size_t ldb, float *Bp)
{
    pack_b_body(n, kc, B, DT_F16, ldb, Bp);
}

TGT static void pack_b(int n, int kc, const unsigned char *B, infer_dtype dt, size_t ldb, float *Bp)
{
    if (dt == DT_BF16)
        pack_b_bf16(n, kc, B, ldb, Bp);
    else if (dt == DT_F16)
        pack_b_f16(n, kc, B, ldb, Bp);
    else
        pack_b_f32(n, kc, B, ldb, Bp);
}

TGT static void pack_a(int m, int kc, const float *A, size_t lda, float *Ap)
{
    const int k8 = kc & ~7;
    for (int p = 0; p < m; p += MR) {
        int rows = m - p < MR ? m - p : MR;
        float *panel = Ap + (size_t)p * kc;
        const float *a0 = A + (size_t)p * lda;
        for (int k = 0; k < k8; k += 8) {
            __m256 r[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                r[i] = i < rows ? _mm256_loadu_ps(a0 + i * lda + k) : _mm256_setzero_ps();
            avx2_tr8(r);
            /* Each k holds MR = 6 floats: 4 + 2. */
#pragma GCC unroll 8
            for (int t = 0; t < 8; t++) {
                float *d = panel + (size_t)(k + t) * MR;
                _mm_storeu_ps(d, _mm256_castps256_ps128(r[t]));
                _mm_storel_epi64((__m128i_u *)(void *)(d + 4), _mm_castps_si128(_mm256_extractf128_ps(r[t], 1)));
            }
        }
        for (int k = k8; k < kc; k++)
            for (int i = 0; i < MR; i++) panel[(size_t)k * MR + i] = i < rows ? a0[i * lda + k] : 0.0f;
    }
}

/* ---- Micro-kernel: C[mr, n] (+)= Ap[kc, MR] . Bp[kc, NR] ---- */

INL void tile_body(const int mr, int n, int kc, const float *a, const float *b, float *c,
                   size_t ldc, int accumulate)
{
    __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
        if (i < mr) c0[i] = c1[i] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++)
            if (i < mr) {
                __m256 ai = _mm256_broadcast_ss(a + i);
                c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
                c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
            }
        a += MR;
        b += NR;
    }
    if (n == NR) {
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++)
            if (i < mr) {
                float *ci = c + i * ldc;
                if (accumulate) {
                    c0[i] = _mm256_add_ps(c0[i], _mm256_loadu_ps(ci));
                    c1[i] = _mm256_add_ps(c1[i], _mm256_loadu_ps(ci + 8));
                }
                _mm256_storeu_ps(ci, c0[i]);
                _mm256_storeu_ps(ci + 8, c1[i]);
            }
        return;
    }
    /* A ragged right edge goes through a buffer. */
    float t[MR][NR];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
        if (i < mr) {
            _mm256_storeu_ps(t[i], c0[i]);
            _mm256_storeu_ps(t[i] + 8, c1[i]);
        }
    for (int i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        if (accumulate)
            for (int j = 0; j < n; j++) ci[j] += t[i][j];
        else
            for (int j = 0; j < n; j++) ci[j] = t[i][j];
    }
}

#define TILE(m)                                                                                  \
    TGT static void tile_##m(int n, int kc, const float *a, const float *b, float *c, size_t ldc, \
                             int accumulate)                                                     \
    {                                                                                            \
        tile_body(m, n, kc, a, b, c, ldc, accumulate);                                           \
    }
TILE(1)
TILE(2)
TILE(3)
TILE(4)
TILE(5)
TILE(6)

typedef void (*tile_fn)(int, int, const float *, const float *, float *, size_t, int);
static const tile_fn tiles[MR + 1] = {NULL, tile_1, tile_2, tile_3, tile_4, tile_5, tile_6};

static void tile(int m, int n, int kc, const float *Ap, const float *Bp, float *C, size_t ldc,
                 int accumulate)
{
    tiles[m](n, kc, Ap, Bp, C, ldc, accumulate);
}

/* ---- Small M: each row of B read from start to end, against up to 4
 * rows of A (see gemm_avx512.c); with one row of A (decode), two rows of
 * B at a time from the two halves of the block (row2_body) ---- */

enum { PF_AHEAD = 8192 };

/* One row of B against mr rows of A.  H chunks of 8 values an iteration,
 * each with its own accumulators: with one or two rows of A, two chains
 * would leave the loop waiting on the FMA's latency (4 cycles for 16
 * values: about 20 GB/s of bf16 a core on a Zen 3), so those take 4. */
INL void row_body(const int mr, const infer_dtype dt, int K, const float *A, size_t lda, const unsigned char *b,
                  float *C, size_t ldc)
{
    enum { HMAX = 4 };
    const int H = mr <= 2 ? 4 : 2;
    const size_t es = dt == DT_F32 ? 4 : 2;
    __m256 acc[HMAX][4];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int h = 0; h < H; h++) acc[h][i] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 * H <= K; k += 8 * H) {
#pragma GCC unroll 4
        for (int h = 0; h < H; h++) {
            if ((size_t)(8 * h) * es % 64 == 0)
                _mm_prefetch((const char *)b + (size_t)(k + 8 * h) * es + PF_AHEAD, _MM_HINT_T0);
            __m256 w = avx2_load8(b + (size_t)(k + 8 * h) * es, dt);
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) acc[h][i] = _mm256_fmadd_ps(_mm256_loadu_ps(A + i * lda + k + 8 * h), w, acc[h][i]);
        }
    }
    for (; k + 8 <= K; k += 8) {
        __m256 w = avx2_load8(b + (size_t)k * es, dt);
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) acc[0][i] = _mm256_fmadd_ps(_mm256_loadu_ps(A + i * lda + k), w, acc[0][i]);
    }
    float tail[4] = {0};
    for (; k < K; k++) {
        float w = load1(b + (size_t)k * es, dt);
        for (int i = 0; i < mr; i++) tail[i] += A[i * lda + k] * w;
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        __m256 t = acc[0][i];
#pragma GCC unroll 4
        for (int h = 1; h < H; h++) t = _mm256_add_ps(t, acc[h][i]);
        C[i * ldc] = avx2_hsum8(t) + tail[i];
    }
}

typedef void (*row_fn)(int K, const float *A, size_t lda, const unsigned char *b, float *C, size_t ldc);

/* One row of A (M = 1, decode) against two rows of B far apart: two
 * streams of memory a thread, as the tiled int8 kernel reads (qgemm.h),
 * and x loaded once for both; two chains a row. */
INL void row2_body(const infer_dtype dt, int K, const float *A, const unsigned char *b0, const unsigned char *b1,
                   float *c0, float *c1)
{
    const size_t es = dt == DT_F32 ? 4 : 2;
    __m256 s0[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, s1[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        if ((size_t)k * es % 64 == 0) {
            _mm_prefetch((const char *)b0 + (size_t)k * es + PF_AHEAD, _MM_HINT_T0);
            _mm_prefetch((const char *)b1 + (size_t)k * es + PF_AHEAD, _MM_HINT_T0);
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256 x = _mm256_loadu_ps(A + k + 8 * h);
            s0[h] = _mm256_fmadd_ps(x, avx2_load8(b0 + (size_t)(k + 8 * h) * es, dt), s0[h]);
            s1[h] = _mm256_fmadd_ps(x, avx2_load8(b1 + (size_t)(k + 8 * h) * es, dt), s1[h]);
        }
    }
    for (; k + 8 <= K; k += 8) {
        const __m256 x = _mm256_loadu_ps(A + k);
        s0[0] = _mm256_fmadd_ps(x, avx2_load8(b0 + (size_t)k * es, dt), s0[0]);
        s1[0] = _mm256_fmadd_ps(x, avx2_load8(b1 + (size_t)k * es, dt), s1[0]);
    }
    float t0 = 0.0f, t1 = 0.0f;
    for (; k < K; k++) {
        t0 += A[k] * load1(b0 + (size_t)k * es, dt);
        t1 += A[k] * load1(b1 + (size_t)k * es, dt);
    }
    *c0 = avx2_hsum8(_mm256_add_ps(s0[0], s0[1])) + t0;
    *c1 = avx2_hsum8(_mm256_add_ps(s1[0], s1[1])) + t1;
}

typedef void (*row2_fn)(int K, const float *A, const unsigned char *b0, const unsigned char *b1, float *c0, float *c1);
#define ROW2(name, dt)                                                                                          \
    TGT static void name(int K, const float *A, const unsigned char *b0, const unsigned char *b1, float *c0,   \
                         float *c1)                                                                             \
    {                                                                                                           \
        row2_body(dt, K, A, b0, b1, c0, c1);                                                                    \
    }
ROW2(row2_f32, DT_F32)
ROW2(row2_bf16, DT_BF16)
ROW2(row2_f16, DT_F16)

#define ROW(name, mr, dt)                                                                                  \
    TGT static void name(int K, const float *A, size_t lda, const unsigned char *b, float *C, size_t ldc) \
    {                                                                                                      \
        row_body(mr, dt, K, A, lda, b, C, ldc);                                                            \
    }
#define ROWS(tag, dt)                                                                                      \
    ROW(row_##tag##_1, 1, dt)                                                                              \
    ROW(row_##tag##_2, 2, dt)                                                                              \
    ROW(row_##tag##_3, 3, dt)                                                                              \
    ROW(row_##tag##_4, 4, dt)                                                                              \
    static const row_fn rows_##tag[5] = {NULL, row_##tag##_1, row_##tag##_2, row_##tag##_3, row_##tag##_4};
ROWS(f32, DT_F32)
ROWS(bf16, DT_BF16)
ROWS(f16, DT_F16)

static void small(int M, int N, int K, const float *A, size_t lda, const unsigned char *B,
                  infer_dtype dt, size_t ldb, float *C, size_t ldc)
{
    const row_fn *fns = dt == DT_BF16 ? rows_bf16 : dt == DT_F16 ? rows_f16 : rows_f32;
    if (M == 1) { /* rows n and n + N / 2 side by side; a row's sums are the same alone or paired */
        const row2_fn f2 = dt == DT_BF16 ? row2_bf16 : dt == DT_F16 ? row2_f16 : row2_f32;
        const int half = N / 2;
        float spare;
        for (int n = 0; n < half; n++)
            f2(K, A, B + (size_t)n * ldb, B + (size_t)(n + half) * ldb, C + n, C + n + half);
        if (N % 2) f2(K, A, B + (size_t)(N - 1) * ldb, B + (size_t)(N - 1) * ldb, C + N - 1, &spare);
        return;
    }
    for (int n = 0; n < N; n++)
        for (int m0 = 0; m0 < M; m0 += 4) {
            int mr = M - m0 < 4 ? M - m0 : 4;
            fns[mr](K, A + (size_t)m0 * lda, lda, B + (size_t)n * ldb, C + (size_t)m0 * ldc + n, ldc);
        }
}

const gemm_kernels gemm_kernels_avx2 = {
    .mr = MR, .nr = NR, .mc = 6 * 168, .kc = 256, .nc = 256, .small_m = 12,
    .pack_a = pack_a, .pack_b = pack_b, .tile = tile, .small = small,
};

#endif
