/* qgemm_avx2_body.h - the int8 parts of qgemm_avx2.c, included there
 * twice: QV_VNNI 0 sums u8 x s8 products with pmaddubsw + pmaddwd, 1 with
 * AVX-VNNI vpdpbusd.  QV(name) names this copy's functions and QV_TARGET
 * is its target attribute.
 *
 * pmaddubsw saturates pairs at 16 bits: 4-bit weights (<= 15) and widths
 * up to 7 bits are safe; 8-bit weights take the sign trick: with w' =
 * w - 128 (a signed byte), sum w x = sum |w'| sign(x, w') + 128 sum x;
 * |w'| <= 128 and |x| <= 127 keep each pair inside 16 bits (and x, never
 * -128, is the one negated). */

#define QTGT __attribute__((target(QV_TARGET)))
#define QINL static inline __attribute__((always_inline, target(QV_TARGET)))

/* acc + the 4-byte dot products of u8 q and s8 x in each 32-bit lane
 * (q < 128) */
QINL __m256i QV(dp)(__m256i acc, __m256i q, __m256i x)
{
#if QV_VNNI
    return _mm256_dpbusd_avx_epi32(acc, q, x);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1)));
#endif
}

/* The same for any u8 q (8 bits); s8 is sum x over the 32 values (one
 * block): without VNNI it is added to lane 0. */
QINL __m256i QV(dp8)(__m256i acc, __m256i q, __m256i x, int32_t s8)
{
#if QV_VNNI
    (void)s8;
    return _mm256_dpbusd_avx_epi32(acc, q, x);
#else
    __m256i ws = _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80));
    __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(ws), _mm256_sign_epi8(x, ws));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
    return _mm256_add_epi32(acc, _mm256_zextsi128_si256(_mm_cvtsi32_si128(128 * s8)));
#endif
}

/* One row, int8.  four: the 4-bit layout (chunks of 128, 64, 32), else
 * bytes in natural order (blocks of 32). */
QINL void QV(ri8_body)(const int mr, const int four, const q_act *x, int m0, const uint8_t *q, const float *s,
                       const float *b, float *out, size_t ldc)
{
    const int K = x->K, gs = x->group_size, ng = K / gs, nb = K / Q_ABLK;
    const int8_t *x8 = x->x8 + (size_t)m0 * K;
    const size_t dvs = (size_t)K / 4 + 16;
    const float *dv = x->dv + (size_t)m0 * dvs;
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
    __m256 acc[2][MR];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) acc[0][i] = acc[1][i] = _mm256_setzero_ps();
    if (four) {
        for (int c = 0, n; c < K; c += n) {
            q4_chunk(K, c, &n);
            const uint8_t *p = q + c / 2;
            _mm_prefetch((const char *)p + PF_AHEAD, _MM_HINT_T0);
            if (n == 128) {
                /* 64 bytes: lanes j of (low nibbles of bytes 0..31, high
                 * ones) sum blocks j / 4, of bytes 32..63 blocks 2 + j / 4 */
                __m256i v0 = _mm256_loadu_si256((const __m256i_u *)(const void *)p);
                __m256i v1 = _mm256_loadu_si256((const __m256i_u *)(const void *)(p + 32));
                __m256 s0, s1;
                if (gs == 32) {
                    s0 = _mm256_blend_ps(_mm256_set1_ps(s[c / 32]), _mm256_set1_ps(s[c / 32 + 1]), 0xf0);
                    s1 = _mm256_blend_ps(_mm256_set1_ps(s[c / 32 + 2]), _mm256_set1_ps(s[c / 32 + 3]), 0xf0);
                } else {
                    s0 = _mm256_set1_ps(s[c / gs]);
                    s1 = _mm256_set1_ps(s[(c + 64) / gs]);
                }
#pragma GCC unroll 4
                for (int i = 0; i < mr; i++) {
                    const int8_t *xi = x8 + (size_t)i * K + c;
                    __m256i is0 = QV(dp)(_mm256_setzero_si256(), _mm256_and_si256(v0, lo4),
                                         _mm256_loadu_si256((const __m256i_u *)(const void *)xi));
                    is0 = QV(dp)(is0, _mm256_and_si256(_mm256_srli_epi16(v0, 4), lo4),
                                 _mm256_loadu_si256((const __m256i_u *)(const void *)(xi + 64)));
                    __m256i is1 = QV(dp)(_mm256_setzero_si256(), _mm256_and_si256(v1, lo4),
                                         _mm256_loadu_si256((const __m256i_u *)(const void *)(xi + 32)));
                    is1 = QV(dp)(is1, _mm256_and_si256(_mm256_srli_epi16(v1, 4), lo4),
                                 _mm256_loadu_si256((const __m256i_u *)(const void *)(xi + 96)));
                    const float *d = dv + (size_t)i * dvs + c / 4;
                    acc[0][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is0), _mm256_mul_ps(_mm256_loadu_ps(d), s0), acc[0][i]);
                    acc[1][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is1), _mm256_mul_ps(_mm256_loadu_ps(d + 8), s1), acc[1][i]);
                }
                continue;
            }
            __m256i lo, hi = _mm256_setzero_si256();
            __m256 sv;
            if (n == 64) {
                __m256i v = _mm256_loadu_si256((const __m256i_u *)(const void *)p);
                lo = _mm256_and_si256(v, lo4);
                hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
                sv = gs == 32 ? _mm256_blend_ps(_mm256_set1_ps(s[c / 32]), _mm256_set1_ps(s[c / 32 + 1]), 0xf0)
                              : _mm256_set1_ps(s[c / gs]);
            } else { /* 32 values: [low nibbles | high nibbles] of 16 bytes */
                __m128i v = _mm_loadu_si128((const __m128i_u *)(const void *)p);
                lo = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1), lo4);
                sv = _mm256_set1_ps(s[c / 32]);
            }
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                const int8_t *xi = x8 + (size_t)i * K + c;
                __m256i is = QV(dp)(_mm256_setzero_si256(), lo, _mm256_loadu_si256((const __m256i_u *)(const void *)xi));
                if (n == 64) is = QV(dp)(is, hi, _mm256_loadu_si256((const __m256i_u *)(const void *)(xi + 32)));
                __m256 dd = _mm256_loadu_ps(dv + (size_t)i * dvs + c / 4);
                acc[0][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(dd, sv), acc[0][i]);
            }
        }
    } else {
        for (int blk = 0; blk < nb; blk++) {
            const int c = blk * Q_ABLK;
            if (blk % 2 == 0) _mm_prefetch((const char *)q + c + PF_AHEAD, _MM_HINT_T0);
            __m256i wq = _mm256_loadu_si256((const __m256i_u *)(const void *)(q + c));
            __m256 sv = _mm256_set1_ps(s[c / gs]);
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                __m256i xq = _mm256_loadu_si256((const __m256i_u *)(const void *)(x8 + (size_t)i * K + c));
                __m256i is = x->bits == 8 ? QV(dp8)(_mm256_setzero_si256(), wq, xq, x->s8[(size_t)(m0 + i) * nb + blk])
                                          : QV(dp)(_mm256_setzero_si256(), wq, xq);
                /* natural order: block blk's 8 lanes of its chunk's 16 */
                __m256 dd = _mm256_loadu_ps(dv + (size_t)i * dvs + (size_t)blk * 8);
                acc[blk & 1][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(dd, sv), acc[blk & 1][i]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        __m256 t = _mm256_add_ps(_mm256_add_ps(acc[0][i], acc[1][i]), bias_sum(b, x->xs + (size_t)(m0 + i) * ng, ng));
        out[(size_t)i * ldc] = avx2_hsum8(t);
    }
}

#define QROWS(mr)                                                                                             \
    ROW_FN(QV(ri4_##mr), QTGT, QV(ri8_body), mr, 1)                                                           \
    ROW_FN(QV(rib_##mr), QTGT, QV(ri8_body), mr, 0)
QROWS(1)
QROWS(2)
QROWS(3)
QROWS(4)
#undef QROWS

static void QV(dot_i8)(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc, uint8_t *tmp)
{
    static const q_row_fn i4[5] = {NULL, QV(ri4_1), QV(ri4_2), QV(ri4_3), QV(ri4_4)};
    static const q_row_fn ib[5] = {NULL, QV(rib_1), QV(rib_2), QV(rib_3), QV(rib_4)};
    q_stream(w->bits == 4 ? i4 : ib, w->bits != 4 && w->bits != 8, load_sb, x, w, n0, N, C, ldc, tmp);
}

/* int8 GEMM: 4 x 8 tiles, one 32-bit lane per column. */
QTGT static void QV(tile_i8)(int m, int n, int kc, int gs, int bits, const int8_t *Ap, const float *ad,
                             const int32_t *as, const float *ax, const uint8_t *Bp, const float *bs,
                             const float *bb, float *C, size_t ldc, int accumulate)
{
    __m256 acc[MR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) acc[i] = _mm256_setzero_ps();
    const int32_t *a32 = (const int32_t *)(const void *)Ap;
    for (int k0 = 0; k0 < kc; k0 += Q_ABLK) {
        const int blk = k0 / Q_ABLK, g = k0 / gs;
        __m256i is[MR];
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) is[i] = _mm256_setzero_si256();
        for (int k4 = k0 / 4; k4 < k0 / 4 + Q_ABLK / 4; k4++) {
            __m256i b = _mm256_load_si256((const __m256i *)(const void *)(Bp + (size_t)k4 * NR * 4));
#if QV_VNNI
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++) is[i] = QV(dp)(is[i], b, _mm256_set1_epi32(a32[k4 * MR + i]));
#else
            if (bits == 8) {
                __m256i ws = _mm256_xor_si256(b, _mm256_set1_epi8((char)0x80)), wa = _mm256_abs_epi8(ws);
#pragma GCC unroll 4
                for (int i = 0; i < MR; i++) {
                    __m256i av = _mm256_set1_epi32(a32[k4 * MR + i]);
                    __m256i p = _mm256_maddubs_epi16(wa, _mm256_sign_epi8(av, ws));
                    is[i] = _mm256_add_epi32(is[i], _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
                }
            } else {
#pragma GCC unroll 4
                for (int i = 0; i < MR; i++) is[i] = QV(dp)(is[i], b, _mm256_set1_epi32(a32[k4 * MR + i]));
            }
#endif
        }
        __m256 sv = _mm256_load_ps(bs + (size_t)g * NR);
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
#if !QV_VNNI
            if (bits == 8) is[i] = _mm256_add_epi32(is[i], _mm256_set1_epi32(128 * as[blk * MR + i]));
#endif
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[i]), _mm256_mul_ps(sv, _mm256_set1_ps(ad[blk * MR + i])),
                                     acc[i]);
        }
    }
#if QV_VNNI
    (void)bits;
    (void)as;
#endif
    for (int g = 0; g < kc / gs; g++) {
        __m256 bv = _mm256_load_ps(bb + (size_t)g * NR);
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) acc[i] = _mm256_fmadd_ps(bv, _mm256_set1_ps(ax[g * MR + i]), acc[i]);
    }
    for (int i = 0; i < m; i++) {
        float t[NR];
        _mm256_storeu_ps(t, acc[i]);
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < n; j++) c[j] = accumulate ? c[j] + t[j] : t[j];
    }
}

/* ---- int8 GEMM through int16 (q_kernels.tile_i16): 4 x 16 tiles ----
 *
 * A 32-bit lane holds a pair of values of one row: of A, x16 = 256 x8 + r8
 * (both planes in one number, |x16| <= 32,639); of W, the q values (at most
 * 255).  pmaddwd (AVX-VNNI: vpdpwssd) multiplies the pairs and adds them in
 * 32 bits; a block of 32 values sums to at most 32 x 255 x 32,639 < 2^31.
 * 8 accumulators (4 rows of A by 2 x 8 rows of W), 2 vectors of W, the
 * broadcast pair of A and a product: 6 rows spilled an accumulator, and
 * 4 rows reach 1.3 times the FMA GEMM (7.3 cycles a step of 8 pmaddwd on
 * a Zen 3, 5.1 for the bare loop).  The float sums of a group (ag) and of
 * the tile (cf) stay in memory, touched once a block. */
/* c0 += w0 . a, c1 += w1 . a with the pair *ap broadcast.  Without VNNI,
 * in assembly: the compiler otherwise broadcasts every row's pair ahead
 * and spills an accumulator, whose chain through memory then sets the
 * pace (11 cycles a step against 5.6). */
QINL void QV(row16)(__m256i *c0, __m256i *c1, __m256i w0, __m256i w1, const uint32_t *ap)
{
#if QV_VNNI
    const __m256i av = _mm256_set1_epi32((int)*ap);
    *c0 = _mm256_dpwssd_avx_epi32(*c0, w0, av);
    *c1 = _mm256_dpwssd_avx_epi32(*c1, w1, av);
#else
    __m256i t, p;
    __asm__("vpbroadcastd %[a], %[t]\n\t"
            "vpmaddwd %[w0], %[t], %[p]\n\t"
            "vpaddd %[p], %[c0], %[c0]\n\t"
            "vpmaddwd %[w1], %[t], %[t]\n\t"
            "vpaddd %[t], %[c1], %[c1]"
            : [c0] "+x"(*c0), [c1] "+x"(*c1), [t] "=&x"(t), [p] "=&x"(p)
            : [w0] "x"(w0), [w1] "x"(w1), [a] "m"(*ap));
#endif
}

QTGT static void QV(tile_i16)(int m, int n, int kc, int gs, const uint32_t *Ap, const float *ad, const float *axs,
                              const float *axc, const uint32_t *Bp, const float *bs, const float *bb, float *C,
                              size_t ldc, int accumulate)
{
    float cf[MR16][NR16] __attribute__((aligned(32))), ag[MR16][NR16] __attribute__((aligned(32)));
    memset(cf, 0, sizeof cf);
    memset(ag, 0, sizeof ag);
    const int bpg = gs / Q_ABLK;
    for (int g = 0; g < kc / gs; g++) {
        for (int bi = 0; bi < bpg; bi++) {
            const int b = g * bpg + bi;
            const uint32_t *a = Ap + (size_t)b * (Q_ABLK / 2) * MR16;
            const uint32_t *w = Bp + (size_t)b * (Q_ABLK / 2) * NR16;
            __m256i acc[MR16][2];
#pragma GCC unroll 4
            for (int i = 0; i < MR16; i++) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
#pragma GCC unroll 2
            for (int k2 = 0; k2 < Q_ABLK / 2; k2++) {
                const __m256i w0 = _mm256_load_si256((const __m256i *)(const void *)(w + (size_t)k2 * NR16));
                const __m256i w1 = _mm256_load_si256((const __m256i *)(const void *)(w + (size_t)k2 * NR16 + 8));
#pragma GCC unroll 8
                for (int i = 0; i < MR16; i++) QV(row16)(&acc[i][0], &acc[i][1], w0, w1, a + k2 * MR16 + i);
            }
#pragma GCC unroll 4
            for (int i = 0; i < MR16; i++) {
                const __m256 dv = _mm256_set1_ps(ad[b * MR16 + i]);
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    const __m256 f = _mm256_cvtepi32_ps(acc[i][h]);
                    _mm256_store_ps(ag[i] + 8 * h, bi ? _mm256_fmadd_ps(f, dv, _mm256_load_ps(ag[i] + 8 * h))
                                                      : _mm256_mul_ps(f, dv));
                }
            }
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256 sv = _mm256_load_ps(bs + (size_t)g * NR16 + 8 * h), bv = _mm256_load_ps(bb + (size_t)g * NR16 + 8 * h);
#pragma GCC unroll 4
            for (int i = 0; i < MR16; i++) {
                __m256 t = _mm256_fmadd_ps(bv, _mm256_set1_ps(axs[g * MR16 + i]), _mm256_load_ps(cf[i] + 8 * h));
                t = _mm256_fmadd_ps(sv, _mm256_add_ps(_mm256_load_ps(ag[i] + 8 * h), _mm256_set1_ps(axc[g * MR16 + i])), t);
                _mm256_store_ps(cf[i] + 8 * h, t);
            }
        }
    }
    for (int i = 0; i < m; i++) {
        float *c = C + (size_t)i * ldc;
        if (n == NR16) {
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m256 t = _mm256_load_ps(cf[i] + 8 * h);
                _mm256_storeu_ps(c + 8 * h, accumulate ? _mm256_add_ps(t, _mm256_loadu_ps(c + 8 * h)) : t);
            }
        } else {
            for (int j = 0; j < n; j++) c[j] = accumulate ? c[j] + cf[i][j] : cf[i][j];
        }
    }
}

/* ---- int8 on tiled W, M <= Q_SMALL_M (qgemm.h; qgemm_avx512.c's
 * tile_body has the sums) ----
 *
 * A tile's 64-byte vector (32-bit word j of 16 rows) is read as two halves,
 * rows 0-7 and rows 8-15, one 32-bit lane a row.  4 bits: the low nibbles
 * against the broadcast word 2 j of x (its even values), the high ones
 * against word 2 j + 1.  Without VNNI the pmaddubsw pairs of a block of 32
 * values are summed in 16 bits (16 products of at most 15 x 127 a lane:
 * 30,480) and widened once a block by pmaddwd, which also adds a row's two
 * 16-bit lanes; 8 bits take qgemm_avx2_body.h's sign trick and widen at
 * once (a pair may reach 32,512), with 128 times the block's sum of x added
 * at the block's end.  Both planes (x8 and r8), then (x8 sum * 256 + r8
 * sum) * d / 256 into the group's float sum; at the group's end
 * acc += s (group sum + xc) + b xs for the 8 rows of each half. */
#ifndef TILE_PF
#define TILE_PF 4096 /* bytes ahead; 0: none (Zen 3: 4096 a few % above 8192 and 0) */
#endif
QINL void QV(tile_body)(const int BITS, const int NT, const int XR, const q_act *x, int m0, const bk_weight *w,
                        const int64_t *t, float *const *out, size_t ldo)
{
    const int K = x->K, gs = x->group_size, ng = K / gs, nb = K / Q_ABLK;
    const int WPB = BITS == 4 ? 4 : 8; /* words per block of 32 values */
    const size_t es = dtype_size(w->sdtype), gbytes = q_tile_gbytes(w), gw64 = q_tile_gwords(w) * 64;
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
    const uint8_t *T[2];
    const int32_t *xw[2], *rw[2];
    const float *d2[2];
    __m256 acc[2][2][2];
#pragma GCC unroll 2
    for (int u = 0; u < NT; u++) T[u] = (const uint8_t *)w->data + q_tile_word_at(w, t[u], 0);
#pragma GCC unroll 2
    for (int i = 0; i < XR; i++) {
        xw[i] = (const int32_t *)(const void *)(x->x8 + (size_t)(m0 + i) * K);
        rw[i] = (const int32_t *)(const void *)(x->r8 + (size_t)(m0 + i) * K);
        d2[i] = x->d2 + (size_t)(m0 + i) * nb;
#pragma GCC unroll 2
        for (int u = 0; u < NT; u++) acc[u][i][0] = acc[u][i][1] = _mm256_setzero_ps();
    }
    for (int g = 0; g < ng; g++) {
        __m256 ag[2][2][2];
#pragma GCC unroll 2
        for (int u = 0; u < NT; u++)
#pragma GCC unroll 2
            for (int i = 0; i < XR; i++) ag[u][i][0] = ag[u][i][1] = _mm256_setzero_ps();
        const int b0 = g * gs / Q_ABLK;
        for (int b = b0; b < (g + 1) * gs / Q_ABLK; b++) {
            /* [tile][row of x][half]: the x8 plane's sums, the r8 plane's */
            __m256i is[2][2][2], ir[2][2][2];
#pragma GCC unroll 2
            for (int u = 0; u < NT; u++)
#pragma GCC unroll 2
                for (int i = 0; i < XR; i++)
                    is[u][i][0] = is[u][i][1] = ir[u][i][0] = ir[u][i][1] = _mm256_setzero_si256();
#pragma GCC unroll 1
            for (int j = 0; j < WPB; j++) {
                const int J = b * WPB + j;
#pragma GCC unroll 2
                for (int u = 0; u < NT; u++) {
                    const uint8_t *p = T[u] + (size_t)g * gbytes + (size_t)(J - b0 * WPB) * 64;
                    if (TILE_PF) _mm_prefetch((const char *)p + TILE_PF, _MM_HINT_T0);
                    __m256i v[2] = {_mm256_load_si256((const __m256i *)(const void *)p),
                                    _mm256_load_si256((const __m256i *)(const void *)(p + 32))};
                    if (BITS == 4) {
#pragma GCC unroll 2
                        for (int h = 0; h < 2; h++) {
                            const __m256i l = _mm256_and_si256(v[h], lo4);
                            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v[h], 4), lo4);
#pragma GCC unroll 2
                            for (int i = 0; i < XR; i++) {
                                const __m256i xe = _mm256_set1_epi32(xw[i][2 * J]), xo = _mm256_set1_epi32(xw[i][2 * J + 1]);
                                const __m256i re = _mm256_set1_epi32(rw[i][2 * J]), ro = _mm256_set1_epi32(rw[i][2 * J + 1]);
#if QV_VNNI
                                is[u][i][h] = _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(is[u][i][h], l, xe), hi, xo);
                                ir[u][i][h] = _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(ir[u][i][h], l, re), hi, ro);
#else
                                is[u][i][h] = _mm256_add_epi16(
                                    is[u][i][h], _mm256_add_epi16(_mm256_maddubs_epi16(l, xe), _mm256_maddubs_epi16(hi, xo)));
                                ir[u][i][h] = _mm256_add_epi16(
                                    ir[u][i][h], _mm256_add_epi16(_mm256_maddubs_epi16(l, re), _mm256_maddubs_epi16(hi, ro)));
#endif
                            }
                        }
                    } else {
#pragma GCC unroll 2
                        for (int h = 0; h < 2; h++) {
#if QV_VNNI
#pragma GCC unroll 2
                            for (int i = 0; i < XR; i++) {
                                is[u][i][h] = _mm256_dpbusd_avx_epi32(is[u][i][h], v[h], _mm256_set1_epi32(xw[i][J]));
                                ir[u][i][h] = _mm256_dpbusd_avx_epi32(ir[u][i][h], v[h], _mm256_set1_epi32(rw[i][J]));
                            }
#else
                            const __m256i ws = _mm256_xor_si256(v[h], _mm256_set1_epi8((char)0x80));
                            const __m256i wa = _mm256_abs_epi8(ws), one = _mm256_set1_epi16(1);
#pragma GCC unroll 2
                            for (int i = 0; i < XR; i++) {
                                __m256i px = _mm256_maddubs_epi16(wa, _mm256_sign_epi8(_mm256_set1_epi32(xw[i][J]), ws));
                                __m256i pr = _mm256_maddubs_epi16(wa, _mm256_sign_epi8(_mm256_set1_epi32(rw[i][J]), ws));
                                is[u][i][h] = _mm256_add_epi32(is[u][i][h], _mm256_madd_epi16(px, one));
                                ir[u][i][h] = _mm256_add_epi32(ir[u][i][h], _mm256_madd_epi16(pr, one));
                            }
#endif
                        }
                    }
                }
            }
#pragma GCC unroll 2
            for (int i = 0; i < XR; i++) {
                const __m256 dv = _mm256_set1_ps(d2[i][b]);
#if !QV_VNNI
                const size_t bi = (size_t)(m0 + i) * nb + (size_t)b;
                const __m256i c8 = _mm256_set1_epi32(128 * x->s8[bi]), c8r = _mm256_set1_epi32(128 * x->s8r[bi]);
#endif
#pragma GCC unroll 2
                for (int u = 0; u < NT; u++)
#pragma GCC unroll 2
                    for (int h = 0; h < 2; h++) {
                        __m256i sum;
#if QV_VNNI
                        sum = _mm256_add_epi32(_mm256_slli_epi32(is[u][i][h], 8), ir[u][i][h]);
#else
                        if (BITS == 4) {
                            sum = _mm256_add_epi32(_mm256_madd_epi16(is[u][i][h], _mm256_set1_epi16(256)),
                                                   _mm256_madd_epi16(ir[u][i][h], _mm256_set1_epi16(1)));
                        } else {
                            sum = _mm256_add_epi32(_mm256_slli_epi32(_mm256_add_epi32(is[u][i][h], c8), 8),
                                                   _mm256_add_epi32(ir[u][i][h], c8r));
                        }
#endif
                        ag[u][i][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), dv, ag[u][i][h]);
                    }
            }
        }
#pragma GCC unroll 2
        for (int u = 0; u < NT; u++)
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const unsigned char *sb = T[u] + (size_t)g * gbytes + gw64; /* the group's scales, then biases */
                const __m256 sv = avx2_load8(sb + 8 * (size_t)h * es, w->sdtype);
                const __m256 bv = avx2_load8(sb + (16 + 8 * (size_t)h) * es, w->sdtype);
#pragma GCC unroll 2
                for (int i = 0; i < XR; i++) {
                    const size_t gi = (size_t)(m0 + i) * ng + (size_t)g;
                    acc[u][i][h] = _mm256_fmadd_ps(sv, _mm256_add_ps(ag[u][i][h], _mm256_set1_ps(x->xc[gi])), acc[u][i][h]);
                    acc[u][i][h] = _mm256_fmadd_ps(bv, _mm256_set1_ps(x->xs[gi]), acc[u][i][h]);
                }
            }
    }
#pragma GCC unroll 2
    for (int u = 0; u < NT; u++)
#pragma GCC unroll 2
        for (int i = 0; i < XR; i++)
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) _mm256_storeu_ps(out[u] + (size_t)i * ldo + 8 * h, acc[u][i][h]);
}

/* (tiles, rows of x): (1, 1), (1, 2) and (2, 1) */
#define QTILE_FNS(BITS)                                                                                         \
    QTGT static void QV(tile_##BITS##_11)(const q_act *x, int m0, const bk_weight *w, const int64_t *t,         \
                                          float *const *o, size_t ld)                                           \
    {                                                                                                           \
        QV(tile_body)(BITS, 1, 1, x, m0, w, t, o, ld);                                                          \
    }                                                                                                           \
    QTGT static void QV(tile_##BITS##_12)(const q_act *x, int m0, const bk_weight *w, const int64_t *t,         \
                                          float *const *o, size_t ld)                                           \
    {                                                                                                           \
        QV(tile_body)(BITS, 1, 2, x, m0, w, t, o, ld);                                                          \
    }                                                                                                           \
    QTGT static void QV(tile_##BITS##_21)(const q_act *x, int m0, const bk_weight *w, const int64_t *t,         \
                                          float *const *o, size_t ld)                                           \
    {                                                                                                           \
        QV(tile_body)(BITS, 2, 1, x, m0, w, t, o, ld);                                                          \
    }
QTILE_FNS(4)
QTILE_FNS(8)
#undef QTILE_FNS

static void QV(dot_tile)(const q_act *x, const bk_weight *w, int64_t n0, int N, float *C, size_t ldc)
{
    if (w->bits == 4)
        q_tile_drive(QV(tile_4_11), QV(tile_4_12), QV(tile_4_21), x, w, n0, N, C, ldc);
    else
        q_tile_drive(QV(tile_8_11), QV(tile_8_12), QV(tile_8_21), x, w, n0, N, C, ldc);
}

#undef QTGT
#undef QINL
