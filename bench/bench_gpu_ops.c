/* bench_gpu_ops.c - the cuda backend's decode products, op by op, against
 * the device's copy bandwidth measured in the same run.
 *
 *   build/bench/bench_gpu_ops [REPS [N K [T]]]
 *   build/bench/bench_gpu_ops lora [REPS]
 *
 * With N and K, only a 4-bit (g64) N x K weight (for a profiler: one
 * kernel's runs), with T rows of x (default 1).
 * For each weight format and shape: y = x . W^T with one row of x (decode),
 * REPS (default 200) products queued back to back over a rotation of
 * weight copies larger than the L2 cache, timed with a synchronize at the
 * end; GB/s of weight bytes read (packed values + scales + biases), and the
 * ratio to the copy bandwidth (bytes read + written of a 512 MiB
 * device-to-device copy).  Also the time of one small op (rmsnorm of one
 * row), which bounds what a decode step of many ops can reach.  Then
 * products of 16 to 512 rows of x (batched decode, classification,
 * prefill) on a few shapes: GB/s of weights and TFLOP/s.  With "lora":
 * LoRA's rank-r products at training's shapes instead (lora_ops). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "bench_bw.h"
#include "core/dtype.h"
#include "infer.h"

static const backend_ops *be;
static void *ctx;

static void die(const char *what)
{
    fprintf(stderr, "bench_gpu_ops: %s: %s\n", what, infer_last_error());
    exit(1);
}

static void *dev(size_t n)
{
    void *p;
    if (be->alloc(ctx, n, &p)) die("alloc");
    return p;
}

/* A weight format and a matrix shape N x K. */
typedef struct shape {
    const char *name;
    infer_dtype dt;
    int bits;
    int64_t n, k;
} shape;

/* Microseconds a product y[T, N] = x[T, K] . W^T takes, queued reps times
 * over a rotation of weight copies larger than the L2 cache; *bytes: the
 * weight bytes one product reads. */
static double time_product(infer_dtype dt, int bits, int64_t N, int64_t K, int T, int reps, double *bytes)
{
    size_t wbytes = bits ? (size_t)N * K * bits / 8 : (size_t)N * K * 2;
    size_t sbytes = bits ? (size_t)N * (K / 64) * 2 : 0;
    size_t one = wbytes + 2 * sbytes;
    int copies = (int)((256u << 20) / one) + 1;
    if (copies > 64) copies = 64;
    bk_weight *w = calloc((size_t)copies, sizeof *w);
    unsigned char *host = malloc(wbytes > sbytes ? wbytes : sbytes);
    if (!w || !host) die("out of memory");
    for (size_t i = 0; i < (wbytes > sbytes ? wbytes : sbytes); i++) host[i] = (unsigned char)(i * 2654435761u >> 13);
    for (size_t i = 0; i + 1 < sbytes; i += 2) host[i + 1] = 0x3c; /* bf16 scales and biases near 0.01 */
    for (int i = 0; i < copies; i++) {
        w[i] = (bk_weight){.data = host, .dtype = bits ? DT_U32 : dt, .rows = N, .cols = K, .bits = bits,
                           .group_size = 64, .scales = bits ? host : NULL, .biases = bits ? host : NULL,
                           .sdtype = DT_BF16};
        if (be->weight_prepare(ctx, &w[i])) die("weight_prepare");
    }
    size_t nx = (size_t)T * (size_t)K;
    float *xh = malloc(nx * 4);
    if (!xh) die("out of memory");
    for (size_t i = 0; i < nx; i++) xh[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    void *x = dev(nx * 4), *y = dev((size_t)T * (size_t)N * 4);
    if (be->upload(ctx, x, xh, nx * 4)) die("upload");
    for (int i = 0; i < copies; i++)
        if (be->matmul(ctx, y, x, &w[i], NULL, T)) die("matmul");
    be->synchronize(ctx);
    double t0 = bench_now();
    for (int r = 0; r < reps; r++)
        if (be->matmul(ctx, y, x, &w[r % copies], NULL, T)) die("matmul");
    if (be->synchronize(ctx)) die("synchronize");
    double us = (bench_now() - t0) / reps * 1e6;
    for (int i = 0; i < copies; i++) be->weight_release(ctx, &w[i]);
    be->free(ctx, x);
    be->free(ctx, y);
    free(w);
    free(host);
    free(xh);
    *bytes = (double)one;
    return us;
}

/* LoRA's rank-r products at training's shapes (2048 rows): the time of
 * each, and the rate at which it moves its large side (read, or read and
 * written where it adds into y), against the copy bandwidth. */
static void lora_ops(double bw, int reps)
{
    static const struct {
        int r, L;
    } sh[] = {{8, 4096}, {8, 1024}, {8, 1152}, {8, 256}, {16, 4096}, {64, 4096}};
    const int T = 2048;
    printf("\nLoRA products, %d rows: us a call, GB/s of the large side, ratio to the copy\n", T);
    printf("%4s %6s | %-22s %9s %9s %6s\n", "r", "L", "op", "us/call", "GB/s", "ratio");
    for (size_t c = 0; c < sizeof sh / sizeof sh[0]; c++) {
        const int r = sh[c].r, L = sh[c].L;
        const size_t nl = (size_t)T * L, nr = (size_t)T * r;
        float *h = malloc(nl * 4);
        if (!h) die("out of memory");
        for (size_t i = 0; i < nl; i++) h[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        bk_weight A = {.data = h, .dtype = DT_F32, .rows = r, .cols = L};
        bk_weight B = {.data = h, .dtype = DT_F32, .rows = L, .cols = r};
        if (be->weight_prepare(ctx, &A) || be->weight_prepare(ctx, &B)) die("weight_prepare");
        void *xl = dev(nl * 4), *yl = dev(nl * 4), *tr = dev(nr * 4), *g = dev((size_t)r * L * 4), *tmp = dev(nl * 4);
        if (be->upload(ctx, xl, h, nl * 4) || be->upload(ctx, yl, h, nl * 4) || be->upload(ctx, tr, h, nr * 4))
            die("upload");
        for (int op = 0; op < 6; op++) {
            static const char *names[] = {"x A^T (thin)", "y += t B^T (expand)", "dy B (thin, B's)",
                                          "dx += dt A (expand)", "dw B (reduce)", "dw A (reduce)"};
            const double bytes = (op == 1 || op == 3 ? 2.0 : 1.0) * (double)nl * 4;
            double t0 = 0.0;
            for (int it = -2; it < reps; it++) {
                if (it == 0) {
                    be->synchronize(ctx);
                    t0 = bench_now();
                }
                int rc = op == 0   ? be->matmul(ctx, tr, xl, &A, NULL, T)
                         : op == 1 ? be->matmul_add(ctx, yl, tr, NULL, BK_ACT_SILU, &B, NULL, tmp, T)
                         : op == 2 ? be->matmul_dx(ctx, tr, xl, &B, T, 1.0f, 0.0f)
                         : op == 3 ? be->matmul_dx(ctx, yl, tr, &A, T, 1.0f, 1.0f)
                         : op == 4 ? be->matmul_dw(ctx, g, xl, tr, T, L, r, 1.0f)
                                   : be->matmul_dw(ctx, g, tr, xl, T, r, L, 1.0f);
                if (rc) die(names[op]);
            }
            if (be->synchronize(ctx)) die("synchronize");
            const double us = (bench_now() - t0) / reps * 1e6, gbs = bytes / us * 1e-3;
            printf("%4d %6d | %-22s %9.2f %9.1f %6.3f\n", r, L, names[op], us, gbs, gbs / bw);
        }
        void *all[] = {xl, yl, tr, g, tmp};
        for (int i = 0; i < 5; i++) be->free(ctx, all[i]);
        be->weight_release(ctx, &A);
        be->weight_release(ctx, &B);
        free(h);
    }
}

int main(int argc, char **argv)
{
    const int lora = argc > 1 && !strcmp(argv[1], "lora");
    if (lora) argc--, argv++;
    int reps = argc > 1 ? atoi(argv[1]) : 200;
    long long only_n = argc > 3 ? atoll(argv[2]) : 0, only_k = argc > 3 ? atoll(argv[3]) : 0;
    int only_t = argc > 4 ? atoi(argv[4]) : 1;
    be = backend_find("cuda");
    if (!be || !be->available()) {
        fprintf(stderr, "bench_gpu_ops: no cuda device\n");
        return 1;
    }
    bk_opts o = {0};
    if (be->create(&o, &ctx)) die("create");
    infer_device_info di;
    infer_get_device_info("cuda", &di);
    double bw = 0.0;
    if (infer_measure_bandwidth("cuda", 0, &bw)) die("infer_measure_bandwidth");
    printf("%s: copy bandwidth %.0f GB/s (512 MiB, read + written)\n\n", di.name, bw);
    if (lora) {
        lora_ops(bw, reps);
        be->destroy(ctx);
        return 0;
    }
    printf("%-10s %7s %7s | %9s %9s %6s\n", "weights", "N", "K", "us/call", "GB/s", "ratio");
    static const shape cases[] = {
        {"bf16", DT_BF16, 0, 2048, 2048},  {"bf16", DT_BF16, 0, 8192, 2048},   {"bf16", DT_BF16, 0, 14336, 4096},
        {"bf16", DT_BF16, 0, 128256, 2048}, {"q8 g64", DT_U32, 8, 8192, 2048}, {"q8 g64", DT_U32, 8, 14336, 4096},
        {"q4 g64", DT_U32, 4, 1152, 1152},  {"q4 g64", DT_U32, 4, 6912, 1152}, {"q4 g64", DT_U32, 4, 2048, 2048},
        {"q4 g64", DT_U32, 4, 8192, 2048},  {"q4 g64", DT_U32, 4, 14336, 4096}, {"q4 g64", DT_U32, 4, 4096, 14336},
        {"q4 g64", DT_U32, 4, 262144, 1152}, {"q4 g64", DT_U32, 4, 128256, 4096},
    };
    const shape only = {"q4 g64", DT_U32, 4, only_n, only_k};
    const size_t n_cases = only_n ? 1 : sizeof cases / sizeof cases[0];
    for (size_t c = 0; c < n_cases; c++) {
        const shape *sh = only_n ? &only : &cases[c];
        int64_t N = sh->n, K = sh->k;
        double one, us = time_product(sh->dt, sh->bits, N, K, only_t, reps, &one), gbs = one / us * 1e-3;
        printf("%-10s %7lld %7lld | %9.2f %9.1f %6.3f\n", sh->name, (long long)N, (long long)K, us, gbs, gbs / bw);
    }
    /* several rows of x (batched decode, classification, prefill) */
    if (!only_n) {
        static const shape mm[] = {
            {"q4 g64", DT_U32, 4, 4096, 4096},  {"q4 g64", DT_U32, 4, 14336, 4096}, {"q4 g64", DT_U32, 4, 4096, 14336},
            {"q4 g64", DT_U32, 4, 6912, 1152},  {"q8 g64", DT_U32, 8, 14336, 4096}, {"bf16", DT_BF16, 0, 14336, 4096},
        };
        static const int Ts[] = {16, 32, 64, 128, 256, 512};
        printf("\n%-10s %7s %7s %5s | %9s %9s %6s %9s\n", "weights", "N", "K", "T", "us/call", "GB/s", "ratio", "TFLOP/s");
        for (size_t c = 0; c < sizeof mm / sizeof mm[0]; c++)
            for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
                double one, us = time_product(mm[c].dt, mm[c].bits, mm[c].n, mm[c].k, Ts[ti], reps / 4 + 1, &one);
                double gbs = one / us * 1e-3, tf = 2.0 * Ts[ti] * (double)mm[c].n * (double)mm[c].k / us * 1e-6;
                printf("%-10s %7lld %7lld %5d | %9.2f %9.1f %6.3f %9.1f\n", mm[c].name, (long long)mm[c].n,
                       (long long)mm[c].k, Ts[ti], us, gbs, gbs / bw, tf);
            }
    }
    /* one small op: the floor of a step made of many */
    {
        uint16_t g[4096];
        for (int i = 0; i < 4096; i++) g[i] = f32_to_bf16(1.0f);
        bk_weight gw = {.data = g, .dtype = DT_BF16, .rows = 1, .cols = 4096, .sdtype = DT_BF16};
        if (be->weight_prepare(ctx, &gw)) die("weight_prepare");
        void *x = dev(4096 * 4);
        be->synchronize(ctx);
        double t0 = bench_now();
        for (int r = 0; r < reps * 5; r++)
            if (be->rmsnorm(ctx, x, x, &gw, 1, 4096, 1e-6f, 0)) die("rmsnorm");
        be->synchronize(ctx);
        printf("\nrmsnorm of one row of 4096, launched one by one: %.2f us a call\n", (bench_now() - t0) / (reps * 5) * 1e6);
        be->weight_release(ctx, &gw);
        be->free(ctx, x);
    }
    be->destroy(ctx);
    return 0;
}
