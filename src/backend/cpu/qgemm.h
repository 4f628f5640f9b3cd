/* qgemm.h - products with MLX-quantized weights on the cpu (qgemm*.c).
 *
 *     C[M, N] = A[M, K] . W[N, K]^T,   W = dequantized rows n0 .. n0 + N of w
 *
 * w is a quantized bk_weight (backend.h: packing, scales, biases); A and C
 * are float32 with row strides lda and ldc.  Single-threaded, no shared
 * state: cpu_matmul cuts the rows of W over the workers. */
#ifndef INFER_BACKEND_CPU_QGEMM_H
#define INFER_BACKEND_CPU_QGEMM_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

/* The best variant for this machine. */
void qgemm_nt(int M, int N, int K, const float *A, size_t lda, const bk_weight *w, int64_t n0, float *C,
              size_t ldc, float *scratch);
/* Floats of scratch qgemm_nt needs; >= 1. */
size_t qgemm_scratch_floats(int M, int N, int K);

/* The portable reference: dequantizes one row of W at a time. */
void qgemm_nt_ref(int M, int N, int K, const float *A, size_t lda, const bk_weight *w, int64_t n0, float *C,
                  size_t ldc, float *scratch);

/* Dequantizes n values of row r of w starting at column c0 (a multiple of
 * the group size) into out. */
void q_dequant_row(const bk_weight *w, int64_t r, int64_t c0, int64_t n, float *out);

/* 1 if bits and group size describe a layout the kernels take. */
int q_layout_ok(int bits, int group_size, int64_t cols);

#endif
