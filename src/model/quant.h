/* quant.h - MLX affine quantization: the rule MLX's quantize uses
 * (src/model/quant.c); the folder conversion behind `infer quantize` is
 * infer_quantize (include/infer.h, src/model/quantize_dir.c).
 *
 * The rule, per group of group_size values of a row (w in float32):
 *   edge = w_min if |w_min| > |w_max| else w_max
 *   scale = max((w_max - w_min) / (2^bits - 1), 1e-7), negated when edge is w_max
 *   q0 = rint(edge / scale); if q0 != 0: scale = edge / q0, bias = edge; else bias = 0
 *   q = clip(rint((w - bias) / scale), 0, 2^bits - 1)
 * with scale and bias stored in the weight's float dtype.  All in float32,
 * as MLX computes it (tests/ref/mlx_quant.py is the reference port). */
#ifndef INFER_MODEL_QUANT_H
#define INFER_MODEL_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

/* Quantizes rows x cols values of w (in dtype wt: F32, F16 or BF16) into
 * packed (rows * cols * bits / 8 bytes, the layout of bk_weight) and
 * scales/biases (rows * cols / group_size values in dtype st).  cols must
 * be a multiple of group_size. */
int quant_matrix(const void *w, infer_dtype wt, int64_t rows, int64_t cols, int bits, int group_size,
                 uint8_t *packed, void *scales, void *biases, infer_dtype st);

/* Rows r0 .. r0 + n_rows of a quantized matrix as float32 (out [n_rows,
 * cols]): w = scale * q + bias, computed in float32 from the stored scale
 * and bias.  The layout is quant_matrix's. */
void quant_dequant_rows(const uint8_t *packed, int64_t r0, int64_t n_rows, int64_t cols, int bits, int group_size,
                        const void *scales, const void *biases, infer_dtype st, float *out);

/* 1 if MLX quantizes to this many bits (2, 3, 4, 5, 6, 8) / in groups of
 * this size (32, 64, 128). */
int quant_bits_ok(int bits);
int quant_group_ok(int group_size);

#endif
