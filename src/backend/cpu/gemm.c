/* gemm.c - the blocked GEMM driver, runtime dispatch, and the portable C
 * variant.  The AVX2 and AVX-512 kernels are in gemm_avx2.c and
 * gemm_avx512.c; see gemm.h for the design. */
#include "backend/cpu/gemm.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* ---- Dispatch ---- */

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* F16C, from cpuid (not every compiler's __builtin_cpu_supports knows it). */
static int has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

int gemm_isa_supported(gemm_isa isa)
{
    switch (isa) {
    case GEMM_ISA_C:
        return 1;
#if defined(__x86_64__) || defined(__i386__)
    case GEMM_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    case GEMM_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma") && has_f16c();
#endif
    default:
        return 0;
    }
}

/* Found once: cpuid is slow, and traps to the hypervisor in a virtual
 * machine, so it must not run per call.  -1 = not yet known. */
static _Atomic int best_isa = -1;

gemm_isa gemm_isa_best(void)
{
    int b = atomic_load_explicit(&best_isa, memory_order_relaxed);
    if (b >= 0) return (gemm_isa)b;
    b = GEMM_ISA_C;
    for (int i = GEMM_ISA_COUNT - 1; i > 0; i--)
        if (gemm_isa_supported((gemm_isa)i)) {
            b = i;
            break;
        }
    atomic_store_explicit(&best_isa, b, memory_order_relaxed);
    return (gemm_isa)b;
}

const char *gemm_isa_name(gemm_isa isa)
{
    static const char *const names[GEMM_ISA_COUNT] = {"c", "avx2", "avx512"};
    return (unsigned)isa < GEMM_ISA_COUNT ? names[isa] : "?";
}

static const gemm_kernels *kernels_of(gemm_isa isa)
{
    switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case GEMM_ISA_AVX2:
        return &gemm_kernels_avx2;
    case GEMM_ISA_AVX512:
        return &gemm_kernels_avx512;
#endif
    default:
        return &gemm_kernels_c;
    }
}

/* ---- Blocking, shared by the driver and gemm_pack_floats ---- */

typedef struct blocking {
    int mc, kc, nc; /* block sizes actually used (mc a multiple of mr) */
} blocking;

static int cdiv(int a, int b) { return (a + b - 1) / b; }
static int round_up(int a, int b) { return cdiv(a, b) * b; }

static blocking block_sizes(const gemm_kernels *g, int M, int N, int K)
{
    blocking b;
    /* Equal blocks no larger than the kernel's, k blocks a multiple of 16
     * where K allows (the packing routines work in steps of 16). */
    int n_k = cdiv(K, g->kc);
    b.kc = round_up(cdiv(K, n_k), 16);
    if (b.kc > K) b.kc = K;
    int n_m = cdiv(M, g->mc);
    b.mc = round_up(cdiv(M, n_m), g->mr);
    b.nc = N < g->nc ? N : g->nc;
    return b;
}

enum { PACK_ALIGN_FLOATS = 16 }; /* 64 bytes */

static size_t pack_floats_for(const gemm_kernels *g, int M, int N, int K)
{
    if (M <= g->small_m || N <= 0 || K <= 0) return 0;
    blocking b = block_sizes(g, M, N, K);
    size_t a = (size_t)b.mc * (size_t)b.kc;
    size_t bp = (size_t)round_up(b.nc, g->nr) * (size_t)b.kc;
    /* Ap is rounded up to 64 bytes so that Bp starts aligned too. */
    return (a + PACK_ALIGN_FLOATS - 1) / PACK_ALIGN_FLOATS * PACK_ALIGN_FLOATS +
           bp + PACK_ALIGN_FLOATS;
}

size_t gemm_pack_floats(int M, int N, int K)
{
    size_t n = 1;
    for (int i = 0; i < GEMM_ISA_COUNT; i++) {
        size_t v = pack_floats_for(kernels_of((gemm_isa)i), M, N, K);
        if (v > n) n = v;
    }
    return n;
}

/* ---- The driver ---- */

/* Walks the lines of the next B block, a few per micro-tile, so that the
 * block is in L2 when it is packed: its short strided rows defeat the
 * hardware prefetchers. */
typedef struct prefetcher {
    const unsigned char *row;
    size_t ldb, len, off;
    int rows;
    int per_tile; /* lines */
} prefetcher;

static void prefetch_some(prefetcher *p)
{
    for (int i = 0; i < p->per_tile && p->rows > 0; i++) {
        __builtin_prefetch(p->row + p->off, 0, 2);
        p->off += 64;
        if (p->off >= p->len) {
            p->off = 0;
            p->row += p->ldb;
            p->rows--;
        }
    }
}

static void gemm_run(const gemm_kernels *g, int M, int N, int K, const float *A, size_t lda,
                     const void *Bv, infer_dtype dt, size_t ldb, float *C, size_t ldc, float *pack)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof *C);
        return;
    }
    const unsigned char *B = Bv;
    size_t es = dtype_size(dt);
    size_t ldb_bytes = ldb * es;
    if (M <= g->small_m) {
        g->small(M, N, K, A, lda, B, dt, ldb_bytes, C, ldc);
        return;
    }
    blocking bs = block_sizes(g, M, N, K);
    uintptr_t pa = ((uintptr_t)pack + 63) & ~(uintptr_t)63;
    float *Ap = (float *)pa;
    size_t a_floats = ((size_t)bs.mc * (size_t)bs.kc + PACK_ALIGN_FLOATS - 1) / PACK_ALIGN_FLOATS *
                      PACK_ALIGN_FLOATS;
    float *Bp = Ap + a_floats;
    for (int ic = 0; ic < M; ic += bs.mc) {
        int mcur = M - ic < bs.mc ? M - ic : bs.mc;
        for (int pc = 0; pc < K; pc += bs.kc) {
            int kcur = K - pc < bs.kc ? K - pc : bs.kc;
            g->pack_a(mcur, kcur, A + (size_t)ic * lda + pc, lda, Ap);
            for (int jc = 0; jc < N; jc += bs.nc) {
                int ncur = N - jc < bs.nc ? N - jc : bs.nc;
                g->pack_b(ncur, kcur, B + (size_t)jc * ldb_bytes + (size_t)pc * es, dt, ldb_bytes,
                          Bp);
                /* the next B block, if any */
                int jn = jc + bs.nc, pn = pc, in = ic;
                if (jn >= N) {
                    jn = 0;
                    pn = pc + bs.kc;
                    if (pn >= K) {
                        pn = 0;
                        in = ic + bs.mc;
                    }
                }
                prefetcher pf = {B + (size_t)jn * ldb_bytes + (size_t)pn * es, ldb_bytes, 0, 0, 0, 0};
                if (in < M) {
                    int kn = K - pn < bs.kc ? K - pn : bs.kc;
                    pf.rows = N - jn < bs.nc ? N - jn : bs.nc;
                    pf.len = (size_t)kn * es;
                    int tiles = cdiv(mcur, g->mr) * cdiv(ncur, g->nr);
                    pf.per_tile = (int)(((size_t)pf.rows * ((pf.len + 63) / 64) + (size_t)tiles - 1) /
                                        (size_t)tiles);
                }
                /* The A micro-panel stays in L1 while the B block streams
                 * from L2. */
                for (int ir = 0; ir < mcur; ir += g->mr) {
                    int m = mcur - ir < g->mr ? mcur - ir : g->mr;
                    const float *ap = Ap + (size_t)ir * kcur;
                    float *c = C + (size_t)(ic + ir) * ldc + jc;
                    for (int jr = 0; jr < ncur; jr += g->nr) {
                        int n = ncur - jr < g->nr ? ncur - jr : g->nr;
                        g->tile(m, n, kcur, ap, Bp + (size_t)jr * kcur, c + jr, ldc, pc > 0);
                        prefetch_some(&pf);
                    }
                }
            }
        }
    }
}

void gemm_nt_isa(gemm_isa isa, int M, int N, int K, const float *A, size_t lda, const void *B,
                 infer_dtype b_dtype, size_t ldb, float *C, size_t ldc, float *pack)
{
    gemm_run(kernels_of(isa), M, N, K, A, lda, B, b_dtype, ldb, C, ldc, pack);
}

void gemm_nt(int M, int N, int K, const float *A, size_t lda, const void *B, infer_dtype b_dtype,
             size_t ldb, float *C, size_t ldc, float *pack)
{
    gemm_run(kernels_of(gemm_isa_best()), M, N, K, A, lda, B, b_dtype, ldb, C, ldc, pack);
}

/* ---- Portable C variant: plain loops the compiler may vectorize ---- */

enum { C_MR = 4, C_NR = 8 };

/* One element of B (any alignment) as float32. */
static float load_elem(const unsigned char *p, infer_dtype dt)
{
    if (dt == DT_F32) {
        float f;
        memcpy(&f, p, sizeof f);
        return f;
    }
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return dt == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

static void c_pack_a(int m, int kc, const float *A, size_t lda, float *Ap)
{
    for (int p = 0; p < m; p += C_MR) {
        int mr = m - p < C_MR ? m - p : C_MR;
        for (int k = 0; k < kc; k++) {
            float *dst = Ap + (size_t)p * kc + (size_t)k * C_MR;
            for (int i = 0; i < C_MR; i++) dst[i] = i < mr ? A[(size_t)(p + i) * lda + k] : 0.0f;
        }
    }
}

static void c_pack_b(int n, int kc, const unsigned char *B, infer_dtype dt, size_t ldb, float *Bp)
{
    size_t es = dtype_size(dt);
    for (int p = 0; p < n; p += C_NR) {
        float *panel = Bp + (size_t)p * kc;
        for (int j = 0; j < C_NR; j++) {
            if (p + j >= n) {
                for (int k = 0; k < kc; k++) panel[(size_t)k * C_NR + j] = 0.0f;
                continue;
            }
            const unsigned char *row = B + (size_t)(p + j) * ldb;
            for (int k = 0; k < kc; k++) panel[(size_t)k * C_NR + j] = load_elem(row + k * es, dt);
        }
    }
}

static void c_tile(int m, int n, int kc, const float *Ap, const float *Bp, float *C, size_t ldc,
                   int accumulate)
{
    float acc[C_MR][C_NR];
    memset(acc, 0, sizeof acc);
    for (int k = 0; k < kc; k++) {
        const float *a = Ap + (size_t)k * C_MR, *b = Bp + (size_t)k * C_NR;
        for (int i = 0; i < C_MR; i++)
            for (int j = 0; j < C_NR; j++) acc[i][j] += a[i] * b[j];
    }
    for (int i = 0; i < m; i++) {
        float *c = C + (size_t)i * ldc;
        if (accumulate)
            for (int j = 0; j < n; j++) c[j] += acc[i][j];
        else
            for (int j = 0; j < n; j++) c[j] = acc[i][j];
    }
}

enum { C_CHUNK = 256 };

/* Dot products, B converted C_CHUNK elements at a time. */
static void c_small(int M, int N, int K, const float *A, size_t lda, const unsigned char *B,
                    infer_dtype dt, size_t ldb, float *C, size_t ldc)
{
    size_t es = dtype_size(dt);
    float buf[C_CHUNK];
    for (int n = 0; n < N; n++) {
        const unsigned char *row = B + (size_t)n * ldb;
        for (int m0 = 0; m0 < M; m0 += C_MR) {
            int mr = M - m0 < C_MR ? M - m0 : C_MR;
            float sum[C_MR] = {0};
            for (int k0 = 0; k0 < K; k0 += C_CHUNK) {
                int len = K - k0 < C_CHUNK ? K - k0 : C_CHUNK;
                dtype_to_f32(buf, row + (size_t)k0 * es, dt, (size_t)len);
                for (int i = 0; i < mr; i++) {
                    const float *a = A + (size_t)(m0 + i) * lda + k0;
                    float s[8] = {0};
                    int k = 0;
                    for (; k + 8 <= len; k += 8)
                        for (int u = 0; u < 8; u++) s[u] += a[k + u] * buf[k + u];
                    float r = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
                    for (; k < len; k++) r += a[k] * buf[k];
                    sum[i] += r;
                }
            }
            for (int i = 0; i < mr; i++) C[(size_t)(m0 + i) * ldc + n] = sum[i];
        }
    }
}

const gemm_kernels gemm_kernels_c = {
    .mr = C_MR, .nr = C_NR, .mc = 512, .kc = 256, .nc = 256, .small_m = 2,
    .pack_a = c_pack_a, .pack_b = c_pack_b, .tile = c_tile, .small = c_small,
};
