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

/* Attention through materialized scores (cuda.c): sc [rows = H T][S]
 * holds scale q . k; the forward softmax (softcap, mask) in place; the
 * backward one turns sc into P and dp (dout . v) into dS (times scale). */
int cut_attn_softmax(void *stream, float *sc, int rows, int T, int S, float softcap, int window);
/* dst[b][a][0, d) = src[a][b][0, d) for a < A, b < B: [T][heads][d] to
 * [heads][T][d] and back */
int cut_swap_rows(void *stream, float *dst, const float *src, int A, int B, int d);
int cut_attn_softmax_back(void *stream, float *sc, float *dp, int rows, int T, int S, float softcap, int window,
                          float scale);

#ifdef __cplusplus
}
#endif

#endif
