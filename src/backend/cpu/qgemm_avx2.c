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

#include "backend/cpu/avx2_inl.h"
#include <string.h>

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline, target("avx2,fma,f16c")))

enum { MR = 4, NR = 8, PF_AHEAD = 8192, MR16 = 4, NR16 = 16 };

/* The scales and biases of rows [r0, r0 + n) as float32 (q_sb_fn). */
static void load_sb(const bk_weight *w, int64_t r0, int n, float *s, float *b)
{
    size_t ng = (size_t)(w->cols / w->group_size);
    q_load_f32(w->scales, w->sdtype, (size_t)r0 * ng, (size_t)n * ng, s);
    q_load_f32(w->biases, w->sdtype, (size_t)r0 * ng, (size_t)n * ng, b);
}

/* Biases: sum_g b_g * (sum of x over g), into lane 0 of the result. */
INL __m256 bias_sum(const float *b, const float *xs, int ng)
{
    __m256 t = _mm256_setzero_ps();
    int g = 0;
    for (; g + 8 <= ng; g += 8) t = _mm256_fmadd_ps(_mm256_loadu_ps(b + g), _mm256_loadu_ps(xs + g), t);
    float tail = 0.0f;
    for (; g < ng; g++) tail += b[g] * xs[g];
    return _mm256_add_ps(t, _mm256_setr_ps(tail, 0, 0, 0, 0, 0, 0, 0));
}

/* ---- Exact ---- */

/* 4 bits, chunks of W words: slot 16 i + 8 h + l holds word (8 h + l) % W
 * at nibble (16 / W) i + (8 h + l) / W. */
INL void rx4_body(const int mr, const int W, const q_act *x, int m0, const uint8_t *q, const float *s, const float *b,
                  float *out, size_t ldc)
{
    const int K = x->K, n = 8 * W, gsh = __builtin_ctz((unsigned)x->group_size);
    const __m256i lo4 = _mm256_set1_epi32(0xf);
    __m256 acc[2][MR];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) acc[0][i] = acc[1][i] = _mm256_setzero_ps();
    const float *xp = x->xp + (size_t)m0 * K;
    for (int c = 0; c < K; c += n) {
        const int g = c >> gsh;
        _mm_prefetch((const char *)q + c / 2 + PF_AHEAD, _MM_HINT_T0);
        __m256 sv = _mm256_broadcast_ss(s + g), bv = _mm256_broadcast_ss(b + g);
        __m256i v = W == 8 ? _mm256_loadu_si256((const __m256i_u *)(const void *)(q + c / 2))
                           : _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i_u *)(const void *)(q + c / 2)));
#pragma GCC unroll 8
        for (int h = 0; h < n / 8; h++) {
            __m256i qv;
            if (W == 8) {
                qv = _mm256_and_si256(_mm256_srli_epi32(v, 4 * h), lo4);
            } else {
                int nib = 2 * h; /* (16 / W) i + 2 (h % 2), i = h / 2 */
                __m256i sh = _mm256_setr_epi32(4 * nib, 4 * nib, 4 * nib, 4 * nib, 4 * nib + 4, 4 * nib + 4,
                                               4 * nib + 4, 4 * nib + 4);
                qv = _mm256_and_si256(_mm256_srlv_epi32(v, sh), lo4);
            }
            __m256 wv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(qv), sv, bv);
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++)
                acc[h & 1][i] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp + (size_t)i * K + c + 8 * h), acc[h & 1][i]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) out[(size_t)i * ldc] = avx2_hsum8(_mm256_add_ps(acc[0][i], acc[1][i]));
}

/* bytes: 8 bits, or other widths unpacked */
INL void rxb_body(const int mr, const q_act *x, int m0, const uint8_t *q, const float *s, const float *b, float *out,
                  size_t ldc)
{
    const int K = x->K, gs = x->group_size, ng = K / gs;
    __m256 acc[2][MR];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) acc[0][i] = acc[1][i] = _mm256_setzero_ps();
    const float *a = x->A + (size_t)m0 * x->lda;
    for (int g = 0; g < ng; g++) {
        const __m256 sv = _mm256_broadcast_ss(s + g), bv = _mm256_broadcast_ss(b + g);
        for (int c = g * gs; c < (g + 1) * gs; c += 16) {
            if (c % 64 == 0) _mm_prefetch((const char *)q + c + PF_AHEAD, _MM_HINT_T0);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i qi = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i_u *)(const void *)(q + c + 8 * h)));
                __m256 wv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(qi), sv, bv);
#pragma GCC unroll 4
                for (int i = 0; i < mr; i++)
                    acc[h][i] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a + (size_t)i * x->lda + c + 8 * h), acc[h][i]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) out[(size_t)i * ldc] = avx2_hsum8(_mm256_add_ps(acc[0][i], acc[1][i]));
}

#define ROW_FN(name, tgt, body, ...)                                                                             \
    tgt static void name(const q_act *x, int m0, const uint8_t *q, const float *s, const float *b, float *out,  \
                         size_t ldc)                                                                             \
    {                                                                                                            \
        body(__VA_ARGS__, x, m0, q, s, b, out, ldc);                                                             \
    }
#define ROWS(mr)                                                                                                 \
    ROW_FN(rx4_8_##mr, TGT, rx4_body, mr, 8)                                                                     \
    ROW_FN(rx4_4_##mr, TGT, rx4_body, mr, 4)                                                                     \
    ROW_FN(rxb_##mr, TGT, rxb_body, mr)
ROWS(1)
ROWS(2)
ROWS(3)
ROWS(4)
#undef ROWS

static void dot_f32(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc, uint8_t *tmp)
{
    static const q_row_fn x4_8[5] = {NULL, rx4_8_1, rx4_8_2, rx4_8_3, rx4_8_4};
    static const q_row_fn x4_4[5] = {NULL, rx4_4_1, rx4_4_2, rx4_4_3, rx4_4_4};
    static const q_row_fn xb[5] = {NULL, rxb_1, rxb_2, rxb_3, rxb_4};
    const q_row_fn *f = w->bits != 4 ? xb : w->group_size == 32 ? x4_4 : x4_8;
    q_stream(f, w->bits != 4 && w->bits != 8, load_sb, x, w, n0, N, C, ldc, tmp);
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

/* ---- q_untile (qgemm.h) with 8 x 8 transposes of 32-bit words ---- */

TGT static void untile(const bk_weight *w, int64_t r0, int n, void *buf, bk_weight *view)
{
    const size_t rb = bk_qrow_bytes(w), wpr = rb / 4;
    if (r0 % 16 || n % 16 || wpr % 8) {
        q_untile(w, r0, n, buf, view);
        return;
    }
    uint8_t *data = q_untile_view(w, r0, n, buf, view);
    /* words per group: a power of two (4 to 32) */
    const int gsh = __builtin_ctz((unsigned)q_tile_gwords(w));
    const size_t gmask = q_tile_gwords(w) - 1, gbytes = q_tile_gbytes(w);
    for (int t = 0; t < n / 16; t++) {
        const uint8_t *src = (const uint8_t *)w->data + q_tile_word_at(w, r0 / 16 + t, 0);
        float *dst = (float *)(void *)(data + (size_t)t * 16 * rb);
        for (int h = 0; h < 2; h++)
            for (size_t j = 0; j < wpr; j += 8) {
                __m256 v[8];
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) {
                    const size_t jj = j + (size_t)i;
                    v[i] = _mm256_load_ps((const float *)(const void *)(src + (jj >> gsh) * gbytes + (jj & gmask) * 64) + 8 * h);
                }
                avx2_tr8(v); /* v[r]: words j .. j + 7 of row 8 h + r */
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + (size_t)(8 * h + i) * wpr + j, v[i]);
            }
        q_untile_sb_rows(w, r0, r0 + 16 * t, r0 + 16 * t + 16, view);
    }
}

/* ---- The activation transform (int8; natural and tiled orders, else
 * portable) ----
 *
 * Both planes in one pass over x, as qgemm.c's q_act_rows_c and
 * residual_rows compute them (the same roundings, so the same bytes): per
 * block of 32, x8 = round(x id) and r8 = round((x id - x8) 256), each
 * clamped to +-127, with their sums, d and d / 256; per group xs, xe and
 * xc; dv and dv2 where the small kernels read them. */

TGT static int act_rows(const q_act *x, int m0, int m1)
{
    const int K = x->K, gs = x->group_size, nb = K / Q_ABLK, ng = K / gs;
    if (q_act_chunked(x)) { /* the chunk order: rare (M <= Q_SMALL_M), portable */
        q_act_rows_c(x, m0, m1);
        return 0;
    }
    const int tiled4 = x->tiled && x->small && x->bits == 4;
    const float mid = q_mid(x->bits);
    const __m256 sign = _mm256_set1_ps(-0.0f), lim = _mm256_set1_ps(127.0f), nlim = _mm256_set1_ps(-127.0f);
    const __m256 k256 = _mm256_set1_ps(256.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    /* the tiled order: in each 8 bytes the even values, then the odd ones */
    const __m256i evenodd = _mm256_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15, 0, 2, 4, 6, 1, 3,
                                             5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
    for (int m = m0; m < m1; m++) {
        const float *a = x->A + (size_t)m * x->lda;
        int8_t *q = x->x8 + (size_t)m * K, *r = x->r8 + (size_t)m * K;
        float *d = x->d + (size_t)m * nb, *d2 = x->d2 + (size_t)m * nb;
        float *xs = x->xs + (size_t)m * ng, *xe = x->xe + (size_t)m * ng, *xc = x->xc + (size_t)m * ng;
        int32_t *s8 = x->s8 + (size_t)m * nb, *s8r = x->s8r + (size_t)m * nb;
        float gsum = 0.0f, gint = 0.0f;
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
            const float amax = _mm_cvtss_f32(m4);
            const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            d[blk] = amax / 127.0f;
            d2[blk] = d[blk] * (1.0f / 256.0f);
            const __m256 vid = _mm256_set1_ps(id);
            __m256i iv[4], ir[4];
            for (int j = 0; j < 4; j++) {
                const __m256 t = _mm256_mul_ps(v[j], vid);
                const __m256 rt = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                const __m256 rr = _mm256_round_ps(_mm256_mul_ps(_mm256_sub_ps(t, rt), k256),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                iv[j] = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(rt, lim), nlim));
                ir[j] = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(rr, lim), nlim));
            }
            const __m256i ti = _mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3]));
            const __m256i tr = _mm256_add_epi32(_mm256_add_epi32(ir[0], ir[1]), _mm256_add_epi32(ir[2], ir[3]));
            /* both sums at once: lanes 0-3 x8's, 4-7 r8's */
            __m256i t2 = _mm256_add_epi32(_mm256_permute2x128_si256(ti, tr, 0x20), _mm256_permute2x128_si256(ti, tr, 0x31));
            t2 = _mm256_add_epi32(t2, _mm256_shuffle_epi32(t2, 0x4e));
            t2 = _mm256_add_epi32(t2, _mm256_shuffle_epi32(t2, 0xb1));
            s8[blk] = _mm256_cvtsi256_si32(t2);
            s8r[blk] = _mm256_extract_epi32(t2, 4);
            __m256i p = _mm256_permutevar8x32_epi32(
                _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3])), order);
            __m256i pr = _mm256_permutevar8x32_epi32(
                _mm256_packs_epi16(_mm256_packs_epi32(ir[0], ir[1]), _mm256_packs_epi32(ir[2], ir[3])), order);
            if (tiled4) {
                p = _mm256_shuffle_epi8(p, evenodd);
                pr = _mm256_shuffle_epi8(pr, evenodd);
            }
            _mm256_storeu_si256((__m256i_u *)(void *)(q + blk * 32), p);
            _mm256_storeu_si256((__m256i_u *)(void *)(r + blk * 32), pr);
            gsum += avx2_hsum8(sm);
            gint += d[blk] * ((float)s8[blk] + (float)s8r[blk] * (1.0f / 256.0f));
            if ((blk + 1) * 32 % gs == 0) {
                const int g = (blk * 32) / gs;
                xs[g] = gsum;
                xe[g] = gsum - gint;
                xc[g] = mid * xe[g];
                gsum = gint = 0.0f;
            }
        }
        if (x->dv) { /* natural order: chunks of 64 */
            float *dv = x->dv + (size_t)m * (K / 4 + 16), *dv2 = x->dv2 + (size_t)m * (K / 4 + 16);
            for (int c = 0; c < K; c += 64)
                for (int j = 0; j < 16; j++) {
                    dv[c / 4 + j] = d[c / 32 + (K - c > 32 ? j >> 3 : 0)];
                    dv2[c / 4 + j] = dv[c / 4 + j] * (1.0f / 256.0f);
                }
        }
    }
    return 1;
}

/* ---- Panels of the int16 GEMM (qgemm.h, q_kernels.tile_i16) ---- */

/* Ap [kc / 2][MR16]: pair p of row i is x16 = 256 x8 + r8 of values 2 p and
 * 2 p + 1 (rows without x8: zeros) */
TGT static void pack_a_i16(int kc, const int8_t *const x8[], const int8_t *const r8[], uint32_t *Ap)
{
    for (int i = 0; i < MR16; i++) {
        if (!x8[i]) {
            for (int p = 0; p < kc / 2; p++) Ap[(size_t)p * MR16 + i] = 0;
            continue;
        }
        for (int k = 0; k < kc; k += 16) {
            const __m256i hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i_u *)(const void *)(x8[i] + k)));
            const __m256i lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i_u *)(const void *)(r8[i] + k)));
            uint32_t t[8];
            _mm256_storeu_si256((__m256i_u *)(void *)t, _mm256_add_epi16(_mm256_slli_epi16(hi, 8), lo));
            for (int p = 0; p < 8; p++) Ap[(size_t)(k / 2 + p) * MR16 + i] = t[p];
        }
    }
}

/* q_unpack_u8 for 4 bits (qgemm.h: q_kernels.unpack4; c0 and n multiples
 * of 32) */
TGT static void unpack4(const uint8_t *row, int64_t c0, int n, uint8_t *out)
{
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    for (int c = 0; c < n; c += 32) {
        const __m128i v = _mm_loadu_si128((const __m128i_u *)(const void *)(row + (c0 + c) / 2));
        const __m128i l = _mm_and_si128(v, lo4), h = _mm_and_si128(_mm_srli_epi16(v, 4), lo4);
        _mm_storeu_si128((__m128i_u *)(void *)(out + c), _mm_unpacklo_epi8(l, h));
        _mm_storeu_si128((__m128i_u *)(void *)(out + c + 16), _mm_unpackhi_epi8(l, h));
    }
}

/* Bp [kc / 2][NR16] for each panel of NR16 rows of q bytes (row stride
 * ldq; rows past n: zeros): pair p of row j is q values 2 p and 2 p + 1
 * as 16-bit numbers; kc a multiple of 16 */
TGT static void pack_b_i16(int n, int kc, const uint8_t *q, size_t ldq, uint32_t *Bp)
{
    for (int p0 = 0; p0 < n; p0 += NR16) {
        uint32_t *panel = Bp + (size_t)p0 * (size_t)(kc / 2);
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < kc; k += 16) {
                __m256 v[8];
#pragma GCC unroll 8
                for (int r = 0; r < 8; r++) {
                    const int row = p0 + 8 * h + r;
                    v[r] = row < n ? _mm256_castsi256_ps(_mm256_cvtepu8_epi16(
                                         _mm_loadu_si128((const __m128i_u *)(const void *)(q + (size_t)row * ldq + k))))
                                   : _mm256_setzero_ps();
                }
                avx2_tr8(v); /* v[p]: pair k / 2 + p of the 8 rows */
#pragma GCC unroll 8
                for (int p = 0; p < 8; p++)
                    _mm256_store_ps((float *)(void *)(panel + (size_t)(k / 2 + p) * NR16 + 8 * h), v[p]);
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
    .dot_tile = dot_tile_mb,
    .untile = untile,
    .tile_i8 = tile_i8_mb,
    .mr16 = MR16,
    .nr16 = NR16,
    .pack_a_i16 = pack_a_i16,
    .pack_b_i16 = pack_b_i16,
    .tile_i16 = tile_i16_mb,
    .unpack4 = unpack4,
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
    .dot_tile = dot_tile_vnni,
    .untile = untile,
    .tile_i8 = tile_i8_vnni,
    .mr16 = MR16,
    .nr16 = NR16,
    .pack_a_i16 = pack_a_i16,
    .pack_b_i16 = pack_b_i16,
    .tile_i16 = tile_i16_vnni,
    .unpack4 = unpack4,
    .pack_b_i8 = q_pack_b_i8_8,
    .f32 = &gemm_kernels_avx2,
};

#endif
