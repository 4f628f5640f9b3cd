/* cuda.c - the cuda backend: contexts, memory, weights on the device, and
 * the op table over the kernels of cuda_kernels.cu and cuBLAS.
 *
 * One context is one device (the first), one stream and one cuBLAS handle;
 * every op is queued on the stream and returns without waiting, except the
 * downloads and synchronize.  Activations are float32.  Products:
 *   - up to CUK_MATVEC_MAX_T rows of x (bf16 W: one): our matrix-vector
 *     kernels, which read each weight once in its stored dtype (bf16, f16,
 *     f32, MLX quantized), several weights of one x in one launch
 *     (matmul_n);
 *   - 2 to CUK_QMM_MAX_T rows with 4- or 8-bit W (cuk_qmm_ok): our
 *     tensor-core kernel, W dequantized to f16 in registers (x rounded to
 *     f16, each row scaled by a power of two);
 *   - more rows: cuBLAS with float32 accumulation: bf16 W against x
 *     rounded to bf16; f16 W, and quantized W converted to f16 in slices
 *     of rows, against x rounded to f16 (scaled by a power of two); float32
 *     W by float32 SGEMM.
 * Memory: a caching allocator over cudaMalloc (mem_pool.h): active, peak
 * and cache bytes, the memory limit (a clean out-of-memory error), the
 * cache limit and clear_cache; weights count too.  The wired limit bounds
 * the pinned host memory of host_alloc (the buffers logits come back in).  Kernels are
 * launched so that each may start while the one before it finishes
 * (programmatic dependent launch, sm_90: cuda_kernels.cu). */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_train.h"
#include "backend/mem_counter.h"
#include "backend/mem_pool.h"
#include "core/error.h"

typedef struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    pthread_mutex_t lock; /* held while the scratch below is in use */
    void *scratch;        /* bf16 operands of cuBLAS products, and of cuk_qmm */
    size_t scratch_cap;
    unsigned scratch_epoch; /* how often the scratch was replaced: graphs made before are stale */
    double *sumsq;          /* one device double for cuda_sumsq */
    int *counts;            /* N_COUNTS zeros: the counters of kernels whose last block merges the
                             * others' parts (cuk_attention_kv, cuk_argmax), left zero by each */
} cuda_ctx;

/* Counters: a decode step's rows x heads of split attention (64 rows of
 * 128 heads), or rows of argmax. */
enum { N_COUNTS = 8192 };

static bk_counters mem;

/* Slices of converted weight rows for cuBLAS: at most this many bytes. */
enum { SLICE_BYTES = 64 << 20 };

static int cu_fail(cudaError_t e, const char *what)
{
    return infer_err(e == cudaErrorMemoryAllocation ? INFER_ERR_OUT_OF_MEMORY : INFER_ERR_BACKEND,
                     "cuda backend: %s: %s", what, cudaGetErrorString(e));
}

static int blas_fail(cublasStatus_t s, const char *what)
{
    return infer_err(s == CUBLAS_STATUS_ALLOC_FAILED ? INFER_ERR_OUT_OF_MEMORY : INFER_ERR_BACKEND,
                     "cuda backend: %s: cuBLAS status %d", what, (int)s);
}

/* A kernel launcher's result. */
static int launched(int e, const char *op)
{
    if (e == (int)cudaErrorInvalidValue)
        return infer_err(INFER_ERR_UNSUPPORTED, "cuda backend: %s: these sizes are not supported", op);
    return e ? cu_fail((cudaError_t)e, op) : INFER_OK;
}

static int has_device;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

static void probe(void)
{
    int n = 0;
    has_device = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    cudaGetLastError(); /* a machine without a driver leaves an error behind */
}

static int cuda_available(void)
{
    pthread_once(&probe_once, probe);
    return has_device;
}

static int dev_alloc(size_t bytes, void **out);
static void dev_free(void *p);

static void cuda_destroy(void *p)
{
    cuda_ctx *c = p;
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream);
    dev_free(c->scratch);
    dev_free(c->sumsq);
    dev_free(c->counts);
    if (c->blas) cublasDestroy(c->blas);
    if (c->stream) cudaStreamDestroy(c->stream);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static int cuda_create(const bk_opts *opts, void **out)
{
    (void)opts;
    *out = NULL;
    if (!cuda_available()) return infer_err(INFER_ERR_BACKEND, "cuda backend: no CUDA device is available");
    cuda_ctx *c = calloc(1, sizeof *c);
    if (!c) return infer_err(INFER_ERR_OUT_OF_MEMORY, "cuda backend: out of memory");
    pthread_mutex_init(&c->lock, NULL);
    cudaError_t e;
    cublasStatus_t s;
    if ((e = cudaSetDevice(0)) || (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking))) {
        cuda_destroy(c);
        return cu_fail(e, "creating a stream");
    }
    if ((s = cublasCreate(&c->blas)) || (s = cublasSetStream(c->blas, c->stream))) {
        cuda_destroy(c);
        return blas_fail(s, "creating a cuBLAS handle");
    }
    cuk_init();
    int rc = dev_alloc(N_COUNTS * sizeof(int), (void **)&c->counts);
    if (rc || (e = cudaMemset(c->counts, 0, N_COUNTS * sizeof(int)))) {
        cuda_destroy(c);
        return rc ? rc : cu_fail(e, "clearing the attention counters");
    }
    *out = c;
    return INFER_OK;
}

/* ---- memory ---- */

/* Device memory goes through a caching allocator (mem_pool.h): cudaMalloc
 * and cudaFree are slow and wait for the device, and a freed block is
 * usually wanted again at once (a session's scratch, a KV cache). */
static int raw_alloc(size_t bytes, void **out)
{
    if (cudaMalloc(out, bytes) == cudaSuccess) return 0;
    cudaGetLastError();
    *out = NULL;
    return 1;
}

static void raw_free(void *p) { cudaFree(p); }

static bk_pool pool = BK_POOL_INIT("cuda", raw_alloc, raw_free, &mem);

static int dev_alloc(size_t bytes, void **out) { return bkp_alloc(&pool, bytes, out); }

/* Keeps a block of dev_alloc for reuse; anything else (a weight still on
 * the host after a failed prepare) is left alone. */
static void dev_free(void *p) { bkp_free(&pool, p); }

static int cuda_alloc(void *ctx, size_t bytes, void **out)
{
    (void)ctx;
    return dev_alloc(bytes, out);
}

static void cuda_free(void *ctx, void *p)
{
    cuda_ctx *c = ctx;
    /* the stream may still use it */
    if (p && c) cudaStreamSynchronize(c->stream);
    dev_free(p);
}

/* Pinned host memory: each block starts with its size, so that free can
 * give its bytes back to the count the wired limit bounds (bkc_pin).
 * Pinning is slow (tens of milliseconds for the logits of a batch), so
 * freed blocks are kept for the next request that fits them (up to twice
 * their need), HOST_KEEP at most; they stay pinned and counted until
 * clear_cache, or until a request would pass the wired limit. */
enum { HOST_HEAD = 64, HOST_KEEP = 4 };

static struct {
    pthread_mutex_t lock;
    void *blk[HOST_KEEP];
    int count;
} hkeep = {PTHREAD_MUTEX_INITIALIZER, {NULL}, 0};

static void host_release(void *b)
{
    bkc_unpin(&mem, *(size_t *)b);
    cudaFreeHost(b);
}

/* Frees the kept blocks; returns how many. */
static int host_drop_kept(void)
{
    pthread_mutex_lock(&hkeep.lock);
    int n = hkeep.count;
    for (int i = 0; i < n; i++) host_release(hkeep.blk[i]);
    hkeep.count = 0;
    pthread_mutex_unlock(&hkeep.lock);
    return n;
}

static int cuda_host_alloc(void *ctx, size_t bytes, void **out)
{
    (void)ctx;
    *out = NULL;
    size_t n = bytes + HOST_HEAD, lim = 0, before = 0;
    pthread_mutex_lock(&hkeep.lock);
    int best = -1;
    for (int i = 0; i < hkeep.count; i++) {
        size_t have = *(size_t *)hkeep.blk[i];
        if (have >= n && have / 2 <= n && (best < 0 || have < *(size_t *)hkeep.blk[best])) best = i;
    }
    if (best >= 0) {
        char *b = hkeep.blk[best];
        hkeep.blk[best] = hkeep.blk[--hkeep.count];
        pthread_mutex_unlock(&hkeep.lock);
        *out = b + HOST_HEAD;
        return INFER_OK;
    }
    pthread_mutex_unlock(&hkeep.lock);
    if (!bkc_pin(&mem, n, &lim, &before) && (!host_drop_kept() || !bkc_pin(&mem, n, &lim, &before)))
        return infer_err(INFER_ERR_OUT_OF_MEMORY,
                         "cuda backend: pinning %zu bytes of host memory would pass the wired limit (%zu of %zu pinned)",
                         bytes, before, lim);
    void *p = NULL;
    cudaError_t e = cudaMallocHost(&p, n);
    if (e) {
        bkc_unpin(&mem, n);
        cudaGetLastError();
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "cuda backend: pinning %zu bytes of host memory: %s", bytes,
                         cudaGetErrorString(e));
    }
    *(size_t *)p = n;
    *out = (char *)p + HOST_HEAD;
    return INFER_OK;
}

static void cuda_host_free(void *ctx, void *p)
{
    (void)ctx;
    if (!p) return;
    char *b = (char *)p - HOST_HEAD;
    pthread_mutex_lock(&hkeep.lock);
    if (hkeep.count < HOST_KEEP) {
        hkeep.blk[hkeep.count++] = b;
        b = NULL;
    }
    pthread_mutex_unlock(&hkeep.lock);
    if (b) host_release(b);
}

static int cuda_upload(void *ctx, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = ctx;
    if (!bytes) return INFER_OK;
    /* from pageable memory the copy returns once src has been read */
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream);
    return e ? cu_fail(e, "upload") : INFER_OK;
}

static int cuda_download(void *ctx, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = ctx;
    if (!bytes) return INFER_OK;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream);
    if (!e) e = cudaStreamSynchronize(c->stream);
    return e ? cu_fail(e, "download") : INFER_OK;
}

static int cuda_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = ctx;
    if (!bytes) return INFER_OK;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream);
    return e ? cu_fail(e, "copy") : INFER_OK;
}

static int cuda_sync(void *ctx)
{
    cuda_ctx *c = ctx;
    cudaError_t e = cudaStreamSynchronize(c->stream);
    return e ? cu_fail(e, "running the queued work") : INFER_OK;
}

static void cuda_memory(void *ctx, size_t *active, size_t *peak)
{
    (void)ctx;
    *active = bkc_get(&mem, BK_MEM_ACTIVE);
    *peak = bkc_get(&mem, BK_MEM_PEAK);
}

static size_t cuda_mem_get(bk_mem what) { return bkc_get(&mem, what); }

static int cuda_mem_set(bk_mem what, size_t value, size_t *previous)
{
    int rc = bkc_set(&mem, what, value, previous, "cuda");
    if (!rc && what == BK_MEM_CACHE_LIMIT) bkp_trim(&pool);
    return rc;
}

static int cuda_clear_cache(void)
{
    bkp_clear(&pool);
    host_drop_kept();
    return INFER_OK;
}

static int cuda_reset_peak(void)
{
    bkc_reset_peak(&mem);
    return INFER_OK;
}

static int cuda_device_info(infer_device_info *out)
{
    if (!cuda_available()) return infer_err(INFER_ERR_BACKEND, "cuda backend: no CUDA device is available");
    struct cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, 0);
    if (e) return cu_fail(e, "reading the device's properties");
    snprintf(out->name, sizeof out->name, "%.127s", p.name);
    size_t free_b = 0, total = 0;
    if (cudaSetDevice(0) == cudaSuccess && cudaMemGetInfo(&free_b, &total) == cudaSuccess) {
        out->memory_total = total;
        out->memory_free = free_b;
    } else {
        cudaGetLastError();
        out->memory_total = p.totalGlobalMem;
        out->memory_free = 0;
    }
    out->compute_major = p.major;
    out->compute_minor = p.minor;
    out->multiprocessors = p.multiProcessorCount;
    snprintf(out->features, sizeof out->features, "sm_%d%d%s", p.major, p.minor, p.major >= 8 ? " bf16" : "");
    return INFER_OK;
}

/* The copy bandwidth: 512 MiB device to device, bytes read + written,
 * the best of 10 after one untimed (raw allocations: not counted, not
 * kept). */
static int cuda_bandwidth(int n_threads, double *gb_per_s)
{
    (void)n_threads;
    *gb_per_s = 0.0;
    if (!cuda_available()) return infer_err(INFER_ERR_BACKEND, "cuda backend: no CUDA device is available");
    size_t n = (size_t)512 << 20;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    cudaError_t e;
    if ((e = cudaSetDevice(0)) || (e = cudaMalloc(&a, n)) || (e = cudaMalloc(&b, n)) || (e = cudaEventCreate(&e0)) ||
        (e = cudaEventCreate(&e1)) || (e = cudaMemset(a, 1, n)) || (e = cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice)))
        goto done;
    for (int i = 0; i < 10; i++) {
        float ms = 0.0f;
        if ((e = cudaEventRecord(e0, 0)) || (e = cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0)) ||
            (e = cudaEventRecord(e1, 0)) || (e = cudaEventSynchronize(e1)) || (e = cudaEventElapsedTime(&ms, e0, e1)))
            goto done;
        double g = ms > 0 ? 2.0 * (double)n / (ms * 1e-3) * 1e-9 : 0.0;
        if (g > *gb_per_s) *gb_per_s = g;
    }
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    if (e) {
        cudaGetLastError();
        return cu_fail(e, "measuring the copy bandwidth");
    }
    return INFER_OK;
}

/* ---- weights ---- */

static void weight_free(bk_weight *w)
{
    dev_free((void *)w->data);
    dev_free((void *)w->scales);
    dev_free((void *)w->biases);
    w->data = w->scales = w->biases = NULL;
    w->sb_pairs = 0;
}

/* A copy of n bytes of host memory on the device. */
static int dev_copy_of(const void *src, size_t n, const void **out)
{
    void *p;
    int rc = dev_alloc(n, &p);
    if (rc) return rc;
    cudaError_t e = cudaMemcpy(p, src, n, cudaMemcpyHostToDevice);
    if (e) {
        dev_free(p);
        return cu_fail(e, "copying a weight to the device");
    }
    *out = p;
    return INFER_OK;
}

/* bf16 bits as f16 bits where f16 holds the value exactly (a normal f16,
 * 2^-14 <= |v| < 2^16, or a zero): 1, else 0 */
static int bf16_f16_exact(uint16_t b, uint16_t *h)
{
    const unsigned e = (b >> 7) & 0xffu;
    if (e - 113u <= 29u) {
        *h = (uint16_t)((b & 0x8000u) | ((e - 112u) << 10) | ((b & 0x7fu) << 3));
        return 1;
    }
    if ((b & 0x7fffu) == 0) {
        *h = b;
        return 1;
    }
    return 0;
}

/* The n bf16 values of v as f16 in place if every one converts exactly
 * (1); else v unchanged (0) */
static int bf16_pairs_to_f16(uint16_t *v, size_t n)
{
    uint16_t h;
    for (size_t i = 0; i < n; i++)
        if (!bf16_f16_exact(v[i], &h)) return 0;
    for (size_t i = 0; i < n; i++) bf16_f16_exact(v[i], &v[i]);
    return 1;
}

static int cuda_weight_prepare(void *ctx, bk_weight *w)
{
    (void)ctx;
    if (!w->data) return INFER_OK;
    bk_weight d = *w;
    d.data = d.scales = d.biases = NULL;
    int rc;
    if (w->dtype == DT_U32 && dtype_size(w->sdtype) == 2) {
        /* scales and biases interleaved (bk_weight.sb_pairs) */
        size_t n = (size_t)w->rows * (size_t)(w->cols / w->group_size);
        uint16_t *pairs = malloc(n * 4);
        if (!pairs) return infer_err(INFER_ERR_OUT_OF_MEMORY, "cuda backend: out of memory interleaving scales");
        const uint16_t *s = w->scales, *b = w->biases;
        for (size_t g = 0; g < n; g++) {
            pairs[2 * g] = s[g];
            pairs[2 * g + 1] = b[g];
        }
        /* bf16 pairs that f16 holds exactly are stored as f16: the tensor
         * cores' products dequantize to f16 (cuda_kernels.cu) */
        const int as_f16 = w->sdtype == DT_BF16 && bf16_pairs_to_f16(pairs, 2 * n);
        rc = dev_copy_of(w->data, (size_t)w->rows * bk_qrow_bytes(w), &d.data);
        if (!rc) rc = dev_copy_of(pairs, n * 4, &d.scales);
        free(pairs);
        if (rc) {
            weight_free(&d);
            return rc;
        }
        d.sb_pairs = as_f16 ? 2 : 1;
    } else if (w->dtype == DT_U32) {
        size_t groups = (size_t)w->rows * (size_t)(w->cols / w->group_size) * dtype_size(w->sdtype);
        if ((rc = dev_copy_of(w->data, (size_t)w->rows * bk_qrow_bytes(w), &d.data)) ||
            (rc = dev_copy_of(w->scales, groups, &d.scales)) || (rc = dev_copy_of(w->biases, groups, &d.biases))) {
            weight_free(&d);
            return rc;
        }
    } else if ((rc = dev_copy_of(w->data, (size_t)w->rows * (size_t)w->cols * dtype_size(w->dtype), &d.data))) {
        return rc;
    }
    *w = d;
    return INFER_OK;
}

static void cuda_weight_release(void *ctx, bk_weight *w)
{
    cuda_ctx *c = ctx;
    if (c) cudaStreamSynchronize(c->stream);
    weight_free(w);
}

/* ---- ops ---- */

static int cuda_embed(void *ctx, void *out, const void *ids, int T, const bk_weight *emb, float scale)
{
    cuda_ctx *c = ctx;
    return launched(cuk_embed(c->stream, out, ids, T, emb, scale), "embed");
}

/* The context's scratch of at least n bytes; the caller holds c->lock. */
static int scratch_get(cuda_ctx *c, size_t n, void **out)
{
    if (n > c->scratch_cap) {
        if (c->scratch) {
            cudaStreamSynchronize(c->stream);
            dev_free(c->scratch);
            c->scratch = NULL;
            c->scratch_cap = 0;
        }
        c->scratch_epoch++;
        int rc = dev_alloc(n, &c->scratch);
        if (rc) return rc;
        c->scratch_cap = n;
    }
    *out = c->scratch;
    return INFER_OK;
}

/* Rows of a weight not in bf16 converted to bf16 at a time for cuBLAS:
 * at most SLICE_BYTES of them, and one block row a weight row
 * (cuk_weight_to_bf16). */
static int64_t convert_rows(const bk_weight *w)
{
    int64_t slice = SLICE_BYTES / (w->cols * 2);
    if (slice < 1) slice = 1;
    if (slice > 65535) slice = 65535;
    return slice > w->rows ? w->rows : slice;
}

/* y[T, R] = x[T, C] . W^T with W row-major [R, C]: in cuBLAS's column-major
 * terms y^T (R x T, ld R) = W (C x R, ld C)^T . x^T (C x T, ld C). */
static int gemm_bf16(cuda_ctx *c, float *y, int64_t ldy, const void *w16, const void *x16, int64_t R, int T, int64_t C,
                     float beta)
{
    const float one = 1.0f;
    cublasStatus_t s = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)R, T, (int)C, &one, w16, CUDA_R_16BF,
                                    (int)C, x16, CUDA_R_16BF, (int)C, &beta, y, CUDA_R_32F, (int)ldy,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return s ? blas_fail(s, "matmul") : INFER_OK;
}

/* Bytes of n bf16 values in the scratch, rounded up to 256 */
static size_t bf16_bytes(size_t n) { return (n * 2 + 255) / 256 * 256; }

/* y[T, R] = alpha x . W^T + beta y with f16 W and x, alpha and beta in
 * device memory (cuk_to_f16_scaled's constants: x's inverse scale, then 0
 * and 1) */
static int gemm_f16(cuda_ctx *c, float *y, int64_t ldy, const void *w16, const void *x16, int64_t R, int T, int64_t C,
                    const float *consts, float beta)
{
    cublasStatus_t s = cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_DEVICE);
    if (!s)
        s = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)R, T, (int)C, consts, w16, CUDA_R_16F, (int)C, x16,
                         CUDA_R_16F, (int)C, consts + (beta != 0.0f ? 2 : 1), y, CUDA_R_32F, (int)ldy,
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cublasStatus_t r = cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST);
    return s ? blas_fail(s, "matmul") : r ? blas_fail(r, "matmul") : INFER_OK;
}

/* Up to this many rows, products of bf16 W take x as two bf16 terms (hi +
 * lo, within 2^-18 of x) stacked as 2T rows of one product, whose halves
 * are then added: float32's precision for bf16 W where the product is
 * bound by reading W.  On the H200 a bf16 product of 128 rows still takes
 * about the time its W takes to read, one of 256 rows is bound by the
 * tensor cores: measured with llama3.1-8b, 128 rows split made a 128-token
 * prefill 27% slower, 32 (a batch of 32 decoding) 5% slower, while the
 * error of bf16 models against transformers' float32 fell from 2-8e-3 to
 * 3e-6-6e-4 (tests/ref/model_fuzz.py, seed 1) */
enum { SPLIT_MAX_T = 64 };

/* ys[i] = x . ws[i]^T (+ beta ys[i]: 0 or 1) for n weights of the same
 * cols through cuBLAS, x converted once for all of them: bf16 W against x
 * in bf16 (as two bf16 terms up to SPLIT_MAX_T rows); f16 W, and
 * quantized W converted to f16 a slice of rows at a
 * time, against x in f16 times a power of two (cuk_to_f16_scaled: f16's
 * 11-bit significands keep eight times bf16's precision, and a quantized
 * weight's values s n + b round once); float32 W by SGEMM on x as it is.
 * up not NULL: x is act(x) up, formed as it is converted, for weights
 * other than float32.  The caller holds c->lock. */
static int matmul_blas_n(cuda_ctx *c, float *const *ys, const float *x, const float *up, bk_act act,
                         const bk_weight *const *ws, int n, int T, float beta)
{
    const int64_t C = ws[0]->cols;
    const size_t xn = (size_t)T * (size_t)C;
    const int split = T <= SPLIT_MAX_T;
    size_t xb = 0, hb = 0, kb = 0, yb = 0;
    int64_t slice = 0;
    for (int i = 0; i < n; i++) {
        if (ws[i]->dtype == DT_BF16) {
            xb = bf16_bytes(split ? 2 * xn : xn);
            if (split && (size_t)ws[i]->rows * (size_t)T * 8 > yb) yb = (size_t)ws[i]->rows * (size_t)T * 8;
        }
        if (ws[i]->dtype == DT_F16 || ws[i]->dtype == DT_U32) hb = bf16_bytes(xn), kb = 256;
        if (ws[i]->dtype == DT_U32 && convert_rows(ws[i]) > slice) slice = convert_rows(ws[i]);
    }
    yb = (yb + 255) / 256 * 256;
    const size_t sb = (size_t)slice * (size_t)C * 2 > yb ? (size_t)slice * (size_t)C * 2 : yb; /* one weight at a time */
    void *buf = NULL;
    int rc = xb + hb ? scratch_get(c, xb + hb + kb + sb, &buf) : INFER_OK;
    void *xh = (char *)buf + xb, *wb = (char *)buf + xb + hb + kb;
    float *consts = (float *)((char *)buf + xb + hb); /* alpha, 0, 1; then the max's bits */
    float *y2 = (float *)wb; /* split: the 2T rows of a bf16 product */
    if (!rc && xb)
        rc = launched(split ? cuk_to_bf16_split(c->stream, buf, x, up, xn, act)
                      : up  ? cuk_glu_to_bf16(c->stream, buf, x, up, xn, act)
                            : cuk_f32_to_bf16(c->stream, buf, x, xn),
                      "matmul");
    if (!rc && hb)
        rc = launched(cuk_to_f16_scaled(c->stream, xh, consts, (unsigned *)(consts + 4), x, up, xn, act), "matmul");
    for (int i = 0; i < n && !rc; i++) {
        const bk_weight *w = ws[i];
        const int64_t R = w->rows;
        if (w->dtype == DT_F32) {
            const float one = 1.0f;
            cublasStatus_t s = cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)R, T, (int)C, &one, w->data, (int)C,
                                           x, (int)C, &beta, ys[i], (int)R);
            if (s) rc = blas_fail(s, "matmul");
        } else if (w->dtype == DT_BF16 && split) {
            if (!(rc = gemm_bf16(c, y2, R, w->data, buf, R, 2 * T, C, 0.0f)))
                rc = launched(cuk_add_halves(c->stream, ys[i], y2, (size_t)T * (size_t)R, beta), "matmul");
        } else if (w->dtype == DT_BF16) {
            rc = gemm_bf16(c, ys[i], R, w->data, buf, R, T, C, beta);
        } else if (w->dtype == DT_F16) {
            rc = gemm_f16(c, ys[i], R, w->data, xh, R, T, C, consts, beta);
        } else {
            const int64_t sl = convert_rows(w);
            for (int64_t r0 = 0; r0 < R && !rc; r0 += sl) {
                int64_t nr = R - r0 < sl ? R - r0 : sl;
                if (!(rc = launched(cuk_weight_to_f16(c->stream, wb, w, r0, nr), "matmul")))
                    rc = gemm_f16(c, ys[i] + r0, R, wb, xh, nr, T, C, consts, beta);
            }
        }
    }
    return rc;
}

/* Quantized products of several rows of x on tensor cores (cuk_qmm),
 * under c->lock (their scratch). */
static int qmm_run(cuda_ctx *c, float *const *ys, const void *x, const float *up, bk_act act,
                   const bk_weight *const *ws, const bk_weight *const *bs, int n, int T, const cuk_qmm_extra *ex)
{
    void *buf;
    pthread_mutex_lock(&c->lock);
    int rc = scratch_get(c, cuk_qmm_scratch(ws, n, T), &buf);
    if (!rc) rc = launched(cuk_qmm(c->stream, ys, x, up, act == BK_ACT_GELU_TANH, ws, bs, n, T, buf, ex), "matmul");
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* y = x . w^T (+ beta y: 0 or 1) (+ bias) through cuBLAS (matmul_blas_n
 * under c->lock, then the bias) */
static int blas_run(cuda_ctx *c, float *y, const float *x, const float *up, bk_act act, const bk_weight *w,
                    const bk_weight *bias, int T, float beta)
{
    float *ys[1] = {y};
    pthread_mutex_lock(&c->lock);
    int rc = matmul_blas_n(c, ys, x, up, act, &w, 1, T, beta);
    pthread_mutex_unlock(&c->lock);
    if (!rc && bias) rc = launched(cuk_add_bias(c->stream, y, bias, T, w->rows), "matmul bias");
    return rc;
}

/* Whether one cuk_qmm launch takes the n weights at T rows (the same
 * bits, scale dtype and cols) */
static int qmm_takes(const bk_weight *const *ws, int n, int T)
{
    int same = n >= 1 && n <= 4;
    for (int i = 0; same && i < n; i++)
        same = ws[i]->rows > 0 && cuk_qmm_ok(ws[i], T) && ws[i]->bits == ws[0]->bits && ws[i]->cols == ws[0]->cols &&
               bk_pair_dtype(ws[i]) == bk_pair_dtype(ws[0]);
    return same;
}

/* Whether the products take weight w (rows and cols above 0). */
static int weight_ok(const bk_weight *w)
{
    if (w->dtype != DT_F32 && w->dtype != DT_F16 && w->dtype != DT_BF16 && w->dtype != DT_U32)
        return infer_err(INFER_ERR_UNSUPPORTED, "matmul: weight dtype %s is not supported on cuda", dtype_name(w->dtype));
    if (w->dtype == DT_U32 && (w->bits < 1 || w->bits > 8 || w->group_size < 8 || w->group_size % 8 || w->cols % w->group_size))
        return infer_err(INFER_ERR_UNSUPPORTED, "matmul: %d-bit weights in groups of %d over %lld columns are not supported",
                         w->bits, w->group_size, (long long)w->cols);
    if (w->rows > INT32_MAX || w->cols > INT32_MAX)
        return infer_err(INFER_ERR_UNSUPPORTED, "matmul: %lld x %lld weight is too large", (long long)w->rows,
                         (long long)w->cols);
    return INFER_OK;
}

/* Whether a product of T rows of x with w takes the matrix-vector kernels:
 * up to CUK_MATVEC_MAX_T rows, but only one where cuk_qmm (4- and 8-bit
 * W) or cuBLAS (bf16 W) is faster. */
static int matvec_takes(const bk_weight *w, int T)
{
    return T == 1 || (T <= CUK_MATVEC_MAX_T && w->dtype != DT_BF16 && !cuk_qmm_ok(w, T));
}

/* The rank-r products (cut_lr_*: LoRA's A and B, float32 weights of at
 * most CUT_LR_MAX rows or columns): out[T][.] = alpha x[T][L] W^T (+ beta out)
 * with W(k, c) = w[k ldk + c ldc], k < r (thin: r outputs a row, L long),
 * or alpha t[T][r] W (+ beta out) (L outputs a row).  *taken 0 where the
 * kernels do not take the shape (then cuBLAS). */
static int lr_product(cuda_ctx *c, int thin, float *out, const float *x, const float *w, int T, int L, int r, long ldk,
                      long ldc, float alpha, float beta, const char *op, int *taken)
{
    int e;
    if (thin) {
        void *buf;
        pthread_mutex_lock(&c->lock);
        int rc = scratch_get(c, cut_lr_thin_scratch(T, L, r), &buf);
        e = rc ? 0 : cut_lr_thin(c->stream, out, x, w, T, L, r, ldk, ldc, alpha, beta, buf);
        pthread_mutex_unlock(&c->lock);
        if (rc) return rc;
    } else {
        e = cut_lr_expand(c->stream, out, x, w, T, L, r, ldk, ldc, alpha, beta);
    }
    *taken = e != (int)cudaErrorNotSupported;
    return *taken ? launched(e, op) : INFER_OK;
}

/* y = x w^T (+ beta y) through lr_product where w is float32 with at most
 * CUT_LR_MAX rows or columns */
static int lr_matmul(cuda_ctx *c, float *y, const float *x, const bk_weight *w, int T, float beta, const char *op,
                     int *taken)
{
    const int R = (int)w->rows, C = (int)w->cols;
    *taken = 0;
    if (w->dtype != DT_F32 || (R > CUT_LR_MAX && C > CUT_LR_MAX)) return INFER_OK;
    if (R <= CUT_LR_MAX) return lr_product(c, 1, y, x, w->data, T, C, R, C, 1, 1.0f, beta, op, taken);
    return lr_product(c, 0, y, x, w->data, T, R, C, 1, C, 1.0f, beta, op, taken);
}

static int cuda_matmul(void *ctx, void *y, const void *x, const bk_weight *w, const bk_weight *bias, int T)
{
    cuda_ctx *c = ctx;
    if (T <= 0 || w->rows <= 0 || w->cols <= 0) return INFER_OK;
    int rc = weight_ok(w);
    if (rc) return rc;
    if (matvec_takes(w, T)) return launched(cuk_matvec(c->stream, y, x, w, bias, T), "matmul");
    if (!bias) {
        int taken;
        rc = lr_matmul(c, y, x, w, T, 0.0f, "matmul", &taken);
        if (rc || taken) return rc;
    }
    float *ys[1] = {y};
    if (cuk_qmm_ok(w, T)) return qmm_run(c, ys, x, NULL, BK_ACT_SILU, &w, &bias, 1, T, NULL);
    return blas_run(c, y, x, NULL, BK_ACT_SILU, w, bias, T, 0.0f);
}

/* Products of one x: one launch of the matrix-vector kernel for every
 * weight where they share a format; else one product after another. */
static int cuda_matmul_n(void *ctx, void *const *ys, const void *x, const bk_weight *const *ws,
                         const bk_weight *const *bs, int n, int T)
{
    cuda_ctx *c = ctx;
    if (T <= 0 || n <= 0) return INFER_OK;
    if (n > 4) return infer_err(INFER_ERR_INVALID_ARGUMENT, "matmul: %d products at once (at most 4)", n);
    if (n > 1 && qmm_takes(ws, n, T)) /* x converted once for all of them */
        return qmm_run(c, (float *const *)ys, x, NULL, BK_ACT_SILU, ws, bs, n, T, NULL);
    if (n > 1 && matvec_takes(ws[0], T)) {
        int ok = 1;
        for (int i = 0; i < n; i++) {
            if (ws[i]->rows <= 0 || ws[i]->cols <= 0) {
                ok = 0; /* nothing to do for it: one product after another */
                continue;
            }
            int rc = weight_ok(ws[i]);
            if (rc) return rc;
        }
        if (ok) {
            int e = cuk_matvec_n(c->stream, (float *const *)ys, x, ws, bs, n, T);
            if (e != (int)cudaErrorNotSupported) return launched(e, "matmul");
        }
    }
    if (n > 1 && ws[0]->dtype == DT_BF16 && !matvec_takes(ws[0], T)) { /* bf16 GEMMs of x converted once */
        int same = 1;
        for (int i = 0; i < n; i++)
            same &= ws[i]->dtype == DT_BF16 && ws[i]->rows > 0 && ws[i]->rows <= INT32_MAX &&
                    ws[i]->cols == ws[0]->cols && ws[i]->cols <= INT32_MAX;
        if (same) {
            pthread_mutex_lock(&c->lock);
            int rc = matmul_blas_n(c, (float *const *)ys, x, NULL, BK_ACT_SILU, ws, n, T, 0.0f);
            pthread_mutex_unlock(&c->lock);
            for (int i = 0; i < n && !rc; i++)
                if (bs && bs[i]) rc = launched(cuk_add_bias(c->stream, ys[i], bs[i], T, ws[i]->rows), "matmul bias");
            return rc;
        }
    }
    for (int i = 0; i < n; i++) {
        int rc = cuda_matmul(ctx, ys[i], x, ws[i], bs ? bs[i] : NULL, T);
        if (rc) return rc;
    }
    return INFER_OK;
}

static int cuda_rmsnorm(void *ctx, void *y, const void *x, const bk_weight *w, int rows, int dim, float eps,
                        int plus_one)
{
    cuda_ctx *c = ctx;
    return launched(cuk_rmsnorm(c->stream, y, x, w, rows, dim, eps, plus_one), "rmsnorm");
}

static int cuda_rope(void *ctx, void *x, const void *pos, int T, int n_heads, int head_dim, const void *inv_freq,
                     float attn_factor)
{
    cuda_ctx *c = ctx;
    return launched(cuk_rope(c->stream, x, pos, T, n_heads, head_dim, inv_freq, attn_factor), "rope");
}

static int heads_ok(int n_heads, int n_kv_heads, int head_dim)
{
    if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || head_dim <= 0 || head_dim > 256)
        return infer_err(INFER_ERR_UNSUPPORTED, "attention: %d heads over %d kv heads of %d is not supported on cuda",
                         n_heads, n_kv_heads, head_dim);
    return INFER_OK;
}

/* ---- attention through materialized scores ----
 * For whole sequences (training's backward where cuda_attention_back does
 * not take cut_flash_back; float32 prefills): per
 * sequence, q (and dout) copied with heads first ([H][T][d]), so that the
 * G heads of a kv group are one matrix of G T rows, and each product is
 * one strided-batched product over the kv heads: the scores scale q_h k^T
 * [H][T][S]; a kernel a row softmaxes them (softcap, mask); out = P v
 * (the backward: dP = dout v^T, dS from P and dP, dq = dS k, dk = dS^T q
 * and dv = P^T dout over the group's G T rows at once).  In float32 (no
 * TF32, so that the op stays as exact as the kernels) unless p->fast
 * (training): then the forward's products take TF32 (training's forward
 * comes here only where the flash kernels do not take it), and the
 * backward's five take their inputs (q, k, dout, v, P, dS) rounded to
 * bf16 with float32 sums, as PEFT's bf16 attention does, at about twice
 * TF32's rate; but with a softcap the backward's scores take TF32, as the
 * forward's flash kernel does (tanh's derivative, 1 - (s / cap)^2, turns
 * the scores' absolute errors into large relative ones where the scores
 * saturate: gemma2's fixture trained at lr 1e-2 went from 4.4e-2 of PEFT's
 * float32 losses to 5.8e-2 with bf16 scores).  Scratch: two [heads][T][S] blocks and two [T][heads][d] (the
 * backward with p->fast: two more [heads][T][S] in bf16 and q, dout, k and
 * v in bf16); used where the float32 blocks take at most ATTN_GEMM_BYTES. */
enum { ATTN_GEMM_BYTES = 1 << 30 };

static size_t attn_gemm_bytes(const bk_attn *p) { return 2 * (size_t)p->n_heads * p->T * p->S * sizeof(float); }

/* Strided-batched products of float32 (with p->fast on the TF32 tensor
 * cores: 10-bit mantissas in, float32 sums) or bf16 (ab) inputs, float32
 * out. */
static int gemm_kv(cuda_ctx *c, const bk_attn *p, cudaDataType ab, cublasOperation_t ta, cublasOperation_t tb, int m,
                   int n, int k, float alpha, const void *A, int lda, long long sa, const void *B, int ldb,
                   long long sb, float beta, float *C, int ldc, long long sc, int batch)
{
    const cublasComputeType_t ct = ab == CUDA_R_32F && p->fast ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cublasStatus_t s = cublasGemmStridedBatchedEx(c->blas, ta, tb, m, n, k, &alpha, A, ab, lda, sa, B, ab, ldb, sb,
                                                  &beta, C, CUDA_R_32F, ldc, sc, batch, ct, CUBLAS_GEMM_DEFAULT);
    return s ? blas_fail(s, "attention") : INFER_OK;
}

/* sc = scale a b^T for every kv head j: a (q or dout, heads first) has
 * the group's G T rows at a + j G T d, b (k or v) rows of [S][KVH d];
 * sc [H][T][S] (the group's rows at j G T S): in cuBLAS's column-major
 * terms sc_j^T (S x G T) = b_j (S x d) . a_j^T (d x G T).  a and b of
 * type ab (float32 or bf16), as in the two below. */
static int attn_scores(cuda_ctx *c, cudaDataType ab, float *sc, const void *a, const void *b, const bk_attn *p,
                       float scale)
{
    const int d = p->head_dim, GT = p->n_heads / p->n_kv_heads * p->T, S = p->S;
    return gemm_kv(c, p, ab, CUBLAS_OP_T, CUBLAS_OP_N, S, GT, d, scale, b, p->n_kv_heads * d, d, a, d,
                   (long long)GT * d, 0.0f, sc, S, (long long)GT * S, p->n_kv_heads);
}

/* o (heads first, G T rows a kv head) = m b (m: P or dS [H][T][S], b: v
 * or k): o_j^T (d x G T) = b_j^T (d x S) . m_j^T (S x G T). */
static int attn_apply(cuda_ctx *c, cudaDataType ab, float *o, const void *m, const void *b, const bk_attn *p)
{
    const int d = p->head_dim, GT = p->n_heads / p->n_kv_heads * p->T, S = p->S;
    return gemm_kv(c, p, ab, CUBLAS_OP_N, CUBLAS_OP_N, d, GT, S, 1.0f, b, p->n_kv_heads * d, d, m, S,
                   (long long)GT * S, 0.0f, o, d, (long long)GT * d, p->n_kv_heads);
}

/* o ([S][KVH d], k's or v's layout) = m^T a over the group's G T rows (m:
 * dS or P, a: q or dout heads first): o_j^T (d x S) = a_j^T (d x G T) .
 * m_j (G T x S). */
static int attn_gather(cuda_ctx *c, cudaDataType ab, float *o, const void *m, const void *a, const bk_attn *p)
{
    const int d = p->head_dim, GT = p->n_heads / p->n_kv_heads * p->T, S = p->S;
    return gemm_kv(c, p, ab, CUBLAS_OP_N, CUBLAS_OP_T, d, S, GT, 1.0f, a, d, (long long)GT * d, m, S,
                   (long long)GT * S, 0.0f, o, p->n_kv_heads * d, d, p->n_kv_heads);
}

/* The backward with p->fast: bf16 products (the scores in TF32 with a
 * softcap; above).  The caller holds c->lock; head_dim a multiple of 4. */
static int attn_gemm_back_bf16(cuda_ctx *c, float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const bk_attn *p)
{
    const int nb = p->batch > 1 ? p->batch : 1, rows = p->n_heads * p->T, T = p->T, H = p->n_heads, d = p->head_dim;
    const size_t qn = (size_t)T * H * d, kn = (size_t)p->S * p->n_kv_heads * d, sn = (size_t)H * T * p->S;
    const size_t sb = bf16_bytes(sn), qb = bf16_bytes(qn), kb16 = bf16_bytes(kn);
    void *buf;
    int rc = scratch_get(c, attn_gemm_bytes(p) + qn * sizeof(float) + 2 * sb + 2 * qb + 2 * kb16, &buf);
    if (rc) return rc;
    float *sc = buf, *dp = sc + sn, *qf = dp + sn; /* qf: q heads first, then dq heads first */
    char *h = (char *)(qf + qn);
    uint16_t *pb = (uint16_t *)h, *db = (uint16_t *)(h + sb), *qh = (uint16_t *)(h + 2 * sb),
             *gh = (uint16_t *)(h + 2 * sb + qb), *kh = (uint16_t *)(h + 2 * sb + 2 * qb),
             *vh = (uint16_t *)(h + 2 * sb + 2 * qb + kb16);
    const cudaDataType B16 = CUDA_R_16BF;
    const int tf = p->softcap != 0.0f;
    for (int b = 0; b < nb && !rc; b++) {
        /* q heads first in bf16 (and float32 for TF32 scores), k and v in bf16 */
        if ((rc = launched(cut_swap_rows_bf16(c->stream, qh, tf ? qf : NULL, q + b * qn, T, H, d), "attention_back")) ||
            (rc = launched(cut_pair_to_bf16(c->stream, kh, k + b * kn, vh, v + b * kn, kn), "attention_back")) ||
            (rc = launched(cut_swap_rows_bf16(c->stream, gh, NULL, dout + b * qn, T, H, d), "attention_back")) ||
            (rc = tf ? attn_scores(c, CUDA_R_32F, sc, qf, k + b * kn, p, p->scale)
                     : attn_scores(c, B16, sc, qh, kh, p, p->scale)) ||
            (rc = attn_scores(c, B16, dp, gh, vh, p, 1.0f)) ||
            (rc = launched(cut_attn_softmax_back(c->stream, sc, dp, pb, db, rows, T, p->S, p->softcap, p->window,
                                                 p->scale),
                           "attention_back")) ||
            (rc = attn_gather(c, B16, dv + b * kn, pb, gh, p)) || (rc = attn_gather(c, B16, dk + b * kn, db, qh, p)) ||
            (rc = attn_apply(c, B16, qf, db, kh, p))) /* dq, heads first, over q's copy */
            break;
        rc = launched(cut_swap_rows(c->stream, dq + b * qn, qf, H, T, d), "attention_back");
    }
    return rc;
}

/* The caller holds c->lock. */
static int attn_gemm(cuda_ctx *c, int back, float *out, float *dq, float *dk, float *dv, const float *dout,
                     const float *q, const float *k, const float *v, const bk_attn *p)
{
    if (back && p->fast && p->head_dim % 4 == 0) return attn_gemm_back_bf16(c, dq, dk, dv, dout, q, k, v, p);
    const int nb = p->batch > 1 ? p->batch : 1, rows = p->n_heads * p->T, T = p->T, H = p->n_heads, d = p->head_dim;
    const size_t qn = (size_t)T * H * d, kn = (size_t)p->S * p->n_kv_heads * d, sn = (size_t)H * T * p->S;
    const cudaDataType F32 = CUDA_R_32F;
    void *buf;
    int rc = scratch_get(c, attn_gemm_bytes(p) + 2 * qn * sizeof(float), &buf);
    if (rc) return rc;
    float *sc = buf, *dp = sc + sn, *qh = dp + sn, *gh = qh + qn;
    for (int b = 0; b < nb && !rc; b++) {
        const float *kb = k + b * kn, *vb = v + b * kn;
        if ((rc = launched(cut_swap_rows(c->stream, qh, q + b * qn, T, H, d), "attention")) ||
            (rc = attn_scores(c, F32, sc, qh, kb, p, p->scale)))
            break;
        if (!back) { /* out = P v, through qh */
            if ((rc = launched(cut_attn_softmax(c->stream, sc, rows, T, p->S, p->softcap, p->window), "attention")) ||
                (rc = attn_apply(c, F32, qh, sc, vb, p)))
                break;
            rc = launched(cut_swap_rows(c->stream, out + b * qn, qh, H, T, d), "attention");
            continue;
        }
        if ((rc = launched(cut_swap_rows(c->stream, gh, dout + b * qn, T, H, d), "attention_back")) ||
            (rc = attn_scores(c, F32, dp, gh, vb, p, 1.0f)) ||
            (rc = launched(cut_attn_softmax_back(c->stream, sc, dp, NULL, NULL, rows, T, p->S, p->softcap, p->window,
                                                 p->scale),
                           "attention_back")) ||
            (rc = attn_gather(c, F32, dv + b * kn, sc, gh, p)) || (rc = attn_gather(c, F32, dk + b * kn, dp, qh, p)) ||
            (rc = attn_apply(c, F32, qh, dp, kb, p))) /* dq, heads first, over q's copy */
            break;
        rc = launched(cut_swap_rows(c->stream, dq + b * qn, qh, H, T, d), "attention_back");
    }
    return rc;
}

static int cuda_attention(void *ctx, void *out, const void *q, const void *k, const void *v, const bk_attn *p)
{
    cuda_ctx *c = ctx;
    int rc = heads_ok(p->n_heads, p->n_kv_heads, p->head_dim);
    if (rc) return rc;
    if (p->S < p->T) return infer_err(INFER_ERR_INVALID_ARGUMENT, "attention: %d queries over %d keys", p->T, p->S);
    if (cut_flash_ok(p)) { /* training, head_dim up to 128: bf16 tiles on the tensor cores */
        void *buf;
        pthread_mutex_lock(&c->lock);
        if (!(rc = scratch_get(c, cut_flash_fwd_scratch(p), &buf)))
            rc = launched(cut_flash_fwd(c->stream, out, q, k, v, p, buf), "attention");
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    const size_t fneed = cuk_attention_flash_scratch(p);
    if (fneed) { /* p->fast (training), head_dim 256: the TF32 flash kernels, no score matrix */
        void *buf;
        pthread_mutex_lock(&c->lock);
        if (!(rc = scratch_get(c, fneed, &buf)))
            rc = launched(cuk_attention_flash(c->stream, out, q, k, v, p, buf), "attention");
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    if (p->T >= 32 && attn_gemm_bytes(p) <= ATTN_GEMM_BYTES) {
        pthread_mutex_lock(&c->lock);
        rc = attn_gemm(c, 0, out, NULL, NULL, NULL, NULL, q, k, v, p);
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    const int nb = p->batch > 1 ? p->batch : 1;
    const size_t qn = (size_t)p->T * p->n_heads * p->head_dim, kn = (size_t)p->S * p->n_kv_heads * p->head_dim;
    for (int b = 0; b < nb && !rc; b++)
        rc = launched(cuk_attention(c->stream, (float *)out + b * qn, (const float *)q + b * qn,
                                    (const float *)k + b * kn, (const float *)v + b * kn, p),
                      "attention");
    return rc;
}

/* q_start, kv_len and slot live on the device: the model checks them
 * before it uploads them (model_forward). */
static int cuda_kv_store(void *ctx, void *kc, void *vc, const void *k, const void *v, const bk_attn_kv *p)
{
    cuda_ctx *c = ctx;
    if (p->B <= 0 || p->cap <= 0) return infer_err(INFER_ERR_INVALID_ARGUMENT, "kv_store: bad batch");
    return launched(cuk_kv_store(c->stream, kc, vc, k, v, p), "kv_store");
}

static int cuda_attention_kv(void *ctx, void *out, const void *q, const void *kc, const void *vc,
                             const bk_attn_kv *p)
{
    cuda_ctx *c = ctx;
    int rc = heads_ok(p->n_heads, p->n_kv_heads, p->head_dim);
    if (rc) return rc;
    if (p->B <= 0 || p->cap <= 0) return infer_err(INFER_ERR_INVALID_ARGUMENT, "attention: bad batch");
    if (!cuk_attention_kv_flash(p) && p->B == 1 && p->N >= 32 && p->host_kv_len >= p->N &&
        p->host_kv_len <= p->cap && p->host_slot >= 0) {
        /* one sequence's float32 prefill, its keys in cache order (no ring
         * turn): the GEMMs of attn_gemm over rows slot * cap .. (with
         * p->fast, the flash kernel instead: no score matrix) */
        bk_attn a = {p->N, p->host_kv_len, p->n_heads, p->n_kv_heads, p->head_dim, p->scale, p->softcap, p->window, 1,
                     p->fast};
        if (attn_gemm_bytes(&a) <= ATTN_GEMM_BYTES) {
            const size_t base = (size_t)p->host_slot * (size_t)p->cap * (size_t)p->n_kv_heads * (size_t)p->head_dim;
            pthread_mutex_lock(&c->lock);
            rc = attn_gemm(c, 0, out, NULL, NULL, NULL, NULL, q, (const float *)kc + base, (const float *)vc + base, &a);
            pthread_mutex_unlock(&c->lock);
            return rc;
        }
    }
    size_t need = cuk_attention_kv_scratch(p);
    if (!need) return launched(cuk_attention_kv(c->stream, out, q, kc, vc, p, NULL, NULL, 0), "attention");
    void *buf;
    pthread_mutex_lock(&c->lock);
    if (!(rc = scratch_get(c, need, &buf)))
        rc = launched(cuk_attention_kv(c->stream, out, q, kc, vc, p, buf, c->counts, N_COUNTS), "attention");
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int cuda_gather_rows(void *ctx, void *dst, const void *src, const void *idx, int n, size_t width)
{
    cuda_ctx *c = ctx;
    return launched(cuk_gather_rows(c->stream, dst, src, idx, n, width), "gather_rows");
}

static int cuda_glu(void *ctx, void *out, const void *gate, const void *up, size_t n, bk_act act)
{
    cuda_ctx *c = ctx;
    return launched(cuk_glu(c->stream, out, gate, up, n, act), "glu");
}

static int cuda_add(void *ctx, void *y, const void *a, size_t n)
{
    cuda_ctx *c = ctx;
    return launched(cuk_add(c->stream, y, a, n), "add");
}

static int cuda_argmax(void *ctx, void *out, const void *x, int rows, size_t cols)
{
    cuda_ctx *c = ctx;
    if (cols > INT32_MAX) return infer_err(INFER_ERR_UNSUPPORTED, "argmax: rows of %zu values", cols);
    size_t need = cuk_argmax_scratch(rows, cols);
    if (!need) return launched(cuk_argmax(c->stream, out, x, rows, cols, NULL, NULL, 0), "argmax");
    void *buf;
    pthread_mutex_lock(&c->lock);
    int rc = scratch_get(c, need, &buf);
    if (!rc) rc = launched(cuk_argmax(c->stream, out, x, rows, cols, buf, c->counts, N_COUNTS), "argmax");
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int cuda_softcap(void *ctx, void *x, size_t n, float cap)
{
    cuda_ctx *c = ctx;
    return launched(cuk_softcap(c->stream, x, n, cap), "softcap");
}

static int cuda_download_f32(void *ctx, float *dst, const void *src, size_t n)
{
    return cuda_download(ctx, dst, src, n * sizeof *dst);
}

static int cuda_add_rmsnorm(void *ctx, void *x, void *a, const bk_weight *a_norm, void *h, const bk_weight *w,
                            int rows, int dim, float eps, int plus_one)
{
    cuda_ctx *c = ctx;
    return launched(cuk_add_rmsnorm(c->stream, x, a, a_norm, h, w, rows, dim, eps, plus_one), "add_rmsnorm");
}

static int cuda_qk_rope_store(void *ctx, void *q, void *k, const void *v, void *kc, void *vc, const bk_weight *qn,
                              const bk_weight *kn, float eps, int plus_one, const void *pos, const void *inv_freq,
                              float attn_factor, const bk_attn_kv *p)
{
    cuda_ctx *c = ctx;
    if (p->B <= 0 || p->cap <= 0) return infer_err(INFER_ERR_INVALID_ARGUMENT, "qk_rope_store: bad batch");
    return launched(cuk_qk_rope_store(c->stream, q, k, v, kc, vc, qn, kn, eps, plus_one, pos, inv_freq, attn_factor, p),
                    "qk_rope_store");
}

/* One launch where head_dim <= 128; wider heads take the two ops (gemma3-1b,
 * head_dim 256 and 4 heads: 1,013 tok/s with them against 1,000 as one,
 * where llama3.1-8b gained 2%, H100); the flash kernel's decode steps
 * rotate as they attend whatever the head_dim. */
static int cuda_qk_rope_attention_kv(void *ctx, void *out, void *q, void *k, const void *v, void *kc, void *vc,
                                     const bk_weight *qn, const bk_weight *kn, float eps, int plus_one,
                                     const void *pos, const void *inv_freq, float attn_factor, const bk_attn_kv *p)
{
    cuda_ctx *c = ctx;
    int rc = heads_ok(p->n_heads, p->n_kv_heads, p->head_dim);
    if (rc) return rc;
    if (p->B <= 0 || p->cap <= 0 || p->N != p->B)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "qk_rope_attention_kv: a step of one row a sequence only");
    const int flash = cuk_attention_kv_flash(p);
    if (flash == 1 || (!flash && p->head_dim > 128)) {
        if ((rc = cuda_qk_rope_store(ctx, q, k, v, kc, vc, qn, kn, eps, plus_one, pos, inv_freq, attn_factor, p)))
            return rc;
        return cuda_attention_kv(ctx, out, q, kc, vc, p);
    }
    size_t need = cuk_attention_kv_scratch(p);
    void *buf = NULL;
    pthread_mutex_lock(&c->lock);
    if (!need || !(rc = scratch_get(c, need, &buf)))
        rc = launched(cuk_rope_attention_kv(c->stream, out, q, k, v, kc, vc, qn, kn, eps, plus_one, pos, inv_freq,
                                            attn_factor, p, buf, need ? c->counts : NULL, need ? N_COUNTS : 0),
                      "qk_rope_attention_kv");
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* One token: the activation formed while the down projection stages its
 * input; 2 to CUK_QMM_MAX_T rows of 4- or 8-bit W: while x is converted
 * for the tensor cores; else the two ops (gate overwritten). */
static int cuda_matmul_glu(void *ctx, void *y, void *gate, const void *up, bk_act act, const bk_weight *w,
                           const bk_weight *bias, int T)
{
    cuda_ctx *c = ctx;
    if (T == 1) {
        int e = cuk_matvec_glu(c->stream, y, gate, up, act, w, bias);
        if (e != (int)cudaErrorNotSupported) return launched(e, "matmul_glu");
    }
    if (w->rows > 0 && cuk_qmm_ok(w, T)) { /* the activation formed as x is converted */
        int rc = weight_ok(w);
        if (rc) return rc;
        float *ys[1] = {y};
        return qmm_run(c, ys, gate, up, act, &w, &bias, 1, T, NULL);
    }
    int rc = launched(cuk_glu(c->stream, gate, gate, up, (size_t)T * (size_t)w->cols, act), "glu");
    return rc ? rc : cuda_matmul(ctx, y, gate, w, bias, T);
}

/* One row: the norm formed as the products' kernel stages x, in the
 * kernels that stage it (one launch instead of two); 2 to CUK_QMM_MAX_T
 * rows of 4- or 8-bit W: as x is converted for the tensor cores; else the
 * two ops. */
static int cuda_norm_matmul_n(void *ctx, void *const *ys, const void *x, void *h, const bk_weight *nw, float eps,
                              int plus_one, const bk_weight *const *ws, const bk_weight *const *bs, int n, int T)
{
    cuda_ctx *c = ctx;
    if (T == 1 && n >= 1 && n <= 4) {
        int ok = 1;
        for (int i = 0; i < n; i++) {
            int rc = weight_ok(ws[i]);
            if (rc) return rc;
            ok &= ws[i]->rows > 0 && ws[i]->cols == ws[0]->cols;
        }
        if (ok && nw->rows * nw->cols == ws[0]->cols) {
            int e = cuk_matvec_norm(c->stream, (float *const *)ys, x, nw, eps, plus_one, ws, bs, n);
            if (e != (int)cudaErrorNotSupported) return launched(e, "norm_matmul_n");
        }
    }
    if (T > 1 && qmm_takes(ws, n, T) && nw->rows * nw->cols == ws[0]->cols) {
        const cuk_qmm_extra ex = {nw, eps, plus_one, 0};
        return qmm_run(c, (float *const *)ys, x, NULL, BK_ACT_SILU, ws, bs, n, T, &ex);
    }
    int rc = cuda_rmsnorm(ctx, h, x, nw, T, (int)ws[0]->cols, eps, plus_one);
    return rc ? rc : cuda_matmul_n(ctx, ys, h, ws, bs, n, T);
}

/* One row, or 2 to CUK_QMM_MAX_T rows of 4- or 8-bit W: the sum taken by
 * the product's kernel (y read back where it writes); cuBLAS products (no
 * activation): added by the product (beta 1); else the product into tmp
 * and an add. */
static int cuda_matmul_add(void *ctx, void *y, const void *x, const void *up, bk_act act, const bk_weight *w,
                           const bk_weight *bias, void *tmp, int T)
{
    cuda_ctx *c = ctx;
    if (T <= 0 || w->rows <= 0 || w->cols <= 0) return INFER_OK;
    int rc = weight_ok(w);
    if (rc) return rc;
    if (T == 1) {
        int e = cuk_matvec_add(c->stream, y, x, up, act, w, bias);
        if (e != (int)cudaErrorNotSupported) return launched(e, "matmul_add");
    }
    if (T > 1 && cuk_qmm_ok(w, T)) {
        const cuk_qmm_extra ex = {NULL, 0.0f, 0, 1};
        float *ys[1] = {y};
        return qmm_run(c, ys, x, up, act, &w, &bias, 1, T, &ex);
    }
    if (!up && !bias && !matvec_takes(w, T)) {
        int taken;
        rc = lr_matmul(c, y, x, w, T, 1.0f, "matmul_add", &taken);
        if (rc || taken) return rc;
    }
    /* cuBLAS adds into y (beta 1); act(x) up formed as x is converted to
     * bf16 (up with float32 W: below) */
    if (!matvec_takes(w, T) && (!up || w->dtype != DT_F32)) return blas_run(c, y, x, up, act, w, bias, T, 1.0f);
    if (!up) {
        rc = cuda_matmul(ctx, tmp, x, w, bias, T);
        return rc ? rc : cuda_add(ctx, y, tmp, (size_t)T * (size_t)w->rows);
    }
    /* act(x) up into a block of its own: x is not changed */
    const size_t n = (size_t)T * (size_t)w->cols;
    void *g;
    if ((rc = dev_alloc(n * sizeof(float), &g))) return rc;
    if (!(rc = launched(cuk_glu(c->stream, g, x, up, n, act), "matmul_add")) &&
        !(rc = cuda_matmul(ctx, tmp, g, w, bias, T)))
        rc = cuda_add(ctx, y, tmp, (size_t)T * (size_t)w->rows);
    cuda_free(ctx, g);
    return rc;
}

/* Several rows: where the products take cuk_qmm, whose conversion of x
 * forms the norm and whose results add into y */
static int cuda_fused_pays(void *ctx, const bk_weight *w, int T)
{
    (void)ctx;
    return T == 1 || cuk_qmm_ok(w, T);
}

/* ---- training ---- */

/* Bytes of a slice of w converted to bf16 for dx_bf16 (0: w is bf16) */
static size_t dx_slice_bytes(const bk_weight *w)
{
    return w->dtype != DT_BF16 ? (size_t)convert_rows(w) * (size_t)w->cols * 2 : 0;
}

/* dx[T, C] = beta dx + alpha dy16[T, R] . W[R, C], dy16 in bf16, W not
 * float32 (converted a slice of rows at a time into wbuf where it is not
 * bf16).  The caller holds c->lock. */
static int dx_bf16(cuda_ctx *c, float *dx, const uint16_t *dy16, const bk_weight *w, int T, float alpha, float beta,
                   void *wbuf)
{
    const int64_t R = w->rows, C = w->cols, slice = w->dtype != DT_BF16 ? convert_rows(w) : R;
    int rc = INFER_OK;
    for (int64_t r0 = 0; !rc && r0 < R; r0 += slice) {
        int64_t nr = R - r0 < slice ? R - r0 : slice;
        const void *ws = w->data;
        if (w->dtype != DT_BF16) {
            ws = wbuf;
            if ((rc = launched(cuk_weight_to_bf16(c->stream, wbuf, w, r0, nr), "matmul_dx"))) break;
        }
        const float b = r0 == 0 ? beta : 1.0f;
        cublasStatus_t s = cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)C, T, (int)nr, &alpha, ws, CUDA_R_16BF,
                                        (int)C, dy16 + r0, CUDA_R_16BF, (int)R, &b, dx, CUDA_R_32F, (int)C,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (s) rc = blas_fail(s, "matmul_dx");
    }
    return rc;
}

/* dx[T, C] = beta dx + alpha dy[T, R] . W[R, C]; in cuBLAS's column-major
 * terms dx^T (C x T) = W^T (C x R, ld C) . dy^T (R x T, ld R).  float32 W
 * exactly; other formats with dy and W in bf16 (W converted a slice of
 * rows at a time where it is not bf16 already), float32 sums. */
static int cuda_matmul_dx(void *ctx, void *dx, const void *dy, const bk_weight *w, int T, float alpha, float beta)
{
    cuda_ctx *c = ctx;
    const int64_t R = w->rows, C = w->cols;
    if (T <= 0 || R <= 0 || C <= 0) return INFER_OK;
    int rc = weight_ok(w);
    if (rc) return rc;
    if (w->dtype == DT_F32 && (R <= CUT_LR_MAX || C <= CUT_LR_MAX)) { /* LoRA's A and B */
        int taken;
        if (C <= CUT_LR_MAX) /* dx[T][C] = dy[T][R] w: C outputs a row, W(k, c) = w[c][k] */
            rc = lr_product(c, 1, dx, dy, w->data, T, (int)R, (int)C, 1, (long)C, alpha, beta, "matmul_dx", &taken);
        else /* R rows of w: W(k, c) = w[k][c] */
            rc = lr_product(c, 0, dx, dy, w->data, T, (int)C, (int)R, (long)C, 1, alpha, beta, "matmul_dx", &taken);
        if (rc || taken) return rc;
    }
    if (w->dtype == DT_F32) {
        cublasStatus_t s = cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)C, T, (int)R, &alpha, w->data, (int)C,
                                       dy, (int)R, &beta, dx, (int)C);
        return s ? blas_fail(s, "matmul_dx") : INFER_OK;
    }
    const size_t yb = bf16_bytes((size_t)T * (size_t)R);
    void *buf;
    pthread_mutex_lock(&c->lock);
    rc = scratch_get(c, yb + dx_slice_bytes(w), &buf);
    if (!rc) rc = launched(cuk_f32_to_bf16(c->stream, buf, dy, (size_t)T * (size_t)R), "matmul_dx");
    if (!rc) rc = dx_bf16(c, dx, buf, w, T, alpha, beta, (char *)buf + yb);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* dx = dG W_gate + dU W_up (beta dx added) for out = act(gate) up given
 * dout: dG and dU formed in bf16, as the products take them (the same bits
 * as glu_back then matmul_dx), never as float32. */
static int cuda_glu_back_dx(void *ctx, void *dx, const void *dout, const void *gate, const void *up, bk_act act,
                            const bk_weight *wg, const bk_weight *wu, int T, float beta)
{
    cuda_ctx *c = ctx;
    int rc = weight_ok(wg);
    if (!rc) rc = weight_ok(wu);
    if (rc) return rc;
    if (wg->dtype == DT_F32 || wu->dtype == DT_F32 || wg->rows != wu->rows || wg->cols != wu->cols)
        return infer_err(INFER_ERR_UNSUPPORTED, "glu_back_dx: gate and up of %s and %s", dtype_name(wg->dtype),
                         dtype_name(wu->dtype));
    if (T <= 0 || wg->rows <= 0 || wg->cols <= 0) return INFER_OK;
    const size_t n = (size_t)T * (size_t)wg->rows, yb = bf16_bytes(n);
    const size_t sl = dx_slice_bytes(wg) > dx_slice_bytes(wu) ? dx_slice_bytes(wg) : dx_slice_bytes(wu);
    void *buf;
    pthread_mutex_lock(&c->lock);
    rc = scratch_get(c, 2 * yb + sl, &buf);
    uint16_t *dg = buf, *du = (uint16_t *)((char *)buf + yb);
    if (!rc)
        rc = launched(cut_glu_back_bf16(c->stream, dg, du, dout, gate, up, n, act == BK_ACT_GELU_TANH), "glu_back_dx");
    if (!rc) rc = dx_bf16(c, dx, dg, wg, T, 1.0f, beta, (char *)buf + 2 * yb);
    if (!rc) rc = dx_bf16(c, dx, du, wu, T, 1.0f, 1.0f, (char *)buf + 2 * yb);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* dw[R, C] += alpha dy[T, R]^T . x[T, C]: dw^T (C x R) += x^T (C x T) . dy (T x R). */
static int cuda_matmul_dw(void *ctx, void *dw, const void *dy, const void *x, int T, int R, int C, float alpha)
{
    cuda_ctx *c = ctx;
    if (T <= 0 || R <= 0 || C <= 0) return INFER_OK;
    if (C <= CUT_LR_MAX || R <= CUT_LR_MAX) { /* LoRA's A and B: sums over row chunks, then theirs */
        const int small = C <= CUT_LR_MAX ? C : R, M = C <= CUT_LR_MAX ? R : C;
        void *buf;
        pthread_mutex_lock(&c->lock);
        int rc = scratch_get(c, cut_lr_reduce_scratch(T, M, small), &buf);
        if (!rc)
            rc = launched(C <= CUT_LR_MAX ? cut_lr_reduce(c->stream, dw, dy, x, T, M, small, C, 1, alpha, buf)
                                  : cut_lr_reduce(c->stream, dw, x, dy, T, M, small, 1, C, alpha, buf),
                          "matmul_dw");
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    const float one = 1.0f;
    cublasStatus_t s =
        cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, C, R, T, &alpha, x, C, dy, R, &one, dw, C);
    return s ? blas_fail(s, "matmul_dw") : INFER_OK;
}

static int cuda_rmsnorm_back(void *ctx, void *dx, const void *dy, const void *x, const bk_weight *w, int rows, int dim,
                             float eps, int plus_one, int acc)
{
    cuda_ctx *c = ctx;
    return launched(cut_rmsnorm_back(c->stream, dx, dy, x, w, rows, dim, eps, plus_one, acc), "rmsnorm_back");
}

static int cuda_attention_back(void *ctx, void *dq, void *dk, void *dv, const void *dout, const void *q, const void *k,
                               const void *v, const bk_attn *p)
{
    cuda_ctx *c = ctx;
    int rc = heads_ok(p->n_heads, p->n_kv_heads, p->head_dim);
    if (rc) return rc;
    if (p->S < p->T) return infer_err(INFER_ERR_INVALID_ARGUMENT, "attention_back: %d queries over %d keys", p->T, p->S);
    pthread_mutex_lock(&c->lock);
    if (cut_flash_ok(p)) {
        /* training without a softcap, head_dim 16 to 128: tiles on the
         * tensor cores, no score matrix.  llama3.1-8b on an H200 against
         * the products through one (bf16 scores in both): as fast at 4 x
         * 512 tokens (15,640 tok/s against 15,650-15,690 in an earlier
         * call), the same peak memory; 1.4 GB less at 2 x 2,048; at 4,096
         * tokens the score matrix no longer fits (the CUDA-core kernels
         * below: 1,030 tok/s, these 11,500-11,600) */
        void *buf;
        rc = scratch_get(c, cut_flash_back_scratch(p), &buf);
        if (!rc) rc = launched(cut_flash_back(c->stream, dq, dk, dv, dout, q, k, v, p, buf), "attention_back");
    } else if (attn_gemm_bytes(p) <= ATTN_GEMM_BYTES) {
        rc = attn_gemm(c, 1, NULL, dq, dk, dv, dout, q, k, v, p);
    } else if (p->head_dim % 4) {
        rc = infer_err(INFER_ERR_UNSUPPORTED, "attention_back: head_dim %d is not a multiple of 4 on cuda", p->head_dim);
    } else {
        /* too many scores to hold: the tiled kernels */
        void *buf;
        rc = scratch_get(c, cut_attention_back_scratch(p), &buf);
        if (!rc) rc = launched(cut_attention_back(c->stream, dq, dk, dv, dout, q, k, v, p, buf), "attention_back");
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int cuda_glu_back(void *ctx, void *dg, void *du, const void *dout, const void *g, const void *u, size_t n,
                         bk_act act)
{
    cuda_ctx *c = ctx;
    return launched(cut_glu_back(c->stream, dg, du, dout, g, u, n, act == BK_ACT_GELU_TANH), "glu_back");
}

static int cuda_softcap_back(void *ctx, void *dx, const void *dy, const void *y, size_t n, float cap)
{
    cuda_ctx *c = ctx;
    return launched(cut_softcap_back(c->stream, dx, dy, y, n, cap), "softcap_back");
}

static int cuda_cross_entropy(void *ctx, void *dx, void *nll, const void *x, const void *target, int rows, size_t V,
                              float scale)
{
    cuda_ctx *c = ctx;
    return launched(cut_cross_entropy(c->stream, dx, nll, x, target, rows, V, scale), "cross_entropy");
}

static int cuda_axpy(void *ctx, void *y, const void *x, float alpha, size_t n)
{
    cuda_ctx *c = ctx;
    return launched(cut_axpy(c->stream, y, x, alpha, n), "axpy");
}

static int cuda_scale(void *ctx, void *x, float alpha, size_t n)
{
    cuda_ctx *c = ctx;
    return launched(cut_scale(c->stream, x, alpha, n), "scale");
}

static int cuda_dropout(void *ctx, void *y, const void *x, size_t n, float p, uint64_t seed)
{
    cuda_ctx *c = ctx;
    return launched(cut_dropout(c->stream, y, x, n, p, seed), "dropout");
}

static int cuda_sumsq(void *ctx, const void *x, size_t n, double *out)
{
    cuda_ctx *c = ctx;
    int rc = INFER_OK;
    pthread_mutex_lock(&c->lock);
    if (!c->sumsq) rc = dev_alloc(sizeof(double), (void **)&c->sumsq);
    if (!rc) rc = launched(cut_sumsq(c->stream, x, n, c->sumsq), "sumsq");
    if (!rc) {
        cudaError_t e = cudaMemcpyAsync(out, c->sumsq, sizeof(double), cudaMemcpyDeviceToHost, c->stream);
        if (!e) e = cudaStreamSynchronize(c->stream);
        if (e) rc = cu_fail(e, "sumsq");
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int cuda_adamw(void *ctx, void *p, const void *g, void *m, void *v, size_t n, const bk_adamw *o)
{
    cuda_ctx *c = ctx;
    return launched(cut_adamw(c->stream, p, g, m, v, n, o), "adamw");
}

/* ---- graphs ---- */

static int cuda_graph_begin(void *ctx)
{
    cuda_ctx *c = ctx;
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    return e ? cu_fail(e, "starting a graph") : INFER_OK;
}

/* A recording, and the scratch it was recorded against. */
typedef struct cuda_graph {
    cudaGraphExec_t exec;
    unsigned epoch;
} cuda_graph;

static int cuda_graph_end(void *ctx, void **graph)
{
    cuda_ctx *c = ctx;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (!graph) {
        if (g) cudaGraphDestroy(g);
        cudaGetLastError();
        return INFER_OK;
    }
    *graph = NULL;
    if (e) return cu_fail(e, "recording a graph");
    cuda_graph *cg = malloc(sizeof *cg);
    if (!cg) {
        cudaGraphDestroy(g);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "recording a graph: out of host memory");
    }
    e = cudaGraphInstantiate(&cg->exec, g, 0);
    cudaGraphDestroy(g);
    if (e) {
        free(cg);
        return cu_fail(e, "instantiating a graph");
    }
    cg->epoch = c->scratch_epoch;
    *graph = cg;
    return INFER_OK;
}

static int cuda_graph_run(void *ctx, void *graph)
{
    cuda_ctx *c = ctx;
    cuda_graph *cg = graph;
    if (cg->epoch != c->scratch_epoch) return BK_GRAPH_STALE;
    cudaError_t e = cudaGraphLaunch(cg->exec, c->stream);
    return e ? cu_fail(e, "running a graph") : INFER_OK;
}

static void cuda_graph_free(void *ctx, void *graph)
{
    (void)ctx;
    cuda_graph *cg = graph;
    if (!cg) return;
    cudaGraphExecDestroy(cg->exec);
    free(cg);
}

const backend_ops backend_cuda = {
    .name = "cuda",
    .available = cuda_available,
    .create = cuda_create,
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .copy = cuda_copy,
    .weight_prepare = cuda_weight_prepare,
    .weight_release = cuda_weight_release,
    .synchronize = cuda_sync,
    .memory = cuda_memory,
    .mem_get = cuda_mem_get,
    .mem_set = cuda_mem_set,
    .clear_cache = cuda_clear_cache,
    .reset_peak = cuda_reset_peak,
    .device_info = cuda_device_info,
    .bandwidth = cuda_bandwidth,
    .embed = cuda_embed,
    .matmul = cuda_matmul,
    .rmsnorm = cuda_rmsnorm,
    .rope = cuda_rope,
    .attention = cuda_attention,
    .kv_store = cuda_kv_store,
    .attention_kv = cuda_attention_kv,
    .gather_rows = cuda_gather_rows,
    .glu = cuda_glu,
    .add = cuda_add,
    .softcap = cuda_softcap,
    .argmax = cuda_argmax,
    .download_f32 = cuda_download_f32,
    .add_rmsnorm = cuda_add_rmsnorm,
    .qk_rope_store = cuda_qk_rope_store,
    .qk_rope_attention_kv = cuda_qk_rope_attention_kv,
    .matmul_glu = cuda_matmul_glu,
    .norm_matmul_n = cuda_norm_matmul_n,
    .matmul_add = cuda_matmul_add,
    .fused_pays = cuda_fused_pays,
    .matmul_n = cuda_matmul_n,
    .matmul_dx = cuda_matmul_dx,
    .matmul_dw = cuda_matmul_dw,
    .rmsnorm_back = cuda_rmsnorm_back,
    .attention_back = cuda_attention_back,
    .glu_back = cuda_glu_back,
    .glu_back_dx = cuda_glu_back_dx,
    .softcap_back = cuda_softcap_back,
    .cross_entropy = cuda_cross_entropy,
    .axpy = cuda_axpy,
    .scale = cuda_scale,
    .dropout = cuda_dropout,
    .sumsq = cuda_sumsq,
    .adamw = cuda_adamw,
    .graph_begin = cuda_graph_begin,
    .graph_end = cuda_graph_end,
    .graph_run = cuda_graph_run,
    .graph_free = cuda_graph_free,
};
