/* test_qgemm.c - the quantized products (qgemm.h) against references
 * computed here, in double precision, from the packing definition
 * (backend.h: value i of a row sits in bits [i * bits, (i + 1) * bits) of
 * its little-endian bit stream; w = s * q + b per group).
 *
 * Every variant this machine supports (C, AVX2, AVX2 + VNNI, AVX-512) x
 * bits {2, 3, 4, 5, 6, 8} x group sizes {32, 64, 128} x M {1, 2, 3, 7, 9,
 * 64} (the streaming kernels up to Q_SMALL_M, the GEMMs above) x an odd N,
 * on random packed bytes, scales of both signs and biases, unaligned data
 * and strided A and C:
 *   exact  within the float32 error bound of a K-term dot product,
 *          (K + 4) 2^-24 sum |w x|;
 *   int8   (a) within float32 rounding of the int8 arithmetic it claims
 *          (x rounded to int8 per block of 32, as q_act holds it; the
 *          rounding itself checked separately), and (b) within the
 *          reduced-precision tolerance of testing.md of the exact product:
 *          ||C - ref|| / ||ref|| <= 1e-2.
 * Then cpu_matmul through the backend (bias, 1 and 3 threads, both
 * paths). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/qgemm.h"
#include "core/dtype.h"
#include "test.h"

static uint32_t rng_state = 777u;
static uint32_t next_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}
static float frand(void) { return (float)((next_u32() >> 8) * (1.0 / 8388608.0) - 1.0); }

/* A quantized matrix at odd addresses, and its values in double. */
typedef struct qmat {
    unsigned char *mem_q, *mem_s, *mem_b;
    bk_weight w;
    int rows, cols;
    double *s, *b;  /* [rows][cols / gs] as stored */
    int *q;         /* [rows][cols] */
} qmat;

static void store_scalar(unsigned char *p, infer_dtype t, float f, double *as_stored)
{
    if (t == DT_F32) {
        memcpy(p, &f, 4);
        *as_stored = f;
    } else if (t == DT_BF16) {
        uint16_t h = f32_to_bf16(f);
        memcpy(p, &h, 2);
        *as_stored = bf16_to_f32(h);
    } else {
        uint16_t h = f32_to_f16(f);
        memcpy(p, &h, 2);
        *as_stored = f16_to_f32(h);
    }
}

/* 1: make_q fills every q with its largest value and check_one's A holds
 * the activations whose int8 sums are largest (every x8 at 126 or 127 and
 * every residual at 127, one sign a row): the bounds of the kernels'
 * 16-bit partial sums. */
static int extremes;

static void make_q(qmat *m, int rows, int cols, int bits, int gs, infer_dtype st)
{
    memset(m, 0, sizeof *m);
    m->rows = rows;
    m->cols = cols;
    size_t rb = (size_t)cols * bits / 8, ng = (size_t)cols / gs, es = dtype_size(st);
    m->mem_q = malloc((size_t)rows * rb + 2);
    m->mem_s = malloc((size_t)rows * ng * es + 2);
    m->mem_b = malloc((size_t)rows * ng * es + 2);
    m->s = malloc((size_t)rows * ng * sizeof *m->s);
    m->b = malloc((size_t)rows * ng * sizeof *m->b);
    m->q = malloc((size_t)rows * cols * sizeof *m->q);
    assert_true(m->mem_q && m->mem_s && m->mem_b && m->s && m->b && m->q);
    unsigned char *pq = m->mem_q + 1, *ps = m->mem_s + 1, *pb = m->mem_b + 1;
    for (size_t i = 0; i < (size_t)rows * rb; i++) pq[i] = extremes ? 0xff : (unsigned char)(next_u32() >> 11);
    for (size_t i = 0; i < (size_t)rows * ng; i++) {
        store_scalar(ps + i * es, st, frand() * 0.02f, &m->s[i]); /* both signs */
        store_scalar(pb + i * es, st, frand() * 0.1f, &m->b[i]);
    }
    /* the q values straight from the definition: bit i*bits+j of the row */
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            int v = 0;
            for (int j = 0; j < bits; j++) {
                size_t bit = (size_t)c * bits + j;
                v |= ((pq[(size_t)r * rb + bit / 8] >> (bit % 8)) & 1) << j;
            }
            m->q[(size_t)r * cols + c] = v;
        }
    m->w = (bk_weight){.data = pq, .dtype = DT_U32, .rows = rows, .cols = cols, .bits = bits,
                       .group_size = gs, .scales = ps, .biases = pb, .sdtype = st};
}

static void free_q(qmat *m)
{
    free(m->mem_q);
    free(m->mem_s);
    free(m->mem_b);
    free(m->s);
    free(m->b);
    free(m->q);
}

static double wval(const qmat *m, int r, int c)
{
    int gs = m->w.group_size;
    size_t g = (size_t)r * (m->cols / gs) + c / gs;
    return m->s[g] * m->q[(size_t)r * m->cols + c] + m->b[g];
}

/* int8 value of plane p (x8 or r8) at row m, column c, in the layout
 * qgemm.h documents. */
static int plane_of(const q_act *x, const int8_t *p, int m, int c)
{
    int at = c;
    if (x->tiled && x->small && x->int8 && x->bits == 4) {
        /* the tiled order: each 8 values, the even ones then the odd ones */
        int v = c % 8;
        at = c - v + (v % 2 ? 4 + v / 2 : v / 2);
    } else if (x->small && x->bits == 4) {
        /* chunks of 128 values while 128 remain, then 64, then 32 */
        int k128 = x->K / 128 * 128, c0, n;
        if (c < k128) {
            c0 = c / 128 * 128;
            n = 128;
        } else if (x->K - k128 >= 64 && c < k128 + 64) {
            c0 = k128;
            n = 64;
        } else {
            c0 = x->K - 32;
            n = 32;
        }
        int v = c - c0;
        at = c0 + (v % 2 ? n / 2 + v / 2 : v / 2);
    }
    return p[(size_t)m * x->K + at];
}

static int x8_of(const q_act *x, int m, int c) { return plane_of(x, x->x8, m, c); }
static int r8_of(const q_act *x, int m, int c) { return plane_of(x, x->r8, m, c); }

/* The int8 rounding q_act claims: d = max|x| / 127 per block, x8 =
 * round(x / d), s8 = sum x8, xs = sum x per group. */
static void check_act(const q_act *x, const char *what)
{
    const int K = x->K, nb = K / Q_ABLK, gs = x->group_size;
    for (int m = 0; m < x->M; m++) {
        const float *a = x->A + (size_t)m * x->lda;
        for (int b = 0; b < nb; b++) {
            float amax = 0.0f;
            int32_t sum = 0;
            for (int i = 0; i < Q_ABLK; i++) amax = fmaxf(amax, fabsf(a[b * Q_ABLK + i]));
            float d = x->d[(size_t)m * nb + b];
            if (d != amax / 127.0f) fail_msg("%s: d[%d][%d] = %g, want %g", what, m, b, d, amax / 127.0f);
            int32_t rsum = 0;
            for (int i = 0; i < Q_ABLK; i++) {
                int c = b * Q_ABLK + i, q = x8_of(x, m, c), r = r8_of(x, m, c);
                sum += q;
                rsum += r;
                if (!(fabs(q * (double)d - a[c]) <= 0.5001 * d)) fail_msg("%s: x8[%d][%d] = %d, x = %g, d = %g", what, m, c, q, a[c], d);
                /* with the residual: within d / 512, or d / 256 where r8 is
                 * clamped at 127 (a residual of nearly 1/2), and float rounding */
                double two = (q + r / 256.0) * (double)d;
                if (!(fabs(two - a[c]) <= d / 256.0 + 1e-6 * fabs(a[c])))
                    fail_msg("%s: x8 + r8 / 256 at [%d][%d] = %d + %d / 256, x = %g, d = %g", what, m, c, q, r, a[c], d);
            }
            if (x->d2[(size_t)m * nb + b] != d / 256.0f) fail_msg("%s: d2[%d][%d] = %g, want d / 256", what, m, b, x->d2[(size_t)m * nb + b]);
            if (x->s8r[(size_t)m * nb + b] != rsum) fail_msg("%s: s8r[%d][%d] = %d, want %d", what, m, b, x->s8r[(size_t)m * nb + b], rsum);
            if (x->s8[(size_t)m * nb + b] != sum) fail_msg("%s: s8[%d][%d] = %d, want %d", what, m, b, x->s8[(size_t)m * nb + b], sum);
        }
        for (int g = 0; g < K / gs; g++) {
            double s = 0.0, sa = 0.0;
            for (int i = 0; i < gs; i++) {
                s += a[g * gs + i];
                sa += fabs(a[g * gs + i]);
            }
            double got = x->xs[(size_t)m * (K / gs) + g];
            if (!(fabs(got - s) <= (gs + 2) * 0x1p-24 * sa)) fail_msg("%s: xs[%d][%d] = %g, want %g", what, m, g, got, s);
            /* xe: xs less the sum of what the blocks' int8 values stand for */
            double e = got, ea = fabs(got);
            for (int b = g * gs / Q_ABLK; b < (g + 1) * gs / Q_ABLK; b++) {
                double t = (double)x->d[(size_t)m * nb + b] * (x->s8[(size_t)m * nb + b] + x->s8r[(size_t)m * nb + b] / 256.0);
                e -= t;
                ea += fabs(t);
            }
            double ge = x->xe[(size_t)m * (K / gs) + g];
            if (!(fabs(ge - e) <= (gs + 4) * 0x1p-24 * ea)) fail_msg("%s: xe[%d][%d] = %g, want %g", what, m, g, ge, e);
            float xc = x->xc[(size_t)m * (K / gs) + g];
            if (xc != q_mid(x->bits) * (float)ge) fail_msg("%s: xc[%d][%d] = %g, want mid xe", what, m, g, xc);
        }
        if (x->dv) {
            /* per chunk at c, 16 floats at c / 4: lane j sums slots 4j .. 4j
             * + 3 of the chunk's first 64 bytes, and with 128 values also
             * slots 64 + 4j .. of the second (the same blocks) */
            int four = q_act_chunked(x), k128 = K / 128 * 128;
            for (int c = 0, n; c < K; c += n) {
                n = !four ? (K - c >= 64 ? 64 : 32) : c < k128 ? 128 : (K - k128 >= 64 && c < k128 + 64) ? 64 : 32;
                for (int j = 0; j < 16; j++) {
                    int v = 4 * j;
                    if (v >= n) continue;
                    int value = four ? (v < n / 2 ? 2 * v : 2 * (v - n / 2) + 1) : v;
                    float want = x->d[(size_t)m * nb + (c + value) / Q_ABLK];
                    float got = x->dv[(size_t)m * (K / 4 + 16) + c / 4 + j];
                    if (got != want) fail_msg("%s: dv[%d][%d + %d] = %g, want %g", what, m, c / 4, j, got, want);
                    if (x->dv2[(size_t)m * (K / 4 + 16) + c / 4 + j] != got / 256.0f)
                        fail_msg("%s: dv2[%d][%d + %d] is not dv / 256", what, m, c / 4, j);
                    if (n == 128) {
                        int value2 = 2 * v + 1; /* slot 64 + v */
                        float want2 = x->d[(size_t)m * nb + (c + value2) / Q_ABLK];
                        if (got != want2)
                            fail_msg("%s: dv[%d][%d + %d] = %g, want %g (second half)", what, m, c / 4, j, got, want2);
                    }
                }
            }
        }
    }
}

static const float PAD = 12345.0f;

/* One variant, one shape: rows n0 .. n0 + N of m. */
static void check_one(q_isa isa, int int8, const qmat *qm, int64_t n0, int N, int M)
{
    const int K = qm->cols, gs = qm->w.group_size, bits = qm->w.bits;
    const size_t lda = (size_t)K + 3, ldc = (size_t)N + 2;
    float *A = malloc((size_t)M * lda * sizeof *A), *C = malloc((size_t)M * ldc * sizeof *C);
    assert_true(A && C);
    for (size_t i = 0; i < (size_t)M * lda; i++) A[i] = frand();
    if (extremes)
        for (int m = 0; m < M; m++)
            for (int k = 0; k < K; k++) /* x / d = 127 at a block's start, 126.498 after it */
                A[(size_t)m * lda + k] = (float)(m % 2 ? -1 : 1) * (k % Q_ABLK ? 126.498f / 127 : 1.0f);
    for (size_t i = 0; i < (size_t)M * ldc; i++) C[i] = PAD;
    q_act x;
    void *abuf = malloc(q_act_bytes(M, K, &qm->w, int8));
    assert_non_null(abuf);
    q_act_init(&x, abuf, M, K, A, lda, &qm->w, int8);
    q_act_rows_isa(isa, &x, 0, M);
    char what[128];
    snprintf(what, sizeof what, "%s %s bits=%d gs=%d M=%d N=%d K=%d", q_isa_name(isa), int8 ? "int8" : "exact", bits,
             gs, M, N, K);
    if (int8) check_act(&x, what);
    void *scratch = malloc(qgemm_scratch_bytes(&x, N));
    assert_non_null(scratch);
    qgemm_nt_isa(isa, &x, &qm->w, n0, N, C, ldc, scratch);
    double err2 = 0.0, ref2 = 0.0;
    for (int m = 0; m < M; m++) {
        const float *a = A + (size_t)m * lda;
        for (int n = 0; n < N; n++) {
            int r = (int)n0 + n;
            double ref = 0.0, sa = 0.0;
            for (int k = 0; k < K; k++) {
                double p = wval(qm, r, k) * a[k];
                ref += p;
                sa += fabs(p);
            }
            double got = C[(size_t)m * ldc + n];
            if (isnan(got)) fail_msg("%s: C[%d][%d] is NaN", what, m, n);
            if (!int8) {
                if (!(fabs(got - ref) <= (K + 4) * 0x1p-24 * sa))
                    fail_msg("%s: C[%d][%d] = %.9g, want %.9g (sum |wx| %g)", what, m, n, got, ref, sa);
            } else {
                /* the int8 arithmetic itself */
                const int nb = K / Q_ABLK, ng = K / gs;
                double r8 = 0.0, s8 = 0.0;
                for (int b = 0; b < nb; b++) {
                    long dot = 0;
                    long adot = 0;
                    for (int i = 0; i < Q_ABLK; i++) {
                        int c = b * Q_ABLK + i;
                        /* both planes: x8 * 256 + r8, scaled by d / 256 below */
                        long v = 256L * x8_of(&x, m, c) + r8_of(&x, m, c);
                        dot += (long)qm->q[(size_t)r * K + c] * v;
                        adot += labs((long)qm->q[(size_t)r * K + c] * v);
                    }
                    double f = (double)x.d[(size_t)m * nb + b] / 256.0 * qm->s[(size_t)r * ng + b * Q_ABLK / gs];
                    r8 += f * (double)dot;
                    s8 += fabs(f) * (double)adot;
                }
                for (int g = 0; g < ng; g++) {
                    double t = qm->b[(size_t)r * ng + g] * x.xs[(size_t)m * ng + g];
                    /* the centring (qgemm.h) */
                    double u = 0.5 * ((1 << bits) - 1) * qm->s[(size_t)r * ng + g] * x.xe[(size_t)m * ng + g];
                    r8 += t + u;
                    s8 += fabs(t) + fabs(u);
                }
                if (!(fabs(got - r8) <= (nb + ng + 8) * 0x1p-24 * s8 * 2))
                    fail_msg("%s: C[%d][%d] = %.9g, int8 arithmetic gives %.9g", what, m, n, got, r8);
                err2 += (got - ref) * (got - ref);
                ref2 += ref * ref;
            }
        }
        for (size_t n = (size_t)N; n < ldc; n++)
            if (C[(size_t)m * ldc + n] != PAD) fail_msg("%s: C[%d][%zu] written past N", what, m, n);
    }
    if (int8 && !(sqrt(err2) <= 1e-2 * sqrt(ref2)))
        fail_msg("%s: relative L2 error %g against the exact product", what, sqrt(err2 / ref2));
    free(scratch);
    free(abuf);
    free(A);
    free(C);
}

static void variants_listed(void **state)
{
    (void)state;
    assert_true(q_isa_supported(Q_ISA_C));
    assert_true(q_isa_supported(q_isa_best()));
    for (int i = 0; i < Q_ISA_COUNT; i++)
        print_message("qgemm variant %-8s %s\n", q_isa_name((q_isa)i),
                      q_isa_supported((q_isa)i) ? "supported" : "not supported here (skipped)");
    assert_true(q_layout_ok(4, 64, 128));
    assert_false(q_layout_ok(7, 64, 128));
    assert_false(q_layout_ok(4, 48, 96));
    assert_false(q_layout_ok(4, 64, 96));
}

/* Every variant x bits x group size x M, one odd N, bf16 scales. */
static void every_variant(void **state)
{
    (void)state;
    static const int bits_list[] = {2, 3, 4, 5, 6, 8}, gs_list[] = {32, 64, 128}, Ms[] = {1, 2, 3, 7, 9, 64};
    for (size_t bi = 0; bi < sizeof bits_list / sizeof *bits_list; bi++)
        for (size_t gi = 0; gi < sizeof gs_list / sizeof *gs_list; gi++) {
            /* K: 9 groups (with group size 32 a last half chunk of 64; with
             * 64 and 128 more than one K block of the GEMMs); then an odd
             * number of chunks of 128 before a tail of 64 (or none, 384) */
            const int gs = gs_list[gi], Ks[2] = {9 * gs, gs == 128 ? 384 : 448}, N = 37;
            for (int ki = 0; ki < 2; ki++) {
                qmat qm;
                make_q(&qm, N + 5, Ks[ki], bits_list[bi], gs, DT_BF16);
                for (int isa = 0; isa < Q_ISA_COUNT; isa++) {
                    if (!q_isa_supported((q_isa)isa)) continue;
                    for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++)
                        for (int int8 = 0; int8 < 2; int8++) check_one((q_isa)isa, int8, &qm, 3, N, Ms[mi]);
                }
                free_q(&qm);
            }
        }
}

/* f16 and f32 scales; N across the GEMMs' blocks of rows; long K. */
static void scale_dtypes_and_blocks(void **state)
{
    (void)state;
    static const infer_dtype st[] = {DT_F16, DT_F32};
    for (int s = 0; s < 2; s++)
        for (int isa = 0; isa < Q_ISA_COUNT; isa++) {
            if (!q_isa_supported((q_isa)isa)) continue;
            qmat qm;
            make_q(&qm, 301, 1088, 4, 64, st[s]);
            for (int int8 = 0; int8 < 2; int8++) {
                check_one((q_isa)isa, int8, &qm, 0, 301, 2);
                check_one((q_isa)isa, int8, &qm, 0, 301, 33);
            }
            free_q(&qm);
            make_q(&qm, 70, 2048, 8, 128, st[s]);
            for (int int8 = 0; int8 < 2; int8++) check_one((q_isa)isa, int8, &qm, 1, 69, 17);
            free_q(&qm);
        }
}

/* An all-zero block of activations (d = 0) and large values. */
static void zero_and_large_activations(void **state)
{
    (void)state;
    for (int isa = 0; isa < Q_ISA_COUNT; isa++) {
        if (!q_isa_supported((q_isa)isa)) continue;
        qmat qm;
        make_q(&qm, 9, 256, 4, 32, DT_BF16);
        for (int M = 1; M <= 12; M += 11) {
            float *A = calloc((size_t)M * 256, sizeof *A), *C = malloc((size_t)M * 9 * sizeof *C);
            assert_true(A && C);
            for (int m = 0; m < M; m++)
                for (int k = 64; k < 256; k++) A[m * 256 + k] = (k % 7 - 3) * 1e4f;
            for (int int8 = 0; int8 < 2; int8++) {
                q_act x;
                void *abuf = malloc(q_act_bytes(M, 256, &qm.w, int8));
                assert_non_null(abuf);
                q_act_init(&x, abuf, M, 256, A, 256, &qm.w, int8);
                q_act_rows_isa((q_isa)isa, &x, 0, M);
                void *scratch = malloc(qgemm_scratch_bytes(&x, 9));
                assert_non_null(scratch);
                qgemm_nt_isa((q_isa)isa, &x, &qm.w, 0, 9, C, 9, scratch);
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < 9; n++) {
                        double ref = 0.0, sa = 0.0;
                        for (int k = 0; k < 256; k++) {
                            ref += wval(&qm, n, k) * A[m * 256 + k];
                            sa += fabs(wval(&qm, n, k) * A[m * 256 + k]);
                        }
                        double tol = int8 ? 1e-2 * sa : 260 * 0x1p-24 * sa;
                        if (!(fabs(C[m * 9 + n] - ref) <= tol))
                            fail_msg("%s %s M=%d: C[%d][%d] = %g, want %g", q_isa_name((q_isa)isa),
                                     int8 ? "int8" : "exact", M, m, n, C[m * 9 + n], ref);
                    }
                free(scratch);
                free(abuf);
            }
            free(A);
            free(C);
        }
        free_q(&qm);
    }
}

/* q_unpack_u8 for every width against the packing definition: long runs
 * (AVX-512 VBMI where the cpu has it) and pieces of 8 values (the portable
 * loop), from several starting columns. */
static void unpack_every_width(void **state)
{
    (void)state;
    static const int bits_list[] = {2, 3, 4, 5, 6, 8};
    for (size_t bi = 0; bi < sizeof bits_list / sizeof *bits_list; bi++) {
        const int bits = bits_list[bi], K = 448;
        qmat qm;
        make_q(&qm, 1, K, bits, 32, DT_BF16);
        uint8_t a[448], b[448];
        for (int c0 = 0; c0 < 128; c0 += 64) {
            q_unpack_u8(qm.w.data, bits, c0, K - c0 - 8, a);
            for (int c = c0; c < K - 8; c += 8) q_unpack_u8(qm.w.data, bits, c, 8, b + c - c0);
            for (int c = c0; c < K - 8; c++)
                if (a[c - c0] != qm.q[c] || b[c - c0] != qm.q[c])
                    fail_msg("%d bits from %d: value %d unpacked as %d (run) and %d (pieces), want %d", bits, c0, c,
                             a[c - c0], b[c - c0], qm.q[c]);
        }
        free_q(&qm);
    }
}

/* The tiled layout (qgemm.h) of 4- and 8-bit weights: q_dequant_row reads
 * it in place, q_untile gives the rows back bit for bit, and every variant
 * and shape computes from it what check_one asks of the row layout (the
 * tiled decode kernel for int8 and M <= Q_SMALL_M, the untiled rows for
 * the rest); blocks of rows that start and end inside a tile too. */
static void tiled_layout(void **state)
{
    (void)state;
    for (extremes = 0; extremes < 2; extremes++) {
    static const int bits_list[] = {4, 8}, gs_list[] = {32, 64, 128}, Ms[] = {1, 2, 3, 7, 9, 20};
    static const infer_dtype st[] = {DT_BF16, DT_F16, DT_F32};
    for (size_t bi = 0; bi < 2; bi++)
        for (size_t gi = 0; gi < 3; gi++) {
            const int gs = gs_list[gi], bits = bits_list[bi], rows = 48, K = gs == 128 ? 384 : 9 * gs;
            qmat qm;
            make_q(&qm, rows, K, bits, gs, st[gi]);
            assert_true(q_tile_ok(&qm.w));
            const size_t tbytes = q_tile_bytes(&qm.w);
            assert_int_equal(tbytes % 64, 0);
            unsigned char *tq = aligned_alloc(64, tbytes);
            assert_non_null(tq);
            q_tile_pack(&qm.w, 0, 1, tq); /* in two calls, as the backend's tasks do */
            q_tile_pack(&qm.w, 1, rows / BK_TILE_ROWS, tq);
            qmat tm = qm;
            tm.w.data = tq;
            tm.w.scales = tm.w.biases = NULL;
            tm.w.tiled = 1;
            assert_false(q_tile_ok(&tm.w));
            float row[384 * 3], want[384 * 3];
            for (int r = 0; r < rows; r += 7) {
                q_dequant_row(&tm.w, r, 5, K - 5, row);
                q_dequant_row(&qm.w, r, 5, K - 5, want);
                for (int c = 5; c < K; c++)
                    if (row[c - 5] != want[c - 5] || !(fabs(row[c - 5] - wval(&qm, r, c)) <= 1e-6))
                        fail_msg("tiled %d-bit gs=%d: q_dequant_row(%d)[%d] = %g, want %g", bits, gs, r, c, row[c - 5],
                                 wval(&qm, r, c));
            }
            bk_weight view;
            void *ub = malloc(q_untile_bytes(&tm.w, 21));
            assert_non_null(ub);
            q_untile(&tm.w, 13, 21, ub, &view);
            assert_int_equal(view.rows, 21);
            assert_false(view.tiled);
            assert_memory_equal(view.data, (const unsigned char *)qm.w.data + 13 * bk_qrow_bytes(&qm.w),
                                21 * bk_qrow_bytes(&qm.w));
            assert_memory_equal(view.scales, (const unsigned char *)qm.w.scales + (size_t)13 * (K / gs) * dtype_size(st[gi]),
                                (size_t)21 * (K / gs) * dtype_size(st[gi]));
            assert_memory_equal(view.biases, (const unsigned char *)qm.w.biases + (size_t)13 * (K / gs) * dtype_size(st[gi]),
                                (size_t)21 * (K / gs) * dtype_size(st[gi]));
            free(ub);
            for (int isa = 0; isa < Q_ISA_COUNT; isa++) {
                if (!q_isa_supported((q_isa)isa)) continue;
                for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++)
                    for (int int8 = 0; int8 < 2; int8++) {
                        check_one((q_isa)isa, int8, &tm, 3, 37, Ms[mi]);
                        check_one((q_isa)isa, int8, &tm, 16, 32, Ms[mi]);
                    }
            }
            free(tq);
            free_q(&qm);
        }
    }
    extremes = 0;
}

/* ---- cpu_matmul through the backend ---- */


static void matmul_threads_agree(void **state)
{
    (void)state;
    static const int Ts[] = {1, 3, 8, 9, 40};
    qmat qm;
    const int rows = 533, cols = 384;
    make_q(&qm, rows, cols, 4, 64, DT_BF16);
    float bias_f[533];
    for (int r = 0; r < rows; r++) bias_f[r] = frand();
    bk_weight bias = {.data = bias_f, .dtype = DT_F32, .rows = 1, .cols = rows};
    for (size_t t = 0; t < sizeof Ts / sizeof *Ts; t++)
        for (int int8 = 0; int8 < 2; int8++) {
            int T = Ts[t];
            float *x = malloc((size_t)T * cols * sizeof *x);
            float *y1 = malloc((size_t)T * rows * sizeof *y1), *y3 = malloc((size_t)T * rows * sizeof *y3);
            assert_true(x && y1 && y3);
            for (size_t i = 0; i < (size_t)T * cols; i++) x[i] = frand();
            test_cpu_matmul(1, int8, &qm.w, &bias, x, T, y1);
            test_cpu_matmul(3, int8, &qm.w, &bias, x, T, y3);
            double err2 = 0.0, ref2 = 0.0;
            for (int i = 0; i < T; i++)
                for (int r = 0; r < rows; r++) {
                    double ref = bias_f[r], sa = fabs(ref);
                    for (int k = 0; k < cols; k++) {
                        double p = (double)x[(size_t)i * cols + k] * wval(&qm, r, k);
                        ref += p;
                        sa += fabs(p);
                    }
                    float a = y1[(size_t)i * rows + r], b = y3[(size_t)i * rows + r];
                    if (a != b || isnan(a) || (!int8 && !(fabs(a - ref) <= (cols + 4) * 0x1p-24 * sa)))
                        fail_msg("%s T=%d: y[%d][%d] = %.9g (1 thread), %.9g (3 threads), want %.9g",
                                 int8 ? "int8" : "exact", T, i, r, a, b, ref);
                    err2 += (a - ref) * (a - ref);
                    ref2 += ref * ref;
                }
            if (!(sqrt(err2) <= 1e-2 * sqrt(ref2))) fail_msg("int8 T=%d: relative L2 error %g", T, sqrt(err2 / ref2));
            free(x);
            free(y1);
            free(y3);
        }
    free_q(&qm);
}

/* matmul_n (several products of one x as one job) gives each product's
 * bytes exactly as matmul alone does: quantized and float weights, with
 * and without biases, one layout and mixed layouts (one after another). */
static void matmul_n_is_matmul(void **state)
{
    (void)state;
    const backend_ops *be = &backend_cpu;
    const int cols = 256;
    qmat q[3];
    make_q(&q[0], 96, cols, 4, 64, DT_BF16);
    make_q(&q[1], 40, cols, 4, 64, DT_BF16);
    make_q(&q[2], 40, cols, 8, 32, DT_BF16); /* another layout */
    uint16_t *fw = malloc((size_t)72 * cols * 2);
    assert_non_null(fw);
    for (int i = 0; i < 72 * cols; i++) fw[i] = f32_to_bf16(frand());
    bk_weight f[2] = {{.data = fw, .dtype = DT_BF16, .rows = 40, .cols = cols},
                      {.data = fw + 40 * cols, .dtype = DT_BF16, .rows = 32, .cols = cols}};
    float bias_f[96];
    for (int r = 0; r < 96; r++) bias_f[r] = frand();
    bk_weight bias = {.data = bias_f, .dtype = DT_F32, .rows = 1, .cols = 96};
    for (int int8 = 0; int8 < 2; int8++)
        for (int T = 1; T <= 9; T += 4)
            for (int set = 0; set < 3; set++) {
                const bk_weight *ws[3];
                const bk_weight *bs[3] = {&bias, NULL, NULL};
                int n = set == 2 ? 2 : 3;
                for (int i = 0; i < n; i++) ws[i] = set == 0 ? &q[i < 2 ? i : 1].w : set == 1 ? &q[i].w : &f[i];
                if (set == 2) bs[0] = NULL;
                bk_opts o = {.n_threads = 2, .cpu_int8 = int8};
                void *ctx = NULL, *dx = NULL, *dy[3], *dz[3];
                assert_int_equal(be->create(&o, &ctx), 0);
                float *x = malloc((size_t)T * cols * 4);
                assert_non_null(x);
                for (int i = 0; i < T * cols; i++) x[i] = frand();
                assert_int_equal(be->alloc(ctx, (size_t)T * cols * 4, &dx), 0);
                assert_int_equal(be->upload(ctx, dx, x, (size_t)T * cols * 4), 0);
                for (int i = 0; i < n; i++) {
                    assert_int_equal(be->alloc(ctx, (size_t)T * ws[i]->rows * 4, &dy[i]), 0);
                    assert_int_equal(be->alloc(ctx, (size_t)T * ws[i]->rows * 4, &dz[i]), 0);
                    assert_int_equal(be->matmul(ctx, dz[i], dx, ws[i], bs[i], T), 0);
                }
                assert_int_equal(be->matmul_n(ctx, dy, dx, ws, bs, n, T), 0);
                for (int i = 0; i < n; i++) {
                    assert_memory_equal(dy[i], dz[i], (size_t)T * ws[i]->rows * 4);
                    be->free(ctx, dy[i]);
                    be->free(ctx, dz[i]);
                }
                be->free(ctx, dx);
                free(x);
                be->destroy(ctx);
            }
    const bk_weight *five[5] = {&f[0], &f[0], &f[0], &f[0], &f[0]};
    const bk_weight *nob[5] = {NULL};
    void *ys[5] = {NULL};
    void *ctx = NULL;
    bk_opts o = {.n_threads = 1};
    assert_int_equal(be->create(&o, &ctx), 0);
    assert_int_equal(be->matmul_n(ctx, ys, NULL, five, nob, 5, 1), INFER_ERR_INVALID_ARGUMENT);
    be->destroy(ctx);
    for (int i = 0; i < 3; i++) free_q(&q[i]);
    free(fw);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(variants_listed),
    cmocka_unit_test(every_variant),
    cmocka_unit_test(scale_dtypes_and_blocks),
    cmocka_unit_test(zero_and_large_activations),
    cmocka_unit_test(unpack_every_width),
    cmocka_unit_test(tiled_layout),
    cmocka_unit_test(matmul_threads_agree),
    cmocka_unit_test(matmul_n_is_matmul),
};

TEST_GROUP(test_qgemm, tests)
