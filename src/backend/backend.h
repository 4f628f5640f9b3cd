/* backend.h - the op table every backend supplies.
 *
 * The model is written once over this table; a backend never knows a model
 * family, and the model never includes a backend's own header.
 *
 * Conventions
 *   - Buffers are backend pointers (host memory on cpu, device memory on
 *     cuda).  Activations are in the backend's activation type (float32 on
 *     cpu); the model only passes them around.
 *   - Matrices are row-major.  A weight matrix is stored as nn.Linear stores
 *     it, W[rows = out, cols = in], and matmul computes
 *         y[T, rows] = x[T, cols] . W^T (+ bias[rows])
 *     This is the only matrix-product convention in the project.
 *   - Every op returns 0 or an infer_status code, with infer_err set.
 *   - An entry may be NULL where a backend lacks it; callers check.
 */
#ifndef INFER_BACKEND_H
#define INFER_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "infer.h"

/* A stored tensor as the kernels see it: data in its stored dtype.  On cpu
 * data points into the mmapped file and may be unaligned. */
typedef struct bk_weight {
    const void *data;
    infer_dtype dtype;  /* DT_F32, DT_F16 or DT_BF16; DT_U32: MLX-quantized (below) */
    int64_t rows;       /* matrix rows (out features); 1 for a vector */
    int64_t cols;       /* matrix columns (in features, unpacked); length of a vector */
    /* MLX-quantized (dtype DT_U32): each row is cols * bits / 8 bytes, a
     * little-endian bit stream where value i sits in bits [i * bits,
     * (i + 1) * bits) (MLX's packing for every bits: 2, 3, 4, 5, 6, 8);
     * scales and biases are [rows, cols / group_size] in sdtype, and
     *     w[r][i] = scales[r][i / group_size] * q[r][i] + biases[r][i / group_size].
     * Scales may be negative and biases need not be the group minimum. */
    int bits;
    int group_size;
    const void *scales, *biases;
    infer_dtype sdtype;
    /* 1: a quantized weight in the cpu backend's tiled layout (its
     * weight_prepare makes it for int8 decode; qgemm.h): the rows in tiles
     * of BK_TILE_ROWS, 32-bit word j of a tile's rows side by side (a
     * 64-byte vector), each group's 16 scales and 16 biases after its
     * words, in data (scales and biases NULL; qgemm.h, q_tile_word_at).
     * 0: the layout above. */
    int tiled;
    /* 1: the scales and biases of a quantized weight interleaved in one
     * array (the cuda backend's weight_prepare, for 2-byte sdtypes: one
     * 4-byte load a group): group g's scale at scales[2 g], its bias at
     * scales[2 g + 1]; biases NULL; 2: the same, stored as f16 (converted
     * exactly from sdtype bf16, which stays the file's dtype);
     * bk_pair_dtype.  0: two arrays as above. */
    int sb_pairs;
} bk_weight;

/* Functions both the C backends and the cuda kernels call. */
#ifdef __CUDACC__
#define BK_HOST_DEVICE __host__ __device__
#else
#define BK_HOST_DEVICE
#endif

/* The dtype the scales and biases of w lie in on its backend */
static inline BK_HOST_DEVICE infer_dtype bk_pair_dtype(const bk_weight *w)
{
    return w->sb_pairs == 2 ? DT_F16 : w->sdtype;
}

enum { BK_TILE_ROWS = 16 };

/* Bytes of one packed row of a quantized weight. */
static inline size_t bk_qrow_bytes(const bk_weight *w) { return (size_t)w->cols * (size_t)w->bits / 8; }

typedef enum bk_act { BK_ACT_SILU = 0, BK_ACT_GELU_TANH } bk_act;

/* Causal attention of T queries over S keys (S >= T).  Query t sits at
 * position S - T + t and sees key j iff j <= its position and, with a
 * window w > 0, position - j < w.  Layouts:
 *   q, out [T, n_heads * head_dim]    k, v [S, n_kv_heads * head_dim] */
typedef struct bk_attn {
    int T, S;
    int n_heads, n_kv_heads, head_dim;
    float scale;    /* multiplier of q.k */
    float softcap;  /* 0 = off; else cap * tanh(score / cap) */
    int window;     /* 0 = none */
    int batch;      /* this many sequences side by side (q, out [batch * T, ...], k, v [batch * S, ...]);
                       0 or 1: one */
    int fast;       /* 1: the backend may trade float32 rounding for speed (cuda: bf16 tensor-core
                       products with float32 sums, as PEFT's bf16 attention; TF32 for the forward
                       at head_dim 256 and for the scores with a softcap; training sets it);
                       0: float32 throughout */
} bk_attn;

/* The sequence that query row r of a ragged batch belongs to: the last b
 * with q_start[b] <= r (q_start ascending, B sequences). */
static inline BK_HOST_DEVICE int bk_row_seq(const int32_t *q_start, int B, int r)
{
    int lo = 0, hi = B - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (q_start[mid] <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Dropout's mask, the same on every backend: element i of a tensor
 * dropped with seed is kept iff a 24-bit hash of (seed, i) is at least
 * p 2^24. */
static inline BK_HOST_DEVICE int bk_dropout_keep(uint64_t seed, uint64_t i, float p)
{
    uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) >= p * 16777216.0f;
}

/* Attention of a ragged batch of sequences over their KV caches.
 * Sequence b owns the cache rows [slot[b] * cap, (slot[b] + 1) * cap) of
 * kcache and vcache (each row n_kv_heads * head_dim floats); position p of
 * it lives in row p % cap, so a cache shorter than the sequence is a ring
 * that holds its last cap positions.  Its new tokens are the query rows
 * [q_start[b], q_start[b + 1]); after kv_store the sequence holds kv_len[b]
 * positions, and query row r sits at position
 *     kv_len[b] - (q_start[b + 1] - q_start[b]) + (r - q_start[b]).
 * A query at position P sees key position j iff j <= P, j >= kv_len[b] - cap
 * and, with a window w > 0, P - j < w.  q_start, kv_len and slot are
 * backend int32 buffers, read when the op runs (never baked into a graph).
 *   q, out [N, n_heads * head_dim]    k, v (kv_store) [N, n_kv_heads * head_dim] */
typedef struct bk_attn_kv {
    int B;          /* sequences */
    int N;          /* query rows in all: q_start[B] */
    int cap;        /* cache rows per sequence */
    const void *q_start, *kv_len, *slot;
    int n_heads, n_kv_heads, head_dim;
    float scale;
    float softcap;
    int window;
    int max_n;      /* most query rows of one sequence (a hint; 0: not given, up to N) */
    /* B == 1: kv_len[0] and slot[0] as the host knows them (0: not given),
     * for work sized on the host (cuda: prefill through GEMMs); never
     * given to an op a graph records */
    int host_kv_len, host_slot;
    int fast;       /* 1: the backend may trade float32 rounding for speed, as bk_attn.fast (cuda:
                       a prefill's products on the TF32 tensor cores); forward sets it where the
                       weights are 16-bit or quantized */
} bk_attn_kv;

/* What the process-wide memory entries of a backend read or set. */
typedef enum bk_mem {
    BK_MEM_ACTIVE = 0,  /* bytes alloc'ed and not freed, by every context */
    BK_MEM_PEAK,        /* the most BK_MEM_ACTIVE has been since the last reset_peak */
    BK_MEM_CACHE,       /* bytes freed but kept for reuse */
    BK_MEM_LIMIT,       /* alloc fails rather than pass it; 0 = none */
    BK_MEM_CACHE_LIMIT, /* BK_MEM_CACHE is kept at most this; 0 = none */
    BK_MEM_WIRED_LIMIT  /* pinned host memory at most (cuda); 0 = none */
} bk_mem;

typedef struct bk_opts {
    int n_threads;  /* 0 = all online processors */
    int cpu_int8;   /* cpu: int8 activations for quantized weights (infer_load_opts) */
} bk_opts;

/* One AdamW step (torch.optim.AdamW's arithmetic): p *= 1 - lr wd;
 * m += (1 - beta1) (g - m); v = beta2 v + (1 - beta2) g^2;
 * p -= lr / (1 - beta1^step) m / (sqrt(v) / sqrt(1 - beta2^step) + eps). */
typedef struct bk_adamw {
    float lr, beta1, beta2, eps, weight_decay;
    int step; /* 1 for the first */
} bk_adamw;

/* graph_run: the recording is out of date (not an INFER_ERR code). */
enum { BK_GRAPH_STALE = -1 };

typedef struct backend_ops {
    const char *name;
    /* 1 if usable on this machine. */
    int (*available)(void);
    int (*create)(const bk_opts *opts, void **ctx);
    void (*destroy)(void *ctx);

    /* Memory.  alloc'ed buffers hold activations and scratch. */
    int (*alloc)(void *ctx, size_t bytes, void **out);
    void (*free)(void *ctx, void *p);
    int (*upload)(void *ctx, void *dst, const void *src, size_t bytes);
    int (*download)(void *ctx, void *dst, const void *src, size_t bytes);
    /* Between two backend buffers. */
    int (*copy)(void *ctx, void *dst, const void *src, size_t bytes);
    /* Host memory that upload and download copy fastest (cuda: pinned, at
     * most the wired limit in all: past it INFER_ERR_OUT_OF_MEMORY).
     * NULL: malloc'ed memory is as good.  An upload from it may still be
     * reading it after upload returns, until the next synchronize or
     * download; an upload from other memory has read it when it returns. */
    int (*host_alloc)(void *ctx, size_t bytes, void **out);
    void (*host_free)(void *ctx, void *p);
    /* Makes a weight usable by the kernels (cuda copies it to the device).
     * NULL: weights are used where they lie. */
    int (*weight_prepare)(void *ctx, bk_weight *w);
    void (*weight_release)(void *ctx, bk_weight *w);
    int (*synchronize)(void *ctx);
    /* Bytes alloc'ed and not freed, and the most there were at once. */
    void (*memory)(void *ctx, size_t *active, size_t *peak);
    /* Process-wide memory controls, behind the public infer_*_memory and
     * infer_*_limit calls.  They take no context: the accounting and the
     * limits are the backend's, shared by all its contexts (memory above
     * reads the same counters).  mem_get reads any bk_mem; mem_set sets one
     * of the three limits and stores the one it replaces in *previous (may
     * be NULL); any other what is INFER_ERR_INVALID_ARGUMENT.  clear_cache
     * gives the memory kept for reuse back; reset_peak makes the peak the
     * active bytes.  device_info fills every field of *out but backend. */
    size_t (*mem_get)(bk_mem what);
    int (*mem_set)(bk_mem what, size_t value, size_t *previous);
    int (*clear_cache)(void);
    int (*reset_peak)(void);
    int (*device_info)(infer_device_info *out);
    /* The memory bandwidth reached now, GB/s (infer_measure_bandwidth). */
    int (*bandwidth)(int n_threads, double *gb_per_s);

    /* out[T, emb.cols] = emb[ids[t]] * scale; ids is a backend int32 buffer. */
    int (*embed)(void *ctx, void *out, const void *ids, int T, const bk_weight *emb,
                 float scale);
    /* y[T, w.rows] = x[T, w.cols] . w^T (+ bias) */
    int (*matmul)(void *ctx, void *y, const void *x, const bk_weight *w, const bk_weight *bias,
                  int T);
    /* RMSNorm of each of rows vectors of dim: y = x / sqrt(mean(x^2) + eps) * g,
     * g = w or (1 + w) with plus_one.  y may equal x. */
    int (*rmsnorm)(void *ctx, void *y, const void *x, const bk_weight *w, int rows, int dim,
                   float eps, int plus_one);
    /* Rotate-half RoPE in place on x[T, n_heads, head_dim] at positions pos
     * (a backend int32 buffer [T]); inv_freq is a backend float buffer
     * [head_dim / 2]; cos and sin are multiplied by attn_factor. */
    int (*rope)(void *ctx, void *x, const void *pos, int T, int n_heads, int head_dim,
                const void *inv_freq, float attn_factor);
    int (*attention)(void *ctx, void *out, const void *q, const void *k, const void *v,
                     const bk_attn *p);
    /* Writes the N new rows of k and v into the caches at their positions
     * (layout of bk_attn_kv). */
    int (*kv_store)(void *ctx, void *kcache, void *vcache, const void *k, const void *v,
                    const bk_attn_kv *p);
    int (*attention_kv)(void *ctx, void *out, const void *q, const void *kcache, const void *vcache,
                        const bk_attn_kv *p);
    /* dst[i] = src[idx[i]] for n rows of width floats; idx is a backend
     * int32 buffer. */
    int (*gather_rows)(void *ctx, void *dst, const void *src, const void *idx, int n, size_t width);
    /* out[n] = act(gate[n]) * up[n] */
    int (*glu)(void *ctx, void *out, const void *gate, const void *up, size_t n, bk_act act);
    /* y[n] += a[n] */
    int (*add)(void *ctx, void *y, const void *a, size_t n);
    /* x[n] = cap * tanh(x[n] / cap) */
    int (*softcap)(void *ctx, void *x, size_t n, float cap);
    /* Optional (NULL: the engine scans the logits on the host).  For each
     * of rows rows of cols floats: out[2 r] = the index of its largest
     * value, the first of equal ones; out[2 r + 1] = 1 if the row holds a
     * NaN or +inf or nothing above -inf (then the host decides), else 0.
     * out: backend memory, int32 [rows, 2]. */
    int (*argmax)(void *ctx, void *out, const void *x, int rows, size_t cols);
    /* Copies activations out as float32 (dst is host memory). */
    int (*download_f32)(void *ctx, float *dst, const void *src, size_t n);

    /* Fused ops (optional; NULL: the model runs the separate ops).
     * add_rmsnorm: x[rows, dim] += a, then h = rmsnorm(x) as rmsnorm does;
     * with a_norm (may be NULL), what is added is rmsnorm(a) with a_norm
     * (the same eps and plus_one: Gemma's norm after a block), and a may
     * be overwritten.
     * qk_rope_store: the N new rows' q [N, n_heads, hd] and k [N, n_kv_heads,
     * hd] normalised per head (rmsnorm with qn and kn, when not NULL), rotated
     * in place as rope does (pos, inv_freq, attn_factor), then k and v
     * written into the caches as kv_store does.
     * qk_rope_attention_kv: qk_rope_store then attention_kv (out from q),
     * with the same arguments, for a step of one new row a sequence (p->N
     * == p->B, else an error) as one op; what q and k hold after is
     * unspecified.
     * matmul_glu: y = (act(gate) * up) . w^T (+ bias), gate and up [T, w.cols];
     * gate may be overwritten.
     * matmul_n: ys[i] = x . ws[i]^T (+ bs[i], NULL for none) for n <= 4
     * weights of the same cols (q, k and v; gate and up), as one op.
     * norm_matmul_n: ys[i] = rmsnorm(x) . ws[i]^T (+ bs[i]) as rmsnorm (with
     * nw, eps, plus_one) then matmul_n would; x [T, cols] is not changed,
     * h [T, cols] is the op's to use (what it holds after is unspecified).
     * matmul_add: y [T, w.rows] += (act(x) * up, or x where up is NULL) .
     * w^T (+ bias); x and up are not changed (the training's backward
     * reads them), and tmp [T, w.rows] is the op's to use.  (With these
     * two a plain pre-norm layer's residual adds go into the products
     * before them and its norms into the products after them.)
     * fused_pays (may be NULL: at one row only): whether those two take T
     * rows of products with weights like w in fewer passes than the
     * separate ops. */
    int (*add_rmsnorm)(void *ctx, void *x, void *a, const bk_weight *a_norm, void *h, const bk_weight *w, int rows,
                       int dim, float eps, int plus_one);
    int (*qk_rope_store)(void *ctx, void *q, void *k, const void *v, void *kcache, void *vcache,
                         const bk_weight *qn, const bk_weight *kn, float eps, int plus_one, const void *pos,
                         const void *inv_freq, float attn_factor, const bk_attn_kv *p);
    int (*qk_rope_attention_kv)(void *ctx, void *out, void *q, void *k, const void *v, void *kcache,
                                void *vcache, const bk_weight *qn, const bk_weight *kn, float eps, int plus_one,
                                const void *pos, const void *inv_freq, float attn_factor, const bk_attn_kv *p);
    int (*matmul_glu)(void *ctx, void *y, void *gate, const void *up, bk_act act, const bk_weight *w,
                      const bk_weight *bias, int T);
    int (*matmul_n)(void *ctx, void *const *ys, const void *x, const bk_weight *const *ws,
                    const bk_weight *const *bs, int n, int T);
    int (*norm_matmul_n)(void *ctx, void *const *ys, const void *x, void *h, const bk_weight *nw, float eps,
                         int plus_one, const bk_weight *const *ws, const bk_weight *const *bs, int n, int T);
    int (*matmul_add)(void *ctx, void *y, const void *x, const void *up, bk_act act, const bk_weight *w,
                      const bk_weight *bias, void *tmp, int T);
    int (*fused_pays)(void *ctx, const bk_weight *w, int T);

    /* Training (NULL where a backend lacks it: the train code says so).
     * Activations and adapter parameters are float32.
     * matmul_dx: dx[T, w.cols] = beta dx + alpha dy[T, w.rows] . w (w in
     *   any format matmul takes: the backward of a frozen weight).
     * matmul_dw: dw[R, C] += alpha dy[T, R]^T . x[T, C].
     * rmsnorm_back: dx of y = rmsnorm(x) (w frozen, as rmsnorm) given dy,
     *   written (acc 0; dx may equal dy) or added to dx (acc 1; dx must not
     *   be dy).
     * attention_back: dq [T, heads*hd], dk, dv [S, kv_heads*hd] of
     *   attention(q, k, v, p) given dout (written, not accumulated).
     * glu_back: dgate, dup of out = act(gate) * up given dout.
     * glu_back_dx (may be NULL): dx[T, w_gate.cols] = beta dx + dgate .
     *   w_gate + dup . w_up (glu_back's dgate and dup over n = T w_gate.rows
     *   values, then matmul_dx twice), neither gradient kept: where gate
     *   and up have no adapter; weights of the same shape, not float32.
     * softcap_back: dx = dy (1 - (y / cap)^2), y the capped values.
     * cross_entropy: per row r of x [rows, V]: with target[r] >= 0 (an
     *   int32 backend buffer), nll[r] = logsumexp(x_r) - x_r[target] and
     *   dx_r = scale (softmax(x_r) - onehot(target)); else nll[r] = 0 and
     *   dx_r = 0.  dx may equal x.
     * axpy: y[n] += alpha x[n].  scale: x[n] *= alpha.
     * dropout: y[i] = x[i] / (1 - p) where bk_dropout_keep(seed, i, p),
     *   else 0, for i < n (y may equal x).
     * sumsq: *out (host) = the sum of x[n]^2.
     * adamw: one AdamW step over n parameters (bk_adamw). */
    int (*matmul_dx)(void *ctx, void *dx, const void *dy, const bk_weight *w, int T, float alpha, float beta);
    int (*matmul_dw)(void *ctx, void *dw, const void *dy, const void *x, int T, int R, int C, float alpha);
    int (*rmsnorm_back)(void *ctx, void *dx, const void *dy, const void *x, const bk_weight *w, int rows, int dim,
                        float eps, int plus_one, int acc);
    int (*attention_back)(void *ctx, void *dq, void *dk, void *dv, const void *dout, const void *q, const void *k,
                          const void *v, const bk_attn *p);
    int (*glu_back)(void *ctx, void *dgate, void *dup, const void *dout, const void *gate, const void *up, size_t n,
                    bk_act act);
    int (*glu_back_dx)(void *ctx, void *dx, const void *dout, const void *gate, const void *up, bk_act act,
                       const bk_weight *w_gate, const bk_weight *w_up, int T, float beta);
    int (*softcap_back)(void *ctx, void *dx, const void *dy, const void *y, size_t n, float cap);
    int (*cross_entropy)(void *ctx, void *dx, void *nll, const void *x, const void *target, int rows, size_t V,
                         float scale);
    int (*axpy)(void *ctx, void *y, const void *x, float alpha, size_t n);
    int (*dropout)(void *ctx, void *y, const void *x, size_t n, float p, uint64_t seed);
    int (*scale)(void *ctx, void *x, float alpha, size_t n);
    int (*sumsq)(void *ctx, const void *x, size_t n, double *out);
    int (*adamw)(void *ctx, void *p, const void *g, void *m, void *v, size_t n, const bk_adamw *o);

    /* Graphs (cuda; NULL elsewhere): the ops queued between graph_begin
     * and graph_end are recorded instead of run, and graph_run replays
     * them with the same arguments; what they read from backend buffers
     * (token ids, positions, lengths) is read at each replay.  graph_end
     * with graph NULL abandons the recording (after an op failed).
     * graph_run returns BK_GRAPH_STALE, and runs nothing, when memory the
     * recording points at was replaced since (the backend's scratch grew):
     * the caller runs the ops again and records anew. */
    int (*graph_begin)(void *ctx);
    int (*graph_end)(void *ctx, void **graph);
    int (*graph_run)(void *ctx, void *graph);
    void (*graph_free)(void *ctx, void *graph);
} backend_ops;

/* Size of one activation element. */
#define BK_ACT_BYTES 4

/* The registry: every compiled-in backend in order of preference. */
int backend_count(void);
const backend_ops *backend_at(int i);
const backend_ops *backend_find(const char *name);

extern const backend_ops backend_cpu;
#ifdef INFER_WITH_CUDA
extern const backend_ops backend_cuda;
#endif

#endif
