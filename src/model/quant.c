/* quant.c - MLX affine quantization of one matrix, and its inverse.
 *
 * quant_matrix follows mlx/backend/cpu/quantized.cpp (`quantize`) step by
 * step, in float32 and in the same order of operations, so that its output
 * is bit for bit MLX's (tests/ref/mlx_quant.py is the Python port the tests
 * compare with).  MLX's Metal and CUDA kernels differ from its CPU code in
 * two corners (they round halves away from zero and start the group
 * maximum at 0); the CPU rule is the one kept here. */
#include "model/quant.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

int quant_bits_ok(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8; }

int quant_group_ok(int group_size) { return group_size == 32 || group_size == 64 || group_size == 128; }

static void store_scalar(void *base, infer_dtype t, size_t i, float v)
{
    dtype_from_f32((unsigned char *)base + i * dtype_size(t), &v, t, 1);
}

static float load_scalar(const void *base, infer_dtype t, size_t i)
{
    float f;
    dtype_to_f32(&f, (const unsigned char *)base + i * dtype_size(t), t, 1);
    return f;
}

static int float_dtype(infer_dtype t) { return t == DT_F32 || t == DT_F16 || t == DT_BF16; }

/* Writes the low `bits` bits of q at bit position `bit` of a zeroed row. */
static void put_bits(uint8_t *row, size_t bit, unsigned q, int bits)
{
    unsigned v = q << (bit & 7);
    row[bit >> 3] |= (uint8_t)v;
    if ((bit & 7) + (size_t)bits > 8) row[(bit >> 3) + 1] |= (uint8_t)(v >> 8);
}

static unsigned get_bits(const uint8_t *row, size_t bit, int bits)
{
    unsigned v = row[bit >> 3];
    if ((bit & 7) + (size_t)bits > 8) v |= (unsigned)row[(bit >> 3) + 1] << 8;
    return (v >> (bit & 7)) & ((1u << bits) - 1u);
}

/* One group of g values (float32) of a row: MLX's rule.  q[0..g) gets the
 * quantized values, *scale and *bias the group's parameters (float32,
 * before they are stored in their dtype). */
static void quant_group(const float *w, int g, int bits, unsigned *q, float *scale_out, float *bias_out)
{
    const float n_bins = (float)((1 << bits) - 1);
    const float eps = (float)1e-7;
    float w_min = INFINITY, w_max = -INFINITY;
    for (int j = 0; j < g; j++) {
        if (w_max < w[j]) w_max = w[j]; /* std::max(w_max, x) */
        if (w[j] < w_min) w_min = w[j]; /* std::min(w_min, x) */
    }
    int mask = fabsf(w_min) > fabsf(w_max);
    float scale = (w_max - w_min) / n_bins;
    if (scale < eps) scale = eps;
    scale = mask ? scale : -scale;
    float edge = mask ? w_min : w_max;
    float q0 = rintf(edge / scale);
    float bias = 0.0f;
    if (q0 != 0.0f) {
        scale = edge / q0;
        bias = edge;
    }
    for (int j = 0; j < g; j++) {
        float v = rintf((w[j] - bias) / scale);
        if (v < 0.0f) v = 0.0f;
        if (n_bins < v) v = n_bins;
        q[j] = (unsigned)v;
    }
    *scale_out = scale;
    *bias_out = bias;
}

int quant_matrix(const void *w, infer_dtype wt, int64_t rows, int64_t cols, int bits, int group_size,
                 uint8_t *packed, void *scales, void *biases, infer_dtype st)
{
    if (!w || !packed || !scales || !biases)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "quant_matrix: NULL argument");
    if (!float_dtype(wt) || !float_dtype(st))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "quant_matrix: dtypes %s -> %s: expected F32, F16 or BF16",
                         dtype_name(wt), dtype_name(st));
    if (!quant_bits_ok(bits))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "quant_matrix: %d bits (MLX quantizes to 2, 3, 4, 5, 6 or 8)",
                         bits);
    if (!quant_group_ok(group_size))
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "quant_matrix: group size %d (MLX takes 32, 64 or 128)",
                         group_size);
    if (rows < 0 || cols <= 0 || cols % group_size != 0)
        return infer_err(INFER_ERR_INVALID_ARGUMENT,
                         "quant_matrix: %lld columns is not a positive multiple of the group size %d",
                         (long long)cols, group_size);
    size_t esz = dtype_size(wt);
    size_t row_bytes = (size_t)cols * (size_t)bits / 8;
    size_t groups = (size_t)(cols / group_size);
    float buf[128];
    unsigned q[128];
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *prow = packed + (size_t)r * row_bytes;
        memset(prow, 0, row_bytes);
        for (size_t g = 0; g < groups; g++) {
            size_t c0 = g * (size_t)group_size;
            dtype_to_f32(buf, (const unsigned char *)w + ((size_t)r * (size_t)cols + c0) * esz, wt,
                         (size_t)group_size);
            for (int j = 0; j < group_size; j++)
                if (!isfinite(buf[j]))
                    return infer_err(INFER_ERR_INVALID_ARGUMENT, "value %g at row %lld, column %zu is not finite",
                                     (double)buf[j], (long long)r, c0 + (size_t)j);
            float scale, bias;
            quant_group(buf, group_size, bits, q, &scale, &bias);
            for (int j = 0; j < group_size; j++) put_bits(prow, (c0 + (size_t)j) * (size_t)bits, q[j], bits);
            store_scalar(scales, st, (size_t)r * groups + g, scale);
            store_scalar(biases, st, (size_t)r * groups + g, bias);
        }
    }
    return INFER_OK;
}

void quant_dequant_rows(const uint8_t *packed, int64_t r0, int64_t n_rows, int64_t cols, int bits, int group_size,
                        const void *scales, const void *biases, infer_dtype st, float *out)
{
    size_t row_bytes = (size_t)cols * (size_t)bits / 8;
    size_t groups = (size_t)(cols / group_size);
    for (int64_t r = r0; r < r0 + n_rows; r++) {
        const uint8_t *prow = packed + (size_t)r * row_bytes;
        float *o = out + (size_t)(r - r0) * (size_t)cols;
        for (size_t g = 0; g < groups; g++) {
            float s = load_scalar(scales, st, (size_t)r * groups + g);
            float b = load_scalar(biases, st, (size_t)r * groups + g);
            for (int j = 0; j < group_size; j++) {
                size_t c = g * (size_t)group_size + (size_t)j;
                o[c] = s * (float)get_bits(prow, c * (size_t)bits, bits) + b;
            }
        }
    }
}
