/* cpu_matmul.c - y[T, rows] = x[T, cols] . W^T (+ bias) on the cpu.
 *
 * W stays in its stored dtype.  The rows of W (the columns of y) are cut
 * into blocks spread over the worker threads; each task runs the
 * single-threaded gemm_nt (gemm.c) on its block, which converts W to
 * float32 tile by tile while packing it into the worker's scratch (for one
 * or two tokens it streams W once without packing). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/cpu/gemm.h"
#include "backend/cpu/qgemm.h"
#include "core/error.h"

/* Up to this many tokens the product is bound by reading W: small blocks
 * balance the threads; beyond it blocks are large enough that packing the
 * activations once per block costs little. */
enum { STREAM_MAX_T = 4, TILE_COLS = 32 };

typedef struct mm_job {
    cpu_ctx *c;
    float *y;
    const float *x;
    const bk_weight *w;
    const float *bias;
    int T;
    int block;     /* rows per task */
    size_t pack;   /* scratch floats per task */
    int failed;    /* set when a scratch allocation failed */
} mm_job;

float cpu_dot(const float *a, const float *b, size_t n)
{
    float s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += a[i + k] * b[i + k];
    float r = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

static void mm_task(void *arg, int task, int worker)
{
    mm_job *j = arg;
    const bk_weight *w = j->w;
    size_t cols = (size_t)w->cols, rows = (size_t)w->rows;
    size_t r0 = (size_t)task * j->block;
    size_t nr = rows - r0 < (size_t)j->block ? rows - r0 : (size_t)j->block;
    const unsigned char *src = (const unsigned char *)w->data + r0 * cols * dtype_size(w->dtype);
    float *pack = cpu_scratch_get(j->c, worker, j->pack);
    if (!pack) {
        j->failed = 1;
        return;
    }
    if (w->dtype == DT_U32) {
        qgemm_nt(j->T, (int)nr, (int)cols, j->x, cols, w, (int64_t)r0, j->y + r0, rows, pack);
    } else
    gemm_nt(j->T, (int)nr, (int)cols, j->x, cols, src, w->dtype, cols, j->y + r0, rows, pack);
    if (j->bias)
        for (int t = 0; t < j->T; t++)
            for (size_t r = 0; r < nr; r++) j->y[(size_t)t * rows + r0 + r] += j->bias[r0 + r];
}

int cpu_matmul(void *ctx, void *y, const void *x, const bk_weight *w, const bk_weight *bias, int T)
{
    cpu_ctx *c = ctx;
    if (T <= 0 || w->rows <= 0 || w->cols <= 0) return INFER_OK;
    if (w->dtype == DT_U32 && !q_layout_ok(w->bits, w->group_size, w->cols))
        return infer_err(INFER_ERR_UNSUPPORTED, "matmul: %d-bit weights in groups of %d over %lld columns are not supported",
                         w->bits, w->group_size, (long long)w->cols);
    if (w->dtype != DT_F32 && w->dtype != DT_F16 && w->dtype != DT_BF16 && w->dtype != DT_U32)
        return infer_err(INFER_ERR_UNSUPPORTED, "matmul: weight dtype %s is not supported on cpu",
                         dtype_name(w->dtype));
    if (w->rows > INT32_MAX || w->cols > INT32_MAX)
        return infer_err(INFER_ERR_UNSUPPORTED, "matmul: %lld x %lld weight is too large",
                         (long long)w->rows, (long long)w->cols);
    float *b = NULL;
    if (bias) {
        b = cpu_vector_f32(bias, (size_t)w->rows);
        if (!b) return infer_err(INFER_ERR_OUT_OF_MEMORY, "matmul: out of memory");
    }
    int64_t block;
    if (T <= STREAM_MAX_T) {
        /* Blocks of about 256 KB of float32 weights, at least 4 tasks a
         * worker when the matrix is large enough. */
        block = (256 * 1024 / 4) / w->cols;
        if (block < 8) block = 8;
        int64_t per = (w->rows + 4 * c->n_workers - 1) / (4 * c->n_workers);
        if (per < block) block = per < 8 ? 8 : per;
    } else {
        /* About 2 tasks a worker, whole micro-tiles, at most 1024 rows. */
        int64_t per = (w->rows + 2 * c->n_workers - 1) / (2 * c->n_workers);
        block = (per + TILE_COLS - 1) / TILE_COLS * TILE_COLS;
        if (block < 2 * TILE_COLS) block = 2 * TILE_COLS;
        if (block > 1024) block = 1024;
    }
    if (block > w->rows) block = w->rows;
    size_t pack = w->dtype == DT_U32 ? qgemm_scratch_floats(T, (int)block, (int)w->cols)
                                     : gemm_pack_floats(T, (int)block, (int)w->cols);
    mm_job j = {c, y, x, w, b, T, (int)block, pack, 0};
    int n_tasks = (int)((w->rows + block - 1) / block);
    pool_run(c->pool, n_tasks, mm_task, &j);
    free(b);
    if (j.failed) return infer_err(INFER_ERR_OUT_OF_MEMORY, "matmul: out of memory for scratch");
    return INFER_OK;
}
