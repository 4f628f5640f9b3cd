/* cuda_train.h - the cuda backend's training kernels (cuda_train.cu);
 * each returns a cudaError_t as int.  What each computes: backend.h,
 * "Training". */
#ifndef INFER_BACKEND_CUDA_TRAIN_H
#define INFER_BACKEND_CUDA_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

int cut_axpy(void *stream, float *y, const float *x, float a, size_t n);
int cut_scale(void *stream, float *x, float a, size_t n);
int cut_dropout(void *stream, float *y, const float *x, size_t n, float p, uint64_t seed);
/* *out_dev (device double) = the sum of x^2 */
int cut_sumsq(void *stream, const float *x, size_t n, double *out_dev);
int cut_softcap_back(void *stream, float *dx, const float *dy, const float *y, size_t n, float cap);
/* glu_back with dg and du rounded to bf16 */
int cut_glu_back_bf16(void *stream, uint16_t *dg, uint16_t *du, const float *dout, const float *g, const float *u,
                      size_t n, int gelu);
int cut_glu_back(void *stream, float *dg, float *du, const float *dout, const float *g, const float *u, size_t n,
                 int gelu);
int cut_adamw(void *stream, float *p, const float *g, float *m, float *v, size_t n, const bk_adamw *o);
int cut_rmsnorm_back(void *stream, float *dx, const float *dy, const float *x, const bk_weight *w, int rows, int dim,
                     float eps, int plus_one, int acc);
int cut_cross_entropy(void *stream, float *dx, float *nll, const float *x, const int32_t *target, int rows, size_t V,
                      float scale);
/* scratch: cut_attention_back_scratch(p) bytes of device memory (each
 * query's softmax statistics, between the two kernels) */
size_t cut_attention_back_scratch(const bk_attn *p);
int cut_attention_back(void *stream, float *dq, float *dk, float *dv, const float *dout, const float *q,
                       const float *k, const float *v, const bk_attn *p, void *scratch);

/* Training's attention on the tiles of the bf16 tensor cores, no score
 * matrix, where p->fast, there is no softcap and head_dim is 16, 32, 64
 * or 128 (cut_flash_ok; the forward and the backward take the same cases,
 * so that the backward's P is the forward's): the forward with
 * cut_flash_fwd_scratch(p) bytes of scratch, the backward with
 * cut_flash_back_scratch(p) */
int cut_flash_ok(const bk_attn *p);
size_t cut_flash_fwd_scratch(const bk_attn *p);
int cut_flash_fwd(void *stream, float *out, const float *q, const float *k, const float *v, const bk_attn *p,
                  void *scratch);
size_t cut_flash_back_scratch(const bk_attn *p);
int cut_flash_back(void *stream, float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                   const float *v, const bk_attn *p, void *scratch);

/* Attention through materialized scores (cuda.c): sc [rows = H T][S]
 * holds scale q . k; the forward softmax (softcap, mask) in place; the
 * backward one turns sc into P and dp (dout . v) into dS (times scale). */
int cut_attn_softmax(void *stream, float *sc, int rows, int T, int S, float softcap, int window);
/* dst[b][a][0, d) = src[a][b][0, d) for a < A, b < B: [T][heads][d] to
 * [heads][T][d] and back */
int cut_swap_rows(void *stream, float *dst, const float *src, int A, int B, int d);
/* the same rounded to bf16, and where dst_f32 is not NULL unrounded into
 * it too (four values a thread where d % 4 == 0 and the pointers allow) */
int cut_swap_rows_bf16(void *stream, uint16_t *dst, float *dst_f32, const float *src, int A, int B, int d);
/* d1 = bf16(s1) and d2 = bf16(s2), n values each (four a thread where
 * n % 4 == 0 and the pointers allow) */
int cut_pair_to_bf16(void *stream, uint16_t *d1, const float *s1, uint16_t *d2, const float *s2, size_t n);
/* pb NULL: P and dS into sc and dp; else into pb and db in bf16 ([rows][S]
 * each), sc and dp only read */
int cut_attn_softmax_back(void *stream, float *sc, float *dp, uint16_t *pb, uint16_t *db, int rows, int T, int S,
                          float softcap, int window, float scale);

/* Products with a rank-r side (r <= CUT_LR_MAX; cudaErrorNotSupported past it,
 * or where the float4 accesses would not be aligned: cuBLAS then), W(k, c)
 * = w[k ldk + c ldc]:
 *   thin:   out[N][r] = alpha x[N][C] W^T (+ beta out)  (C % 4 == 0;
 *           cut_lr_thin_scratch bytes of scratch)
 *   expand: out[N][C] = alpha t[N][r] W (+ beta out)    (C % 4 == 0)
 *   reduce: dw[m gsm + k gsk] += alpha sum_n z[n][m] u[n][k], m < M, k < r
 *           (cut_lr_reduce_scratch bytes of scratch) */
#define CUT_LR_MAX 16 /* past it cuBLAS was faster (r 64: 80-210 us a call against 20-30) */
size_t cut_lr_thin_scratch(int N, int C, int r);
int cut_lr_thin(void *stream, float *out, const float *x, const float *w, int N, int C, int r, long ldk, long ldc,
                float alpha, float beta, void *scratch);
int cut_lr_expand(void *stream, float *out, const float *t, const float *w, int N, int C, int r, long ldk, long ldc,
                  float alpha, float beta);
size_t cut_lr_reduce_scratch(int N, int M, int r);
int cut_lr_reduce(void *stream, float *dw, const float *z, const float *u, int N, int M, int r, long gsm, long gsk,
                  float alpha, void *scratch);

#ifdef __cplusplus
}
#endif

#endif
