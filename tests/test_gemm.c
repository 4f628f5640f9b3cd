/* test_gemm.c - gemm_nt (every variant this machine supports) against a
 * double-precision reference, and cpu_matmul with 1 and 3 threads. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/gemm.h"
#include "core/dtype.h"
#include "test.h"

/* A small deterministic generator (xorshift), values in [-1, 1). */
static uint32_t rng_state = 12345u;
static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return (float)((rng_state >> 8) * (1.0 / 8388608.0) - 1.0);
}

/* B stored in dtype dt at an arbitrary byte offset, and its values as the
 * kernels must see them. */
typedef struct stored_b {
    unsigned char *mem; /* allocation */
    unsigned char *p;   /* mem + offset */
    double *val;        /* [N][K] */
} stored_b;

static void make_b(stored_b *s, int N, int K, size_t ldb, infer_dtype dt, size_t offset)
{
    size_t es = dtype_size(dt);
    size_t bytes = (size_t)N * ldb * es;
    s->mem = malloc(bytes + offset + 1);
    s->val = malloc((size_t)N * (size_t)K * sizeof *s->val);
    assert_non_null(s->mem);
    assert_non_null(s->val);
    memset(s->mem, 0xff, bytes + offset + 1); /* padding reads as NaN */
    s->p = s->mem + offset;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            float f = frand();
            unsigned char *q = s->p + ((size_t)n * ldb + (size_t)k) * es;
            double v;
            if (dt == DT_F32) {
                memcpy(q, &f, 4);
                v = f;
            } else if (dt == DT_BF16) {
                uint16_t h = f32_to_bf16(f);
                memcpy(q, &h, 2);
                v = bf16_to_f32(h);
            } else {
                uint16_t h = f32_to_f16(f);
                memcpy(q, &h, 2);
                v = f16_to_f32(h);
            }
            s->val[(size_t)n * K + k] = v;
        }
}

static void free_b(stored_b *s)
{
    free(s->mem);
    free(s->val);
}

static const float PAD = 12345.0f; /* C padding past N: must stay */

/* Runs one variant on one shape and checks every element of C. */
static void check_one(gemm_isa isa, int M, int N, int K, size_t lda, size_t ldc, const float *A,
                      const stored_b *b, infer_dtype dt, size_t ldb, const double *ref,
                      const double *bound)
{
    float *C = malloc((size_t)M * ldc * sizeof *C);
    size_t np = gemm_pack_floats(M, N, K);
    float *pack = malloc(np * sizeof *pack);
    assert_non_null(C);
    assert_non_null(pack);
    for (int m = 0; m < M; m++)
        for (size_t n = 0; n < ldc; n++) C[(size_t)m * ldc + n] = (int)n < N ? NAN : PAD;
    for (size_t i = 0; i < np; i++) pack[i] = NAN;
    gemm_nt_isa(isa, M, N, K, A, lda, b->p, dt, ldb, C, ldc, pack);
    double err2 = 0.0, ref2 = 0.0;
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            double c = C[(size_t)m * ldc + n], r = ref[(size_t)m * N + n];
            double tol = 1e-5 * bound[(size_t)m * N + n] + 1e-30;
            if (!(fabs(c - r) <= tol))
                fail_msg("%s %s M=%d N=%d K=%d: C[%d][%d] = %g, want %g (tol %g)",
                         gemm_isa_name(isa), dtype_name(dt), M, N, K, m, n, c, r, tol);
            err2 += (c - r) * (c - r);
            ref2 += r * r;
        }
        for (size_t n = (size_t)N; n < ldc; n++)
            if (C[(size_t)m * ldc + n] != PAD)
                fail_msg("%s M=%d N=%d K=%d: wrote C[%d][%zu] past N", gemm_isa_name(isa), M, N, K,
                         m, n);
    }
    if (!(sqrt(err2) <= 1e-5 * sqrt(ref2) + 1e-30))
        fail_msg("%s %s M=%d N=%d K=%d: relative error %g", gemm_isa_name(isa), dtype_name(dt), M,
                 N, K, sqrt(err2 / (ref2 > 0 ? ref2 : 1)));
    free(C);
    free(pack);
}

/* Every supported variant on M x N x K with B of dtype dt at a byte offset. */
static void check_shape(int M, int N, int K, infer_dtype dt, size_t offset, int pad)
{
    size_t lda = (size_t)K + (pad ? 3 : 0), ldb = (size_t)K + (pad ? 5 : 0),
           ldc = (size_t)N + (pad ? 2 : 0);
    float *A = malloc((size_t)M * lda * sizeof *A);
    assert_non_null(A);
    for (size_t i = 0; i < (size_t)M * lda; i++) A[i] = (i % lda) < (size_t)K ? frand() : NAN;
    stored_b b;
    make_b(&b, N, K, ldb, dt, offset);
    double *ref = malloc((size_t)M * N * sizeof *ref), *bound = malloc((size_t)M * N * sizeof *bound);
    assert_non_null(ref);
    assert_non_null(bound);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0.0, sa = 0.0;
            for (int k = 0; k < K; k++) {
                double t = (double)A[(size_t)m * lda + k] * b.val[(size_t)n * K + k];
                s += t;
                sa += fabs(t);
            }
            ref[(size_t)m * N + n] = s;
            bound[(size_t)m * N + n] = sa;
        }
    for (int isa = 0; isa < GEMM_ISA_COUNT; isa++)
        if (gemm_isa_supported((gemm_isa)isa))
            check_one((gemm_isa)isa, M, N, K, lda, ldc, A, &b, dt, ldb, ref, bound);
    free(A);
    free(ref);
    free(bound);
    free_b(&b);
}

static const infer_dtype dts[] = {DT_F32, DT_BF16, DT_F16};

static void variants_listed(void **state)
{
    (void)state;
    assert_true(gemm_isa_supported(GEMM_ISA_C));
    assert_true(gemm_isa_supported(gemm_isa_best()));
    char line[128] = "";
    for (int i = 0; i < GEMM_ISA_COUNT; i++)
        if (gemm_isa_supported((gemm_isa)i)) {
            strcat(line, " ");
            strcat(line, gemm_isa_name((gemm_isa)i));
        }
    print_message("  gemm variants:%s (best %s)\n", line, gemm_isa_name(gemm_isa_best()));
    assert_true(gemm_pack_floats(1, 1, 1) >= 1);
}

static void many_shapes(void **state)
{
    (void)state;
    static const int Ms[] = {1, 2, 3, 5, 7, 17, 64};
    static const int Ns[] = {1, 3, 31, 33, 100, 257};
    static const int Ks[] = {1, 3, 31, 33, 100, 257};
    int i = 0;
    for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
        for (size_t b = 0; b < sizeof Ns / sizeof *Ns; b++)
            for (size_t c = 0; c < sizeof Ks / sizeof *Ks; c++)
                for (int d = 0; d < 3; d++, i++) {
                    /* odd byte offsets, padded strides every other time */
                    size_t offset = (size_t)(i % 4) * 2 + 1; /* 1, 3, 5, 7 */
                    check_shape(Ms[a], Ns[b], Ks[c], dts[d], offset, (i / 3) % 2);
                }
}

static void every_dtype_and_offset(void **state)
{
    (void)state;
    for (int d = 0; d < 3; d++)
        for (size_t off = 0; off < 4; off++) {
            check_shape(1, 33, 100, dts[d], off, 1);
            check_shape(2, 31, 257, dts[d], off, 0);
            check_shape(5, 40, 70, dts[d], off, 1);
            check_shape(17, 65, 300, dts[d], off, 0);
        }
}

static void long_k(void **state)
{
    (void)state;
    static const int Ms[] = {1, 2, 3, 7, 17, 64};
    for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
        for (int d = 0; d < 3; d++) {
            check_shape(Ms[a], 33, 2048, dts[d], 1, 1);
            check_shape(Ms[a], 100, 2047, dts[d], 3, 0);
        }
}

static void large_blocks(void **state)
{
    (void)state;
    /* several M, N and K blocks, ragged at every end */
    check_shape(1100, 45, 530, DT_BF16, 1, 1);
    check_shape(70, 600, 600, DT_F32, 3, 0);
    check_shape(29, 300, 1000, DT_F16, 1, 1);
}

static void degenerate(void **state)
{
    (void)state;
    float A[4] = {1, 2, 3, 4}, C[4] = {NAN, NAN, NAN, NAN};
    uint16_t B[4] = {0x3f80, 0x3f80, 0x3f80, 0x3f80};
    float *pack = malloc(gemm_pack_floats(2, 2, 2) * sizeof *pack);
    assert_non_null(pack);
    gemm_nt(2, 2, 0, A, 2, B, DT_BF16, 2, C, 2, pack); /* K = 0: zeros */
    for (int i = 0; i < 4; i++) assert_true(C[i] == 0.0f);
    C[0] = NAN;
    gemm_nt(0, 2, 2, A, 2, B, DT_BF16, 2, C, 2, pack); /* nothing to do */
    gemm_nt(2, 0, 2, A, 2, B, DT_BF16, 2, C, 2, pack);
    assert_true(isnan(C[0]));
    free(pack);
}

/* ---- cpu_matmul through the backend (test_cpu_matmul) ---- */

static void matmul_threads_agree(void **state)
{
    (void)state;
    static const int Ts[] = {1, 2, 3, 7, 40};
    static const int shapes[][2] = {{300, 200}, {1000, 64}, {37, 129}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int d = 0; d < 3; d++) {
            int rows = shapes[s][0], cols = shapes[s][1];
            stored_b wb, bb;
            make_b(&wb, rows, cols, (size_t)cols, dts[d], 1);
            make_b(&bb, 1, rows, (size_t)rows, dts[d], 3);
            bk_weight w = {.data = wb.p, .dtype = dts[d], .rows = rows, .cols = cols};
            bk_weight bias = {.data = bb.p, .dtype = dts[d], .rows = 1, .cols = rows};
            for (size_t t = 0; t < sizeof Ts / sizeof *Ts; t++) {
                int T = Ts[t];
                float *x = malloc((size_t)T * cols * sizeof *x);
                float *y1 = malloc((size_t)T * rows * sizeof *y1), *y3 = malloc((size_t)T * rows * sizeof *y3);
                assert_non_null(x);
                assert_non_null(y1);
                assert_non_null(y3);
                for (size_t i = 0; i < (size_t)T * cols; i++) x[i] = frand();
                test_cpu_matmul(1, 0, &w, &bias, x, T, y1);
                test_cpu_matmul(3, 0, &w, &bias, x, T, y3);
                for (int i = 0; i < T; i++)
                    for (int r = 0; r < rows; r++) {
                        double ref = bb.val[r], sa = fabs(ref);
                        for (int k = 0; k < cols; k++) {
                            double p = (double)x[(size_t)i * cols + k] * wb.val[(size_t)r * cols + k];
                            ref += p;
                            sa += fabs(p);
                        }
                        float a = y1[(size_t)i * rows + r], b = y3[(size_t)i * rows + r];
                        if (!(fabs(a - ref) <= 1e-5 * sa) || a != b)
                            fail_msg("%s T=%d [%d x %d]: y[%d][%d] = %g (1 thread), %g (3 threads), want %g",
                                     dtype_name(dts[d]), T, rows, cols, i, r, a, b, ref);
                    }
                free(x);
                free(y1);
                free(y3);
            }
            free_b(&wb);
            free_b(&bb);
        }
}

/* The cpu backend's attention over KV caches against a double-precision
 * reference, at head sizes its vector paths treat apart (16, 64, 80, 128,
 * 256), with grouped heads, a ring that wraps under a sliding window, a
 * prefill chunk beside a decode row, and softcapping. */
static void *up(void *ctx, const void *src, size_t bytes)
{
    const backend_ops *be = &backend_cpu;
    void *d = NULL;
    assert_int_equal(be->alloc(ctx, bytes, &d), 0);
    assert_int_equal(be->upload(ctx, d, src, bytes), 0);
    return d;
}

static void attention_kv_head_dims(void **state)
{
    (void)state;
    const backend_ops *be = &backend_cpu;
    static const int dims[] = {16, 64, 80, 128, 256};
    enum { B = 2, CAP = 24, H = 4, KVH = 2, N = 4 };
    const int32_t q_start[B + 1] = {0, 1, 4}, kv_len[B] = {30, 12}, slot[B] = {1, 0};
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++)
        for (int variant = 0; variant < 2; variant++) {
            const int d = dims[di], window = 10;
            const float softcap = variant ? 3.0f : 0.0f, scale = 1.0f / sqrtf((float)d);
            const size_t row = (size_t)KVH * d, cache = (size_t)B * CAP * row, qn = (size_t)N * H * d;
            float *kc = malloc(cache * 4), *vc = malloc(cache * 4), *q = malloc(qn * 4), *out = malloc(qn * 4);
            assert_true(kc && vc && q && out);
            for (size_t i = 0; i < cache; i++) {
                kc[i] = frand();
                vc[i] = frand();
            }
            for (size_t i = 0; i < qn; i++) q[i] = 2.0f * frand();
            bk_opts o = {.n_threads = 2};
            void *ctx = NULL;
            assert_int_equal(be->create(&o, &ctx), 0);
            void *dk = up(ctx, kc, cache * 4), *dv = up(ctx, vc, cache * 4), *dq = up(ctx, q, qn * 4);
            void *dqs = up(ctx, q_start, sizeof q_start), *dkl = up(ctx, kv_len, sizeof kv_len),
                 *dsl = up(ctx, slot, sizeof slot), *dout = NULL;
            assert_int_equal(be->alloc(ctx, qn * 4, &dout), 0);
            bk_attn_kv p = {.B = B, .N = N, .cap = CAP, .q_start = dqs, .kv_len = dkl, .slot = dsl, .n_heads = H,
                            .n_kv_heads = KVH, .head_dim = d, .scale = scale, .softcap = softcap, .window = window};
            assert_int_equal(be->attention_kv(ctx, dout, dq, dk, dv, &p), 0);
            assert_int_equal(be->download(ctx, out, dout, qn * 4), 0);
            for (int b = 0; b < B; b++)
                for (int r = q_start[b]; r < q_start[b + 1]; r++)
                    for (int h = 0; h < H; h++) {
                        const int pos = kv_len[b] - (q_start[b + 1] - q_start[b]) + (r - q_start[b]), kvh = h / (H / KVH);
                        int lo = kv_len[b] - CAP > 0 ? kv_len[b] - CAP : 0;
                        if (pos - window + 1 > lo) lo = pos - window + 1;
                        double sc[CAP], mx = -INFINITY, sum = 0.0;
                        const float *qv = q + ((size_t)r * H + h) * d;
                        for (int j = lo; j <= pos; j++) {
                            const float *kv = kc + ((size_t)slot[b] * CAP + j % CAP) * row + (size_t)kvh * d;
                            double t = 0.0;
                            for (int e = 0; e < d; e++) t += (double)qv[e] * kv[e];
                            t *= scale;
                            if (softcap > 0.0f) t = softcap * tanh(t / softcap);
                            sc[j - lo] = t;
                            if (t > mx) mx = t;
                        }
                        for (int j = lo; j <= pos; j++) sum += (sc[j - lo] = exp(sc[j - lo] - mx));
                        for (int e = 0; e < d; e++) {
                            double want = 0.0;
                            for (int j = lo; j <= pos; j++)
                                want += sc[j - lo] / sum * vc[((size_t)slot[b] * CAP + j % CAP) * row + (size_t)kvh * d + e];
                            float got = out[((size_t)r * H + h) * d + e];
                            if (!(fabs(got - want) <= 1e-5))
                                fail_msg("head_dim %d softcap %g: row %d head %d [%d] = %.7g, want %.7g", d, softcap, r, h,
                                         e, got, want);
                        }
                    }
            void *bufs[] = {dk, dv, dq, dqs, dkl, dsl, dout};
            for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) be->free(ctx, bufs[i]);
            be->destroy(ctx);
            free(kc);
            free(vc);
            free(q);
            free(out);
        }
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(variants_listed),      cmocka_unit_test(many_shapes),
    cmocka_unit_test(every_dtype_and_offset), cmocka_unit_test(long_k),
    cmocka_unit_test(large_blocks),         cmocka_unit_test(degenerate),
    cmocka_unit_test(matmul_threads_agree),
    cmocka_unit_test(attention_kv_head_dims),
};

TEST_GROUP(test_gemm, tests)
