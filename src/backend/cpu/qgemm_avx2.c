/* qgemm_avx2.c - AVX2 + FMA kernels of the quantized products (qgemm.h),
 * in two variants that differ only in their int8 dot products: pmaddubsw
 * (any AVX2 cpu) and AVX-VNNI vpdpbusd.  Those parts are written once in
 * qgemm_avx2_body.h and compiled twice; the exact path, dequantization and
 * the activation transform are shared.  Built for the baseline ISA with
 * per-function target attributes; qgemm.c calls these only when the cpu
 * has the instructions.
 *
 * Streaming kernels take RR = 2 rows of W at a time and up to 4 rows of A
 * (16 ymm registers).  The 8-lane vectors read the 16-lane layouts of
 * qgemm.h half by half. */
#include "backend/cpu/qgemm.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline, target("avx2,fma,f16c")))

enum { RR = 2, MR = 4, NR = 8 };

/* The scales and biases of groups [0, ng) of row r as float32. */
static void row_sb(const bk_weight *w, int64_t r, int ng, float *s, float *b)
{
    size_t i0 = (size_t)r * (size_t)(w->cols / w->group_size);
    q_load_f32(w->scales, w->sdtype, i0, (size_t)ng, s);
    q_load_f32(w->biases, w->sdtype, i0, (size_t)ng, b);
}

INL float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INL void store_sums(const int mr, __m256 acc[MR][RR], int nv, float *C, size_t ldc)
{
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        for (int r = 0; r < nv; r++) C[(size_t)i * ldc + r] = hsum8(acc[i][r]);
}

/* Rows of W in groups of RR; the scale arrays of the group in sb. */
typedef struct rows_rr {
    const uint8_t *q[RR]; /* packed rows, or unpacked bytes */
    const float *s[RR], *b[RR];
} rows_rr;

/* unpack: other widths to bytes in tmp */
static void load_rows(const bk_weight *w, int64_t r0, int nv, int unpack, uint8_t *tmp, rows_rr *rr)
{
    const int K = (int)w->cols, ng = K / w->group_size;
    float *sb = (float *)(void *)(tmp + (size_t)RR * K);
    for (int r = 0; r < RR; r++) {
        int64_t row = r0 + (r < nv ? r : nv - 1);
        const uint8_t *pr = (const uint8_t *)w->data + (size_t)row * bk_qrow_bytes(w);
        if (unpack) {
            q_unpack_u8(pr, w->bits, 0, K, tmp + (size_t)r * K);
            pr = tmp + (size_t)r * K;
        }
        rr->q[r] = pr;
        rr->s[r] = sb + (size_t)r * 2 * ng;
        rr->b[r] = rr->s[r] + ng;
        row_sb(w, row, ng, (float *)rr->s[r], (float *)rr->b[r]);
    }
}

typedef void (*dot_fn)(const q_act *x, int m0, const bk_weight *w, int64_t r0, int nv, float *C, size_t ldc,
                       uint8_t *tmp);

static void run_dots(const dot_fn fns[MR + 1], const q_act *x, const bk_weight *w, int64_t n0, int N, float *C,
                     size_t ldc, uint8_t *tmp)
{
    for (int n = 0; n < N; n += RR) {
        int nv = N - n < RR ? N - n : RR;
        for (int m0 = 0; m0 < x->M; m0 += MR) {
            int mr = x->M - m0 < MR ? x->M - m0 : MR;
            fns[mr](x, m0, w, n0 + n, nv, C + (size_t)m0 * ldc + n, ldc, tmp);
        }
    }
}

/* ---- Exact ---- */

/* 4 bits, chunks of W words: slot 16 i + 8 h + l holds word (8 h + l) % W
 * at nibble (16 / W) i + (8 h + l) / W. */
INL void dotx4_body(const int mr, const int W, const q_act *x, int m0, const bk_weight *w, int64_t r0, int nv,
                    float *C, size_t ldc, uint8_t *tmp)
{
    const int K = x->K, gs = x->group_size, n = 8 * W;
    rows_rr rr;
    load_rows(w, r0, nv, 0, tmp, &rr);
    const __m256i lo4 = _mm256_set1_epi32(0xf);
    __m256 acc[MR][RR];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 2
        for (int r = 0; r < RR; r++) acc[i][r] = _mm256_setzero_ps();
    const float *xp = x->xp + (size_t)m0 * K;
    for (int c = 0; c < K; c += n) {
        const int g = c / gs;
#pragma GCC unroll 2
        for (int r = 0; r < RR; r++) {
            __m256 sv = _mm256_broadcast_ss(rr.s[r] + g), bv = _mm256_broadcast_ss(rr.b[r] + g);
            __m256i v = W == 8 ? _mm256_loadu_si256((const __m256i_u *)(const void *)(rr.q[r] + c / 2))
                               : _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i_u *)(const void *)(rr.q[r] + c / 2)));
#pragma GCC unroll 8
            for (int h = 0; h < n / 8; h++) {
                __m256i q;
                if (W == 8) {
                    q = _mm256_and_si256(_mm256_srli_epi32(v, 4 * h), lo4);
                } else {
                    int nib = 2 * h; /* (16 / W) i + 2 (h % 2), i = h / 2 */
                    __m256i sh = _mm256_setr_epi32(4 * nib, 4 * nib, 4 * nib, 4 * nib, 4 * nib + 4, 4 * nib + 4,
                                                   4 * nib + 4, 4 * nib + 4);
                    q = _mm256_and_si256(_mm256_srlv_epi32(v, sh), lo4);
                }
                __m256 wv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), sv, bv);
#pragma GCC unroll 4
                for (int i = 0; i < mr; i++)
                    acc[i][r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp + (size_t)i * K + c + 8 * h), acc[i][r]);
            }
        }
    }
    store_sums(mr, acc, nv, C, ldc);
}

/* bytes: 8 bits, or other widths unpacked */
INL void dotxb_body(const int mr, const q_act *x, int m0, const bk_weight *w, int64_t r0, int nv, float *C,
                    size_t ldc, uint8_t *tmp)
{
    const int K = x->K, gs = x->group_size, ng = K / gs;
    rows_rr rr;
    load_rows(w, r0, nv, w->bits != 8, tmp, &rr);
    __m256 acc[MR][RR];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 2
        for (int r = 0; r < RR; r++) acc[i][r] = _mm256_setzero_ps();
    const float *a = x->A + (size_t)m0 * x->lda;
    for (int g = 0; g < ng; g++) {
        for (int c = g * gs; c < (g + 1) * gs; c += 8) {
#pragma GCC unroll 2
            for (int r = 0; r < RR; r++) {
                __m256i qi = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i_u *)(const void *)(rr.q[r] + c)));
                __m256 wv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(qi), _mm256_broadcast_ss(rr.s[r] + g),
                                            _mm256_broadcast_ss(rr.b[r] + g));
#pragma GCC unroll 4
                for (int i = 0; i < mr; i++)
                    acc[i][r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a + (size_t)i * x->lda + c), acc[i][r]);
            }
        }
    }
    store_sums(mr, acc, nv, C, ldc);
}

#define DOTX(mr)                                                                                             \
    TGT static void dotx4_8_##mr(const q_act *x, int m0, const bk_weight *w, int64_t r0, int nv, float *C,   \
                                 size_t ldc, uint8_t *tmp)                                                   \
    {                                                                                                        \
        dotx4_body(mr, 8, x, m0, w, r0, nv, C, ldc, tmp);                                                    \
    }                                                                                                        \
    TGT static void dotx4_4_##mr(const q_act *x, int m0, const bk_weight *w, int64_t r0, int nv, float *C,   \
                                 size_t ldc, uint8_t *tmp)                                                   \
    {                                                                                                        \
        dotx4_body(mr, 4, x, m0, w, r0, nv, C, ldc, tmp);                                                    \
    }                                                                                                        \
    TGT static void dotxb_##mr(const q_act *x, int m0, const bk_weight *w, int64_t r0, int nv, float *C,     \
                               size_t ldc, uint8_t *tmp)                                                     \
    {                                                                                                        \
        dotxb_body(mr, x, m0, w, r0, nv, C, ldc, tmp);                                                       \
    }
DOTX(1)
DOTX(2)
DOTX(3)
DOTX(4)

static void dot_f32(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc, uint8_t *tmp)
{
    static const dot_fn x4_8[MR + 1] = {NULL, dotx4_8_1, dotx4_8_2, dotx4_8_3, dotx4_8_4};
    static const dot_fn x4_4[MR + 1] = {NULL, dotx4_4_1, dotx4_4_2, dotx4_4_3, dotx4_4_4};
    static const dot_fn xb[MR + 1] = {NULL, dotxb_1, dotxb_2, dotxb_3, dotxb_4};
    if (w->bits == 4)
        run_dots(w->group_size == 32 ? x4_4 : x4_8, x, w, n0, N, C, ldc, tmp);
    else
        run_dots(xb, x, w, n0, N, C, ldc, tmp);
}

/* ---- Dequantizing blocks of W (exact GEMM) ---- */

TGT static void dequant(const bk_weight *w, int64_t r0, int n, int c0, int kc, float *out, size_t ldo)
{
    const int gs = w->group_size;
    const size_t rb = bk_qrow_bytes(w), ng_row = (size_t)(w->cols / gs);
    float s[512 / 32], b[512 / 32];
    uint8_t tmp[512];
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    for (int i = 0; i < n; i++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)(r0 + i) * rb;
        float *o = out + (size_t)i * ldo;
        for (int c = 0; c < kc; c += 512) {
            int len = kc - c < 512 ? kc - c : 512;
            size_t g0 = (size_t)(r0 + i) * ng_row + (size_t)((c0 + c) / gs);
            q_load_f32(w->scales, w->sdtype, g0, (size_t)(len / gs), s);
            q_load_f32(w->biases, w->sdtype, g0, (size_t)(len / gs), b);
            const uint8_t *q = row + (size_t)(c0 + c);
            if (w->bits != 8 && w->bits != 4) {
                q_unpack_u8(row, w->bits, c0 + c, len, tmp);
                q = tmp;
            }
            for (int g = 0; g < len / gs; g++) {
                __m256 sv = _mm256_set1_ps(s[g]), bv = _mm256_set1_ps(b[g]);
                for (int k = g * gs; k < (g + 1) * gs; k += 32) {
                    __m128i q0, q1;
                    if (w->bits == 4) {
                        __m128i v = _mm_loadu_si128((const __m128i_u *)(const void *)(row + (size_t)(c0 + c + k) / 2));
                        __m128i l = _mm_and_si128(v, lo4), h = _mm_and_si128(_mm_srli_epi16(v, 4), lo4);
                        q0 = _mm_unpacklo_epi8(l, h);
                        q1 = _mm_unpackhi_epi8(l, h);
                    } else {
                        q0 = _mm_loadu_si128((const __m128i_u *)(const void *)(q + k));
                        q1 = _mm_loadu_si128((const __m128i_u *)(const void *)(q + k + 16));
                    }
                    __m128i parts[4] = {q0, _mm_srli_si128(q0, 8), q1, _mm_srli_si128(q1, 8)};
                    for (int j = 0; j < 4; j++)
                        _mm256_storeu_ps(o + c + k + 8 * j,
                                         _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[j])), sv, bv));
                }
            }
        }
    }
}

/* ---- The activation transform (int8; natural order, else portable) ---- */

TGT static void act_rows(const q_act *x, int m0, int m1)
{
    const int K = x->K, gs = x->group_size, nb = K / Q_ABLK, ng = K / gs;
    if (x->small && x->bits == 4) { /* the chunk order: rare (M <= Q_SMALL_M), portable */
        q_act_rows_c(x, m0, m1);
        return;
    }
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int m = m0; m < m1; m++) {
        const float *a = x->A + (size_t)m * x->lda;
        int8_t *q = x->x8 + (size_t)m * K;
        float *d = x->d + (size_t)m * nb, *xs = x->xs + (size_t)m * ng;
        int32_t *s8 = x->s8 + (size_t)m * nb;
        float gsum = 0.0f;
        for (int blk = 0; blk < nb; blk++) {
            __m256 v[4], mx = _mm256_setzero_ps(), sm = _mm256_setzero_ps();
            for (int j = 0; j < 4; j++) {
                v[j] = _mm256_loadu_ps(a + blk * 32 + 8 * j);
                mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[j]));
                sm = _mm256_add_ps(sm, v[j]);
            }
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            float amax = _mm_cvtss_f32(m4);
            float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            d[blk] = amax / 127.0f;
            __m256 vid = _mm256_set1_ps(id);
            __m256i iv[4];
            for (int j = 0; j < 4; j++) iv[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], vid));
            __m256i t = _mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3]));
            __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
            t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4e));
            t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xb1));
            s8[blk] = _mm_cvtsi128_si32(t4);
            gsum += hsum8(sm);
            if ((blk + 1) * 32 % gs == 0) {
                xs[(blk * 32) / gs] = gsum;
                gsum = 0.0f;
            }
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
            _mm256_storeu_si256((__m256i_u *)(void *)(q + blk * 32), _mm256_permutevar8x32_epi32(p, order));
        }
        if (x->dv) { /* natural order: chunks of 64 */
            float *dv = x->dv + (size_t)m * (K / 4 + 16);
            for (int c = 0; c < K; c += 64)
                for (int j = 0; j < 16; j++) dv[c / 4 + j] = d[c / 32 + (K - c > 32 ? j >> 3 : 0)];
        }
    }
}

/* ---- The int8 parts, twice ---- */

#define QV_TARGET "avx2,fma,f16c"
#define QV_VNNI 0
#define QV(name) name##_mb
#include "backend/cpu/qgemm_avx2_body.h"
#undef QV_TARGET
#undef QV_VNNI
#undef QV

#define QV_TARGET "avx2,fma,f16c,avxvnni"
#define QV_VNNI 1
#define QV(name) name##_vnni
#include "backend/cpu/qgemm_avx2_body.h"
#undef QV_TARGET
#undef QV_VNNI
#undef QV

const q_kernels q_kernels_avx2 = {
    .dot_f32 = dot_f32,
    .dot_i8 = dot_i8_mb,
    .dequant = dequant,
    .act_rows = act_rows,
    .mr = MR,
    .nr = NR,
    .tile_i8 = tile_i8_mb,
    .pack_b_i8 = q_pack_b_i8_8,
    .f32 = &gemm_kernels_avx2,
};

const q_kernels q_kernels_avx2_vnni = {
    .dot_f32 = dot_f32,
    .dot_i8 = dot_i8_vnni,
    .dequant = dequant,
    .act_rows = act_rows,
    .mr = MR,
    .nr = NR,
    .tile_i8 = tile_i8_vnni,
    .pack_b_i8 = q_pack_b_i8_8,
    .f32 = &gemm_kernels_avx2,
};

#endif
