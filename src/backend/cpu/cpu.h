/* cpu.h - the cpu backend's context, shared by its source files. */
#ifndef INFER_BACKEND_CPU_H
#define INFER_BACKEND_CPU_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "backend/backend.h"
#include "core/threads.h"

typedef struct cpu_scratch {
    float *p;
    size_t cap; /* floats */
} cpu_scratch;

typedef struct cpu_ctx {
    thread_pool *pool;
    int n_workers;
    cpu_scratch *scratch;    /* [n_workers]: per-worker buffers for kernels */
    cpu_scratch act;         /* one product's transformed activations (qgemm.h) */
    pthread_mutex_t act_lock; /* held while act is in use (sessions may run at once) */
    int int8;                /* bk_opts.cpu_int8: int8 activations for quantized weights */
} cpu_ctx;

/* Worker w's scratch of at least n floats, or NULL when out of memory. */
float *cpu_scratch_get(cpu_ctx *c, int worker, size_t n);
/* The shared activation buffer of at least n floats, or NULL when out of
 * memory; the caller holds act_lock. */
float *cpu_act_get(cpu_ctx *c, size_t n);

/* Reads a weight vector (any stored dtype, any alignment) into a fresh
 * float array of n; NULL when out of memory. */
float *cpu_vector_f32(const bk_weight *w, size_t n);

int cpu_matmul(void *ctx, void *y, const void *x, const bk_weight *w, const bk_weight *bias,
               int T);
int cpu_matmul_n(void *ctx, void *const *ys, const void *x, const bk_weight *const *ws, const bk_weight *const *bs,
                 int n, int T);
int cpu_glu(void *ctx, void *out, const void *gate, const void *up, size_t n, bk_act act);
int cpu_attention(void *ctx, void *out, const void *q, const void *k, const void *v,
                  const bk_attn *p);

int cpu_kv_store(void *ctx, void *kcache, void *vcache, const void *k, const void *v,
                 const bk_attn_kv *p);
int cpu_attention_kv(void *ctx, void *out, const void *q, const void *kcache, const void *vcache,
                     const bk_attn_kv *p);

/* Training (cpu_train.c; backend.h says what each does). */
int cpu_matmul_dx(void *ctx, void *dx, const void *dy, const bk_weight *w, int T, float alpha, float beta);
int cpu_matmul_dw(void *ctx, void *dw, const void *dy, const void *x, int T, int R, int C, float alpha);
int cpu_rmsnorm_back(void *ctx, void *dx, const void *dy, const void *x, const bk_weight *w, int rows, int dim,
                     float eps, int plus_one, int acc);
int cpu_attention_back(void *ctx, void *dq, void *dk, void *dv, const void *dout, const void *q, const void *k,
                       const void *v, const bk_attn *p);
int cpu_glu_back(void *ctx, void *dgate, void *dup, const void *dout, const void *gate, const void *up, size_t n,
                 bk_act act);
int cpu_softcap_back(void *ctx, void *dx, const void *dy, const void *y, size_t n, float cap);
int cpu_cross_entropy(void *ctx, void *dx, void *nll, const void *x, const void *target, int rows, size_t V,
                      float scale);
int cpu_axpy(void *ctx, void *y, const void *x, float alpha, size_t n);
int cpu_scale(void *ctx, void *x, float alpha, size_t n);
int cpu_dropout(void *ctx, void *y, const void *x, size_t n, float p, uint64_t seed);
int cpu_sumsq(void *ctx, const void *x, size_t n, double *out);
int cpu_adamw(void *ctx, void *p, const void *g, void *m, void *v, size_t n, const bk_adamw *o);

/* Reads n bytes (a multiple of 256) with wide loads; a checksum. */
long cpu_read_bytes(const unsigned char *p, size_t n);
/* GB/s of reading `bytes` of buf split over `threads` (at most 64)
 * threads that start together, the best of reps; a read's time is its
 * slowest thread's. */
double cpu_read_bw(const unsigned char *buf, size_t bytes, int threads, int reps);
/* The backend's bandwidth entry: a 1 GiB streaming read, best of 3. */
int cpu_bandwidth(int n_threads, double *gb_per_s);

/* Dot product of n floats, with several partial sums. */
float cpu_dot(const float *a, const float *b, size_t n);

#endif
