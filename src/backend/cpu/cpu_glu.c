/* cpu_glu.c - the gated MLP activation, out = act(gate) * up, with act
 * SiLU or tanh-GELU.
 *
 * Both are written through the logistic function:
 *     silu(g)      = g * sigmoid(g)
 *     gelu_tanh(g) = 0.5 g (1 + tanh(z)) = g * sigmoid(2 z),
 *                    z = sqrt(2 / pi) (g + 0.044715 g^3)
 * and sigmoid(t) = 1 / (1 + exp(-t)), with exp evaluated in float32 to
 * about 1 ulp (range reduction by ln 2, a degree-7 polynomial): AVX-512 or
 * AVX2 where the cpu has them (chosen at run time, as gemm.c does), else
 * libm.  Long vectors (prefill) are split over the workers. */
#include <math.h>

#include "backend/cpu/cpu.h"
#include "backend/cpu/gemm.h"

static const float GELU_K = 0.7978845608028654f; /* sqrt(2 / pi) */

static float sigmoid_arg(float g, bk_act act)
{
    return act == BK_ACT_SILU ? g : 2.0f * GELU_K * (g + 0.044715f * g * g * g);
}

static void glu_c(float *out, const float *g, const float *u, size_t n, bk_act act)
{
    for (size_t i = 0; i < n; i++) out[i] = g[i] / (1.0f + expf(-sigmoid_arg(g[i], act))) * u[i];
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln 2 / 2; ln 2 in two
 * parts so that r is exact; x clamped to [-87, 88] (no inf, no denormal:
 * sigmoid needs neither). */
#define LN2_HI 0.693145751953125f
#define LN2_LO 1.428606765330187e-06f
#define EXP_POLY(FMA, SET)                                                              \
    FMA(FMA(FMA(FMA(FMA(FMA(FMA(SET(1.0f / 5040), r, SET(1.0f / 720)), r, SET(1.0f / 120)), r, \
                        SET(1.0f / 24)),                                                       \
                    r, SET(1.0f / 6)),                                                         \
                r, SET(0.5f)),                                                                 \
            r, SET(1.0f)),                                                                     \
        r, SET(1.0f))

__attribute__((target("avx512f"))) static void glu_avx512(float *out, const float *g, const float *u, size_t n,
                                                          bk_act act)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 gv = _mm512_maskz_loadu_ps(k, g + i), t = gv;
        if (act != BK_ACT_SILU) {
            __m512 g3 = _mm512_mul_ps(_mm512_mul_ps(gv, gv), gv);
            t = _mm512_mul_ps(_mm512_set1_ps(2.0f * GELU_K), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), g3, gv));
        }
        /* exp(-t) */
        __m512 x = _mm512_min_ps(_mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), t), _mm512_set1_ps(-87.0f)),
                                 _mm512_set1_ps(88.0f));
        __m512 nn = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 r = _mm512_fnmadd_ps(nn, _mm512_set1_ps(LN2_HI), x);
        r = _mm512_fnmadd_ps(nn, _mm512_set1_ps(LN2_LO), r);
        __m512 e = _mm512_scalef_ps(EXP_POLY(_mm512_fmadd_ps, _mm512_set1_ps), nn);
        __m512 y = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(y, _mm512_maskz_loadu_ps(k, u + i)));
    }
}

__attribute__((target("avx2,fma"))) static void glu_avx2(float *out, const float *g, const float *u, size_t n,
                                                         bk_act act)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i), t = gv;
        if (act != BK_ACT_SILU) {
            __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(gv, gv), gv);
            t = _mm256_mul_ps(_mm256_set1_ps(2.0f * GELU_K), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), g3, gv));
        }
        __m256 x = _mm256_min_ps(_mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), t), _mm256_set1_ps(-87.0f)),
                                 _mm256_set1_ps(88.0f));
        __m256 nn = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 r = _mm256_fnmadd_ps(nn, _mm256_set1_ps(LN2_HI), x);
        r = _mm256_fnmadd_ps(nn, _mm256_set1_ps(LN2_LO), r);
        /* 2^n: n + 127 into the exponent field (n in [-126, 127]) */
        __m256 two_n = _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nn), _mm256_set1_epi32(127)), 23));
        __m256 e = _mm256_mul_ps(EXP_POLY(_mm256_fmadd_ps, _mm256_set1_ps), two_n);
        __m256 y = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(y, _mm256_loadu_ps(u + i)));
    }
    glu_c(out + i, g + i, u + i, n - i, act);
}
#endif

typedef void (*glu_fn)(float *out, const float *g, const float *u, size_t n, bk_act act);

static glu_fn glu_best(void)
{
#if defined(__x86_64__) || defined(__i386__)
    gemm_isa isa = gemm_isa_best();
    if (isa == GEMM_ISA_AVX512) return glu_avx512;
    if (isa == GEMM_ISA_AVX2) return glu_avx2;
#endif
    return glu_c;
}

enum { GLU_CHUNK = 16384 }; /* elements a task */

typedef struct glu_job {
    float *out;
    const float *g, *u;
    size_t n;
    bk_act act;
    glu_fn fn;
} glu_job;

static void glu_task(void *arg, int task, int worker)
{
    (void)worker;
    const glu_job *j = arg;
    size_t i0 = (size_t)task * GLU_CHUNK, len = j->n - i0 < GLU_CHUNK ? j->n - i0 : GLU_CHUNK;
    j->fn(j->out + i0, j->g + i0, j->u + i0, len, j->act);
}

int cpu_glu(void *ctx, void *out, const void *gate, const void *up, size_t n, bk_act act)
{
    cpu_ctx *c = ctx;
    glu_job j = {out, gate, up, n, act, glu_best()};
    size_t tasks = (n + GLU_CHUNK - 1) / GLU_CHUNK;
    if (tasks <= 2 || tasks > INT32_MAX)
        j.fn(j.out, j.g, j.u, n, act);
    else
        pool_run(c->pool, (int)tasks, glu_task, &j);
    return INFER_OK;
}
