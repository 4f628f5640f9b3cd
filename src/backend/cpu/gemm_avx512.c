/* gemm_avx512.c - AVX-512F kernels of gemm_nt: a 14 x 32 micro-kernel (28
 * zmm accumulators), 16 x 16 transposes for packing, and dot products for
 * small M.  Built for the baseline ISA with per-function target attributes;
 * gemm.c calls these only when the cpu has AVX-512F, AVX2, FMA and F16C. */
#include "backend/cpu/gemm.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#define TGT __attribute__((target("avx512f,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline, target("avx512f,avx2,fma,f16c")))

enum { MR = 14, NR = 32 };

/* 16 elements of B at p (any alignment) as float32; dt is a constant after
 * inlining. */
INL __m512 load16(const unsigned char *p, infer_dtype dt)
{
    if (dt == DT_F32) return _mm512_loadu_ps(p);
    __m256i h = _mm256_loadu_si256((const __m256i_u *)(const void *)p);
    if (dt == DT_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* One element, for the ragged ends. */
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

/* In-register transpose: r[i][j] -> r[j][i]. */
INL void tr16(__m512 r[16])
{
    __m512 t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* ---- Packing ---- */

INL void pack_b_body(int n, int kc, const unsigned char *B, const infer_dtype dt, size_t ldb,
                     float *Bp)
{
    const size_t es = dt == DT_F32 ? 4 : 2;
    const int k16 = kc & ~15;
    for (int p = 0; p < n; p += NR) {
        float *panel = Bp + (size_t)p * kc;
        for (int h = 0; h < NR; h += 16) {
            int rows = n - p - h;
            if (rows > 16) rows = 16;
            if (rows <= 0) {
                for (int k = 0; k < kc; k++)
                    _mm512_store_ps(panel + (size_t)k * NR + h, _mm512_setzero_ps());
                continue;
            }
            const unsigned char *b0 = B + (size_t)(p + h) * ldb;
            for (int k = 0; k < k16; k += 16) {
                __m512 r[16];
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++)
                    r[j] = j < rows ? load16(b0 + j * ldb + (size_t)k * es, dt) : _mm512_setzero_ps();
                tr16(r);
#pragma GCC unroll 16
                for (int t = 0; t < 16; t++) _mm512_store_ps(panel + (size_t)(k + t) * NR + h, r[t]);
            }
            for (int k = k16; k < kc; k++)
                for (int j = 0; j < 16; j++)
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
    const int k16 = kc & ~15;
    for (int p = 0; p < m; p += MR) {
        int rows = m - p < MR ? m - p : MR;
        float *panel = Ap + (size_t)p * kc;
        const float *a0 = A + (size_t)p * lda;
        for (int k = 0; k < k16; k += 16) {
            __m512 r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                r[i] = i < rows ? _mm512_loadu_ps(a0 + i * lda + k) : _mm512_setzero_ps();
            tr16(r);
#pragma GCC unroll 16
            for (int t = 0; t < 16; t++)
                _mm512_mask_storeu_ps(panel + (size_t)(k + t) * MR, (__mmask16)((1u << MR) - 1), r[t]);
        }
        for (int k = k16; k < kc; k++)
            for (int i = 0; i < MR; i++) panel[(size_t)k * MR + i] = i < rows ? a0[i * lda + k] : 0.0f;
    }
}

/* ---- Micro-kernel: C[mr, n] (+)= Ap[kc, MR] . Bp[kc, NR] ---- */

INL void tile_body(const int mr, int n, int kc, const float *a, const float *b, float *c,
                   size_t ldc, int accumulate)
{
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++)
        if (i < mr) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++)
            if (i < mr) {
                __m512 ai = _mm512_set1_ps(a[i]);
                c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
            }
        a += MR;
        b += NR;
    }
    __mmask16 k0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
    __mmask16 k1 = n >= 32 ? 0xffff : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++)
        if (i < mr) {
            float *ci = c + i * ldc;
            if (accumulate) c0[i] = _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(k0, ci));
            _mm512_mask_storeu_ps(ci, k0, c0[i]);
            if (n > 16) {
                if (accumulate) c1[i] = _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(k1, ci + 16));
                _mm512_mask_storeu_ps(ci + 16, k1, c1[i]);
            }
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
TILE(7)
TILE(8)
TILE(9)
TILE(10)
TILE(11)
TILE(12)
TILE(13)
TILE(14)

typedef void (*tile_fn)(int, int, const float *, const float *, float *, size_t, int);
static const tile_fn tiles[MR + 1] = {
    NULL,     tile_1,  tile_2,  tile_3,  tile_4,  tile_5,  tile_6, tile_7,
    tile_8,   tile_9,  tile_10, tile_11, tile_12, tile_13, tile_14,
};

static void tile(int m, int n, int kc, const float *Ap, const float *Bp, float *C, size_t ldc,
                 int accumulate)
{
    tiles[m](n, kc, Ap, Bp, C, ldc, accumulate);
}

/* ---- Small M: each row of B read from start to end, against up to 4
 * rows of A ----
 * One row after the other keeps memory to one sequential stream (rows read
 * side by side, or short prefetch distances, cost a third of the bandwidth
 * on some machines); a prefetch PF_AHEAD bytes on covers what the hardware
 * prefetchers leave. */

enum { PF_AHEAD = 8192 };

INL void row_body(const int mr, const infer_dtype dt, int K, const float *A, size_t lda, const unsigned char *b,
                  float *C, size_t ldc)
{
    const size_t es = dt == DT_F32 ? 4 : 2;
    __m512 acc[2][4];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) acc[0][i] = acc[1][i] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        _mm_prefetch((const char *)b + (size_t)k * es + PF_AHEAD, _MM_HINT_T0);
        if (es == 4) _mm_prefetch((const char *)b + (size_t)k * es + PF_AHEAD + 64, _MM_HINT_T0);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m512 w = load16(b + (size_t)(k + 16 * h) * es, dt);
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) acc[h][i] = _mm512_fmadd_ps(_mm512_loadu_ps(A + i * lda + k + 16 * h), w, acc[h][i]);
        }
    }
    for (; k < K; k += 16) {
        int n = K - k < 16 ? K - k : 16;
        __mmask16 km = (__mmask16)((1u << n) - 1);
        unsigned char tmp[64] = {0};
        memcpy(tmp, b + (size_t)k * es, (size_t)n * es);
        __m512 w = load16(tmp, dt);
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) acc[0][i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(km, A + i * lda + k), w, acc[0][i]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) C[i * ldc] = _mm512_reduce_add_ps(_mm512_add_ps(acc[0][i], acc[1][i]));
}

typedef void (*row_fn)(int K, const float *A, size_t lda, const unsigned char *b, float *C, size_t ldc);

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
    for (int n = 0; n < N; n++)
        for (int m0 = 0; m0 < M; m0 += 4) {
            int mr = M - m0 < 4 ? M - m0 : 4;
            fns[mr](K, A + (size_t)m0 * lda, lda, B + (size_t)n * ldb, C + (size_t)m0 * ldc + n, ldc);
        }
}

const gemm_kernels gemm_kernels_avx512 = {
    .mr = MR, .nr = NR, .mc = 14 * 72, .kc = 256, .nc = 256, .small_m = 24,
    .pack_a = pack_a, .pack_b = pack_b, .tile = tile, .small = small,
};

#endif
