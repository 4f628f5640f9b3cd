/* bench_qgemm.c - the cpu backend's matmul on bf16 and MLX-quantized
 * weights, through the backend table (threads included), against the
 * limits measured in the same run.
 *
 *   build/bench/bench_qgemm [THREADS] [SECONDS_PER_CASE]
 *   BENCH_QGEMM_CASES=4:64:2048:8192,... build/bench/bench_qgemm ...
 *       (only these cases: bits 16 = bf16, group size, N, K)
 *   BENCH_QGEMM_PAIRED=R ...: also R pairs of (plain read, M = 1 pass),
 *       the median ratio (the host's bandwidth drifts between reads)
 *
 * Decode (M = 1, 2, 4): y = x . W^T over a stack of weights of 1 GiB in
 * all (copies of an N x K matrix used in turn, so that every call reads
 * DRAM), GB/s of weight bytes read (packed values + scales + biases), beside
 * the read bandwidth of a plain streaming read with as many threads; "hot":
 * M = 1 on one copy again and again (in the caches where it fits: the
 * kernels' compute speed).
 * Prefill (M = 128): GFLOP/s on one matrix (2 M N K per call), beside the
 * float32 FMA peak of the cores.  Each weight format runs with float32
 * activations (exact) and with int8 activations (cpu_int8 = 1; "int8t":
 * the weights repacked by the backend's weight_prepare into the tiled
 * layout, as a model load does). */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "bench_bw.h"
#include "core/dtype.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double seconds_per_case = 1.0;

/* ---- Limits ---- */


typedef struct peak_arg {
    double gflops;
} peak_arg;

static void *peak_thread(void *arg)
{
    ((peak_arg *)arg)->gflops = bench_fma_peak(20000000);
    return NULL;
}

/* The FMA peak of `threads` cores at once (bench_fma_isa), GFLOP/s in all. */
static double fma_peak(int threads)
{
    peak_arg pa[64];
    pthread_t tid[64];
    for (int i = 1; i < threads; i++) pthread_create(&tid[i], NULL, peak_thread, &pa[i]);
    peak_thread(&pa[0]);
    double sum = pa[0].gflops;
    for (int i = 1; i < threads; i++) {
        pthread_join(tid[i], NULL);
        sum += pa[i].gflops;
    }
    return sum;
}

/* ---- Weights ---- */

static uint32_t rng = 2463534242u;
static uint32_t next_u32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}
static float frand(void) { return (float)((next_u32() >> 8) * (1.0 / 8388608.0) - 1.0); }

typedef struct wset {
    int bits, gs;        /* bits 16: bf16 */
    int N, K;
    int copies;
    size_t wbytes;       /* of one copy: data + scales + biases */
    unsigned char *mem;  /* copies x (data, scales, biases) */
    bk_weight *w;        /* [copies] */
} wset;

static int make_wset(wset *s, int bits, int gs, int N, int K, size_t total)
{
    memset(s, 0, sizeof *s);
    s->bits = bits;
    s->gs = gs;
    s->N = N;
    s->K = K;
    size_t data = (size_t)N * K * (bits == 16 ? 16 : (size_t)bits) / 8;
    size_t sb = bits == 16 ? 0 : (size_t)N * (K / gs) * 2;
    size_t one = (data + 2 * sb + 63) / 64 * 64;
    s->wbytes = data + 2 * sb;
    s->copies = (int)(total / one);
    if (s->copies < 1) s->copies = 1;
    s->mem = malloc(one * (size_t)s->copies);
    s->w = calloc((size_t)s->copies, sizeof *s->w);
    if (!s->mem || !s->w) return -1;
    /* the first copy random, the others copies of it */
    unsigned char *p = s->mem;
    if (bits == 16) {
        uint16_t *h = (uint16_t *)(void *)p;
        for (size_t i = 0; i < (size_t)N * K; i++) h[i] = f32_to_bf16(frand() * 0.05f);
    } else {
        for (size_t i = 0; i < data; i++) p[i] = (unsigned char)next_u32();
        uint16_t *sc = (uint16_t *)(void *)(p + data), *bi = sc + (size_t)N * (K / gs);
        for (size_t i = 0; i < (size_t)N * (K / gs); i++) {
            sc[i] = f32_to_bf16(frand() * 0.01f);
            bi[i] = f32_to_bf16(frand() * 0.05f);
        }
    }
    for (int c = 1; c < s->copies; c++) memcpy(s->mem + (size_t)c * one, s->mem, s->wbytes);
    for (int c = 0; c < s->copies; c++) {
        unsigned char *q = s->mem + (size_t)c * one;
        bk_weight *w = &s->w[c];
        w->data = q;
        w->rows = N;
        w->cols = K;
        if (bits == 16) {
            w->dtype = DT_BF16;
        } else {
            w->dtype = DT_U32;
            w->bits = bits;
            w->group_size = gs;
            w->scales = q + data;
            w->biases = q + data + sb;
            w->sdtype = DT_BF16;
        }
    }
    return 0;
}

static void free_wset(wset *s)
{
    free(s->mem);
    free(s->w);
}

/* GB/s of weights streamed at M rows (copies in turn, once per pass). */
static double decode_gbs(const backend_ops *be, void *ctx, const wset *s, int M, const float *x, float *y, int copies)
{
    double best = 0.0, t_end = bench_now() + seconds_per_case;
    int passes = 0;
    do {
        double t0 = bench_now();
        for (int r = 0; r < s->copies; r++) be->matmul(ctx, y, x, &s->w[r % copies], NULL, M);
        double t = bench_now() - t0;
        double gbs = (double)s->wbytes * s->copies / t * 1e-9;
        if (gbs > best) best = gbs;
        passes++;
    } while (passes < 3 || bench_now() < t_end);
    return best;
}

/* GFLOP/s at M rows on the first copy (median). */
static double prefill_gflops(const backend_ops *be, void *ctx, const wset *s, int M, const float *x, float *y)
{
    double t[101];
    int n = 0;
    be->matmul(ctx, y, x, &s->w[0], NULL, M);
    double t_end = bench_now() + seconds_per_case;
    while (n < 101 && (n < 3 || bench_now() < t_end)) {
        double t0 = bench_now();
        be->matmul(ctx, y, x, &s->w[0], NULL, M);
        t[n++] = bench_now() - t0;
    }
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    return 2.0 * M * s->N * (double)s->K / t[n / 2] * 1e-9;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    if (argc > 2) seconds_per_case = atof(argv[2]);
    const backend_ops *be = &backend_cpu;
    void *ctx[2];
    for (int i = 0; i < 2; i++) {
        bk_opts o = {.n_threads = threads, .cpu_int8 = i};
        if (be->create(&o, &ctx[i])) {
            fprintf(stderr, "bench_qgemm: %s\n", infer_last_error());
            return 1;
        }
    }
    infer_device_info dev;
    memset(&dev, 0, sizeof dev);
    be->device_info(&dev);
    int nt = threads > 0 ? threads : dev.multiprocessors;
    if (nt > 64) nt = 64;
    size_t total = (size_t)1 << 30;
    unsigned char *buf = malloc(total);
    if (!buf) return 1;
    memset(buf, 1, total);
    double bw1 = bench_read_bw(buf, total, 1, 5), bwn = nt > 1 ? bench_read_bw(buf, total, nt, 5) : bw1;
    /* BENCH_QGEMM_PAIRED=R: R pairs of (plain read of 1 GiB, one M = 1 pass
     * over the weights' copies), the median of their ratios: a shared
     * host's bandwidth drifts between the limit's reads and the cases' */
    const char *pe = getenv("BENCH_QGEMM_PAIRED");
    int paired = pe ? atoi(pe) : 0;
    if (paired > 99) paired = 99;
    if (!paired) {
        free(buf);
        buf = NULL;
    }
    const char *isa = bench_fma_isa();
    double peak = isa ? fma_peak(nt) : 0.0;
    printf("cpu %s (%s); %d threads\n", dev.name, dev.features, nt);
    printf("limit: read bandwidth %.1f GB/s with %d threads (%.1f with 1), 1 GiB; FMA peak %.1f GFLOP/s "
           "(%s, %d threads)\n",
           bwn, nt, bw1, peak, isa ? isa : "no avx2 or avx512", nt);
    double bw = bwn > bw1 ? bwn : bw1;

    static struct {
        int bits, gs, N, K;
    } cases[32] = {
        {16, 0, 8192, 2048}, {16, 0, 2048, 8192}, {4, 64, 8192, 2048}, {4, 64, 2048, 8192},
        {4, 32, 8192, 2048}, {4, 128, 8192, 2048}, {8, 64, 8192, 2048}, {8, 64, 2048, 8192},
        {2, 64, 8192, 2048}, {3, 64, 8192, 2048}, {5, 64, 8192, 2048}, {6, 64, 8192, 2048},
    };
    size_t n_cases = 12;
    const char *only = getenv("BENCH_QGEMM_CASES"); /* "BITS:GS:N:K,...": these cases instead */
    if (only) {
        n_cases = 0;
        for (const char *p = only; *p && n_cases < sizeof cases / sizeof cases[0];) {
            int b, g, n, k, used = 0;
            if (sscanf(p, "%d:%d:%d:%d%n", &b, &g, &n, &k, &used) != 4 || n < 1 || k < 1 || n > 262144 ||
                k > 16384) {
                fprintf(stderr, "bench_qgemm: BENCH_QGEMM_CASES: want BITS:GS:N:K,... with N <= 262144 (a "
                                "vocabulary: the head), K <= 16384\n");
                return 1;
            }
            cases[n_cases].bits = b, cases[n_cases].gs = g, cases[n_cases].N = n, cases[n_cases].K = k;
            n_cases++;
            p += used;
            if (*p == ',') p++;
        }
    }
    size_t maxk = 8192, maxn = 8192;
    for (size_t c = 0; c < n_cases; c++) {
        if ((size_t)cases[c].N > maxn) maxn = (size_t)cases[c].N;
        if ((size_t)cases[c].K > maxk) maxk = (size_t)cases[c].K;
    }
    float *x = malloc(128 * maxk * sizeof *x), *y = malloc(128 * maxn * sizeof *y);
    if (!x || !y) return 1;
    for (size_t i = 0; i < 128 * maxk; i++) x[i] = frand();
    printf("\n%-10s %5s %5s | %-5s | %8s %8s %8s | %6s | %8s | %9s\n", "weights", "N", "K", "acts", "M=1", "M=2",
           "M=4", "M=1/bw", "M=1 hot", "M=128");
    printf("%-10s %5s %5s | %-5s | %8s %8s %8s | %6s | %8s | %9s\n", "", "", "", "", "GB/s", "GB/s", "GB/s", "",
           "GB/s", "GFLOP/s");
    for (size_t c = 0; c < n_cases; c++) {
        wset s;
        if (make_wset(&s, cases[c].bits, cases[c].gs, cases[c].N, cases[c].K, total)) return 1;
        for (int i8 = 0; i8 < 2; i8++) {
            if (i8 && cases[c].bits == 16) continue;
            /* int8: the weights as the backend prepares them at load (the
             * tiled layout where it applies: qgemm.h) */
            if (i8)
                for (int r = 0; r < s.copies; r++)
                    if (be->weight_prepare(ctx[1], &s.w[r])) {
                        fprintf(stderr, "bench_qgemm: %s\n", infer_last_error());
                        return 1;
                    }
            double g1 = decode_gbs(be, ctx[i8], &s, 1, x, y, s.copies);
            double g2 = decode_gbs(be, ctx[i8], &s, 2, x, y, s.copies);
            double g4 = decode_gbs(be, ctx[i8], &s, 4, x, y, s.copies);
            double hot = decode_gbs(be, ctx[i8], &s, 1, x, y, 1);
            double pf = prefill_gflops(be, ctx[i8], &s, 128, x, y);
            double pr[99];
            for (int r = 0; r < paired; r++) {
                double b = bench_read_bw(buf, total, nt, 1), t0 = bench_now();
                for (int k = 0; k < s.copies; k++) be->matmul(ctx[i8], y, x, &s.w[k], NULL, 1);
                pr[r] = (double)s.wbytes * s.copies / (bench_now() - t0) * 1e-9 / b;
            }
            if (paired) qsort(pr, (size_t)paired, sizeof pr[0], cmp_d);
            char name[32];
            if (cases[c].bits == 16)
                snprintf(name, sizeof name, "bf16");
            else
                snprintf(name, sizeof name, "q%d g%d", cases[c].bits, cases[c].gs);
            printf("%-10s %5d %5d | %-5s | %8.1f %8.1f %8.1f | %6.3f | %8.1f | %9.1f\n", name, cases[c].N, cases[c].K,
                   i8 ? (s.w[0].tiled ? "int8t" : "int8") : "f32", g1, g2, g4, g1 / bw, hot, pf);
            if (paired)
                printf("%-10s %11s | paired M=1/bw: median %.3f of %d (%.3f .. %.3f)\n", "", "", pr[paired / 2], paired,
                       pr[0], pr[paired - 1]);
            fflush(stdout);
        }
        for (int r = 0; r < s.copies; r++) be->weight_release(ctx[1], &s.w[r]);
        free_wset(&s);
    }
    free(x);
    free(y);
    free(buf);
    for (int i = 0; i < 2; i++) be->destroy(ctx[i]);
    return 0;
}
