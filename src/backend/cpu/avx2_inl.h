/* avx2_inl.h - small AVX2 helpers shared by gemm_avx2.c and qgemm_avx2.c:
 * 8 values of a float dtype as float32, a horizontal sum and an 8 x 8
 * transpose.  Static inline with the AVX2 target attribute: include only
 * from files built with per-function targets (x86 only). */
#ifndef INFER_BACKEND_CPU_AVX2_INL_H
#define INFER_BACKEND_CPU_AVX2_INL_H

#include <immintrin.h>

#include "core/dtype.h"

#define AVX2_INL static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* 8 elements of dtype dt (f32, f16 or bf16) at p, any alignment, as
 * float32; dt is a constant after inlining. */
AVX2_INL __m256 avx2_load8(const void *p, infer_dtype dt)
{
    if (dt == DT_F32) return _mm256_loadu_ps((const float *)p);
    __m128i h = _mm_loadu_si128((const __m128i_u *)p);
    if (dt == DT_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

AVX2_INL float avx2_hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* In-register transpose: r[i][j] -> r[j][i]. */
AVX2_INL void avx2_tr8(__m256 r[8])
{
    __m256 t[8], s[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i += 4) {
        s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
}

#endif
