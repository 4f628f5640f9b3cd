/* qgemm_avx512.c - AVX-512 kernels of the quantized products (qgemm.h):
 * F for the exact path, BW/VL/VNNI for the int8 path.  Built for the
 * baseline ISA with per-function target attributes; qgemm.c calls these
 * only when the cpu has them all.
 *
 * Streaming kernels (M <= Q_SMALL_M, driven by q_stream) take one row of W
 * at a time, to its end, against up to 4 rows of A.
 *   exact, 4 bits: a chunk's words broadcast to 16 lanes and shifted right
 *       by a nibble per lane: each lane's low 4 bits are one q value, and
 *       vpermps with a 16-entry table s * [0..15] + b (the group's values)
 *       turns them into dequantized weights (the other bits are ignored).
 *   exact, other widths: bytes widened to 32 bits, converted, s * q + b.
 *   int8: 64 q bytes dotted with 64 int8 activations by vpdpbusd (4 bits:
 *       64 packed bytes a step, their low nibbles then their high ones,
 *       into the same 16 int32 sums); the sums are scaled by d_block *
 *       s_group per lane.
 * Each streaming kernel prefetches the bytes of its row PF_AHEAD on: with
 * the hardware prefetchers alone the cores wait on memory.
 * The GEMMs: the int8 micro-kernel (4 x 32 tiles, vpdpbusd, block scales
 * applied every 32 values of K), its packing, and the exact GEMM's B
 * panels dequantized straight into gemm_avx512.c's layout. */
#include "backend/cpu/qgemm.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

enum { MR = 4, NR = 32, F_KC_MAX = 256, PF_AHEAD = 8192 };

/* n (<= 16) values of dtype t at p as float32. */
INL __m512 load_sf(const void *p, infer_dtype t, int n)
{
    __mmask16 k = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    if (t == DT_F32) return _mm512_maskz_loadu_ps(k, p);
    __m256i h = _mm256_maskz_loadu_epi16(k, p);
    if (t == DT_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* The scales and biases of groups [g0, g0 + n) of row r into s and b. */
INL void row_sb(const bk_weight *w, int64_t r, int g0, int n, float *s, float *b)
{
    size_t es = dtype_size(w->sdtype);
    size_t i0 = (size_t)r * (size_t)(w->cols / w->group_size) + (size_t)g0;
    const unsigned char *ps = (const unsigned char *)w->scales + i0 * es;
    const unsigned char *pb = (const unsigned char *)w->biases + i0 * es;
    for (int g = 0; g < n; g += 16) {
        int k = n - g < 16 ? n - g : 16;
        __mmask16 m = k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << k) - 1);
        _mm512_mask_storeu_ps(s + g, m, load_sf(ps + (size_t)g * es, w->sdtype, k));
        _mm512_mask_storeu_ps(b + g, m, load_sf(pb + (size_t)g * es, w->sdtype, k));
    }
}

TGT static void load_sb(const bk_weight *w, int64_t r0, int n, float *s, float *b)
{
    const int ng = (int)(w->cols / w->group_size);
    for (int i = 0; i < n; i++) row_sb(w, r0 + i, 0, ng, s + (size_t)i * ng, b + (size_t)i * ng);
}

/* ---- Exact, 4 bits ---- */

/* lane l of vector i of a chunk of W words: nibble (16 / W) i + l / W of
 * word l % W */
INL void rx4_body(const int mr, const int W, const q_act *x, int m0, const uint8_t *q, const float *s, const float *b,
                  float *out, size_t ldc)
{
    const int K = x->K, n = 8 * W, gsh = __builtin_ctz((unsigned)x->group_size);
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512i sh[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        sh[i] = _mm512_slli_epi32(_mm512_add_epi32(_mm512_set1_epi32((16 / W) * i),
                                                   _mm512_srli_epi32(lane, W == 8 ? 3 : 2)),
                                  2);
    const __m512 iota = _mm512_cvtepi32_ps(lane);
    __m512 a[2][MR];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) a[0][i] = a[1][i] = _mm512_setzero_ps();
    const float *xp = x->xp + (size_t)m0 * K;
    for (int c = 0; c < K; c += n) {
        const int g = c >> gsh;
        if (W == 8 || (c & 64) == 0) _mm_prefetch((const char *)q + c / 2 + PF_AHEAD, _MM_HINT_T0);
        __m512 lut = _mm512_fmadd_ps(iota, _mm512_set1_ps(s[g]), _mm512_set1_ps(b[g]));
        __m512i v = W == 8 ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i_u *)(const void *)(q + c / 2)))
                           : _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i_u *)(const void *)(q + c / 2)));
#pragma GCC unroll 4
        for (int vi = 0; vi < n / 16; vi++) {
            __m512 wv = _mm512_permutexvar_ps(_mm512_srlv_epi32(v, sh[vi]), lut);
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++)
                a[vi & 1][i] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xp + (size_t)i * K + c + 16 * vi), a[vi & 1][i]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) out[(size_t)i * ldc] = _mm512_reduce_add_ps(_mm512_add_ps(a[0][i], a[1][i]));
}

/* ---- Exact, bytes (8 bits, or other widths unpacked) ---- */

INL void rxb_body(const int mr, const q_act *x, int m0, const uint8_t *q, const float *s, const float *b, float *out,
                  size_t ldc)
{
    const int K = x->K, gs = x->group_size, ng = K / gs;
    __m512 a[2][MR];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) a[0][i] = a[1][i] = _mm512_setzero_ps();
    const float *xa = x->A + (size_t)m0 * x->lda;
    for (int g = 0; g < ng; g++) {
        const __m512 sv = _mm512_set1_ps(s[g]), bv = _mm512_set1_ps(b[g]);
        for (int c = g * gs; c < (g + 1) * gs; c += 32) {
            if ((c & 63) == 0) _mm_prefetch((const char *)q + c + PF_AHEAD, _MM_HINT_T0);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m512i qi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i_u *)(const void *)(q + c + 16 * h)));
                __m512 wv = _mm512_fmadd_ps(_mm512_cvtepi32_ps(qi), sv, bv);
#pragma GCC unroll 4
                for (int i = 0; i < mr; i++)
                    a[h][i] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xa + (size_t)i * x->lda + c + 16 * h), a[h][i]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) out[(size_t)i * ldc] = _mm512_reduce_add_ps(_mm512_add_ps(a[0][i], a[1][i]));
}

/* ---- int8 ---- */

/* a += cvt(is) * (lane scales of the activations * of the weights) */
INL __m512 scale_acc(__m512 a, __m512i is, const float *dv, __m512 sv)
{
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(_mm512_loadu_ps(dv), sv), a);
}

/* The weight scales of the lanes of a chunk of 128 (4 bits: lane j of both
 * halves sums block j / 4), or of 64 in natural order (lane j: block j / 8);
 * sp points at the chunk's first group. */
INL __m512 scales128(const int GS, const float *sp)
{
    const __m512i by4 = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    if (GS == 32) return _mm512_permutexvar_ps(by4, _mm512_castps128_ps512(_mm_loadu_ps(sp)));
    if (GS == 64) return _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(sp[0]), _mm512_set1_ps(sp[1]));
    return _mm512_set1_ps(sp[0]);
}

/* Biases: a + sum_g b_g * (sum of x over g). */
INL __m512 bias_acc(__m512 a, const float *b, const float *xs, int ng)
{
    for (int g = 0; g < ng; g += 16) {
        int k = ng - g < 16 ? ng - g : 16;
        __mmask16 m = k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << k) - 1);
        a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, b + g), _mm512_maskz_loadu_ps(m, xs + g), a);
    }
    return a;
}

/* 32 values (a last chunk, group size 32): a + the ymm product. */
INL __m512 tail32(__m512 a, __m256i wq, const int8_t *xq, const float *dv, float s)
{
    __m256i is = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wq, _mm256_loadu_si256((const __m256i_u *)(const void *)xq));
    __m256 dd = _mm256_mul_ps(_mm256_loadu_ps(dv), _mm256_set1_ps(s));
    return _mm512_add_ps(a, _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(is), dd)));
}

/* int8, 4 bits: chunks of 128 (two a step, one accumulator each), then a
 * 64 and a 32 where K leaves them.  GS: the group size, a constant. */
INL void ri4_body(const int mr, const int GS, const q_act *x, int m0, const uint8_t *q, const float *s,
                  const float *b, float *out, size_t ldc)
{
    const int K = x->K, ng = K / GS, K128 = K & ~127;
    const size_t dvs = (size_t)K / 4 + 16;
    const int8_t *x8 = x->x8 + (size_t)m0 * K;
    const float *dv = x->dv + (size_t)m0 * dvs;
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    const char *pf = (const char *)q + PF_AHEAD;
    __m512 a[2][MR];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) a[0][i] = a[1][i] = _mm512_setzero_ps();
    int c = 0;
    for (; c < K128; c += 256)
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const int cc = c + 128 * h;
            if (h && cc >= K128) break;
            _mm_prefetch(pf + cc / 2, _MM_HINT_T0);
            __m512i v = _mm512_loadu_si512(q + cc / 2);
            __m512i lo = _mm512_and_si512(v, lo4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
            __m512 sv = scales128(GS, s + cc / GS);
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                const int8_t *xi = x8 + (size_t)i * K + cc;
                __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xi));
                is = _mm512_dpbusd_epi32(is, hi, _mm512_loadu_si512(xi + 64));
                a[h][i] = scale_acc(a[h][i], is, dv + (size_t)i * dvs + cc / 4, sv);
            }
        }
    c = K128; /* the pairs may have stepped past it */
    if (K - c >= 64) { /* [low | high nibbles] of 32 bytes */
        __m256i v = _mm256_loadu_si256((const __m256i_u *)(const void *)(q + c / 2));
        __m512i wq = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1), lo4);
        __m512 sv = GS == 32 ? _mm512_mask_blend_ps(0xf0f0, _mm512_set1_ps(s[c / 32]), _mm512_set1_ps(s[c / 32 + 1]))
                             : _mm512_set1_ps(s[c / GS]);
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, _mm512_loadu_si512(x8 + (size_t)i * K + c));
            a[0][i] = scale_acc(a[0][i], is, dv + (size_t)i * dvs + c / 4, sv);
        }
        c += 64;
    }
    if (c < K) { /* [low | high nibbles] of 16 bytes */
        __m128i v = _mm_loadu_si128((const __m128i_u *)(const void *)(q + c / 2));
        __m256i wq = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1),
                                      _mm256_set1_epi8(0x0f));
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) a[0][i] = tail32(a[0][i], wq, x8 + (size_t)i * K + c, dv + (size_t)i * dvs + c / 4, s[c / 32]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        a[1][i] = bias_acc(a[1][i], b, x->xs + (size_t)(m0 + i) * ng, ng);
        out[(size_t)i * ldc] = _mm512_reduce_add_ps(_mm512_add_ps(a[0][i], a[1][i]));
    }
}

/* int8, bytes in natural order: chunks of 64 (two a step), then 32. */
INL void rib_body(const int mr, const int GS, const q_act *x, int m0, const uint8_t *q, const float *s,
                  const float *b, float *out, size_t ldc)
{
    const int K = x->K, ng = K / GS, K64 = K & ~63;
    const size_t dvs = (size_t)K / 4 + 16;
    const int8_t *x8 = x->x8 + (size_t)m0 * K;
    const float *dv = x->dv + (size_t)m0 * dvs;
    const char *pf = (const char *)q + PF_AHEAD;
    __m512 a[2][MR];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) a[0][i] = a[1][i] = _mm512_setzero_ps();
    int c = 0;
    for (; c < K64; c += 128)
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const int cc = c + 64 * h;
            if (h && cc >= K64) break;
            _mm_prefetch(pf + cc, _MM_HINT_T0);
            __m512i wq = _mm512_loadu_si512(q + cc);
            __m512 sv = GS == 32 ? _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(s[cc / 32]), _mm512_set1_ps(s[cc / 32 + 1]))
                                 : _mm512_set1_ps(s[cc / GS]);
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, _mm512_loadu_si512(x8 + (size_t)i * K + cc));
                a[h][i] = scale_acc(a[h][i], is, dv + (size_t)i * dvs + cc / 4, sv);
            }
        }
    c = K64;
    if (c < K) {
        __m256i wq = _mm256_loadu_si256((const __m256i_u *)(const void *)(q + c));
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) a[0][i] = tail32(a[0][i], wq, x8 + (size_t)i * K + c, dv + (size_t)i * dvs + c / 4, s[c / 32]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        a[1][i] = bias_acc(a[1][i], b, x->xs + (size_t)(m0 + i) * ng, ng);
        out[(size_t)i * ldc] = _mm512_reduce_add_ps(_mm512_add_ps(a[0][i], a[1][i]));
    }
}

#define ROW_FN(name, body, ...)                                                                                  \
    TGT static void name(const q_act *x, int m0, const uint8_t *q, const float *s, const float *b, float *out,  \
                         size_t ldc)                                                                             \
    {                                                                                                            \
        body(__VA_ARGS__, x, m0, q, s, b, out, ldc);                                                             \
    }
#define ROWS(mr)                                                                                                 \
    ROW_FN(rx4_8_##mr, rx4_body, mr, 8)                                                                          \
    ROW_FN(rx4_4_##mr, rx4_body, mr, 4)                                                                          \
    ROW_FN(rxb_##mr, rxb_body, mr)                                                                               \
    ROW_FN(ri4_32_##mr, ri4_body, mr, 32)                                                                        \
    ROW_FN(ri4_64_##mr, ri4_body, mr, 64)                                                                        \
    ROW_FN(ri4_128_##mr, ri4_body, mr, 128)                                                                      \
    ROW_FN(rib_32_##mr, rib_body, mr, 32)                                                                        \
    ROW_FN(rib_64_##mr, rib_body, mr, 64)                                                                        \
    ROW_FN(rib_128_##mr, rib_body, mr, 128)
ROWS(1)
ROWS(2)
ROWS(3)
ROWS(4)

static void dot_f32(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc, uint8_t *tmp)
{
    static const q_row_fn x4_8[5] = {NULL, rx4_8_1, rx4_8_2, rx4_8_3, rx4_8_4};
    static const q_row_fn x4_4[5] = {NULL, rx4_4_1, rx4_4_2, rx4_4_3, rx4_4_4};
    static const q_row_fn xb[5] = {NULL, rxb_1, rxb_2, rxb_3, rxb_4};
    const q_row_fn *f = w->bits != 4 ? xb : w->group_size == 32 ? x4_4 : x4_8;
    q_stream(f, w->bits != 4 && w->bits != 8, load_sb, x, w, n0, N, C, ldc, tmp);
}

/* ---- int8, one row of activations (decode), one row of W at a time ----
 *
 * On the 2-core EPYC one stream of W per core reaches more of the
 * bandwidth than 2 or 4 interleaved rows (0.84-0.89 of a plain read against
 * 0.58-0.74), although interleaved rows would share the activation loads.
 * The row's group scales are read in their stored dtype, 16 groups at a
 * time, and picked per lane with a permute (lane j of a chunk covers values
 * 8 j .. 8 j + 7 for 4 bits, 4 j .. 4 j + 3 for 8 bits, all in one group).
 * Both planes and the centring (qgemm.h) in the same pass.  K: a multiple
 * of the chunk (128 for 4 bits, 64 for 8). */

/* lane -> group within the 16-group window, for a chunk at value c */
INL __m512i lane_groups(const int GS, const int vals_per_lane, int c)
{
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512i g = _mm512_srli_epi32(_mm512_mullo_epi32(lane, _mm512_set1_epi32(vals_per_lane)), __builtin_ctz((unsigned)GS));
    return _mm512_add_epi32(g, _mm512_set1_epi32((c / GS) & 15));
}

INL float m1_row(const int BITS, const int GS, const q_act *x, const bk_weight *w, int64_t r)
{
    const int K = x->K, ng = K / GS;
    const int CH = BITS == 4 ? 128 : 64; /* values per chunk */
    const int WIN = 16 * GS;             /* values per window of scales */
    const size_t es = dtype_size(w->sdtype), sb = (size_t)ng * es;
    const int8_t *x8 = x->x8, *r8 = x->r8;
    const float *dv = x->dv2;
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    const uint8_t *q = (const uint8_t *)w->data + (size_t)r * bk_qrow_bytes(w);
    const unsigned char *sc = (const unsigned char *)w->scales + (size_t)r * sb;
    __m512 acc = _mm512_setzero_ps(), cen = _mm512_setzero_ps(), sw = _mm512_setzero_ps();
    /* the scales and biases of the row 8 on */
    if (r + 8 < w->rows)
        for (size_t i = 0; i < sb; i += 64) {
            _mm_prefetch((const char *)w->scales + (size_t)(r + 8) * sb + i, _MM_HINT_T0);
            _mm_prefetch((const char *)w->biases + (size_t)(r + 8) * sb + i, _MM_HINT_T0);
        }
    for (int c = 0; c < K; c += CH) {
        if (c % WIN == 0) {
            int k = (K - c) / GS < 16 ? (K - c) / GS : 16;
            /* the centring: s_g * mid xe_g, 16 groups at a time */
            sw = load_sf(sc + (size_t)(c / GS) * es, w->sdtype, k);
            cen = _mm512_fmadd_ps(sw, _mm512_maskz_loadu_ps((__mmask16)((1u << k) - 1), x->xc + c / GS), cen);
        }
        const __m512i gi = lane_groups(GS, BITS == 4 ? 8 : 4, c);
        const __m512 d = _mm512_loadu_ps(dv + c / 4); /* d / 256: both planes in one sum */
        const __m512i xa = _mm512_loadu_si512(x8 + c), ra = _mm512_loadu_si512(r8 + c);
        const uint8_t *p = q + (size_t)c * BITS / 8;
        _mm_prefetch((const char *)p + PF_AHEAD, _MM_HINT_T0);
        __m512i v = _mm512_loadu_si512(p), is, ir;
        if (BITS == 4) {
            const __m512i xb = _mm512_loadu_si512(x8 + c + 64), rb = _mm512_loadu_si512(r8 + c + 64);
            const __m512i lo = _mm512_and_si512(v, lo4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
            is = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xa), hi, xb);
            ir = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, ra), hi, rb);
        } else {
            is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, xa);
            ir = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, ra);
        }
        /* at most 4 x 2 x 255 x 127 a lane: times 256 fits */
        is = _mm512_add_epi32(_mm512_slli_epi32(is, 8), ir);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(d, _mm512_permutexvar_ps(gi, sw)), acc);
    }
    /* biases: sum over groups of b_g * (sum of x over g) */
    const unsigned char *pb = (const unsigned char *)w->biases + (size_t)r * sb;
    for (int g = 0; g < ng; g += 16) {
        int k = ng - g < 16 ? ng - g : 16;
        __mmask16 m = k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << k) - 1);
        acc = _mm512_fmadd_ps(load_sf(pb + (size_t)g * es, w->sdtype, k), _mm512_maskz_loadu_ps(m, x->xs + g), acc);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc, cen));
}

#define M1_FNS(BITS, GS)                                                                                         \
    TGT static void m1_##BITS##_##GS(const q_act *x, const bk_weight *w, int64_t r0, int n, float *out)          \
    {                                                                                                            \
        for (int i = 0; i < n; i++) out[i] = m1_row(BITS, GS, x, w, r0 + i);                                     \
    }
M1_FNS(4, 32)
M1_FNS(4, 64)
M1_FNS(4, 128)
M1_FNS(8, 32)
M1_FNS(8, 64)
M1_FNS(8, 128)

static void dot_i8(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc, uint8_t *tmp)
{
    if (x->M == 1 && ((w->bits == 4 && x->K % 128 == 0) || (w->bits == 8 && x->K % 64 == 0))) {
        typedef void (*m1_fn)(const q_act *, const bk_weight *, int64_t, int, float *);
        static const m1_fn f4[3] = {m1_4_32, m1_4_64, m1_4_128}, f8[3] = {m1_8_32, m1_8_64, m1_8_128};
        int gi = w->group_size == 32 ? 0 : w->group_size == 64 ? 1 : 2;
        (void)tmp;
        (void)ldc;
        (w->bits == 4 ? f4 : f8)[gi](x, w, n0, N, C);
        return;
    }
    static const q_row_fn i4[3][5] = {{NULL, ri4_32_1, ri4_32_2, ri4_32_3, ri4_32_4},
                                      {NULL, ri4_64_1, ri4_64_2, ri4_64_3, ri4_64_4},
                                      {NULL, ri4_128_1, ri4_128_2, ri4_128_3, ri4_128_4}};
    static const q_row_fn ib[3][5] = {{NULL, rib_32_1, rib_32_2, rib_32_3, rib_32_4},
                                      {NULL, rib_64_1, rib_64_2, rib_64_3, rib_64_4},
                                      {NULL, rib_128_1, rib_128_2, rib_128_3, rib_128_4}};
    int g = w->group_size == 32 ? 0 : w->group_size == 64 ? 1 : 2;
    q_stream(w->bits == 4 ? i4[g] : ib[g], w->bits != 4 && w->bits != 8, load_sb, x, w, n0, N, C, ldc, tmp);
}

/* ---- int8 on tiled W, M <= Q_SMALL_M (qgemm.h) ----
 *
 * One 64-byte vector holds 32-bit word j of 16 rows.  4 bits: its low
 * nibbles are values 8 j, 8 j + 2, .. of each row, its high ones the odd
 * values; vpdpbusd against the broadcast word 2 j (even values of x, the
 * tiled order) and 2 j + 1 gives 16 rows' partial sums.  8 bits: the word's
 * bytes are 4 values, against word j of x.  A block of 32 values (4 or 8
 * words) runs both planes (x8 and the residual r8) into int32 sums,
 * then (x8 sum * 256 + r8 sum) * d / 256 goes into the group's float sum;
 * at the group's end the 16 rows' scales multiply it, and the bias and
 * centring terms (b_g xs_g + s_g xc_g) go to a second sum.  NT tiles
 * (read side by side: NT streams of W) times XR rows of x, NT * XR <= 2;
 * each pair keeps four int32 chains (low and high nibbles or even and odd
 * words, times two planes) so that no chain waits on vpdpbusd's latency.
 * out[u] + i * ldo receives tile t[u]'s 16 sums for row m0 + i of x. */
INL void tile_body(const int BITS, const int NT, const int XR, const q_act *x, int m0, const bk_weight *w,
                   const int64_t *t, float *const *out, size_t ldo)
{
    const int K = x->K, gs = x->group_size, ng = K / gs, nb = K / Q_ABLK, bpg = gs / Q_ABLK;
    const int WPB = BITS == 4 ? 4 : 8; /* words per block of 32 values */
    const size_t es = dtype_size(w->sdtype), gbytes = q_tile_gbytes(w), gw64 = q_tile_gwords(w) * 64;
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    const uint8_t *T[2];
    const int32_t *xw[2], *rw[2];
    const float *d2[2], *xs[2], *xc[2];
    __m512 acc[2][2], acc2[2][2];
#pragma GCC unroll 2
    for (int u = 0; u < NT; u++) T[u] = (const uint8_t *)w->data + q_tile_word_at(w, t[u], 0);
#pragma GCC unroll 2
    for (int i = 0; i < XR; i++) {
        xw[i] = (const int32_t *)(const void *)(x->x8 + (size_t)(m0 + i) * K);
        rw[i] = (const int32_t *)(const void *)(x->r8 + (size_t)(m0 + i) * K);
        d2[i] = x->d2 + (size_t)(m0 + i) * nb;
        xs[i] = x->xs + (size_t)(m0 + i) * ng;
        xc[i] = x->xc + (size_t)(m0 + i) * ng;
#pragma GCC unroll 2
        for (int u = 0; u < NT; u++) acc[u][i] = acc2[u][i] = _mm512_setzero_ps();
    }
    for (int g = 0; g < ng; g++) {
        __m512 ag[2][2];
#pragma GCC unroll 2
        for (int u = 0; u < NT; u++)
#pragma GCC unroll 2
            for (int i = 0; i < XR; i++) ag[u][i] = _mm512_setzero_ps();
        const int b0 = g * bpg;
        for (int b = b0; b < b0 + bpg; b++) {
            __m512i is[2][2][2], ir[2][2][2];
#pragma GCC unroll 2
            for (int u = 0; u < NT; u++)
#pragma GCC unroll 2
                for (int i = 0; i < XR; i++)
                    is[u][i][0] = is[u][i][1] = ir[u][i][0] = ir[u][i][1] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int j = 0; j < WPB; j++) {
                const int J = b * WPB + j;
#pragma GCC unroll 2
                for (int u = 0; u < NT; u++) {
                    const uint8_t *p = T[u] + (size_t)g * gbytes + (size_t)(J - b0 * WPB) * 64;
                    _mm_prefetch((const char *)p + PF_AHEAD, _MM_HINT_T0);
                    __m512i v = _mm512_load_si512(p);
                    if (BITS == 4) {
                        __asm__("" : "+v"(v)); /* one load for both nibbles */
                        const __m512i l = _mm512_and_si512(v, lo4), h = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
#pragma GCC unroll 2
                        for (int i = 0; i < XR; i++) {
                            is[u][i][0] = _mm512_dpbusd_epi32(is[u][i][0], l, _mm512_set1_epi32(xw[i][2 * J]));
                            is[u][i][1] = _mm512_dpbusd_epi32(is[u][i][1], h, _mm512_set1_epi32(xw[i][2 * J + 1]));
                            ir[u][i][0] = _mm512_dpbusd_epi32(ir[u][i][0], l, _mm512_set1_epi32(rw[i][2 * J]));
                            ir[u][i][1] = _mm512_dpbusd_epi32(ir[u][i][1], h, _mm512_set1_epi32(rw[i][2 * J + 1]));
                        }
                    } else {
#pragma GCC unroll 2
                        for (int i = 0; i < XR; i++) {
                            is[u][i][j & 1] = _mm512_dpbusd_epi32(is[u][i][j & 1], v, _mm512_set1_epi32(xw[i][J]));
                            ir[u][i][j & 1] = _mm512_dpbusd_epi32(ir[u][i][j & 1], v, _mm512_set1_epi32(rw[i][J]));
                        }
                    }
                }
            }
#pragma GCC unroll 2
            for (int u = 0; u < NT; u++)
#pragma GCC unroll 2
                for (int i = 0; i < XR; i++) {
                    /* at most 32 x 255 x 127 a lane: times 256 fits */
                    __m512i sum = _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(is[u][i][0], is[u][i][1]), 8),
                                                   _mm512_add_epi32(ir[u][i][0], ir[u][i][1]));
                    ag[u][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(d2[i][b]), ag[u][i]);
                }
        }
#pragma GCC unroll 2
        for (int u = 0; u < NT; u++) {
            const unsigned char *sb = T[u] + (size_t)g * gbytes + gw64; /* the group's scales, then biases */
            const __m512 sv = load_sf(sb, w->sdtype, 16);
            const __m512 bv = load_sf(sb + 16 * es, w->sdtype, 16);
#pragma GCC unroll 2
            for (int i = 0; i < XR; i++) {
                acc[u][i] = _mm512_fmadd_ps(ag[u][i], sv, acc[u][i]);
                acc2[u][i] = _mm512_fmadd_ps(bv, _mm512_set1_ps(xs[i][g]),
                                             _mm512_fmadd_ps(sv, _mm512_set1_ps(xc[i][g]), acc2[u][i]));
            }
        }
    }
#pragma GCC unroll 2
    for (int u = 0; u < NT; u++)
#pragma GCC unroll 2
        for (int i = 0; i < XR; i++) _mm512_storeu_ps(out[u] + (size_t)i * ldo, _mm512_add_ps(acc[u][i], acc2[u][i]));
}

/* (tiles, rows of x): (1, 1), (1, 2) and (2, 1) */
#define TILE_FNS(BITS)                                                                                            \
    TGT static void tile_##BITS##_11(const q_act *x, int m0, const bk_weight *w, const int64_t *t,                \
                                     float *const *o, size_t ld)                                                  \
    {                                                                                                             \
        tile_body(BITS, 1, 1, x, m0, w, t, o, ld);                                                                \
    }                                                                                                             \
    TGT static void tile_##BITS##_12(const q_act *x, int m0, const bk_weight *w, const int64_t *t,                \
                                     float *const *o, size_t ld)                                                  \
    {                                                                                                             \
        tile_body(BITS, 1, 2, x, m0, w, t, o, ld);                                                                \
    }                                                                                                             \
    TGT static void tile_##BITS##_21(const q_act *x, int m0, const bk_weight *w, const int64_t *t,                \
                                     float *const *o, size_t ld)                                                  \
    {                                                                                                             \
        tile_body(BITS, 2, 1, x, m0, w, t, o, ld);                                                                \
    }
TILE_FNS(4)
TILE_FNS(8)
#undef TILE_FNS

static void dot_tile(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc)
{
    if (w->bits == 4)
        q_tile_drive(tile_4_11, tile_4_12, tile_4_21, x, w, n0, N, C, ldc);
    else
        q_tile_drive(tile_8_11, tile_8_12, tile_8_21, x, w, n0, N, C, ldc);
}

/* ---- Dequantizing blocks of W (exact GEMM) ---- */

TGT static void dequant(const bk_weight *w, int64_t r0, int n, int c0, int kc, float *out, size_t ldo)
{
    const int gs = w->group_size;
    const size_t rb = bk_qrow_bytes(w);
    float s[512 / 32 * 8], b[512 / 32 * 8];
    uint8_t tmp[512];
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    for (int i = 0; i < n; i++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)(r0 + i) * rb;
        float *o = out + (size_t)i * ldo;
        for (int c = 0; c < kc; c += 512) {
            int len = kc - c < 512 ? kc - c : 512;
            row_sb(w, r0 + i, (c0 + c) / gs, len / gs, s, b);
            const uint8_t *q = row + (size_t)(c0 + c); /* 8 bits */
            if (w->bits != 8 && w->bits != 4) {
                q_unpack_u8(row, w->bits, c0 + c, len, tmp);
                q = tmp;
            }
            for (int g = 0; g < len / gs; g++) {
                __m512 sv = _mm512_set1_ps(s[g]), bv = _mm512_set1_ps(b[g]);
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
                    _mm512_storeu_ps(o + c + k, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q0)), sv, bv));
                    _mm512_storeu_ps(o + c + k + 16,
                                     _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q1)), sv, bv));
                }
            }
        }
    }
}

/* ---- The activation transform (int8) ---- */

TGT static int act_rows(const q_act *x, int m0, int m1)
{
    const int K = x->K, gs = x->group_size, nb = K / Q_ABLK, ng = K / gs, per = gs / Q_ABLK;
    const int chunked = q_act_chunked(x), tiled4 = x->small && x->tiled && x->bits == 4;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    /* the tiled order: in each 8 values the even ones, then the odd */
    const __m512i eo8 = _mm512_set_epi32(15, 13, 11, 9, 14, 12, 10, 8, 7, 5, 3, 1, 6, 4, 2, 0);
    const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
    const __m512 c256 = _mm512_set1_ps(256.0f);
    for (int m = m0; m < m1; m++) {
        const float *a = x->A + (size_t)m * x->lda;
        int8_t *q = x->x8 + (size_t)m * K, *r8 = x->r8 + (size_t)m * K;
        float *d = x->d + (size_t)m * nb, *xs = x->xs + (size_t)m * ng, *d2 = x->d2 + (size_t)m * nb;
        int32_t *s8 = x->s8 + (size_t)m * nb, *s8r = x->s8r + (size_t)m * nb;
        float gsum = 0.0f;
        for (int blk = 0; blk < nb; blk++) {
            __m512 v0 = _mm512_loadu_ps(a + blk * 32), v1 = _mm512_loadu_ps(a + blk * 32 + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            d[blk] = amax / 127.0f;
            d2[blk] = d[blk] * (1.0f / 256.0f);
            __m512 vid = _mm512_set1_ps(id), t0 = _mm512_mul_ps(v0, vid), t1 = _mm512_mul_ps(v1, vid);
            /* x8 rounded to nearest even (the mode in force, as rintf), and
             * what it left times 256, rounded the same way, within +-127 */
            __m512i i0 = _mm512_cvtps_epi32(t0), i1 = _mm512_cvtps_epi32(t1);
            __m512i j0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(t0, _mm512_cvtepi32_ps(i0)), c256));
            __m512i j1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(t1, _mm512_cvtepi32_ps(i1)), c256));
            j0 = _mm512_max_epi32(_mm512_min_epi32(j0, lim), nlim);
            j1 = _mm512_max_epi32(_mm512_min_epi32(j1, lim), nlim);
            s8[blk] = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
            s8r[blk] = _mm512_reduce_add_epi32(_mm512_add_epi32(j0, j1));
            gsum += _mm512_reduce_add_ps(_mm512_add_ps(v0, v1));
            if ((blk + 1) * 32 % gs == 0) {
                xs[(blk * 32) / gs] = gsum;
                gsum = 0.0f;
            }
            for (int pl = 0; pl < 2; pl++) {
                int8_t *o = pl ? r8 : q;
                const __m512i u0 = pl ? j0 : i0, u1 = pl ? j1 : i1;
                if (chunked) {
                    int n, c0 = q4_chunk(K, blk * 32, &n), h = (blk * 32 - c0) / 2;
                    _mm_storeu_si128((__m128i_u *)(void *)(o + c0 + h), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(u0, even, u1)));
                    _mm_storeu_si128((__m128i_u *)(void *)(o + c0 + n / 2 + h),
                                     _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(u0, odd, u1)));
                } else if (tiled4) {
                    _mm_storeu_si128((__m128i_u *)(void *)(o + blk * 32), _mm512_cvtsepi32_epi8(_mm512_permutexvar_epi32(eo8, u0)));
                    _mm_storeu_si128((__m128i_u *)(void *)(o + blk * 32 + 16),
                                     _mm512_cvtsepi32_epi8(_mm512_permutexvar_epi32(eo8, u1)));
                } else {
                    _mm_storeu_si128((__m128i_u *)(void *)(o + blk * 32), _mm512_cvtsepi32_epi8(u0));
                    _mm_storeu_si128((__m128i_u *)(void *)(o + blk * 32 + 16), _mm512_cvtsepi32_epi8(u1));
                }
            }
        }
        if (x->dv) {
            float *dv = x->dv + (size_t)m * (K / 4 + 16);
            const __m512i by4 = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
            for (int c = 0, n; c < K; c += n) {
                if (chunked)
                    q4_chunk(K, c, &n);
                else
                    n = K - c >= 64 ? 64 : 32;
                __m512 v;
                if (n == 128)
                    v = _mm512_permutexvar_ps(by4, _mm512_castps128_ps512(_mm_loadu_ps(d + c / 32)));
                else if (n == 64)
                    v = _mm512_mask_blend_ps(chunked ? (__mmask16)0xf0f0 : (__mmask16)0xff00, _mm512_set1_ps(d[c / 32]),
                                             _mm512_set1_ps(d[c / 32 + 1]));
                else
                    v = _mm512_set1_ps(d[c / 32]);
                _mm512_storeu_ps(dv + c / 4, v);
            }
            if (x->dv2) {
                float *dv2 = x->dv2 + (size_t)m * (K / 4 + 16);
                for (int i = 0; i < K / 4 + 16; i++) dv2[i] = dv[i] * (1.0f / 256.0f);
            }
        }
        float *xe = x->xe + (size_t)m * ng, *xc = x->xc + (size_t)m * ng;
        const float mid = q_mid(x->bits);
        for (int g = 0; g < ng; g++) {
            float sum = 0.0f;
            for (int b = g * per; b < (g + 1) * per; b++) sum += d[b] * ((float)s8[b] + (float)s8r[b] * (1.0f / 256.0f));
            xe[g] = xs[g] - sum;
            xc[g] = mid * xe[g];
        }
    }
    return 1; /* both planes, in the kernels' order */
}

/* ---- int8 GEMM: 4 x 32 tiles ---- */

INL void tile_i8_body(int m, int n, int kc, int gs, const int8_t *Ap, const float *ad, const float *ax,
                      const uint8_t *Bp, const float *bs, const float *bb, float *C, size_t ldc, int accumulate)
{
    __m512 acc[MR][2];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const int32_t *a32 = (const int32_t *)(const void *)Ap;
    const __m512i *b512 = (const __m512i *)(const void *)Bp;
    const int gsh = __builtin_ctz((unsigned)gs);
    for (int k0 = 0; k0 < kc; k0 += Q_ABLK) {
        __m512i is[MR][2];
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) is[i][0] = is[i][1] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int k4 = 0; k4 < Q_ABLK / 4; k4++) {
            __m512i b0 = _mm512_load_si512(b512 + 2 * k4), b1 = _mm512_load_si512(b512 + 2 * k4 + 1);
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++) {
                __m512i av = _mm512_set1_epi32(a32[k4 * MR + i]);
                is[i][0] = _mm512_dpbusd_epi32(is[i][0], b0, av);
                is[i][1] = _mm512_dpbusd_epi32(is[i][1], b1, av);
            }
        }
        a32 += Q_ABLK / 4 * MR;
        b512 += Q_ABLK / 4 * 2;
        const float *sg = bs + (size_t)(k0 >> gsh) * NR;
        __m512 s0 = _mm512_load_ps(sg), s1 = _mm512_load_ps(sg + 16);
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            __m512 dm = _mm512_set1_ps(ad[i]);
            acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[i][0]), _mm512_mul_ps(s0, dm), acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[i][1]), _mm512_mul_ps(s1, dm), acc[i][1]);
        }
        ad += MR;
    }
    for (int g = 0; g < kc >> gsh; g++) {
        __m512 b0 = _mm512_load_ps(bb + (size_t)g * NR), b1 = _mm512_load_ps(bb + (size_t)g * NR + 16);
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            __m512 xm = _mm512_set1_ps(ax[g * MR + i]);
            acc[i][0] = _mm512_fmadd_ps(b0, xm, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(b1, xm, acc[i][1]);
        }
    }
    __mmask16 k0 = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    __mmask16 k1 = n >= 32 ? (__mmask16)0xffff : n <= 16 ? (__mmask16)0 : (__mmask16)((1u << (n - 16)) - 1);
    for (int i = 0; i < m; i++) {
        float *c = C + (size_t)i * ldc;
        if (accumulate) {
            acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(k0, c));
            acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(k1, c + 16));
        }
        _mm512_mask_storeu_ps(c, k0, acc[i][0]);
        _mm512_mask_storeu_ps(c + 16, k1, acc[i][1]);
    }
}

TGT static void tile_i8(int m, int n, int kc, int gs, int bits, const int8_t *Ap, const float *ad, const int32_t *as,
                        const float *ax, const uint8_t *Bp, const float *bs, const float *bb, float *C, size_t ldc,
                        int accumulate)
{
    (void)bits;
    (void)as;
    tile_i8_body(m, n, kc, gs, Ap, ad, ax, Bp, bs, bb, C, ldc, accumulate);
}

/* Both planes of A (x8 and the residual: qgemm.h) against the same B in
 * one pass: the B loads are shared, and each block's sums are combined as
 * x8 * 256 + r8 before one conversion (scaled by d / 256).  The bias term
 * adds sum bb * ax0 and the centring sum bs * ax1. */
TGT static void tile_i8x2(int m, int n, int kc, int gs, const int8_t *Ap0, const int8_t *Ap1, const float *ad,
                          const float *ax0, const float *ax1, const uint8_t *Bp, const float *bs, const float *bb,
                          float *C, size_t ldc, int accumulate)
{
    __m512 acc[MR][2];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const int32_t *a0 = (const int32_t *)(const void *)Ap0, *a1 = (const int32_t *)(const void *)Ap1;
    const __m512i *b512 = (const __m512i *)(const void *)Bp;
    const int gsh = __builtin_ctz((unsigned)gs);
    for (int k0 = 0; k0 < kc; k0 += Q_ABLK) {
        __m512i is[MR][2], ir[MR][2];
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) is[i][0] = is[i][1] = ir[i][0] = ir[i][1] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int k4 = 0; k4 < Q_ABLK / 4; k4++) {
            __m512i b0 = _mm512_load_si512(b512 + 2 * k4), b1 = _mm512_load_si512(b512 + 2 * k4 + 1);
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++) {
                __m512i av = _mm512_set1_epi32(a0[k4 * MR + i]), rv = _mm512_set1_epi32(a1[k4 * MR + i]);
                is[i][0] = _mm512_dpbusd_epi32(is[i][0], b0, av);
                is[i][1] = _mm512_dpbusd_epi32(is[i][1], b1, av);
                ir[i][0] = _mm512_dpbusd_epi32(ir[i][0], b0, rv);
                ir[i][1] = _mm512_dpbusd_epi32(ir[i][1], b1, rv);
            }
        }
        a0 += Q_ABLK / 4 * MR;
        a1 += Q_ABLK / 4 * MR;
        b512 += Q_ABLK / 4 * 2;
        const float *sg = bs + (size_t)(k0 >> gsh) * NR;
        __m512 s0 = _mm512_load_ps(sg), s1 = _mm512_load_ps(sg + 16);
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            __m512 dm = _mm512_set1_ps(ad[i] * (1.0f / 256.0f));
            __m512i t0 = _mm512_add_epi32(_mm512_slli_epi32(is[i][0], 8), ir[i][0]);
            __m512i t1 = _mm512_add_epi32(_mm512_slli_epi32(is[i][1], 8), ir[i][1]);
            acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t0), _mm512_mul_ps(s0, dm), acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t1), _mm512_mul_ps(s1, dm), acc[i][1]);
        }
        ad += MR;
    }
    for (int g = 0; g < kc >> gsh; g++) {
        __m512 b0 = _mm512_load_ps(bb + (size_t)g * NR), b1 = _mm512_load_ps(bb + (size_t)g * NR + 16);
        __m512 c0 = _mm512_load_ps(bs + (size_t)g * NR), c1 = _mm512_load_ps(bs + (size_t)g * NR + 16);
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            __m512 xm = _mm512_set1_ps(ax0[g * MR + i]), xc = _mm512_set1_ps(ax1[g * MR + i]);
            acc[i][0] = _mm512_fmadd_ps(c0, xc, _mm512_fmadd_ps(b0, xm, acc[i][0]));
            acc[i][1] = _mm512_fmadd_ps(c1, xc, _mm512_fmadd_ps(b1, xm, acc[i][1]));
        }
    }
    __mmask16 k0 = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    __mmask16 k1 = n >= 32 ? (__mmask16)0xffff : n <= 16 ? (__mmask16)0 : (__mmask16)((1u << (n - 16)) - 1);
    for (int i = 0; i < m; i++) {
        float *c = C + (size_t)i * ldc;
        if (accumulate) {
            acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(k0, c));
            acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(k1, c + 16));
        }
        _mm512_mask_storeu_ps(c, k0, acc[i][0]);
        _mm512_mask_storeu_ps(c + 16, k1, acc[i][1]);
    }
}

/* In-register transpose of 16 x 16 32-bit values: r[i][j] -> r[j][i]. */
INL void tr16(__m512i r[16])
{
    __m512i t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* r[4a + b] now holds, in each 128-bit lane L, column 4L + b of rows 4a .. 4a + 3 */
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    }
}

/* q_untile (qgemm.h) with 16 x 16 transposes of 32-bit words: whole tiles
 * and rows of a multiple of 16 words; else the portable one. */
TGT static void untile(const bk_weight *w, int64_t r0, int n, void *buf, bk_weight *view)
{
    const size_t rb = bk_qrow_bytes(w), wpr = rb / 4;
    if (r0 % 16 || n % 16 || wpr % 16) {
        q_untile(w, r0, n, buf, view);
        return;
    }
    uint8_t *data = q_untile_view(w, r0, n, buf, view);
    /* words per group: a power of two (4 to 32) */
    const int gsh = __builtin_ctz((unsigned)q_tile_gwords(w));
    const size_t gmask = q_tile_gwords(w) - 1, gbytes = q_tile_gbytes(w);
    for (int t = 0; t < n / 16; t++) {
        const uint8_t *src = (const uint8_t *)w->data + q_tile_word_at(w, r0 / 16 + t, 0);
        uint8_t *dst = data + (size_t)t * 16 * rb;
        for (size_t j = 0; j < wpr; j += 16) {
            __m512i v[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) {
                const size_t jj = j + (size_t)i;
                v[i] = _mm512_load_si512(src + (jj >> gsh) * gbytes + (jj & gmask) * 64);
            }
            tr16(v); /* v[r]: words j .. j + 15 of row r */
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) _mm512_storeu_si512(dst + (size_t)i * rb + 4 * j, v[i]);
        }
        q_untile_sb_rows(w, r0, r0 + 16 * t, r0 + 16 * t + 16, view);
    }
}

/* B panels of the f32 GEMM (32 rows of W each, gemm_avx512.c's layout)
 * straight from the packed rows: 16 rows x 16 values dequantized in
 * registers (4 bits: the LUT of rx4_body), then transposed. */
TGT static void dequant_pack(const bk_weight *w, int64_t r0, int n, int c0, int kc, float *Bp)
{
    const int gs = w->group_size, ng = kc / gs, gsh = __builtin_ctz((unsigned)gs);
    const size_t rb = bk_qrow_bytes(w);
    float s[16][F_KC_MAX / 32], b[16][F_KC_MAX / 32];
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512 iota = _mm512_cvtepi32_ps(lane);
    const __m512i words = _mm512_srli_epi32(lane, 3);                        /* lane l: word l / 8 */
    const __m512i shift = _mm512_slli_epi32(_mm512_and_si512(lane, _mm512_set1_epi32(7)), 2); /* 4 (l % 8) */
    for (int p = 0; p < n; p += NR) {
        float *panel = Bp + (size_t)p * kc;
        for (int h = 0; h < NR; h += 16) {
            int rows = n - p - h;
            if (rows > 16) rows = 16;
            if (rows <= 0) {
                for (int k = 0; k < kc; k++) _mm512_store_ps(panel + (size_t)k * NR + h, _mm512_setzero_ps());
                continue;
            }
            const uint8_t *q[16];
            for (int j = 0; j < 16; j++) {
                int64_t r = r0 + p + h + (j < rows ? j : 0);
                q[j] = (const uint8_t *)w->data + (size_t)r * rb;
                row_sb(w, r, c0 / gs, ng, s[j], b[j]);
            }
            for (int k = 0; k < kc; k += 16) {
                const int g = k >> gsh, c = c0 + k;
                __m512i v[16];
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++) {
                    if (j >= rows) {
                        v[j] = _mm512_setzero_si512();
                        continue;
                    }
                    if (w->bits == 4) {
                        __m512i wd = _mm512_permutexvar_epi32(words, _mm512_castsi128_si512(_mm_loadl_epi64(
                                                                          (const __m128i_u *)(const void *)(q[j] + c / 2))));
                        __m512 lut = _mm512_fmadd_ps(iota, _mm512_set1_ps(s[j][g]), _mm512_set1_ps(b[j][g]));
                        v[j] = _mm512_castps_si512(_mm512_permutexvar_ps(_mm512_srlv_epi32(wd, shift), lut));
                    } else {
                        __m512i qi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i_u *)(const void *)(q[j] + c)));
                        v[j] = _mm512_castps_si512(
                            _mm512_fmadd_ps(_mm512_cvtepi32_ps(qi), _mm512_set1_ps(s[j][g]), _mm512_set1_ps(b[j][g])));
                    }
                }
                tr16(v);
#pragma GCC unroll 16
                for (int t = 0; t < 16; t++) _mm512_store_ps(panel + (size_t)(k + t) * NR + h, _mm512_castsi512_ps(v[t]));
            }
        }
    }
}

/* Bp[k4][NR][4] from rows of q bytes: 16 x 16 transposes of 32-bit words. */
TGT static void pack_b_i8(int n, int kc, const uint8_t *q, size_t ldq, uint8_t *Bp)
{
    const int k64 = kc & ~63;
    for (int p = 0; p < n; p += NR) {
        uint8_t *panel = Bp + (size_t)p * kc;
        for (int h = 0; h < NR; h += 16) {
            int rows = n - p - h;
            if (rows > 16) rows = 16;
            const uint8_t *q0 = q + (size_t)(p + h) * ldq;
            for (int k = 0; k < k64; k += 64) {
                __m512i r[16];
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++)
                    r[j] = j < rows ? _mm512_loadu_si512(q0 + (size_t)j * ldq + k) : _mm512_setzero_si512();
                tr16(r);
#pragma GCC unroll 16
                for (int t = 0; t < 16; t++) _mm512_store_si512(panel + ((size_t)(k / 4 + t) * NR + h) * 4, r[t]);
            }
            for (int k4 = k64 / 4; k4 < kc / 4; k4++)
                for (int j = 0; j < 16; j++) {
                    uint8_t *dst = panel + ((size_t)k4 * NR + h + j) * 4;
                    if (j < rows)
                        memcpy(dst, q0 + (size_t)j * ldq + 4 * k4, 4);
                    else
                        memset(dst, 0, 4);
                }
        }
    }
}

/* Ap[k4][4] from 4 rows: 4 x 4 transposes of 32-bit words, 16 words of
 * each row a step. */
TGT static void pack_a4_i8(int kc, const int8_t *const a[4], int8_t *Ap)
{
    for (int k = 0; k < kc; k += 64) {
        __m512i r[4];
        for (int i = 0; i < 4; i++) r[i] = a[i] ? _mm512_loadu_si512(a[i] + k) : _mm512_setzero_si512();
        __m512i t0 = _mm512_unpacklo_epi32(r[0], r[1]), t1 = _mm512_unpackhi_epi32(r[0], r[1]);
        __m512i t2 = _mm512_unpacklo_epi32(r[2], r[3]), t3 = _mm512_unpackhi_epi32(r[2], r[3]);
        /* u_j, 128-bit lane L: word 4 L + j of rows 0..3 */
        __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
        __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
        __m512i p01 = _mm512_shuffle_i32x4(u0, u1, 0x44), p23 = _mm512_shuffle_i32x4(u2, u3, 0x44);
        __m512i q01 = _mm512_shuffle_i32x4(u0, u1, 0xee), q23 = _mm512_shuffle_i32x4(u2, u3, 0xee);
        int8_t *o = Ap + (size_t)k * 4;
        _mm512_storeu_si512(o, _mm512_shuffle_i32x4(p01, p23, 0x88));
        _mm512_storeu_si512(o + 64, _mm512_shuffle_i32x4(p01, p23, 0xdd));
        _mm512_storeu_si512(o + 128, _mm512_shuffle_i32x4(q01, q23, 0x88));
        _mm512_storeu_si512(o + 192, _mm512_shuffle_i32x4(q01, q23, 0xdd));
    }
}

/* 4-bit values in natural order, 64 a step: the low and high nibbles of
 * 32 bytes interleaved. */
TGT static void unpack4(const uint8_t *row, int64_t c0, int n, uint8_t *out)
{
    const uint8_t *p = row + c0 / 2;
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    /* bytes of [lo(0..15) lo(16..31) | hi(0..15) hi(16..31)] -> qwords so that
     * unpack{lo,hi}_epi8 within 128-bit lanes yields values in order */
    const __m512i perm = _mm512_set_epi64(7, 3, 6, 2, 5, 1, 4, 0);
    for (int i = 0; i < n; i += 64) {
        __m256i v = _mm256_loadu_si256((const __m256i_u *)(const void *)(p + i / 2));
        __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
        z = _mm512_permutexvar_epi64(perm, _mm512_and_si512(z, lo4));
        /* lane L now holds lo bytes 8L .. 8L + 7 and hi bytes 8L .. 8L + 7 */
        __m512i r = _mm512_unpacklo_epi8(z, _mm512_bsrli_epi128(z, 8));
        _mm512_storeu_si512(out + i, r);
    }
}

/* Widths 2, 3, 5 and 6 (q_unpack_u8), 64 values a step with AVX-512
 * VBMI: 8 values fill `bits` bytes; vpermb gives each 64-bit lane the
 * bytes of its 8 values, vpmultishiftqb takes value j from bit j * bits of
 * the lane, and a mask keeps its bits. */
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void q_unpack_vbmi(const uint8_t *row, int bits, int64_t c0,
                                                                          int n, uint8_t *out)
{
    const uint8_t *p = row + (size_t)c0 * (size_t)bits / 8;
    uint8_t idx[64], sh[64];
    for (int k = 0; k < 8; k++)
        for (int j = 0; j < 8; j++) {
            idx[8 * k + j] = (uint8_t)(k * bits + j); /* at most 7 * 6 + 7 = 49 */
            sh[8 * k + j] = (uint8_t)(j * bits);
        }
    const __m512i vi = _mm512_loadu_si512(idx), vs = _mm512_loadu_si512(sh);
    const __m512i mask = _mm512_set1_epi8((char)((1 << bits) - 1));
    const __mmask64 lm = (__mmask64)((1ull << (8 * bits)) - 1); /* the step's 8 * bits bytes */
    for (int i = 0; i < n; i += 64, p += 8 * bits) {
        __m512i v = _mm512_permutexvar_epi8(vi, _mm512_maskz_loadu_epi8(lm, p));
        _mm512_storeu_si512(out + i, _mm512_and_si512(_mm512_multishift_epi64_epi8(vs, v), mask));
    }
}

const q_kernels q_kernels_avx512 = {
    .dot_f32 = dot_f32,
    .dot_i8 = dot_i8,
    .dot_tile = dot_tile,
    .untile = untile,
    .dequant = dequant,
    .dequant_pack = dequant_pack,
    .act_rows = act_rows,
    .mr = MR,
    .nr = NR,
    .tile_i8 = tile_i8,
    .tile_i8x2 = tile_i8x2,
    .pack_b_i8 = pack_b_i8,
    .pack_a4_i8 = pack_a4_i8,
    .unpack4 = unpack4,
    .f32 = &gemm_kernels_avx512,
};

#endif
