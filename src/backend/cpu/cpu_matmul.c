/* cpu_matmul.c - y[T, rows] = x[T, cols] . W^T (+ bias) on the cpu.
 *
 * W stays in its stored dtype.  The rows of W (the columns of y) are cut
 * into blocks spread over the worker threads; each task runs the
 * single-threaded gemm_nt (gemm.c) on its block, which converts W to
 * float32 tile by tile while packing it into the worker's scratch (for a
 * few tokens it streams W once without packing).  Quantized W goes to
 * qgemm_nt (qgemm.c) the same way, after x has been transformed once for
 * all blocks (q_act_rows: int8 rounding, group sums, kernel order). */
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
    const q_act *qa; /* quantized W: x transformed */
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
    const unsigned char *src = w->dtype == DT_U32 ? NULL : (const unsigned char *)w->data + r0 * cols * dtype_size(w->dtype);
    float *pack = cpu_scratch_get(j->c, worker, j->pack);
    if (!pack) {
        j->failed = 1;
        return;
    }
    if (w->dtype == DT_U32)
        qgemm_nt(j->qa, w, (int64_t)r0, (int)nr, j->y + r0, rows, pack);
    else
        gemm_nt(j->T, (int)nr, (int)cols, j->x, cols, src, w->dtype, cols, j->y + r0, rows, pack);
    if (j->bias)
        for (int t = 0; t < j->T; t++)
            for (size_t r = 0; r < nr; r++) j->y[(size_t)t * rows + r0 + r] += j->bias[r0 + r];
}

typedef struct act_job {
    const q_act *qa;
    int rows; /* rows of x per task */
} act_job;

static void act_task(void *arg, int task, int worker)
{
    const act_job *a = arg;
    int m0 = task * a->rows, m1 = m0 + a->rows < a->qa->M ? m0 + a->rows : a->qa->M;
    q_act_rows(a->qa, m0, m1);
}

/* Quantized W: x transformed once (split over the workers for many
 * tokens), then blocks of rows of W.  For a few tokens the product reads W
 * once at memory speed: a block of at most 4 MB of W, at most a worker's
 * share, each read from start to end: every new block starts a stream
 * the prefetchers have to find again, which cost more than the threads'
 * uneven ends (gemma3-1b at 4 bits, int8 decode on the 2-core Zen 5,
 * 1 MB blocks of at most a quarter of a worker's share: 0.87-0.91 of the
 * read; of a half: 0.89-0.91; 4 MB blocks of the whole share: 0.94;
 * session 16); for many it is a blocked
 * GEMM: about two blocks a worker, a multiple of the micro-tile. */
static int64_t q_block(const cpu_ctx *c, const q_act *qa, const bk_weight *w)
{
    int64_t block;
    if (qa->small) {
        int64_t row_bytes = (int64_t)bk_qrow_bytes(w) + 2 * (w->cols / w->group_size) * 2;
        /* whole pairs of tiles of a tiled W (its decode kernel may read
         * two tiles side by side) */
        int64_t unit = w->tiled ? 2 * BK_TILE_ROWS : 8;
        block = ((int64_t)4 << 20) / row_bytes;
        block = (block + unit - 1) / unit * unit;
        if (block < unit) block = unit;
        int64_t per = (w->rows + c->n_workers - 1) / c->n_workers;
        if (per < block) block = per < unit ? unit : (per + unit - 1) / unit * unit;
    } else {
        int64_t per = (w->rows + 2 * c->n_workers - 1) / (2 * c->n_workers);
        block = (per + TILE_COLS - 1) / TILE_COLS * TILE_COLS;
        if (block < 2 * TILE_COLS) block = 2 * TILE_COLS;
        if (block > 1024) block = 1024;
    }
    return block > w->rows ? w->rows : block;
}

/* Float W: the rows of a task. */
static int64_t f_block(const cpu_ctx *c, const bk_weight *w, int T)
{
    int64_t block;
    if (T <= STREAM_MAX_T) {
        /* Blocks of about 1 MB of weights (each streamed from start to
         * end), at least 4 tasks a worker when the matrix is large enough. */
        block = (1024 * 1024) / (w->cols * (int64_t)dtype_size(w->dtype));
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
    return block > w->rows ? w->rows : block;
}

/* Several products of one x run as one job: task t of the whole is task
 * t - first[i] of product i. */
enum { MM_MAX = 4 };
typedef struct mm_multi {
    mm_job job[MM_MAX];
    int first[MM_MAX + 1];
} mm_multi;

static void mm_multi_task(void *arg, int task, int worker)
{
    mm_multi *mm = arg;
    int i = 0;
    while (task >= mm->first[i + 1]) i++;
    mm_task(&mm->job[i], task - mm->first[i], worker);
}

/* ys[i] = x . ws[i]^T (+ bs[i]) for n <= MM_MAX weights of one layout
 * (dtype, bits, group size, cols): x transformed once, one job. */
static int run_products(cpu_ctx *c, float *const *ys, const float *x, const bk_weight *const *ws,
                        const float *const *bs, int n, int T)
{
    const bk_weight *w0 = ws[0];
    int K = (int)w0->cols, quant = w0->dtype == DT_U32;
    q_act qa;
    /* int8 activations where they pay: decode always, products of many
     * rows only where the int8 GEMM beats the exact one (q_int8_gemm_pays) */
    const int int8 = c->int8 && (T <= Q_SMALL_M || q_int8_gemm_pays());
    if (quant) {
        pthread_mutex_lock(&c->act_lock);
        size_t ab = q_act_bytes(T, K, w0, int8);
        void *abuf = cpu_act_get(c, (ab + 3) / 4);
        if (!abuf) {
            pthread_mutex_unlock(&c->act_lock);
            return infer_err(INFER_ERR_OUT_OF_MEMORY, "matmul: out of memory for %zu bytes of activations", ab);
        }
        q_act_init(&qa, abuf, T, K, x, (size_t)K, w0, int8);
        if ((int64_t)T * K >= 65536 && c->n_workers > 1) {
            act_job a = {&qa, (T + 2 * c->n_workers - 1) / (2 * c->n_workers)};
            pool_run(c->pool, (T + a.rows - 1) / a.rows, act_task, &a);
        } else {
            q_act_rows(&qa, 0, T);
        }
    }
    mm_multi mm;
    mm.first[0] = 0;
    for (int i = 0; i < n; i++) {
        int64_t block = quant ? q_block(c, &qa, ws[i]) : f_block(c, ws[i], T);
        size_t pack = quant ? (qgemm_scratch_bytes(&qa, (int)block) + 3) / 4 : gemm_pack_floats(T, (int)block, K);
        mm.job[i] = (mm_job){c, ys[i], x, ws[i], bs[i], T, (int)block, pack, quant ? &qa : NULL, 0};
        mm.first[i + 1] = mm.first[i] + (int)((ws[i]->rows + block - 1) / block);
    }
    pool_run(c->pool, mm.first[n], mm_multi_task, &mm);
    if (quant) pthread_mutex_unlock(&c->act_lock);
    for (int i = 0; i < n; i++)
        if (mm.job[i].failed) return infer_err(INFER_ERR_OUT_OF_MEMORY, "matmul: out of memory for scratch");
    return INFER_OK;
}

static int check_weight(const bk_weight *w)
{
    if (w->dtype == DT_U32 && !q_layout_ok(w->bits, w->group_size, w->cols))
        return infer_err(INFER_ERR_UNSUPPORTED, "matmul: %d-bit weights in groups of %d over %lld columns are not supported",
                         w->bits, w->group_size, (long long)w->cols);
    if (w->dtype != DT_F32 && w->dtype != DT_F16 && w->dtype != DT_BF16 && w->dtype != DT_U32)
        return infer_err(INFER_ERR_UNSUPPORTED, "matmul: weight dtype %s is not supported on cpu",
                         dtype_name(w->dtype));
    if (w->rows > INT32_MAX || w->cols > INT32_MAX)
        return infer_err(INFER_ERR_UNSUPPORTED, "matmul: %lld x %lld weight is too large",
                         (long long)w->rows, (long long)w->cols);
    return INFER_OK;
}

static int same_layout(const bk_weight *a, const bk_weight *b)
{
    return a->dtype == b->dtype && a->cols == b->cols &&
           (a->dtype != DT_U32 || (a->bits == b->bits && a->group_size == b->group_size && a->tiled == b->tiled));
}

int cpu_matmul_n(void *ctx, void *const *ys, const void *x, const bk_weight *const *ws, const bk_weight *const *bs,
                 int n, int T)
{
    cpu_ctx *c = ctx;
    if (T <= 0 || n <= 0) return INFER_OK;
    if (n > MM_MAX) return infer_err(INFER_ERR_INVALID_ARGUMENT, "matmul: %d products at once (at most %d)", n, MM_MAX);
    int rc = INFER_OK, one = 1;
    for (int i = 0; i < n && !rc; i++) {
        if (ws[i]->rows <= 0 || ws[i]->cols <= 0) one = 0;
        else rc = check_weight(ws[i]);
        if (i && !same_layout(ws[0], ws[i])) one = 0;
    }
    if (rc) return rc;
    /* one job pays where the products stream W (few tokens); else, or
     * when the layouts differ, one product after another */
    if (!one || T > STREAM_MAX_T) {
        for (int i = 0; i < n && !rc; i++) rc = cpu_matmul(ctx, ys[i], x, ws[i], bs[i], T);
        return rc;
    }
    float *b[MM_MAX] = {NULL};
    float *y[MM_MAX];
    for (int i = 0; i < n && !rc; i++) {
        y[i] = ys[i];
        if (bs[i] && !(b[i] = cpu_vector_f32(bs[i], (size_t)ws[i]->rows)))
            rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "matmul: out of memory");
    }
    if (!rc) rc = run_products(c, y, x, ws, (const float *const *)b, n, T);
    for (int i = 0; i < n; i++) free(b[i]);
    return rc;
}

int cpu_matmul(void *ctx, void *y, const void *x, const bk_weight *w, const bk_weight *bias, int T)
{
    cpu_ctx *c = ctx;
    if (T <= 0 || w->rows <= 0 || w->cols <= 0) return INFER_OK;
    int rc = check_weight(w);
    if (rc) return rc;
    float *b = NULL;
    if (bias) {
        b = cpu_vector_f32(bias, (size_t)w->rows);
        if (!b) return infer_err(INFER_ERR_OUT_OF_MEMORY, "matmul: out of memory");
    }
    float *ys[1] = {y};
    const float *bs[1] = {b};
    rc = run_products(c, ys, x, &w, bs, 1, T);
    free(b);
    return rc;
}
