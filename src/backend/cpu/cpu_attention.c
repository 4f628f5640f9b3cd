/* cpu_attention.c - causal grouped-query attention on the cpu, with
 * sliding windows and score softcapping.  One task per (head, query). */
#include <math.h>
#include <stdlib.h>

#include "backend/cpu/cpu.h"
#include "core/error.h"

typedef struct attn_job {
    cpu_ctx *c;
    float *out;
    const float *q, *k, *v;
    const bk_attn *p;
    int failed;
} attn_job;

static void attn_task(void *arg, int task, int worker)
{
    attn_job *j = arg;
    const bk_attn *p = j->p;
    int h = task % p->n_heads;
    int t = task / p->n_heads;
    int kvh = h / (p->n_heads / p->n_kv_heads);
    int d = p->head_dim;
    size_t q_stride = (size_t)p->n_heads * d, kv_stride = (size_t)p->n_kv_heads * d;
    int pos = p->S - p->T + t;
    int lo = 0;
    if (p->window > 0 && pos - p->window + 1 > 0) lo = pos - p->window + 1;
    int n = pos - lo + 1;
    float *score = cpu_scratch_get(j->c, worker, (size_t)n);
    if (!score) {
        j->failed = 1;
        return;
    }
    const float *qv = j->q + (size_t)t * q_stride + (size_t)h * d;
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        const float *kv = j->k + (size_t)(lo + i) * kv_stride + (size_t)kvh * d;
        float s = cpu_dot(qv, kv, (size_t)d) * p->scale;
        if (p->softcap > 0.0f) s = p->softcap * tanhf(s / p->softcap);
        score[i] = s;
        if (s > mx) mx = s;
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        score[i] = expf(score[i] - mx);
        sum += score[i];
    }
    float inv = (float)(1.0 / sum);
    float *o = j->out + (size_t)t * q_stride + (size_t)h * d;
    for (int e = 0; e < d; e++) o[e] = 0.0f;
    for (int i = 0; i < n; i++) {
        const float *vv = j->v + (size_t)(lo + i) * kv_stride + (size_t)kvh * d;
        float wgt = score[i] * inv;
        for (int e = 0; e < d; e++) o[e] += wgt * vv[e];
    }
}

int cpu_attention(void *ctx, void *out, const void *q, const void *k, const void *v,
                  const bk_attn *p)
{
    if (p->T <= 0) return INFER_OK;
    if (p->S < p->T || p->n_kv_heads <= 0 || p->n_heads % p->n_kv_heads != 0)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "attention: bad shape (T %d, S %d, heads %d/%d)",
                         p->T, p->S, p->n_heads, p->n_kv_heads);
    attn_job j = {ctx, out, q, k, v, p, 0};
    pool_run(j.c->pool, p->T * p->n_heads, attn_task, &j);
    if (j.failed) return infer_err(INFER_ERR_OUT_OF_MEMORY, "attention: out of memory for scratch");
    return INFER_OK;
}
