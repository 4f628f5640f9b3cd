/* bench_gemm.c - single-thread speed of gemm_nt against OpenBLAS sgemm.
 *
 *   build/bench/bench_gemm [c|avx2|avx512] [SECONDS_PER_CASE]
 *
 * For M in {1, 8, 64, 512} and (N, K) in {(1024, 1024), (2048, 2048),
 * (8192, 2048)}, with B (the weight, [N, K]) stored as f32 and as bf16:
 * GFLOP/s of C = A . B^T (2 M N K per call, median of repeated calls, data
 * warm in the caches where it fits).  OpenBLAS gets f32 B; for bf16 B its
 * figure includes converting B to f32 first (what cpu_matmul did before),
 * and its sgemm alone is shown beside it.  Limits measured in the same run:
 * the FMA peak of one core, and its read bandwidth from DRAM and from the
 * caches, which bound M = 1 (GB/s of B read).  Last, M = 1 streaming B
 * from DRAM (copies of B bigger than the caches, used in turn). */
#include <cblas.h>
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/gemm.h"
#include "bench_bw.h"
#include "core/dtype.h"

char *openblas_get_corename(void);
char *openblas_get_config(void);

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double seconds_per_case = 0.4;

/* Median seconds of one call of fn(arg), repeated for about
 * seconds_per_case after a warm-up call. */
static double time_median(void (*fn)(void *), void *arg)
{
    fn(arg);
    double t[201];
    int n = 0;
    double start = bench_now();
    while (n < 201 && (n < 5 || bench_now() - start < seconds_per_case)) {
        double t0 = bench_now();
        fn(arg);
        t[n++] = bench_now() - t0;
    }
    qsort(t, (size_t)n, sizeof *t, cmp);
    return t[n / 2];
}

typedef struct gcase {
    int M, N, K;
    const float *A;
    const void *B; /* stored dtype */
    const float *Bf; /* the same as float32 */
    infer_dtype dt;
    float *C, *pack, *conv;
    gemm_isa isa;
} gcase;

static void run_ours(void *p)
{
    gcase *g = p;
    gemm_nt_isa(g->isa, g->M, g->N, g->K, g->A, (size_t)g->K, g->B, g->dt, (size_t)g->K, g->C,
                (size_t)g->N, g->pack);
}

static void run_blas(void *p)
{
    gcase *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->M, g->N, g->K, 1.0f, g->A, g->K, g->Bf,
                g->K, 0.0f, g->C, g->N);
}

static void run_blas_convert(void *p)
{
    gcase *g = p;
    dtype_to_f32(g->conv, g->B, g->dt, (size_t)g->N * (size_t)g->K);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->M, g->N, g->K, 1.0f, g->A, g->K,
                g->conv, g->K, 0.0f, g->C, g->N);
}

/* ---- Limits ---- */

/* GB/s reading a buffer of `bytes` again and again (best of several). */
static double read_bw(const unsigned char *p, size_t bytes, int reps)
{
    volatile long sink = bench_read_bytes(p, bytes);
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        sink += bench_read_bytes(p, bytes);
        double t = bench_now() - t0;
        if (t < best) best = t;
    }
    (void)sink;
    return (double)bytes / best * 1e-9;
}

static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) * (1.0 / 8388608.0) - 1.0);
    }
}

static void to_bf16(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}

int main(int argc, char **argv)
{
    gemm_isa isa = gemm_isa_best();
    if (argc > 1) {
        int found = 0;
        for (int i = 0; i < GEMM_ISA_COUNT; i++)
            if (!strcmp(argv[1], gemm_isa_name((gemm_isa)i))) {
                isa = (gemm_isa)i;
                found = 1;
            }
        if (!found || !gemm_isa_supported(isa)) {
            fprintf(stderr, "usage: bench_gemm [c|avx2|avx512] [SECONDS_PER_CASE]\n");
            return 2;
        }
    }
    if (argc > 2) seconds_per_case = atof(argv[2]);

    printf("gemm_nt variant: %s (best on this cpu: %s); OpenBLAS: %s, core %s; 1 thread\n",
           gemm_isa_name(isa), gemm_isa_name(gemm_isa_best()), openblas_get_config(),
           openblas_get_corename());
    if (gemm_isa_supported(GEMM_ISA_AVX512))
        printf("limit: FMA peak %.1f GFLOP/s (avx512), %.1f GFLOP/s (avx2)\n", bench_fma_peak_avx512(20000000),
               bench_fma_peak_avx2(20000000));
    else if (gemm_isa_supported(GEMM_ISA_AVX2))
        printf("limit: FMA peak %.1f GFLOP/s (avx2)\n", bench_fma_peak_avx2(20000000));

    static const int Ms[] = {1, 8, 64, 512};
    static const int NK[][2] = {{1024, 1024}, {2048, 2048}, {8192, 2048}};
    size_t max_nk = 8192 * 2048, max_mk = 512 * 2048, max_mn = 512 * 8192;
    float *A = malloc(max_mk * sizeof *A), *Bf = malloc(max_nk * sizeof *Bf);
    float *conv = malloc(max_nk * sizeof *conv), *C = malloc(max_mn * sizeof *C);
    uint16_t *Bh = malloc(max_nk * sizeof *Bh);
    float *pack = malloc(gemm_pack_floats(512, 8192, 2048) * sizeof *pack);
    if (!A || !Bf || !conv || !C || !Bh || !pack) return 1;
    fill(A, max_mk, 1);
    fill(Bf, max_nk, 2);
    to_bf16(Bh, Bf, max_nk);
    /* bf16 values as float32, so that both get the same numbers */
    dtype_to_f32(Bf, Bh, DT_BF16, max_nk);

    printf("\n%5s %5s %5s %5s | %10s %10s | %10s %10s | %6s | %9s\n", "M", "N", "K", "B", "ours",
           "OpenBLAS", "OB sgemm", "", "ours/", "ours M=1");
    printf("%5s %5s %5s %5s | %10s %10s | %10s %10s | %6s | %9s\n", "", "", "", "", "GFLOP/s",
           "GFLOP/s", "alone", "", "OB", "GB/s of B");
    for (size_t s = 0; s < sizeof NK / sizeof *NK; s++)
        for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++)
            for (int d = 0; d < 2; d++) {
                gcase g = {Ms[mi], NK[s][0], NK[s][1], A, d ? (const void *)Bh : (const void *)Bf,
                           Bf, d ? DT_BF16 : DT_F32, C, pack, conv, isa};
                double flop = 2.0 * g.M * g.N * g.K;
                double t_ours = time_median(run_ours, &g);
                double t_blas = time_median(d ? run_blas_convert : run_blas, &g);
                double t_alone = d ? time_median(run_blas, &g) : t_blas;
                char alone[32] = "";
                if (d) snprintf(alone, sizeof alone, "%10.1f", flop / t_alone * 1e-9);
                char bw[32] = "";
                if (g.M == 1)
                    snprintf(bw, sizeof bw, "%9.1f",
                             (double)g.N * g.K * dtype_size(g.dt) / t_ours * 1e-9);
                printf("%5d %5d %5d %5s | %10.1f %10.1f | %10s %10s | %6.2f | %9s\n", g.M, g.N, g.K,
                       d ? "bf16" : "f32", flop / t_ours * 1e-9, flop / t_blas * 1e-9, alone, "",
                       t_blas / t_ours, bw);
                fflush(stdout);
            }

    /* M = 1 streaming B from DRAM: copies of B, 512 MB in all, in turn. */
    printf("\nM = 1 from DRAM (N = 8192, K = 2048, B copies used in turn):\n");
    size_t total = (size_t)512 << 20;
    unsigned char *big = malloc(total);
    if (!big) return 1;
    for (int d = 0; d < 2; d++) {
        size_t bbytes = (size_t)8192 * 2048 * (d ? 2 : 4);
        int copies = (int)(total / bbytes);
        for (int c = 0; c < copies; c++) memcpy(big + (size_t)c * bbytes, d ? (void *)Bh : (void *)Bf, bbytes);
        double best_ours = 1e9, best_blas = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = bench_now();
            for (int c = 0; c < copies; c++)
                gemm_nt_isa(isa, 1, 8192, 2048, A, 2048, big + (size_t)c * bbytes, d ? DT_BF16 : DT_F32,
                            2048, C, 8192, pack);
            double t = (bench_now() - t0) / copies;
            if (t < best_ours) best_ours = t;
            if (!d) {
                t0 = bench_now();
                for (int c = 0; c < copies; c++)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, 8192, 2048, 1.0f, A, 2048,
                                (const float *)(const void *)(big + (size_t)c * bbytes), 2048, 0.0f, C, 8192);
                t = (bench_now() - t0) / copies;
                if (t < best_blas) best_blas = t;
            }
        }
        printf("  %-4s ours %6.1f GB/s (%5.1f GFLOP/s)", d ? "bf16" : "f32", bbytes / best_ours * 1e-9,
               2.0 * 8192 * 2048 / best_ours * 1e-9);
        if (!d)
            printf("   OpenBLAS %6.1f GB/s (%5.1f GFLOP/s)", bbytes / best_blas * 1e-9,
                   2.0 * 8192 * 2048 / best_blas * 1e-9);
        printf("\n");
    }
    if (__builtin_cpu_supports("avx2")) {
        printf("limit: read bandwidth %.1f GB/s from DRAM (512 MB), %.1f GB/s for 8 MB, %.1f GB/s "
               "for 2 MB, %.1f GB/s for 256 KB\n",
               read_bw(big, total, 3), read_bw(big, (size_t)8 << 20, 20),
               read_bw(big, (size_t)2 << 20, 50), read_bw(big, (size_t)256 << 10, 500));
    }
    free(big);
    free(A);
    free(Bf);
    free(conv);
    free(C);
    free(Bh);
    free(pack);
    return 0;
}
