/* qgemm.c - the portable reference of the quantized products, and the
 * helpers every variant shares. */
#include "backend/cpu/qgemm.h"

#include <string.h>

#include "core/dtype.h"

int q_layout_ok(int bits, int group_size, int64_t cols)
{
    int b = bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
    int g = group_size == 32 || group_size == 64 || group_size == 128;
    return b && g && cols > 0 && cols % group_size == 0;
}

static float scalar(const void *base, infer_dtype t, size_t i)
{
    float f;
    dtype_to_f32(&f, (const unsigned char *)base + i * dtype_size(t), t, 1);
    return f;
}

void q_dequant_row(const bk_weight *w, int64_t r, int64_t c0, int64_t n, float *out)
{
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * bk_qrow_bytes(w);
    size_t groups = (size_t)(w->cols / w->group_size);
    unsigned mask = (1u << w->bits) - 1u;
    for (int64_t i = 0; i < n; i++) {
        int64_t c = c0 + i;
        size_t bit = (size_t)c * (size_t)w->bits;
        /* a value spans at most two bytes (bits <= 8) */
        unsigned v = row[bit >> 3];
        if ((bit & 7) + (size_t)w->bits > 8) v |= (unsigned)row[(bit >> 3) + 1] << 8;
        unsigned q = (v >> (bit & 7)) & mask;
        size_t g = (size_t)r * groups + (size_t)(c / w->group_size);
        out[i] = scalar(w->scales, w->sdtype, g) * (float)q + scalar(w->biases, w->sdtype, g);
    }
}

void qgemm_nt_ref(int M, int N, int K, const float *A, size_t lda, const bk_weight *w, int64_t n0, float *C,
                  size_t ldc, float *scratch)
{
    for (int n = 0; n < N; n++) {
        q_dequant_row(w, n0 + n, 0, K, scratch);
        for (int m = 0; m < M; m++) {
            const float *a = A + (size_t)m * lda;
            double s = 0.0;
            for (int k = 0; k < K; k++) s += (double)a[k] * scratch[k];
            C[(size_t)m * ldc + n] = (float)s;
        }
    }
}

size_t qgemm_scratch_floats(int M, int N, int K)
{
    (void)M;
    (void)N;
    return K > 0 ? (size_t)K : 1;
}

void qgemm_nt(int M, int N, int K, const float *A, size_t lda, const bk_weight *w, int64_t n0, float *C,
              size_t ldc, float *scratch)
{
    qgemm_nt_ref(M, N, K, A, lda, w, n0, C, ldc, scratch);
}
