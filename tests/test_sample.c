/* test_sample.c - the token sampler against its definitions.
 *
 * The expected distributions are computed here from the definitions
 * (sample.h), in double, with a full sort: none of the library's code
 * paths (heap, quickselect, thresholds, its exp).  Draws are checked by a
 * chi-square goodness of fit with fixed seeds; the distributions
 * themselves (sampler_dist) are compared token by token on a large
 * vocabulary, which reaches every selection path.  SAMPLE_PV=1 in the
 * environment prints each chi-square and its p-value. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "engine/sample.h"
#include "test.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

static sampler_params defaults(void)
{
    sampler_params p = {.temperature = 1, .top_k = 0, .top_p = 1, .min_p = 0, .repeat_penalty = 1, .seed = 1};
    return p;
}

static sampler *make(const sampler_params *p, int vocab)
{
    sampler *s = NULL;
    int rc = sampler_new(p, vocab, &s);
    if (rc) fail_msg("sampler_new: %s (%s)", infer_status_name(rc), infer_last_error());
    return s;
}

static int32_t sample1(sampler *s, const float *logits, int n)
{
    float buf[64];
    assert_true(n <= 64);
    memcpy(buf, logits, (size_t)n * sizeof *buf);
    int32_t id = -1;
    int rc = sampler_sample(s, buf, &id, NULL, NULL);
    if (rc) fail_msg("sampler_sample: %s (%s)", infer_status_name(rc), infer_last_error());
    return id;
}

/* A small xorshift generator and normal deviates, for test data. */
static uint64_t test_rng = 88172645463325252u;
static double test_uniform(void)
{
    test_rng ^= test_rng << 13;
    test_rng ^= test_rng >> 7;
    test_rng ^= test_rng << 17;
    return (double)(test_rng >> 11) * 0x1.0p-53;
}

static void normal_logits(float *x, int n, double sigma, uint64_t seed)
{
    test_rng = seed;
    for (int i = 0; i < n; i++) {
        double u1 = test_uniform() + 1e-300, u2 = test_uniform();
        x[i] = (float)(sigma * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
    }
}

/* The reference: penalties and bias already applied to x (in double),
 * then temperature, top-k, top-p, min-p and the softmax, straight from
 * the definitions with a full sort (larger first, then lower id). */
typedef struct ref_opts {
    double temperature;
    int top_k;
    double top_p, min_p;
} ref_opts;

typedef struct ref_tok {
    double z;
    int id;
} ref_tok;

static int ref_cmp(const void *a, const void *b)
{
    const ref_tok *x = a, *y = b;
    if (x->z != y->z) return x->z > y->z ? -1 : 1;
    return x->id - y->id;
}

/* Softmax over the kept entries of t[0, n) into p (indexed like t). */
static void ref_softmax(const ref_tok *t, const int *keep, int n, double *p)
{
    double m = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++)
        if (keep[j] && t[j].z > m) m = t[j].z;
    for (int j = 0; j < n; j++) sum += p[j] = keep[j] ? exp(t[j].z - m) : 0;
    for (int j = 0; j < n; j++) p[j] /= sum;
}

static void ref_dist(const double *x, int n, ref_opts o, double *out)
{
    ref_tok *t = malloc((size_t)n * sizeof *t);
    int *keep = malloc((size_t)n * sizeof *keep);
    double *p = malloc((size_t)n * sizeof *p);
    assert_true(t && keep && p);
    memset(out, 0, (size_t)n * sizeof *out);
    for (int i = 0; i < n; i++) {
        t[i].z = o.temperature > 0 ? x[i] / o.temperature : x[i];
        t[i].id = i;
    }
    qsort(t, (size_t)n, sizeof *t, ref_cmp);
    if (o.temperature == 0) {
        out[t[0].id] = 1;
        goto done;
    }
    for (int j = 0; j < n; j++) keep[j] = t[j].z > -INFINITY && (o.top_k == 0 || j < o.top_k);
    if (o.top_p < 1) {
        ref_softmax(t, keep, n, p);
        double before = 0;
        for (int j = 0; j < n; j++) {
            if (!keep[j]) continue;
            if (before >= o.top_p) keep[j] = 0;
            before += p[j];
        }
    }
    if (o.min_p > 0) {
        ref_softmax(t, keep, n, p);
        double pmax = p[0]; /* the most likely is always kept, first */
        for (int j = 0; j < n; j++)
            if (keep[j] && p[j] < o.min_p * pmax) keep[j] = 0;
    }
    ref_softmax(t, keep, n, p);
    for (int j = 0; j < n; j++) out[t[j].id] = p[j];
done:
    free(t);
    free(keep);
    free(p);
}

/* Penalties and bias by their definitions, on doubles.  count[i] = how
 * many times token i was accepted. */
static void ref_adjust(const float *raw, int n, const int *count, const sampler_params *p, double *x)
{
    for (int i = 0; i < n; i++) {
        double v = raw[i];
        if (count && count[i] > 0) {
            v = v > 0 ? v / p->repeat_penalty : v * p->repeat_penalty;
            v -= p->presence_penalty + p->frequency_penalty * count[i];
        }
        x[i] = v;
    }
    for (size_t j = 0; j < p->n_logit_bias; j++) x[p->logit_bias[j].id] += p->logit_bias[j].bias;
}

/* ------------------------------------------------------------------ */
/* Chi-square                                                           */
/* ------------------------------------------------------------------ */

/* The regularized upper incomplete gamma function Q(a, x): a series for
 * P below a + 1, a continued fraction (modified Lentz) for Q above. */
static double gamma_q(double a, double x)
{
    if (x <= 0) return 1;
    double front = exp(-x + a * log(x) - lgamma(a));
    if (x < a + 1) {
        double term = 1 / a, sum = term;
        for (int k = 1; k < 10000 && fabs(term) > 1e-17 * fabs(sum); k++) {
            term *= x / (a + k);
            sum += term;
        }
        return 1 - front * sum;
    }
    const double tiny = 1e-300;
    double b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
    for (int k = 1; k < 10000; k++) {
        double an = -k * (k - a);
        b += 2;
        d = an * d + b;
        if (fabs(d) < tiny) d = tiny;
        c = b + an / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1 / d;
        double delta = d * c;
        h *= delta;
        if (fabs(delta - 1) < 1e-16) break;
    }
    return front * h;
}

/* P(chi-square with df degrees of freedom >= x). */
static double chi2_sf(double x, int df) { return gamma_q(df / 2.0, x / 2.0); }

static void chi2_survival_function(void **state)
{
    (void)state;
    /* Critical values from the standard tables. */
    assert_true(fabs(chi2_sf(3.841459, 1) - 0.05) < 1e-6);
    assert_true(fabs(chi2_sf(23.209251, 10) - 0.01) < 1e-6);
    assert_true(fabs(chi2_sf(30.577914, 15) - 0.01) < 1e-6);
    assert_true(fabs(chi2_sf(37.697473, 15) - 0.001) < 1e-7);
    assert_true(fabs(chi2_sf(4.60517, 2) - 0.1) < 1e-6); /* exp(-x / 2) */
    assert_true(fabs(chi2_sf(1.0, 3) - 0.801252) < 1e-6);
}

#define DRAWS 20000
#define N_SMALL 16

/* The fixed vector of the goodness-of-fit tests: 16 distinct logits, not
 * in order of id. */
static const float small_logits[N_SMALL] = {-0.5f, 1.2f, -3.0f, 0.3f, 2.0f, -1.0f, 0.8f, -2.0f,
                                            0.0f,  1.5f, -0.2f, -2.5f, 1.0f, -0.8f, 0.5f, -1.5f};

/* Draws DRAWS tokens with p (after accepting the tokens of accepted[]),
 * checks that tokens of probability 0 never come and that the counts fit
 * the reference distribution: chi-square p-value >= 0.001, bins of
 * expected count < 5 pooled.  Returns how many tokens can come. */
static int fit(const sampler_params *p, const int *accepted, int n_accepted, ref_opts o)
{
    int count[N_SMALL] = {0};
    for (int j = 0; j < n_accepted; j++) count[accepted[j]]++;
    double x[N_SMALL], expect[N_SMALL];
    ref_adjust(small_logits, N_SMALL, count, p, x);
    ref_dist(x, N_SMALL, o, expect);

    sampler *s = make(p, N_SMALL);
    for (int j = 0; j < n_accepted; j++) sampler_accept(s, accepted[j]);
    int seen[N_SMALL] = {0};
    for (int d = 0; d < DRAWS; d++) {
        int32_t id = sample1(s, small_logits, N_SMALL);
        assert_true(id >= 0 && id < N_SMALL);
        seen[id]++;
    }
    sampler_free(s);

    double chi2 = 0, pool_o = 0, pool_e = 0;
    int bins = 0, support = 0;
    for (int i = 0; i < N_SMALL; i++) {
        if (expect[i] == 0) {
            if (seen[i]) fail_msg("token %d (probability 0) drawn %d times", i, seen[i]);
            continue;
        }
        support++;
        double e = expect[i] * DRAWS;
        if (e < 5) {
            pool_o += seen[i];
            pool_e += e;
            continue;
        }
        chi2 += (seen[i] - e) * (seen[i] - e) / e;
        bins++;
    }
    if (pool_e > 0) {
        chi2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        bins++;
    }
    double pv = bins > 1 ? chi2_sf(chi2, bins - 1) : 1;
    if (getenv("SAMPLE_PV")) print_message("chi2 %.2f df %d p %.4f\n", chi2, bins - 1, pv);
    if (pv < 0.001) {
        for (int i = 0; i < N_SMALL; i++)
            print_message("token %2d: %6d drawn, %9.1f expected\n", i, seen[i], expect[i] * DRAWS);
        fail_msg("chi-square %.2f with %d degrees of freedom: p = %.2g", chi2, bins - 1, pv);
    }
    return support;
}

static void fit_temperature_1(void **state)
{
    (void)state;
    sampler_params p = defaults();
    p.seed = 11;
    assert_int_equal(fit(&p, NULL, 0, (ref_opts){1, 0, 1, 0}), N_SMALL);
}

static void fit_temperature_07(void **state)
{
    (void)state;
    sampler_params p = defaults();
    p.temperature = 0.7f;
    p.seed = 12;
    assert_int_equal(fit(&p, NULL, 0, (ref_opts){0.7, 0, 1, 0}), N_SMALL);
}

static void fit_top_k(void **state)
{
    (void)state;
    sampler_params p = defaults();
    p.top_k = 3;
    p.seed = 13;
    assert_int_equal(fit(&p, NULL, 0, (ref_opts){1, 3, 1, 0}), 3);
}

static void fit_top_p(void **state)
{
    (void)state;
    sampler_params p = defaults();
    p.top_p = 0.8f;
    p.seed = 14;
    /* Sorted probabilities sum to 0.749 over 5 tokens, 0.811 over 6. */
    assert_int_equal(fit(&p, NULL, 0, (ref_opts){1, 0, 0.8, 0}), 6);
}

static void fit_min_p(void **state)
{
    (void)state;
    sampler_params p = defaults();
    p.min_p = 0.1f;
    p.seed = 15;
    /* exp(l - 2) >= 0.1 keeps the logits >= -0.2 (0.111); -0.5 (0.082) goes. */
    assert_int_equal(fit(&p, NULL, 0, (ref_opts){1, 0, 1, 0.1}), 9);
}

static void fit_combination(void **state)
{
    (void)state;
    const infer_logit_bias bias[] = {{12, 0.7f}, {1, -INFINITY}};
    sampler_params p = defaults();
    p.temperature = 0.8f;
    p.top_k = 8;
    p.top_p = 0.9f;
    p.min_p = 0.2f;
    p.repeat_penalty = 1.3f;
    p.presence_penalty = 0.2f;
    p.frequency_penalty = 0.1f;
    p.logit_bias = bias;
    p.n_logit_bias = 2;
    p.seed = 16;
    const int accepted[] = {4, 9, 4, 5};
    /* Top-k keeps 8, top-p 6 of them (0.861 before the 6th, 0.924 before
     * the 7th), min-p drops the 6th (0.174 of the first < 0.2). */
    assert_int_equal(fit(&p, accepted, 4, (ref_opts){0.8, 8, 0.9, 0.2}), 5);
}

/* ------------------------------------------------------------------ */
/* Reproducibility                                                      */
/* ------------------------------------------------------------------ */

#define SEQ 300

static void run_sequence(sampler *s, const float *logits, int n, int32_t *out)
{
    float *buf = malloc((size_t)n * sizeof *buf);
    assert_non_null(buf);
    for (int t = 0; t < SEQ; t++) {
        memcpy(buf, logits, (size_t)n * sizeof *buf);
        assert_int_equal(sampler_sample(s, buf, &out[t], NULL, NULL), INFER_OK);
        sampler_accept(s, out[t]);
    }
    free(buf);
}

static void same_seed_same_tokens(void **state)
{
    (void)state;
    enum { V = 1000 };
    float logits[V];
    normal_logits(logits, V, 2.0, 7);
    sampler_params p = defaults();
    p.temperature = 0.9f;
    p.top_p = 0.95f;
    p.repeat_penalty = 1.1f;
    p.seed = 1234;
    int32_t a[SEQ], b[SEQ], c[SEQ], d[SEQ];
    sampler *s1 = make(&p, V), *s2 = make(&p, V);
    run_sequence(s1, logits, V, a);
    run_sequence(s2, logits, V, b);
    assert_memory_equal(a, b, sizeof a);
    sampler_reset(s1); /* forgets the tokens, reseeds: the same again */
    run_sequence(s1, logits, V, d);
    assert_memory_equal(a, d, sizeof a);
    p.seed = 1235;
    sampler *s3 = make(&p, V);
    run_sequence(s3, logits, V, c);
    int differ = 0;
    for (int t = 0; t < SEQ; t++) differ += a[t] != c[t];
    assert_true(differ > SEQ / 2);
    sampler_free(s1);
    sampler_free(s2);
    sampler_free(s3);
}

/* ------------------------------------------------------------------ */
/* Whole distributions on a large vocabulary                            */
/* ------------------------------------------------------------------ */

#define V_LARGE 50003 /* not a multiple of the vector or block widths */

/* sampler_dist against the reference: the same tokens kept, the same
 * probabilities (relative 1e-5: float weights and exp). */
static void compare_dist(const sampler_params *p, const float *logits, ref_opts o, const char *what)
{
    double *x = malloc(V_LARGE * sizeof *x), *want = malloc(V_LARGE * sizeof *want);
    float *got = malloc(V_LARGE * sizeof *got), *buf = malloc(V_LARGE * sizeof *buf);
    assert_true(x && want && got && buf);
    ref_adjust(logits, V_LARGE, NULL, p, x);
    ref_dist(x, V_LARGE, o, want);
    memcpy(buf, logits, V_LARGE * sizeof *buf);
    sampler *s = make(p, V_LARGE);
    int rc = sampler_dist(s, buf, got);
    if (rc) fail_msg("%s: sampler_dist: %s", what, infer_last_error());
    assert_memory_equal(buf, logits, V_LARGE * sizeof *buf); /* left as it was */
    int kept = 0;
    double sum = 0;
    for (int i = 0; i < V_LARGE; i++) {
        sum += got[i];
        kept += want[i] > 0;
        if ((got[i] > 0) != (want[i] > 0))
            fail_msg("%s: token %d has probability %g, want %g", what, i, (double)got[i], want[i]);
        if (!(fabs(got[i] - want[i]) <= 1e-5 * want[i] + 1e-12))
            fail_msg("%s: token %d has probability %.9g, want %.9g", what, i, (double)got[i], want[i]);
    }
    assert_true(fabs(sum - 1) < 1e-4);
    assert_true(kept >= 1);
    sampler_free(s);
    free(x);
    free(want);
    free(got);
    free(buf);
}

static void dist_matches_definition(void **state)
{
    (void)state;
    float *logits = malloc(V_LARGE * sizeof *logits), *flat = malloc(V_LARGE * sizeof *flat),
          *ties = malloc(V_LARGE * sizeof *ties);
    assert_true(logits && flat && ties);
    normal_logits(logits, V_LARGE, 2.5, 99);
    normal_logits(flat, V_LARGE, 0.01, 98);
    logits[123] = -INFINITY; /* a masked token */
    for (int i = 0; i < V_LARGE; i++) ties[i] = roundf(logits[i]); /* thousands of equal logits */
    struct {
        float temp;
        int k;
        float top_p, min_p;
        const float *x;
        const char *what;
    } cases[] = {
        {1.0f, 0, 1, 0, logits, "temperature 1, no filter"},
        {0.6f, 0, 1, 0, logits, "temperature 0.6"},
        {0.9f, 50, 1, 0, logits, "top-k 50 (heap)"},
        {0.9f, 3000, 1, 0, logits, "top-k 3000 (threshold + quickselect)"},
        {0.7f, 0, 0.9f, 0, logits, "top-p 0.9"},
        {1.5f, 0, 0.5f, 0, logits, "top-p 0.5, temperature 1.5"},
        {1.0f, 0, 0.95f, 0, flat, "top-p 0.95 on a flat distribution"},
        {1.2f, 0, 1, 0.02f, logits, "min-p 0.02"},
        {0.8f, 600, 0.85f, 0.01f, logits, "top-k 600, top-p 0.85, min-p 0.01"},
        {1.0f, 40, 0.7f, 0.3f, logits, "top-k 40, top-p 0.7, min-p 0.3"},
        {0.7f, 0, 0.9f, 0.05f, logits, "top-p 0.9, min-p 0.05"},
        {1.0f, 1, 1, 0, logits, "top-k 1"},
        {1.0f, 50, 1, 0, ties, "top-k 50 with ties (lower ids first)"},
        {1.0f, 3000, 1, 0, ties, "top-k 3000 with ties"},
        {0.7f, 0, 0.9f, 0, ties, "top-p 0.9 with ties"},
        {1.0f, 700, 0.8f, 0, ties, "top-k 700, top-p 0.8 with ties"},
        {0.0f, 0, 1, 0, logits, "greedy"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sampler_params p = defaults();
        p.temperature = cases[c].temp;
        p.top_k = cases[c].k;
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        compare_dist(&p, cases[c].x, (ref_opts){cases[c].temp, cases[c].k, cases[c].top_p, cases[c].min_p},
                     cases[c].what);
    }
    /* With the bias on a large vocabulary too. */
    const infer_logit_bias bias[] = {{5, 4.0f}, {6, -INFINITY}, {V_LARGE - 1, 3.0f}};
    sampler_params p = defaults();
    p.temperature = 0.8f;
    p.top_p = 0.9f;
    p.logit_bias = bias;
    p.n_logit_bias = 3;
    compare_dist(&p, logits, (ref_opts){0.8, 0, 0.9, 0}, "top-p 0.9 with bias");
    free(logits);
    free(flat);
    free(ties);
}

/* ------------------------------------------------------------------ */
/* Penalties, bias, greedy on hand-checked values                        */
/* ------------------------------------------------------------------ */

/* The adjusted logits, seen through the temperature-1 distribution:
 * log(p[i] / p[ref]) = x[i] - x[ref]. */
static void expect_log_ratios(sampler *s, const float *logits, int n, int ref, const double *want)
{
    float buf[16], probs[16];
    memcpy(buf, logits, (size_t)n * sizeof *buf);
    assert_int_equal(sampler_dist(s, buf, probs), INFER_OK);
    for (int i = 0; i < n; i++) {
        if (isinf(want[i])) {
            assert_true(probs[i] == 0);
            continue;
        }
        double got = log((double)probs[i] / probs[ref]);
        if (!(fabs(got - want[i]) < 1e-5)) fail_msg("token %d: log ratio %.7f, want %.7f", i, got, want[i]);
    }
}

static void repetition_penalty(void **state)
{
    (void)state;
    const float logits[4] = {2, -2, 1, 0.5f};
    sampler_params p = defaults();
    p.repeat_penalty = 2;
    sampler *s = make(&p, 4);
    sampler_accept(s, 0);
    sampler_accept(s, 1);
    sampler_accept(s, 0); /* the count does not matter to this penalty */
    sampler_accept(s, 99); /* outside the vocabulary: ignored */
    /* 2 -> 1 (divided), -2 -> -4 (multiplied), the others unchanged. */
    expect_log_ratios(s, logits, 4, 3, (const double[]){0.5, -4.5, 0.5, 0});
    sampler_reset(s); /* forgotten */
    expect_log_ratios(s, logits, 4, 3, (const double[]){1.5, -2.5, 0.5, 0});
    sampler_free(s);

    /* Greedy sees it too: a positive logit falls below its rival ... */
    p.temperature = 0;
    s = make(&p, 2);
    assert_int_equal(sample1(s, (const float[]){3, 2}, 2), 0);
    sampler_accept(s, 0);
    assert_int_equal(sample1(s, (const float[]){3, 2}, 2), 1); /* 1.5 < 2 */
    /* ... and a negative one goes further down (divided, it would win). */
    assert_int_equal(sample1(s, (const float[]){-1, -1.5f}, 2), 1); /* -2 < -1.5 */
    sampler_free(s);
}

static void presence_and_frequency(void **state)
{
    (void)state;
    const float logits[4] = {1, 1, 1, 1};
    sampler_params p = defaults();
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    sampler *s = make(&p, 4);
    for (int i = 0; i < 3; i++) sampler_accept(s, 0);
    sampler_accept(s, 1);
    /* 1 - 0.5 - 3 * 0.25 = -0.25; 1 - 0.5 - 0.25 = 0.25. */
    expect_log_ratios(s, logits, 4, 2, (const double[]){-1.25, -0.75, 0, 0});
    sampler_free(s);

    /* The repetition penalty comes first: 3 / 2 - 0.5, -1 * 2 - 0.5. */
    p.repeat_penalty = 2;
    p.frequency_penalty = 0;
    s = make(&p, 3);
    sampler_accept(s, 0);
    sampler_accept(s, 1);
    expect_log_ratios(s, (const float[]){3, -1, 0}, 3, 2, (const double[]){1.0, -2.5, 0});
    sampler_free(s);
}

static void logit_bias(void **state)
{
    (void)state;
    const float logits[4] = {5, 1, 0, 0};
    const infer_logit_bias bias[] = {{0, -INFINITY}, {3, 2}, {1, 0.5f}, {1, 0.5f}};
    sampler_params p = defaults();
    p.logit_bias = bias;
    p.n_logit_bias = 4;
    p.seed = 3;
    sampler *s = make(&p, 4);
    /* Banned; +2; +0.5 twice. */
    expect_log_ratios(s, logits, 4, 2, (const double[]){-INFINITY, 2, 0, 2});
    for (int d = 0; d < 2000; d++) assert_int_not_equal(sample1(s, logits, 4), 0);
    sampler_free(s);

    /* The bias is copied: the caller's array may go. */
    infer_logit_bias mine[1] = {{2, 10}};
    p.logit_bias = mine;
    p.n_logit_bias = 1;
    p.temperature = 0;
    s = make(&p, 4);
    mine[0].id = 0;
    assert_int_equal(sample1(s, logits, 4), 2);
    sampler_free(s);
}

static void greedy(void **state)
{
    (void)state;
    sampler_params p = defaults();
    p.temperature = 0;
    sampler *s = make(&p, 4);
    assert_int_equal(sample1(s, (const float[]){1, 3, 3, 2}, 4), 1); /* ties: the lowest id */
    assert_int_equal(sample1(s, (const float[]){0, 0, 0, 0}, 4), 0);
    assert_int_equal(sample1(s, (const float[]){-INFINITY, -INFINITY, -5, -INFINITY}, 4), 2);
    sampler_free(s);

    /* Top-k's ties go to the lower ids too. */
    p.temperature = 1;
    p.top_k = 2;
    s = make(&p, 5);
    float probs[5];
    assert_int_equal(sampler_dist(s, (float[]){1, 2, 0, 2, 2}, probs), INFER_OK);
    assert_true(probs[1] == 0.5f && probs[3] == 0.5f && probs[4] == 0 && probs[0] == 0);
    sampler_free(s);
    p.top_k = 0;
    p.temperature = 0;

    /* The same on a large vocabulary (vector code), whatever the seed. */
    float *x = malloc(V_LARGE * sizeof *x);
    assert_non_null(x);
    normal_logits(x, V_LARGE, 1.0, 5);
    x[40000] = 9;
    x[777] = 9;
    x[V_LARGE - 1] = 9;
    for (uint64_t seed = 0; seed < 3; seed++) {
        p.seed = seed;
        s = make(&p, V_LARGE);
        int32_t id;
        assert_int_equal(sampler_sample(s, x, &id, NULL, NULL), INFER_OK);
        assert_int_equal(id, 777);
        sampler_free(s);
    }
    /* top-k 1 is greedy too, through the sampling path. */
    p.temperature = 1;
    p.top_k = 1;
    s = make(&p, V_LARGE);
    int32_t id;
    assert_int_equal(sampler_sample(s, x, &id, NULL, NULL), INFER_OK);
    assert_int_equal(id, 777);
    sampler_free(s);
    free(x);
}

/* ------------------------------------------------------------------ */
/* Log-probabilities                                                    */
/* ------------------------------------------------------------------ */

static void logprobs(void **state)
{
    (void)state;
    const float logits[6] = {1, 3, 3, 0.5f, -INFINITY, 2};
    double lse = log(exp(1.0) + 2 * exp(3.0) + exp(0.5) + exp(2.0));
    sampler_params p = defaults();
    p.temperature = 0;
    p.n_logprobs = 4;
    sampler *s = make(&p, 6);
    float buf[6], lp;
    int32_t id;
    infer_top_logprob top[INFER_MAX_LOGPROBS];
    memcpy(buf, logits, sizeof buf);
    assert_int_equal(sampler_sample(s, buf, &id, &lp, top), INFER_OK);
    assert_int_equal(id, 1);
    assert_true(fabs(lp - (3 - lse)) < 1e-6);
    const int want_id[4] = {1, 2, 5, 0};
    const double want_logit[4] = {3, 3, 2, 1};
    for (int j = 0; j < 4; j++) {
        assert_int_equal(top[j].id, want_id[j]);
        assert_true(fabs(top[j].logprob - (want_logit[j] - lse)) < 1e-6);
    }
    sampler_free(s);

    /* Raw log-probabilities: the penalty moves the choice, not them.  All
     * six asked: the banned token last, at -inf. */
    p.repeat_penalty = 4;
    p.n_logprobs = 6;
    s = make(&p, 6);
    sampler_accept(s, 1);
    memcpy(buf, logits, sizeof buf);
    assert_int_equal(sampler_sample(s, buf, &id, &lp, top), INFER_OK);
    assert_int_equal(id, 2);
    assert_memory_equal(buf, logits, sizeof buf); /* put back */
    assert_true(fabs(lp - (3 - lse)) < 1e-6);
    assert_int_equal(top[0].id, 1);
    assert_int_equal(top[1].id, 2);
    assert_int_equal(top[5].id, 4);
    assert_true(top[5].logprob == -INFINITY);
    sampler_free(s);

    /* Sampling: each draw's logprob is its own raw log softmax. */
    p = defaults();
    p.seed = 8;
    s = make(&p, 6);
    for (int d = 0; d < 50; d++) {
        memcpy(buf, logits, sizeof buf);
        assert_int_equal(sampler_sample(s, buf, &id, &lp, NULL), INFER_OK);
        assert_true(id != 4);
        assert_true(fabs(lp - (logits[id] - lse)) < 1e-6);
    }
    sampler_free(s);

    /* A large vocabulary: the top 20 against a sort, with ties. */
    float *x = malloc(V_LARGE * sizeof *x);
    double *dx = malloc(V_LARGE * sizeof *dx);
    assert_true(x && dx);
    normal_logits(x, V_LARGE, 2.0, 21);
    x[30000] = x[20000] = x[10] = 10;
    p = defaults();
    p.temperature = 0;
    p.n_logprobs = INFER_MAX_LOGPROBS;
    s = make(&p, V_LARGE);
    assert_int_equal(sampler_sample(s, x, &id, &lp, top), INFER_OK);
    double m = -INFINITY, sum = 0;
    for (int i = 0; i < V_LARGE; i++) m = x[i] > m ? x[i] : m;
    for (int i = 0; i < V_LARGE; i++) sum += exp(x[i] - m);
    double big_lse = m + log(sum);
    ref_tok *t = malloc(V_LARGE * sizeof *t);
    assert_non_null(t);
    for (int i = 0; i < V_LARGE; i++) t[i] = (ref_tok){x[i], i};
    qsort(t, V_LARGE, sizeof *t, ref_cmp);
    assert_int_equal(id, 10);
    assert_true(fabs(lp - (10 - big_lse)) < 1e-5);
    for (int j = 0; j < INFER_MAX_LOGPROBS; j++) {
        assert_int_equal(top[j].id, t[j].id);
        assert_true(fabs(top[j].logprob - (t[j].z - big_lse)) < 1e-5);
    }
    sampler_free(s);
    free(t);
    free(x);
    free(dx);
}

/* ------------------------------------------------------------------ */
/* Errors                                                               */
/* ------------------------------------------------------------------ */

static void expect_bad(const sampler_params *p, int vocab, const char *needle)
{
    sampler *s = (sampler *)(uintptr_t)1; /* must come back NULL */
    int rc = sampler_new(p, vocab, &s);
    if (rc != INFER_ERR_INVALID_ARGUMENT)
        fail_msg("%s: got %s, want INFER_ERR_INVALID_ARGUMENT", needle, infer_status_name(rc));
    if (!strstr(infer_last_error(), needle))
        fail_msg("message \"%s\" does not name %s", infer_last_error(), needle);
    assert_null(s);
}

static void bad_params(void **state)
{
    (void)state;
    sampler_params p;
#define BAD_CASE(field, value, needle)                                                                 \
    do {                                                                                               \
        p = defaults();                                                                                \
        p.field = value;                                                                               \
        expect_bad(&p, 10, needle);                                                                    \
    } while (0)
    BAD_CASE(temperature, -1, "temperature");
    BAD_CASE(temperature, NAN, "temperature");
    BAD_CASE(temperature, INFINITY, "temperature");
    BAD_CASE(top_k, -1, "top_k");
    BAD_CASE(top_p, 0, "top_p");
    BAD_CASE(top_p, 1.5f, "top_p");
    BAD_CASE(top_p, NAN, "top_p");
    BAD_CASE(min_p, -0.1f, "min_p");
    BAD_CASE(min_p, 1.01f, "min_p");
    BAD_CASE(min_p, NAN, "min_p");
    BAD_CASE(repeat_penalty, 0, "repeat_penalty");
    BAD_CASE(repeat_penalty, -1, "repeat_penalty");
    BAD_CASE(repeat_penalty, NAN, "repeat_penalty");
    BAD_CASE(presence_penalty, NAN, "presence_penalty");
    BAD_CASE(frequency_penalty, NAN, "frequency_penalty");
    BAD_CASE(frequency_penalty, -INFINITY, "frequency_penalty");
    BAD_CASE(n_logprobs, -1, "n_logprobs");
    BAD_CASE(n_logprobs, INFER_MAX_LOGPROBS + 1, "n_logprobs");
    BAD_CASE(n_logprobs, 11, "n_logprobs"); /* more than the vocabulary */
    BAD_CASE(n_logit_bias, 1, "logit_bias");  /* with a NULL array */
#undef BAD_CASE
    const infer_logit_bias high[] = {{10, 1}}, low[] = {{-1, 1}}, nan_bias[] = {{0, 0}, {2, NAN}},
                           inf_bias[] = {{2, INFINITY}};
    const infer_logit_bias *bad[] = {high, low, nan_bias, inf_bias};
    const size_t n_bad[] = {1, 1, 2, 1};
    const char *needle[] = {"logit_bias[0].id", "logit_bias[0].id", "logit_bias[1].bias", "logit_bias[0].bias"};
    for (int i = 0; i < 4; i++) {
        p = defaults();
        p.logit_bias = bad[i];
        p.n_logit_bias = n_bad[i];
        expect_bad(&p, 10, needle[i]);
    }
    p = defaults();
    expect_bad(&p, 0, "vocab");
    assert_int_equal(sampler_new(NULL, 10, &(sampler *){NULL}), INFER_ERR_INVALID_ARGUMENT);
    sampler_free(NULL);
}

static void bad_logits(void **state)
{
    (void)state;
    sampler_params p = defaults();
    sampler *s = make(&p, 5);
    float x[5] = {0, 1, 2, NAN, 4}, probs[5];
    int32_t id;
    assert_int_equal(sampler_sample(s, x, &id, NULL, NULL), INFER_ERR_INVALID_ARGUMENT);
    assert_string_equal(infer_last_error(), "sampler: logits contain NaN at id 3");
    assert_int_equal(sampler_dist(s, x, probs), INFER_ERR_INVALID_ARGUMENT);
    x[3] = 3;
    x[2] = INFINITY;
    assert_int_equal(sampler_sample(s, x, &id, NULL, NULL), INFER_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(infer_last_error(), "+inf at id 2"));
    sampler_free(s);

    /* Every token banned. */
    const infer_logit_bias ban[] = {{0, -INFINITY}, {1, -INFINITY}};
    p.logit_bias = ban;
    p.n_logit_bias = 2;
    p.n_logprobs = 1;
    s = make(&p, 2);
    float y[2] = {1, 2};
    infer_top_logprob top[1];
    assert_int_equal(sampler_sample(s, y, &id, NULL, top), INFER_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(infer_last_error(), "banned"));
    assert_true(y[0] == 1 && y[1] == 2); /* put back on failure too */
    /* top is required when n_logprobs > 0. */
    assert_int_equal(sampler_sample(s, y, &id, NULL, NULL), INFER_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(infer_last_error(), "top"));
    sampler_free(s);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(chi2_survival_function),
    cmocka_unit_test(fit_temperature_1),
    cmocka_unit_test(fit_temperature_07),
    cmocka_unit_test(fit_top_k),
    cmocka_unit_test(fit_top_p),
    cmocka_unit_test(fit_min_p),
    cmocka_unit_test(fit_combination),
    cmocka_unit_test(same_seed_same_tokens),
    cmocka_unit_test(dist_matches_definition),
    cmocka_unit_test(repetition_penalty),
    cmocka_unit_test(presence_and_frequency),
    cmocka_unit_test(logit_bias),
    cmocka_unit_test(greedy),
    cmocka_unit_test(logprobs),
    cmocka_unit_test(bad_params),
    cmocka_unit_test(bad_logits),
};

TEST_GROUP(test_sample, tests)
