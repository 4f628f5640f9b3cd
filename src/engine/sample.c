/* sample.c - the token sampler: penalties, bias, temperature, top-k,
 * top-p, min-p and a seeded draw (see sample.h for the semantics).
 *
 * The passes over the whole vocabulary keep LANES independent sums (in
 * double, lane l taking the tokens i with i % LANES == l, the lanes added
 * in a fixed order) and have SSE2 / AVX2 bodies beside plain C ones that
 * do the very same float operations: the results, hence the tokens drawn,
 * do not depend on the machine, the vector width or the optimizer. */
#include "engine/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* Vector bodies: SSE2 (every x86-64), and AVX2 chosen at run time.
 * INFER_SAMPLE_SCALAR builds the plain C ones alone (same results). */
#if defined(__SSE2__) && !defined(INFER_SAMPLE_SCALAR)
#define SAMPLE_SSE2 1
#include <emmintrin.h>
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SAMPLE_AVX2 1
#include <immintrin.h>
#endif
#endif

#define LANES 8
#define BLOCK 64          /* tokens per block of the sums; a multiple of LANES */
#define TOPK_HEAP_MAX 512 /* top-k up to this k keeps a heap; above, a threshold and a quickselect */

/* A candidate token: v is its logit while top-k selects, then its weight
 * exp(logit / T - max), the probability times the softmax's sum. */
typedef struct cand {
    float v;
    int32_t id;
} cand;

struct sampler {
    sampler_params p;       /* p.logit_bias points at bias below */
    int vocab;
    infer_logit_bias *bias; /* [p.n_logit_bias] */
    float *bias_raw;        /* [p.n_logit_bias] each biased logit before its bias */
    /* The penalties' memory, NULL when they are off. */
    uint32_t *count;        /* [vocab] times each token was accepted */
    int32_t *seen;          /* [vocab] the distinct accepted tokens, first seen first */
    float *seen_raw;        /* [vocab] their logits before the penalties */
    int n_seen;
    /* Scratch of one step. */
    float *w;               /* [vocab] weights of every token */
    double *bsum;           /* [ceil(vocab / BLOCK)] sums of w by block */
    cand *cand;             /* [vocab] the kept tokens when not all are */
    int avx2;               /* the cpu has AVX2: exp 8 at a time */
    uint64_t rng[4];        /* xoshiro256** state */
};

/* What build() keeps: the tokens of cand[0, n), or with dense every token
 * by its weight w[id] (n = vocab); total is the weights' sum, added in the
 * order the draw walks them. */
typedef struct kept {
    int dense;
    size_t n;
    double total;
} kept;

/* ------------------------------------------------------------------ */
/* Random numbers                                                       */
/* ------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t st[4])
{
    uint64_t out = rotl64(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl64(st[3], 45);
    return out;
}

static void rng_seed(sampler *s)
{
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
}

/* A uniform double in [0, 1): the top 53 bits. */
static double rng_uniform(sampler *s) { return (double)(xoshiro_next(s->rng) >> 11) * 0x1.0p-53; }

/* ------------------------------------------------------------------ */
/* Creation                                                             */
/* ------------------------------------------------------------------ */

#define BAD(...) infer_err(INFER_ERR_INVALID_ARGUMENT, "sampler: " __VA_ARGS__)

static int check_params(const sampler_params *p, int vocab)
{
    if (vocab <= 0) return BAD("vocab must be positive (got %d)", vocab);
    if (!(p->temperature >= 0 && isfinite(p->temperature)))
        return BAD("temperature must be a finite number >= 0 (got %g)", p->temperature);
    if (p->top_k < 0) return BAD("top_k must be >= 0 (got %d)", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1)) return BAD("top_p must be in (0, 1] (got %g)", p->top_p);
    if (!(p->min_p >= 0 && p->min_p <= 1)) return BAD("min_p must be in [0, 1] (got %g)", p->min_p);
    if (!(p->repeat_penalty > 0 && isfinite(p->repeat_penalty)))
        return BAD("repeat_penalty must be a finite number > 0 (got %g)", p->repeat_penalty);
    if (!isfinite(p->presence_penalty))
        return BAD("presence_penalty must be finite (got %g)", p->presence_penalty);
    if (!isfinite(p->frequency_penalty))
        return BAD("frequency_penalty must be finite (got %g)", p->frequency_penalty);
    if (p->n_logit_bias && !p->logit_bias)
        return BAD("logit_bias is NULL with n_logit_bias = %zu", p->n_logit_bias);
    for (size_t i = 0; i < p->n_logit_bias; i++) {
        const infer_logit_bias *b = &p->logit_bias[i];
        if (b->id < 0 || b->id >= vocab)
            return BAD("logit_bias[%zu].id %d is outside the vocabulary [0, %d)", i, (int)b->id, vocab);
        if (isnan(b->bias) || b->bias == INFINITY)
            return BAD("logit_bias[%zu].bias must be a number below +inf (got %g)", i, b->bias);
    }
    int max_lp = vocab < INFER_MAX_LOGPROBS ? vocab : INFER_MAX_LOGPROBS;
    if (p->n_logprobs < 0 || p->n_logprobs > max_lp)
        return BAD("n_logprobs must be in [0, %d] (got %d)", max_lp, p->n_logprobs);
    return INFER_OK;
}

static int penalties_on(const sampler_params *p)
{
    return p->repeat_penalty != 1 || p->presence_penalty != 0 || p->frequency_penalty != 0;
}

int sampler_new(const sampler_params *p, int vocab, sampler **out)
{
    if (!out) return BAD("out is NULL");
    *out = NULL;
    if (!p) return BAD("params are NULL");
    int rc = check_params(p, vocab);
    if (rc) return rc;

    sampler *s = calloc(1, sizeof *s);
    if (!s) return infer_err(INFER_ERR_OUT_OF_MEMORY, "sampler: out of memory");
    s->p = *p;
    s->vocab = vocab;
    size_t nb = p->n_logit_bias, nv = (size_t)vocab;
    int ok = (s->cand = malloc(nv * sizeof *s->cand)) && (s->w = malloc(nv * sizeof *s->w)) &&
             (s->bsum = malloc((nv + BLOCK - 1) / BLOCK * sizeof *s->bsum));
    if (ok && nb) {
        ok = (s->bias = malloc(nb * sizeof *s->bias)) && (s->bias_raw = malloc(nb * sizeof *s->bias_raw));
        if (ok) memcpy(s->bias, p->logit_bias, nb * sizeof *s->bias);
    }
    if (ok && penalties_on(p))
        ok = (s->count = calloc(nv, sizeof *s->count)) && (s->seen = malloc(nv * sizeof *s->seen)) &&
             (s->seen_raw = malloc(nv * sizeof *s->seen_raw));
    if (!ok) {
        sampler_free(s);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "sampler: out of memory for a vocabulary of %d", vocab);
    }
    s->p.logit_bias = s->bias;
#ifdef SAMPLE_AVX2
    s->avx2 = __builtin_cpu_supports("avx2");
#endif
    rng_seed(s);
    *out = s;
    return INFER_OK;
}

void sampler_free(sampler *s)
{
    if (!s) return;
    free(s->bias);
    free(s->bias_raw);
    free(s->count);
    free(s->seen);
    free(s->seen_raw);
    free(s->w);
    free(s->bsum);
    free(s->cand);
    free(s);
}

void sampler_reset(sampler *s)
{
    if (!s) return;
    if (s->count)
        for (int i = 0; i < s->n_seen; i++) s->count[s->seen[i]] = 0;
    s->n_seen = 0;
    rng_seed(s);
}

void sampler_accept(sampler *s, int32_t id)
{
    if (!s || !s->count || id < 0 || id >= s->vocab) return;
    if (s->count[id] == 0) s->seen[s->n_seen++] = id;
    if (s->count[id] < UINT32_MAX) s->count[id]++;
}

/* ------------------------------------------------------------------ */
/* Passes over the vocabulary                                           */
/* ------------------------------------------------------------------ */

/* Each pass has an SSE2 body (every x86-64) and a plain C one that gives
 * the same bits: sums go to lane l = i % LANES whichever runs, exp_neg is
 * the same sequence of float operations, and nothing is fused (clang
 * would contract a * b + c where the ISA has an FMA). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define EXP_LOG2E 1.44269504f
#define EXP_LN2_HI 0.693145751953125f /* few bits: k * EXP_LN2_HI is exact */
#define EXP_LN2_LO 1.42860677e-6f
#define EXP_ROUND 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer */
#define EXP_MIN (-87.0f)

/* exp(x) for x <= 0 (-inf included): 2^k * e^r with k = round(x / ln 2),
 * |r| <= ln2 / 2 and a degree-7 Taylor polynomial; relative error about
 * 3e-7, exactly 1 at 0, and 0 below -87 (where exp is 1.6e-38 at most,
 * nothing next to the largest token's 1). */
static inline float exp_neg(float x)
{
    float xc = x > EXP_MIN ? x : EXP_MIN;
    float k = (xc * EXP_LOG2E + EXP_ROUND) - EXP_ROUND;
    float r = (xc - k * EXP_LN2_HI) - k * EXP_LN2_LO;
    /* Estrin's scheme: short dependency chains. */
    float r2 = r * r, r4 = r2 * r2;
    float p01 = 1.0f + r, p23 = 0.5f + r * (1.0f / 6);
    float p45 = 1.0f / 24 + r * (1.0f / 120), p67 = 1.0f / 720 + r * (1.0f / 5040);
    float p = (p01 + r2 * p23) + r4 * (p45 + r2 * p67);
    union {
        uint32_t u;
        float f;
    } scale = {.u = (uint32_t)((int32_t)k + 127) << 23};
    return x > EXP_MIN ? p * scale.f : 0.0f;
}

#ifdef SAMPLE_SSE2
static inline __m128 exp_neg4(__m128 x)
{
    __m128 xc = _mm_max_ps(x, _mm_set1_ps(EXP_MIN));
    __m128 round = _mm_set1_ps(EXP_ROUND);
    __m128 k = _mm_sub_ps(_mm_add_ps(_mm_mul_ps(xc, _mm_set1_ps(EXP_LOG2E)), round), round);
    __m128 r = _mm_sub_ps(_mm_sub_ps(xc, _mm_mul_ps(k, _mm_set1_ps(EXP_LN2_HI))),
                          _mm_mul_ps(k, _mm_set1_ps(EXP_LN2_LO)));
    __m128 r2 = _mm_mul_ps(r, r), r4 = _mm_mul_ps(r2, r2);
    __m128 p01 = _mm_add_ps(_mm_set1_ps(1.0f), r);
    __m128 p23 = _mm_add_ps(_mm_set1_ps(0.5f), _mm_mul_ps(r, _mm_set1_ps(1.0f / 6)));
    __m128 p45 = _mm_add_ps(_mm_set1_ps(1.0f / 24), _mm_mul_ps(r, _mm_set1_ps(1.0f / 120)));
    __m128 p67 = _mm_add_ps(_mm_set1_ps(1.0f / 720), _mm_mul_ps(r, _mm_set1_ps(1.0f / 5040)));
    __m128 p = _mm_add_ps(_mm_add_ps(p01, _mm_mul_ps(r2, p23)),
                          _mm_mul_ps(r4, _mm_add_ps(p45, _mm_mul_ps(r2, p67))));
    __m128i e = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(k), _mm_set1_epi32(127)), 23);
    __m128 y = _mm_mul_ps(p, _mm_castsi128_ps(e));
    return _mm_and_ps(_mm_cmpgt_ps(x, _mm_set1_ps(EXP_MIN)), y);
}

/* Adds the 8 floats a, b to the double lanes acc[0..8). */
static inline void add_lanes(__m128d acc[4], __m128 a, __m128 b)
{
    acc[0] = _mm_add_pd(acc[0], _mm_cvtps_pd(a));
    acc[1] = _mm_add_pd(acc[1], _mm_cvtps_pd(_mm_movehl_ps(a, a)));
    acc[2] = _mm_add_pd(acc[2], _mm_cvtps_pd(b));
    acc[3] = _mm_add_pd(acc[3], _mm_cvtps_pd(_mm_movehl_ps(b, b)));
}

static inline void store_lanes(double out[LANES], const __m128d acc[4])
{
    for (int q = 0; q < 4; q++) _mm_storeu_pd(out + 2 * q, acc[q]);
}
#endif

/* The same exp 8 at a time where the cpu has AVX2 (the same operations,
 * so the same bits; no FMA). */
#ifdef SAMPLE_AVX2
#define AVX2_FN __attribute__((target("avx2")))

static inline AVX2_FN __m256 exp_neg8(__m256 x)
{
    __m256 xc = _mm256_max_ps(x, _mm256_set1_ps(EXP_MIN));
    __m256 round = _mm256_set1_ps(EXP_ROUND);
    __m256 k = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(xc, _mm256_set1_ps(EXP_LOG2E)), round), round);
    __m256 r = _mm256_sub_ps(_mm256_sub_ps(xc, _mm256_mul_ps(k, _mm256_set1_ps(EXP_LN2_HI))),
                             _mm256_mul_ps(k, _mm256_set1_ps(EXP_LN2_LO)));
    __m256 r2 = _mm256_mul_ps(r, r), r4 = _mm256_mul_ps(r2, r2);
    __m256 p01 = _mm256_add_ps(_mm256_set1_ps(1.0f), r);
    __m256 p23 = _mm256_add_ps(_mm256_set1_ps(0.5f), _mm256_mul_ps(r, _mm256_set1_ps(1.0f / 6)));
    __m256 p45 = _mm256_add_ps(_mm256_set1_ps(1.0f / 24), _mm256_mul_ps(r, _mm256_set1_ps(1.0f / 120)));
    __m256 p67 = _mm256_add_ps(_mm256_set1_ps(1.0f / 720), _mm256_mul_ps(r, _mm256_set1_ps(1.0f / 5040)));
    __m256 p = _mm256_add_ps(_mm256_add_ps(p01, _mm256_mul_ps(r2, p23)),
                             _mm256_mul_ps(r4, _mm256_add_ps(p45, _mm256_mul_ps(r2, p67))));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(k), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(EXP_MIN), _CMP_GT_OQ), y);
}

/* exp_block of a whole block; acc gets the 8 lane sums. */
static AVX2_FN void exp_block_avx2(const float *x, float temp, float shift, float *w, double acc[LANES])
{
    __m256 vt = _mm256_set1_ps(temp), vs = _mm256_set1_ps(shift);
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    for (int j = 0; j < BLOCK; j += LANES) {
        __m256 e = exp_neg8(_mm256_sub_ps(_mm256_div_ps(_mm256_loadu_ps(x + j), vt), vs));
        _mm256_storeu_ps(w + j, e);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    _mm256_storeu_pd(acc, lo);
    _mm256_storeu_pd(acc + 4, hi);
}
#endif

static double lane_sum(const double a[LANES])
{
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* The largest of x[0, n) (-inf when n is 0); *bad is set when some x is
 * NaN or +inf. */
static float vec_max(const float *x, int n, int *bad)
{
    float m = -INFINITY;
    int i = 0, b = 0;
#ifdef SAMPLE_SSE2
    __m128 vm = _mm_set1_ps(-INFINITY), vb = _mm_setzero_ps(), inf = _mm_set1_ps(INFINITY);
    for (; i + 4 <= n; i += 4) {
        __m128 v = _mm_loadu_ps(x + i);
        vm = _mm_max_ps(v, vm);
        vb = _mm_or_ps(vb, _mm_cmpnlt_ps(v, inf));
    }
    float t[4];
    _mm_storeu_ps(t, vm);
    for (int l = 0; l < 4; l++) m = t[l] > m ? t[l] : m;
    b = _mm_movemask_ps(vb) != 0;
#endif
    for (; i < n; i++) {
        m = x[i] > m ? x[i] : m;
        b |= !(x[i] < INFINITY);
    }
    *bad = b;
    return m;
}

/* The first i with x[i] == v, or -1. */
static int find_first(const float *x, int n, float v)
{
    int i = 0;
#ifdef SAMPLE_SSE2
    __m128 vv = _mm_set1_ps(v);
    for (; i + 4 <= n; i += 4) {
        int mask = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(x + i), vv));
        if (mask)
            for (int l = 0;; l++)
                if (mask >> l & 1) return i + l;
    }
#endif
    for (; i < n; i++)
        if (x[i] == v) return i;
    return -1;
}

/* The largest of x[0, n) and its lowest id (0 when all are -inf); *bad
 * gets the first id holding NaN or +inf, or -1. */
static void max_scan(const float *x, int n, float *max, int32_t *arg, int32_t *bad)
{
    int any_bad;
    *max = vec_max(x, n, &any_bad);
    *bad = -1;
    if (any_bad) {
        for (int i = 0; i < n; i++)
            if (!(x[i] < INFINITY)) {
                *bad = i;
                break;
            }
        *arg = 0;
        return;
    }
    int a = find_first(x, n, *max);
    *arg = a > 0 ? a : 0;
}

static float range_max(const float *x, int n)
{
    int bad;
    return vec_max(x, n, &bad);
}

/* top[0, n_top) = the n_top largest of x[0, n), ties by lower id (the
 * logprob field holds the logit).  Blocks below the current n_top-th are
 * skipped after a vector max. */
static void top_scan(const float *x, int n, infer_top_logprob *top, int n_top)
{
    int nt = 0;
    for (int i0 = 0; i0 < n; i0 += BLOCK) {
        int i1 = n - i0 < BLOCK ? n : i0 + BLOCK;
        if (nt == n_top && !(range_max(x + i0, i1 - i0) > top[n_top - 1].logprob)) continue;
        for (int i = i0; i < i1; i++) {
            float v = x[i];
            if (nt == n_top && !(v > top[n_top - 1].logprob)) continue;
            int j = nt < n_top ? nt++ : n_top - 1;
            for (; j > 0 && top[j - 1].logprob < v; j--) top[j] = top[j - 1];
            top[j].id = i;
            top[j].logprob = v;
        }
    }
}

/* w[j] = exp(x[j] / temp - shift) for j < len (len <= BLOCK); returns
 * their sum. */
static double exp_block(const float *x, int len, float temp, float shift, float *w, int avx2)
{
    double acc[LANES] = {0};
    int j = 0;
    (void)avx2;
#ifdef SAMPLE_AVX2
    if (avx2 && len == BLOCK) {
        exp_block_avx2(x, temp, shift, w, acc);
        return lane_sum(acc);
    }
#endif
#ifdef SAMPLE_SSE2
    if (len == BLOCK) {
        __m128 vt = _mm_set1_ps(temp), vs = _mm_set1_ps(shift);
        __m128d a[4] = {_mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd()};
        for (; j < BLOCK; j += LANES) {
            __m128 e0 = exp_neg4(_mm_sub_ps(_mm_div_ps(_mm_loadu_ps(x + j), vt), vs));
            __m128 e1 = exp_neg4(_mm_sub_ps(_mm_div_ps(_mm_loadu_ps(x + j + 4), vt), vs));
            _mm_storeu_ps(w + j, e0);
            _mm_storeu_ps(w + j + 4, e1);
            add_lanes(a, e0, e1);
        }
        store_lanes(acc, a);
    }
#endif
    for (; j < len; j++) {
        w[j] = exp_neg(x[j] / temp - shift);
        acc[j % LANES] += w[j];
    }
    return lane_sum(acc);
}

/* w[i] = exp(x[i] / temp - shift) for every i (shift >= every x / temp);
 * bsum[b] = the sum of block b; returns the sum of the blocks, in order. */
static double exp_pass(const float *x, int n, float temp, float shift, float *w, double *bsum, int avx2)
{
    double total = 0;
    for (int i0 = 0, b = 0; i0 < n; i0 += BLOCK, b++) {
        int len = n - i0 < BLOCK ? n - i0 : BLOCK;
        bsum[b] = exp_block(x + i0, len, temp, shift, w + i0, avx2);
        total += bsum[b];
    }
    return total;
}

/* The sum of the w[0, n) that are >= t. */
static double mass_above(const float *w, int n, float t)
{
    double acc[LANES] = {0};
    int i = 0;
#ifdef SAMPLE_SSE2
    __m128 vt = _mm_set1_ps(t);
    __m128d a[4] = {_mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd()};
    for (; i + LANES <= n; i += LANES) {
        __m128 w0 = _mm_loadu_ps(w + i), w1 = _mm_loadu_ps(w + i + 4);
        add_lanes(a, _mm_and_ps(_mm_cmpge_ps(w0, vt), w0), _mm_and_ps(_mm_cmpge_ps(w1, vt), w1));
    }
    store_lanes(acc, a);
#endif
    for (; i < n; i++) acc[i % LANES] += w[i] >= t ? w[i] : 0.0f;
    return lane_sum(acc);
}

/* How many of x[0, n) are >= t. */
static int count_above(const float *x, int n, float t)
{
    int c = 0, i = 0;
#ifdef SAMPLE_SSE2
    __m128 vt = _mm_set1_ps(t);
    __m128i acc = _mm_setzero_si128();
    for (; i + 4 <= n; i += 4) acc = _mm_sub_epi32(acc, _mm_castps_si128(_mm_cmpge_ps(_mm_loadu_ps(x + i), vt)));
    int32_t a[4];
    _mm_storeu_si128((__m128i *)(void *)a, acc);
    c = a[0] + a[1] + a[2] + a[3];
#endif
    for (; i < n; i++) c += x[i] >= t;
    return c;
}

/* Copies the i with v[i] >= t and v[i] > floor into c (v = v[i]);
 * returns how many.  Groups of 4 with none are skipped after a vector
 * compare.  (c[m] is written for rejected entries too, m <= i there.) */
static size_t gather(cand *c, const float *v, int n, float t, float floor)
{
    size_t m = 0;
    int i = 0;
#ifdef SAMPLE_SSE2
    __m128 vt = _mm_set1_ps(t), vf = _mm_set1_ps(floor);
    for (; i + 4 <= n; i += 4) {
        __m128 x = _mm_loadu_ps(v + i);
        int mask = _mm_movemask_ps(_mm_and_ps(_mm_cmpge_ps(x, vt), _mm_cmpgt_ps(x, vf)));
        if (!mask) continue;
        for (int l = 0; l < 4; l++) { /* write all 4, keep the chosen: no branch */
            c[m].v = v[i + l];
            c[m].id = i + l;
            m += (size_t)(mask >> l & 1);
        }
    }
#endif
    for (; i < n; i++)
        if (v[i] >= t && v[i] > floor) {
            c[m].v = v[i];
            c[m].id = i;
            m++;
        }
    return m;
}

/* ------------------------------------------------------------------ */
/* Penalties and bias, in place and undone afterwards                   */
/* ------------------------------------------------------------------ */

/* Returns whether any logit was touched. */
static int adjust(sampler *s, float *x)
{
    const sampler_params *p = &s->p;
    int changed = 0;
    if (s->count) {
        for (int j = 0; j < s->n_seen; j++) {
            int32_t t = s->seen[j];
            float v = x[t];
            s->seen_raw[j] = v;
            if (p->repeat_penalty != 1) v = v > 0 ? v / p->repeat_penalty : v * p->repeat_penalty;
            v -= p->presence_penalty;
            v -= p->frequency_penalty * (float)s->count[t];
            x[t] = v;
        }
        changed = s->n_seen > 0;
    }
    for (size_t j = 0; j < p->n_logit_bias; j++) {
        int32_t t = s->bias[j].id;
        s->bias_raw[j] = x[t];
        x[t] += s->bias[j].bias;
        changed = 1;
    }
    return changed;
}

/* Puts back what adjust() replaced, last change first. */
static void restore(sampler *s, float *x)
{
    for (size_t j = s->p.n_logit_bias; j-- > 0;) x[s->bias[j].id] = s->bias_raw[j];
    if (s->count)
        for (int j = s->n_seen; j-- > 0;) x[s->seen[j]] = s->seen_raw[j];
}

/* ------------------------------------------------------------------ */
/* Selection without sorting                                            */
/* ------------------------------------------------------------------ */

/* The order of candidates: larger v first, then lower id.  A total order,
 * so every selection below has one answer whatever the input order. */
static inline int better(cand a, cand b) { return (a.v > b.v) | ((a.v == b.v) & (a.id < b.id)); }

static void swap_cand(cand *c, size_t i, size_t j)
{
    cand t = c[i];
    c[i] = c[j];
    c[j] = t;
}

/* Partitions c[lo, hi) (hi - lo >= 2) around the median of its first,
 * middle and last entries; returns the pivot's place p: c[lo, p) are
 * better than c[p], c[p + 1, hi) worse. */
static size_t partition(cand *c, size_t lo, size_t hi)
{
    size_t mid = lo + (hi - lo) / 2, last = hi - 1;
    if (better(c[mid], c[lo])) swap_cand(c, mid, lo);
    if (better(c[last], c[lo])) swap_cand(c, last, lo);
    if (better(c[mid], c[last])) swap_cand(c, mid, last);
    cand pivot = c[last];
    size_t p = lo;
    for (size_t i = lo; i < last; i++) { /* always swap: no branch to mispredict */
        int b = better(c[i], pivot);
        swap_cand(c, i, p);
        p += (size_t)b;
    }
    swap_cand(c, p, last);
    return p;
}

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return better(*x, *y) ? -1 : better(*y, *x);
}

/* Partition rounds allowed before the pivots are deemed unlucky and the
 * rest is sorted instead: 2 log2(n) + 8, so the worst case is n log n. */
static int max_rounds(size_t n)
{
    int r = 8;
    while (n >>= 1) r += 2;
    return r;
}

/* Moves the k best of c[0, n) (k < n) to c[0, k), in no particular order. */
static void select_count(cand *c, size_t n, size_t k)
{
    size_t lo = 0, hi = n;
    int rounds = max_rounds(n);
    while (hi - lo > 1) {
        if (rounds-- == 0) {
            qsort(c + lo, hi - lo, sizeof *c, cand_cmp);
            return;
        }
        size_t p = partition(c, lo, hi);
        if (p == k || p + 1 == k) return;
        if (p > k) hi = p;
        else lo = p + 1;
    }
}

/* The nucleus: reorders c[0, n) (v = weights) so that c[0, kept) are the
 * tokens whose better tokens weigh less than target in all, and returns
 * kept (at least 1).  A quickselect that splits by weight, not count. */
static size_t select_mass(cand *c, size_t n, double target)
{
    size_t lo = 0, hi = n;
    double before = 0; /* the weight of c[0, lo), all kept */
    int rounds = max_rounds(n);
    while (lo < hi) {
        if (rounds-- == 0) {
            qsort(c + lo, hi - lo, sizeof *c, cand_cmp);
            while (lo < hi && before < target) before += c[lo++].v;
            break;
        }
        size_t p = hi - lo == 1 ? lo : partition(c, lo, hi);
        double mass = 0;
        for (size_t i = lo; i < p; i++) mass += c[i].v;
        if (before + mass >= target) {
            hi = p; /* the pivot and all worse are out */
        } else {
            before += mass + c[p].v;
            lo = p + 1;
        }
    }
    return lo ? lo : 1;
}

/* A min-heap of the k best so far, the worst at the root. */
static void heap_down(cand *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(h[w], h[l])) w = l;
        if (r < n && better(h[w], h[r])) w = r;
        if (w == i) return;
        swap_cand(h, i, w);
        i = w;
    }
}

static void heap_up(cand *h, size_t i)
{
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!better(h[up], h[i])) return;
        swap_cand(h, up, i);
        i = up;
    }
}

/* Top-k over the finite x[0, n) into c (v = logit); returns how many (k,
 * or fewer finite logits).  Small k: a heap, skipping the blocks whose
 * max does not beat its root.  Large k: a threshold max - d with d
 * doubling until k logits reach it, then a quickselect of those. */
static size_t top_k(cand *c, const float *x, int n, size_t k, float max)
{
    size_t m = 0;
    if (k <= TOPK_HEAP_MAX) {
        for (int i0 = 0; i0 < n; i0 += BLOCK) {
            int i1 = n - i0 < BLOCK ? n : i0 + BLOCK;
            if (m == k && !(range_max(x + i0, i1 - i0) > c[0].v)) continue;
            for (int i = i0; i < i1; i++) {
                float v = x[i];
                if (m == k) {
                    /* Ids come in increasing order: a tie with the root is worse. */
                    if (!(v > c[0].v)) continue;
                    c[0].v = v;
                    c[0].id = i;
                    heap_down(c, k, 0);
                } else if (v > -INFINITY) {
                    c[m].v = v;
                    c[m].id = i;
                    heap_up(c, m++);
                }
            }
        }
        return m;
    }
    float t = -INFINITY;
    for (float d = 1; d < 0x1p64f; d *= 2) {
        float td = max - d;
        if (td == -INFINITY || (size_t)count_above(x, n, td) >= k) {
            t = td;
            break;
        }
    }
    m = gather(c, x, n, t, -INFINITY);
    if (m > k) {
        select_count(c, m, k);
        m = k;
    }
    return m;
}

/* Top-p over the whole vocabulary, w[] holding every weight and total
 * their sum.  The nucleus lies within the tokens of weight >= t as soon as
 * those weigh top_p * total: t is tried at 2^-8 (5.5 nats below the
 * largest), 2^-16, then (1 - top_p) * total / n (the tokens below it
 * weigh less than (1 - top_p) * total), then 0; those tokens are
 * gathered and select_mass finds the nucleus among them. */
static size_t top_p_all(cand *c, const float *w, int n, double total, float top_p)
{
    double target = (double)top_p * total;
    float steps[4] = {0x1p-8f, 0x1p-16f, (float)((1 - (double)top_p) * total / n), 0};
    float prev = INFINITY;
    for (int r = 0; r < 4; r++) {
        float t = steps[r];
        if (!(t < prev)) continue;
        prev = t;
        if (t > 0 && mass_above(w, n, t) < target) continue;
        size_t m = gather(c, w, n, t, 0);
        double mass = 0;
        for (size_t j = 0; j < m; j++) mass += c[j].v;
        if (t > 0 && mass < target) continue; /* rounding: the next step */
        return select_mass(c, m, target);
    }
    return 0; /* not reached: the last step takes every token */
}

/* ------------------------------------------------------------------ */
/* The distribution                                                     */
/* ------------------------------------------------------------------ */

/* The tokens left after temperature and the filters, from the adjusted
 * logits x whose largest is max at lowest id arg. */
static kept build(sampler *s, const float *x, float max, int32_t arg)
{
    const sampler_params *p = &s->p;
    cand *c = s->cand;
    int n = s->vocab;
    float temp = p->temperature;
    float smax = temp > 0 ? max / temp : 0;
    kept k = {0, 0, 0};
    if (temp == 0 || !isfinite(smax)) {
        c[0].v = 1;
        c[0].id = arg;
        k.n = 1;
        k.total = 1;
        return k;
    }
    size_t top = p->top_k > 0 && p->top_k < n ? (size_t)p->top_k : 0;
    int use_p = p->top_p < 1, use_min = p->min_p > 0;
    if (top) {
        k.n = top_k(c, x, n, top, max);
        double sum = 0;
        for (size_t j = 0; j < k.n; j++) {
            c[j].v = exp_neg(c[j].v / temp - smax);
            sum += c[j].v;
        }
        if (use_p) k.n = select_mass(c, k.n, (double)p->top_p * sum);
    } else if (use_p) {
        double total = exp_pass(x, n, temp, smax, s->w, s->bsum, s->avx2);
        k.n = top_p_all(c, s->w, n, total, p->top_p);
    } else if (use_min) {
        /* No sum over the vocabulary is needed: gather the logits above a
         * bound safely below exp(z) = min_p (z = x / T - smax: 1/64 nat
         * plus ten times float rounding), then weigh only those. */
        double zmin = log((double)p->min_p) - 1.0 / 64 - 1e-5 * fabs((double)smax);
        float t = (float)((zmin + (double)smax) * (double)temp);
        t = nextafterf(t, -INFINITY);
        k.n = gather(c, x, n, t, -INFINITY);
        for (size_t j = 0; j < k.n; j++) c[j].v = exp_neg(c[j].v / temp - smax);
    } else {
        k.dense = 1;
        k.n = (size_t)n;
        k.total = exp_pass(x, n, temp, smax, s->w, s->bsum, s->avx2);
        return k;
    }
    if (use_min) {
        /* The most likely token weighs exp(0) = 1 and always stays. */
        size_t j = 0;
        for (size_t i = 0; i < k.n; i++)
            if (c[i].v >= p->min_p) c[j++] = c[i];
        k.n = j;
    }
    for (size_t j = 0; j < k.n; j++) k.total += c[j].v;
    return k;
}

/* Between the checks and the draw: adjusts x (restore() undoes it) and
 * builds the kept tokens. */
static int prepare(sampler *s, float *x, float raw_max, int32_t raw_arg, kept *out)
{
    float max = raw_max;
    int32_t arg = raw_arg, bad;
    if (adjust(s, x)) max_scan(x, s->vocab, &max, &arg, &bad);
    if (max == -INFINITY) {
        restore(s, x);
        return BAD("every token is banned (all logits are -inf after the bias and penalties)");
    }
    *out = build(s, x, max, arg);
    return INFER_OK;
}

/* The first of the kept tokens whose running sum of weights passes u *
 * total.  If rounding leaves none, the last token of non-zero weight. */
static int32_t draw(const sampler *s, const kept *k, double u)
{
    double target = u * k->total, cum = 0;
    if (!k->dense) {
        const cand *c = s->cand;
        for (size_t j = 0; j < k->n; j++)
            if ((cum += c[j].v) > target) return c[j].id;
        size_t j = k->n - 1;
        while (j > 0 && c[j].v == 0) j--;
        return c[j].id;
    }
    /* Every token, in id order: blocks first, then within one. */
    int n = s->vocab, nb = (n + BLOCK - 1) / BLOCK;
    for (int b = 0; b < nb; b++) {
        if (!(cum + s->bsum[b] > target)) {
            cum += s->bsum[b];
            continue;
        }
        int i1 = n - b * BLOCK < BLOCK ? n : (b + 1) * BLOCK, last = -1;
        for (int i = b * BLOCK; i < i1; i++) {
            if (s->w[i] > 0) last = i;
            if ((cum += s->w[i]) > target) return i;
        }
        if (last >= 0) return last;
    }
    int i = n - 1;
    while (i > 0 && s->w[i] == 0) i--;
    return i;
}

int sampler_sample(sampler *s, float *logits, int32_t *id, float *logprob, infer_top_logprob *top)
{
    if (!s || !logits || !id) return BAD("NULL argument");
    int n_top = s->p.n_logprobs, n = s->vocab;
    if (n_top && !top) return BAD("top is NULL with n_logprobs = %d", n_top);
    float raw_max;
    int32_t raw_arg, bad;
    max_scan(logits, n, &raw_max, &raw_arg, &bad);
    if (bad >= 0) return BAD("logits contain %s at id %d", isnan(logits[bad]) ? "NaN" : "+inf", (int)bad);
    double lse = 0;
    if (logprob || n_top) {
        lse = raw_max == -INFINITY ? -INFINITY
                                   : (double)raw_max + log(exp_pass(logits, n, 1, raw_max, s->w, s->bsum, s->avx2));
        if (n_top) top_scan(logits, n, top, n_top);
    }

    kept k;
    int rc = prepare(s, logits, raw_max, raw_arg, &k);
    if (rc) return rc;
    /* One draw per step when sampling, none when greedy. */
    if (s->p.temperature > 0) *id = draw(s, &k, rng_uniform(s));
    else *id = s->cand[0].id;
    restore(s, logits);

    if (logprob) *logprob = (float)((double)logits[*id] - lse);
    for (int j = 0; j < n_top; j++) top[j].logprob = (float)((double)top[j].logprob - lse);
    return INFER_OK;
}

int sampler_dist(sampler *s, float *logits, float *probs)
{
    if (!s || !logits || !probs) return BAD("NULL argument");
    float raw_max;
    int32_t raw_arg, bad;
    max_scan(logits, s->vocab, &raw_max, &raw_arg, &bad);
    if (bad >= 0) return BAD("logits contain %s at id %d", isnan(logits[bad]) ? "NaN" : "+inf", (int)bad);
    kept k;
    int rc = prepare(s, logits, raw_max, raw_arg, &k);
    if (rc) return rc;
    if (k.dense) {
        for (int i = 0; i < s->vocab; i++) probs[i] = (float)(s->w[i] / k.total);
    } else {
        memset(probs, 0, (size_t)s->vocab * sizeof *probs);
        for (size_t j = 0; j < k.n; j++) probs[s->cand[j].id] = (float)(s->cand[j].v / k.total);
    }
    restore(s, logits);
    return INFER_OK;
}
