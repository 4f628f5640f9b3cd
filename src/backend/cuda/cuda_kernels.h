/* cuda_kernels.h - the kernels of the cuda backend (cuda_kernels.cu), as C
 * functions that launch them on a stream and return the launch's
 * cudaError_t (0 = success).  Pointers are device pointers; activations are
 * float32.  Shapes and layouts are those of backend.h's entries. */
#ifndef INFER_BACKEND_CUDA_KERNELS_H
#define INFER_BACKEND_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most rows of x the matrix-vector kernel takes (cuda.c gives it one row
 * where cuk_qmm or cuBLAS is faster: 4- and 8-bit and bf16 W); more go to
 * cuk_qmm or cuBLAS. */
enum { CUK_MATVEC_MAX_T = 8 };
/* Most rows of x the quantized tensor-core product takes (cuk_qmm; from 2
 * rows: the matrix-vector kernel is for one); more convert W to bf16 for
 * cuBLAS, which is faster there. */
#ifndef CUK_QMM_MAX_T /* (a build may set it, to compare the two ways) */
#define CUK_QMM_MAX_T 64
#endif

/* Once, before any launch (synchronous; not inside a stream capture):
 * what the device's code can do (wgmma where it is sm_90a). */
int cuk_init(void);
int cuk_embed(void *stream, float *out, const int32_t *ids, int T, const bk_weight *emb, float scale);
/* y[T, w.rows] = x[T, w.cols] . w^T (+ bias), T <= CUK_MATVEC_MAX_T: each
 * weight read once, every dtype (MLX-quantized of any bits too). */
int cuk_matvec(void *stream, float *y, const float *x, const bk_weight *w, const bk_weight *bias, int T);
/* ys[i] = x . ws[i]^T (+ bs[i], may be NULL or hold NULL) for n <= 4
 * weights of the same dtype, bits, group size and cols, as one launch;
 * cudaErrorNotSupported (nothing launched) for weights of different
 * formats. */
int cuk_matvec_n(void *stream, float *const *ys, const float *x, const bk_weight *const *ws,
                 const bk_weight *const *bs, int n, int T);
/* ys[i][T, ws[i].rows] = x[T, cols] . ws[i]^T (+ bs[i]) for n <= 4 MLX
 * 4- or 8-bit weights of the same bits, scale dtype and cols (each
 * cuk_qmm_ok(ws[i], T): 1 < T <= CUK_QMM_MAX_T) on tensor cores, each
 * weight read once per 32 rows of x, x converted once (to act(x) * up
 * where up is not NULL, gelu choosing the activation).  scratch:
 * cuk_qmm_scratch(ws, n, T) bytes of device memory that nothing else uses
 * until the launches have run. */
/* What cuk_qmm does besides (NULL: nothing): norm not NULL: x is normed
 * first, row by row, as cuk_rmsnorm does with norm, eps and plus_one (not
 * with up: cudaErrorNotSupported); acc: ys[i] += the products (and
 * biases) instead of = */
typedef struct cuk_qmm_extra {
    const bk_weight *norm;
    float eps;
    int plus_one;
    int acc;
} cuk_qmm_extra;
int cuk_qmm_ok(const bk_weight *w, int T);
size_t cuk_qmm_scratch(const bk_weight *const *ws, int n, int T);
int cuk_qmm(void *stream, float *const *ys, const float *x, const float *up, int gelu, const bk_weight *const *ws,
            const bk_weight *const *bs, int n, int T, void *scratch, const cuk_qmm_extra *ex);
/* dst[n] (bf16) = src[n] (float32) */
int cuk_f32_to_bf16(void *stream, void *dst, const float *src, size_t n);
/* dst [2n] = x as two bf16 terms (x: src, or act(src) up where up is not
 * NULL): bf16(x), then bf16(x - bf16(x)); their sum is x within 2^-18 |x| */
int cuk_to_bf16_split(void *stream, void *dst, const float *src, const float *up, size_t n, bk_act act);
/* y[i] = beta y[i] + h[i] + h[n + i] (beta 0 or 1), i < n */
int cuk_add_halves(void *stream, float *y, const float *h, size_t n, float beta);
/* dst = bf16(act(gate) up), n values */
int cuk_glu_to_bf16(void *stream, void *dst, const float *gate, const float *up, size_t n, bk_act act);
/* dst[nr, w.cols] (bf16) = rows [r0, r0 + nr) of w, dequantized or converted */
int cuk_weight_to_bf16(void *stream, void *dst, const bk_weight *w, int64_t r0, int64_t nr);
/* The same into f16 (round to nearest even) */
int cuk_weight_to_f16(void *stream, void *dst, const bk_weight *w, int64_t r0, int64_t nr);
/* dst = f16(x sc) (x: src, or act(src) up where up is not NULL), n
 * values, sc the power of two that takes x's largest magnitude to [2^13,
 * 2^14) (1 where it is 0 or infinite); consts[0..2] = {1 / sc, 0, 1}
 * (alpha and beta for cuBLAS in device pointer mode), mx a word of scratch
 * (zeroed, then the largest magnitude's bits) */
int cuk_to_f16_scaled(void *stream, void *dst, float *consts, unsigned *mx, const float *src, const float *up,
                      size_t n, bk_act act);
/* y[t, r] += bias[r] */
int cuk_add_bias(void *stream, float *y, const bk_weight *bias, int T, int64_t rows);
int cuk_rmsnorm(void *stream, float *y, const float *x, const bk_weight *w, int rows, int dim, float eps,
                int plus_one);
/* x += a (a first normed with a_norm, when not NULL; a may be overwritten),
 * then y = rmsnorm(x) */
int cuk_add_rmsnorm(void *stream, float *x, float *a, const bk_weight *a_norm, float *y, const bk_weight *w,
                    int rows, int dim, float eps, int plus_one);
int cuk_qk_rope_store(void *stream, float *q, float *k, const float *v, float *kc, float *vc, const bk_weight *qn,
                      const bk_weight *kn, float eps, int plus_one, const int32_t *pos, const float *inv_freq,
                      float attn_factor, const bk_attn_kv *p);
/* y[1, w.rows] = (act(gate) * up) . w^T (+ bias); cudaErrorNotSupported
 * (nothing launched) where the fused kernel does not apply. */
int cuk_matvec_glu(void *stream, float *y, const float *gate, const float *up, bk_act act, const bk_weight *w,
                   const bk_weight *bias);
/* One row of x, as one launch where a kernel that stages x applies
 * (cudaErrorNotSupported, nothing launched, where none does):
 * cuk_matvec_norm: ys[i] = rmsnorm(x) . ws[i]^T (+ bs[i]), the norm with
 * norm, eps and plus_one as cuk_rmsnorm's, n <= 4 weights of one format;
 * cuk_matvec_add: y += (act(x) * up, or x where up is NULL) . w^T (+ bias). */
int cuk_matvec_norm(void *stream, float *const *ys, const float *x, const bk_weight *norm, float eps, int plus_one,
                    const bk_weight *const *ws, const bk_weight *const *bs, int n);
int cuk_matvec_add(void *stream, float *y, const float *x, const float *up, bk_act act, const bk_weight *w,
                   const bk_weight *bias);
int cuk_rope(void *stream, float *x, const int32_t *pos, int T, int n_heads, int head_dim, const float *inv_freq,
             float attn_factor);
int cuk_attention(void *stream, float *out, const float *q, const float *k, const float *v, const bk_attn *p);
int cuk_kv_store(void *stream, float *kc, float *vc, const float *k, const float *v, const bk_attn_kv *p);
/* scratch: cuk_attention_kv_scratch(p) bytes of device memory (NULL when
 * that is 0), for the parts of rows split along the sequence.  counts:
 * n_counts ints of device memory, all zero, left zero: where they cover
 * the rows and heads, the last part of a split row merges its parts (else
 * a second kernel does). */
size_t cuk_attention_kv_scratch(const bk_attn_kv *p);
/* Where cuk_attention_kv takes p with the flash kernel (TF32 tensor cores,
 * p->fast): 1 for a prefill in blocks of 64 rows, which
 * cuk_rope_attention_kv does not take; 4 for blocks of 16 rows (decode
 * steps of a batch that fills the device, which cuk_rope_attention_kv
 * takes too, and short prefills); 0 where the other kernels take p. */
int cuk_attention_kv_flash(const bk_attn_kv *p);
/* The attention op (bk_attn: out[batch * T, heads, hd]) through the flash
 * kernels where they take it (p->fast, as cuk_attention_kv_flash says for
 * the same shapes): cudaErrorNotSupported, nothing launched, elsewhere.
 * scratch: cuk_attention_flash_scratch(p) bytes (0: not taken). */
size_t cuk_attention_flash_scratch(const bk_attn *p);
int cuk_attention_flash(void *stream, float *out, const float *q, const float *k, const float *v, const bk_attn *p,
                        void *scratch);
int cuk_attention_kv(void *stream, float *out, const float *q, const float *kc, const float *vc,
                     const bk_attn_kv *p, void *scratch, int *counts, size_t n_counts);
/* cuk_qk_rope_store then cuk_attention_kv as one launch, for steps with
 * one new row a sequence (N == B; else cudaErrorNotSupported, nothing
 * launched); q and k are read, not rotated in place. */
int cuk_rope_attention_kv(void *stream, float *out, const float *q, const float *k, const float *v, float *kc,
                          float *vc, const bk_weight *qn, const bk_weight *kn, float eps, int plus_one,
                          const int32_t *pos, const float *inv_freq, float attn_factor, const bk_attn_kv *p,
                          void *scratch, int *counts, size_t n_counts);
int cuk_gather_rows(void *stream, float *dst, const float *src, const int32_t *idx, int n, size_t width);
int cuk_glu(void *stream, float *out, const float *gate, const float *up, size_t n, bk_act act);
int cuk_add(void *stream, float *y, const float *a, size_t n);
int cuk_softcap(void *stream, float *x, size_t n, float cap);
/* backend.h's argmax: out int32 [rows, 2].  scratch: cuk_argmax_scratch
 * bytes (NULL when 0) and counts as cuk_attention_kv's: long rows are cut
 * into parts merged by the last (else one block a row). */
size_t cuk_argmax_scratch(int rows, size_t cols);
int cuk_argmax(void *stream, int32_t *out, const float *x, int rows, size_t cols, void *scratch, int *counts,
               size_t n_counts);

#ifdef __cplusplus
}
#endif

#endif
