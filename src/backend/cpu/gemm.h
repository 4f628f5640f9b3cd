/* gemm.h - single-threaded matrix products of the cpu backend.
 *
 *     C[M, N] = A[M, K] . B[N, K]^T
 *
 * A and C are float32 (row strides lda, ldc in floats); B is a weight in its
 * stored dtype (F32, F16 or BF16; row stride ldb in elements) at any
 * alignment: it may point anywhere into a mapped file.  B is converted to
 * float32 tile by tile while it is packed, never as a whole.
 *
 * The caller cuts the work over its threads (cpu_matmul gives each worker a
 * block of rows of B); every call is single-threaded and touches no shared
 * state, so any number may run at once.
 *
 * Design (classic blocked GEMM):
 *   - M > small_m: a KC x NC block of B is packed (transposed, converted)
 *     into micro-panels of NR columns, an MC x KC block of A into
 *     micro-panels of MR rows, and a register-tiled micro-kernel computes
 *     MR x NR tiles of C (AVX-512 14x32, AVX2+FMA 6x16, portable C 4x8).
 *   - M <= small_m (decode): nothing is packed; B is streamed once with
 *     wide loads, converted on the fly, and dotted with the rows of A.
 * Summation order differs from a naive loop; the result is the same within
 * float32 rounding. */
#ifndef INFER_BACKEND_CPU_GEMM_H
#define INFER_BACKEND_CPU_GEMM_H

#include <stddef.h>

#include "core/dtype.h"

/* Instruction-set variants, in order of preference (last is best). */
typedef enum gemm_isa {
    GEMM_ISA_C = 0,  /* portable C, always available */
    GEMM_ISA_AVX2,   /* AVX2 + FMA + F16C */
    GEMM_ISA_AVX512, /* AVX-512F (+ AVX2, FMA, F16C) */
    GEMM_ISA_COUNT
} gemm_isa;

/* C = A . B^T with the best variant this machine supports.  pack is scratch
 * of at least gemm_pack_floats(M, N, K) floats (any alignment).  Does
 * nothing when M or N <= 0; writes zeros when K <= 0. */
void gemm_nt(int M, int N, int K, const float *A, size_t lda, const void *B, infer_dtype b_dtype,
             size_t ldb, float *C, size_t ldc, float *pack);

/* Floats of scratch gemm_nt (any variant) needs for these sizes; >= 1. */
size_t gemm_pack_floats(int M, int N, int K);

/* The same product with one given variant; it must be supported. */
void gemm_nt_isa(gemm_isa isa, int M, int N, int K, const float *A, size_t lda, const void *B,
                 infer_dtype b_dtype, size_t ldb, float *C, size_t ldc, float *pack);

/* 1 when this machine (and this build) can run the variant. */
int gemm_isa_supported(gemm_isa isa);
/* The variant gemm_nt uses. */
gemm_isa gemm_isa_best(void);
/* "c", "avx2" or "avx512". */
const char *gemm_isa_name(gemm_isa isa);

/* ---- Internal: what each instruction-set file supplies to the driver. ----
 * Packed layouts: Ap holds ceil(m / mr) micro-panels of kc x mr floats
 * (Ap[p][k][i] = A[p*mr + i][k]); Bp holds ceil(n / nr) micro-panels of
 * kc x nr floats (Bp[p][k][j] = B[p*nr + j][k], zero past n).  Both are
 * 64-byte aligned. */
typedef struct gemm_kernels {
    int mr, nr;     /* register tile of C */
    int mc, kc, nc; /* cache blocks: A block mc x kc, B block nc x kc */
    int small_m;    /* M <= small_m takes the unpacked path */
    /* Packs rows [0, m) x columns [0, kc) of A. */
    void (*pack_a)(int m, int kc, const float *A, size_t lda, float *Ap);
    /* Packs rows [0, n) x columns [0, kc) of B (ldb in bytes), to float32. */
    void (*pack_b)(int n, int kc, const unsigned char *B, infer_dtype dt, size_t ldb, float *Bp);
    /* C[m, n] (+)= one micro-panel of Ap . one micro-panel of Bp;
     * 1 <= m <= mr, 1 <= n <= nr; accumulate: add to C, else overwrite. */
    void (*tile)(int m, int n, int kc, const float *Ap, const float *Bp, float *C, size_t ldc,
                 int accumulate);
    /* The whole product for M <= small_m, K >= 1, without packing. */
    void (*small)(int M, int N, int K, const float *A, size_t lda, const unsigned char *B,
                  infer_dtype dt, size_t ldb, float *C, size_t ldc);
} gemm_kernels;

extern const gemm_kernels gemm_kernels_c;
extern const gemm_kernels gemm_kernels_avx2;
extern const gemm_kernels gemm_kernels_avx512;

#endif
