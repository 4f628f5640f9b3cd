/* cpu_train.c - the cpu backend's training ops: the backward of each op
 * the forward pass uses, the loss and the optimizer (backend.h,
 * "Training").  Plain float32 loops, rows spread over the workers; the
 * sums that decide a gradient (norms, softmax) in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/cpu/qgemm.h"
#include "core/error.h"

/* Row r of w as float32 (any dtype the products take). */
static void weight_row(const bk_weight *w, int64_t r, float *out)
{
    if (w->dtype == DT_U32) {
        q_dequant_row(w, r, 0, w->cols, out);
        return;
    }
    size_t es = dtype_size(w->dtype);
    dtype_to_f32(out, (const char *)w->data + (size_t)r * (size_t)w->cols * es, w->dtype, (size_t)w->cols);
}

/* ---- dx = beta dx + alpha dy . W ----
 * W is read a block of rows at a time (converted once per block), and
 * each worker takes a share of the rows of dx. */
enum { DX_ROWS = 64 };

typedef struct dx_job {
    float *dx;
    const float *dy, *wb; /* wb: rows r0 .. r0 + nr of W, float32 */
    int64_t R, C, r0, nr;
    float alpha;
} dx_job;

static void dx_task(void *arg, int t, int worker)
{
    (void)worker;
    const dx_job *j = arg;
    float *o = j->dx + (size_t)t * (size_t)j->C;
    const float *g = j->dy + (size_t)t * (size_t)j->R + j->r0;
    for (int64_t r = 0; r < j->nr; r++) {
        float a = j->alpha * g[r];
        if (a == 0.0f) continue;
        const float *wr = j->wb + (size_t)r * (size_t)j->C;
        for (int64_t c = 0; c < j->C; c++) o[c] += a * wr[c];
    }
}

int cpu_matmul_dx(void *ctx, void *dxv, const void *dyv, const bk_weight *w, int T, float alpha, float beta)
{
    cpu_ctx *cc = ctx;
    float *dx = dxv;
    const int64_t R = w->rows, C = w->cols;
    size_t n = (size_t)T * (size_t)C;
    if (beta == 0.0f)
        memset(dx, 0, n * sizeof *dx);
    else if (beta != 1.0f)
        for (size_t i = 0; i < n; i++) dx[i] *= beta;
    float *wb = malloc((size_t)DX_ROWS * (size_t)C * sizeof *wb);
    if (!wb) return infer_err(INFER_ERR_OUT_OF_MEMORY, "matmul_dx: out of memory for %lld columns", (long long)C);
    for (int64_t r0 = 0; r0 < R; r0 += DX_ROWS) {
        int64_t nr = R - r0 < DX_ROWS ? R - r0 : DX_ROWS;
        for (int64_t r = 0; r < nr; r++) weight_row(w, r0 + r, wb + (size_t)r * (size_t)C);
        dx_job j = {dx, dyv, wb, R, C, r0, nr, alpha};
        if ((size_t)T * (size_t)nr * (size_t)C < 65536)
            for (int t = 0; t < T; t++) dx_task(&j, t, 0);
        else
            pool_run(cc->pool, T, dx_task, &j);
    }
    free(wb);
    return INFER_OK;
}

/* ---- dw[R, C] += alpha dy[T, R]^T . x[T, C] ---- */
typedef struct dw_job {
    float *dw;
    const float *dy, *x;
    int T, R, C;
    float alpha;
} dw_job;

static void dw_task(void *arg, int r, int worker)
{
    (void)worker;
    const dw_job *j = arg;
    float *o = j->dw + (size_t)r * j->C;
    for (int t = 0; t < j->T; t++) {
        float a = j->alpha * j->dy[(size_t)t * j->R + r];
        if (a == 0.0f) continue;
        const float *xr = j->x + (size_t)t * j->C;
        for (int c = 0; c < j->C; c++) o[c] += a * xr[c];
    }
}

int cpu_matmul_dw(void *ctx, void *dw, const void *dy, const void *x, int T, int R, int C, float alpha)
{
    cpu_ctx *cc = ctx;
    dw_job j = {dw, dy, x, T, R, C, alpha};
    if ((size_t)T * R * C < 65536)
        for (int r = 0; r < R; r++) dw_task(&j, r, 0);
    else
        pool_run(cc->pool, R, dw_task, &j);
    return INFER_OK;
}

/* ---- RMSNorm ----
 * y = x r g, r = (mean(x^2) + eps)^(-1/2):
 * dx = r (dy g) - x r^3 / n sum(dy g x). */
int cpu_rmsnorm_back(void *ctx, void *dxv, const void *dyv, const void *xv, const bk_weight *w, int rows,
                            int dim, float eps, int plus_one, int acc)
{
    (void)ctx;
    float *g = cpu_vector_f32(w, (size_t)dim);
    if (!g) return infer_err(INFER_ERR_OUT_OF_MEMORY, "rmsnorm_back: out of memory");
    if (plus_one)
        for (int i = 0; i < dim; i++) g[i] += 1.0f;
    for (int r = 0; r < rows; r++) {
        const float *x = (const float *)xv + (size_t)r * dim, *dy = (const float *)dyv + (size_t)r * dim;
        float *dx = (float *)dxv + (size_t)r * dim;
        double ss = 0.0, s = 0.0;
        for (int i = 0; i < dim; i++) {
            ss += (double)x[i] * x[i];
            s += (double)dy[i] * g[i] * x[i];
        }
        double rr = 1.0 / sqrt(ss / dim + (double)eps), k = s * rr * rr * rr / dim;
        for (int i = 0; i < dim; i++) dx[i] = (acc ? dx[i] : 0.0f) + (float)(rr * dy[i] * g[i] - k * x[i]);
    }
    free(g);
    return INFER_OK;
}

/* ---- attention ----
 * Per query row: the scores again (scale, softcap, mask as cpu_attention),
 * p = softmax; dv_j += p_j dout; dp_j = dout . v_j; ds_j = p_j (dp_j -
 * sum p dp); through the softcap, ds (1 - (s / cap)^2); dq = scale sum
 * ds_j k_j, dk_j += scale ds_j q.  One task per kv head (its query heads'
 * dk, dv land in rows no other task writes). */
typedef struct attb_job {
    float *dq, *dk, *dv;
    const float *dout, *q, *k, *v;
    bk_attn p;
} attb_job;

static void attb_task(void *arg, int kvh, int worker)
{
    (void)worker;
    const attb_job *j = arg;
    const bk_attn *p = &j->p;
    const int d = p->head_dim, T = p->T, S = p->S, group = p->n_heads / p->n_kv_heads;
    const size_t qs = (size_t)p->n_heads * d, ks = (size_t)p->n_kv_heads * d;
    double *sc = malloc((size_t)S * 2 * sizeof *sc);
    if (!sc) return; /* cpu_attention_back checked this size first */
    double *dp = sc + S;
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int t = 0; t < T; t++) {
            const int P = S - T + t;
            int lo = 0;
            if (p->window > 0 && P - p->window + 1 > lo) lo = P - p->window + 1;
            const float *qr = j->q + (size_t)t * qs + (size_t)h * d, *go = j->dout + (size_t)t * qs + (size_t)h * d;
            double mx = -INFINITY;
            for (int s = lo; s <= P; s++) {
                const float *kr = j->k + (size_t)s * ks + (size_t)kvh * d;
                float acc = 0.0f;
                for (int e = 0; e < d; e++) acc += qr[e] * kr[e];
                double x = (double)(acc * p->scale);
                if (p->softcap > 0.0f) x = p->softcap * tanh(x / p->softcap);
                sc[s] = x;
                if (x > mx) mx = x;
            }
            double sum = 0.0;
            for (int s = lo; s <= P; s++) {
                sc[s] = exp(sc[s] - mx);
                sum += sc[s];
            }
            double pdp = 0.0;
            for (int s = lo; s <= P; s++) {
                const float *vr = j->v + (size_t)s * ks + (size_t)kvh * d;
                float *dvr = j->dv + (size_t)s * ks + (size_t)kvh * d;
                double pr = sc[s] / sum, a = 0.0;
                for (int e = 0; e < d; e++) {
                    a += (double)go[e] * vr[e];
                    dvr[e] += (float)(pr * go[e]);
                }
                dp[s] = a;
                pdp += pr * a;
            }
            float *dqr = j->dq + (size_t)t * qs + (size_t)h * d;
            for (int s = lo; s <= P; s++) {
                double pr = sc[s] / sum, ds = pr * (dp[s] - pdp);
                if (p->softcap > 0.0f) {
                    /* the capped score, again from its exponential's inputs */
                    const float *kr = j->k + (size_t)s * ks + (size_t)kvh * d;
                    float acc = 0.0f;
                    for (int e = 0; e < d; e++) acc += qr[e] * kr[e];
                    double c = tanh((double)(acc * p->scale) / p->softcap);
                    ds *= 1.0 - c * c;
                }
                float g = (float)(ds * p->scale);
                const float *kr = j->k + (size_t)s * ks + (size_t)kvh * d;
                float *dkr = j->dk + (size_t)s * ks + (size_t)kvh * d;
                for (int e = 0; e < d; e++) {
                    dqr[e] += g * kr[e];
                    dkr[e] += g * qr[e];
                }
            }
        }
    }
    free(sc);
}

int cpu_attention_back(void *ctx, void *dq, void *dk, void *dv, const void *dout, const void *q,
                              const void *k, const void *v, const bk_attn *p)
{
    cpu_ctx *cc = ctx;
    if (p->n_kv_heads <= 0 || p->n_heads % p->n_kv_heads || p->S < p->T || p->T <= 0)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "attention_back: %d heads over %d kv heads, %d queries over %d keys",
                         p->n_heads, p->n_kv_heads, p->T, p->S);
    void *probe = malloc((size_t)p->S * 2 * sizeof(double));
    if (!probe) return infer_err(INFER_ERR_OUT_OF_MEMORY, "attention_back: out of memory for %d keys", p->S);
    free(probe);
    const int nb = p->batch > 1 ? p->batch : 1;
    const size_t qn = (size_t)p->T * p->n_heads * p->head_dim, kn = (size_t)p->S * p->n_kv_heads * p->head_dim;
    memset(dq, 0, nb * qn * sizeof(float));
    memset(dk, 0, nb * kn * sizeof(float));
    memset(dv, 0, nb * kn * sizeof(float));
    for (int b = 0; b < nb; b++) {
        attb_job j = {(float *)dq + b * qn, (float *)dk + b * kn, (float *)dv + b * kn, (const float *)dout + b * qn,
                      (const float *)q + b * qn, (const float *)k + b * kn, (const float *)v + b * kn, *p};
        pool_run(cc->pool, p->n_kv_heads, attb_task, &j);
    }
    return INFER_OK;
}

/* ---- GLU: out = act(g) u ----
 * silu(g) = g s, s = sigmoid(g): silu' = s (1 + g (1 - s));
 * gelu_tanh(g) = g/2 (1 + tanh z), z = c (g + 0.044715 g^3):
 *   gelu' = (1 + tanh z) / 2 + g/2 (1 - tanh^2 z) c (1 + 3 0.044715 g^2). */
int cpu_glu_back(void *ctx, void *dgv, void *duv, const void *doutv, const void *gv, const void *uv, size_t n,
                        bk_act act)
{
    (void)ctx;
    float *dg = dgv, *du = duv;
    const float *go = doutv, *g = gv, *u = uv;
    const double c = 0.7978845608028654; /* sqrt(2 / pi) */
    for (size_t i = 0; i < n; i++) {
        double x = g[i], f, df;
        if (act == BK_ACT_SILU) {
            double s = 1.0 / (1.0 + exp(-x));
            f = x * s;
            df = s * (1.0 + x * (1.0 - s));
        } else {
            double th = tanh(c * (x + 0.044715 * x * x * x));
            f = 0.5 * x * (1.0 + th);
            df = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * c * (1.0 + 3.0 * 0.044715 * x * x);
        }
        float gi = go[i], ui = u[i];
        dg[i] = (float)(gi * ui * df);
        du[i] = (float)(gi * f);
    }
    return INFER_OK;
}

/* ---- y = cap tanh(x / cap): dx = dy (1 - (y / cap)^2) ---- */
int cpu_softcap_back(void *ctx, void *dxv, const void *dyv, const void *yv, size_t n, float cap)
{
    (void)ctx;
    float *dx = dxv;
    const float *dy = dyv, *y = yv;
    for (size_t i = 0; i < n; i++) {
        float t = y[i] / cap;
        dx[i] = dy[i] * (1.0f - t * t);
    }
    return INFER_OK;
}

/* ---- cross-entropy ---- */
typedef struct ce_job {
    float *dx, *nll;
    const float *x;
    const int32_t *target;
    size_t V;
    float scale;
} ce_job;

static void ce_task(void *arg, int r, int worker)
{
    (void)worker;
    const ce_job *j = arg;
    const float *x = j->x + (size_t)r * j->V;
    float *dx = j->dx + (size_t)r * j->V;
    int32_t tg = j->target[r];
    if (tg < 0) {
        memset(dx, 0, j->V * sizeof *dx);
        j->nll[r] = 0.0f;
        return;
    }
    float mx = -INFINITY;
    for (size_t i = 0; i < j->V; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (size_t i = 0; i < j->V; i++) sum += exp((double)x[i] - mx);
    double lse = mx + log(sum);
    j->nll[r] = (float)(lse - x[tg]);
    for (size_t i = 0; i < j->V; i++) {
        double pr = exp((double)x[i] - lse);
        dx[i] = (float)(j->scale * (pr - (i == (size_t)tg ? 1.0 : 0.0)));
    }
}

int cpu_cross_entropy(void *ctx, void *dx, void *nll, const void *x, const void *target, int rows, size_t V,
                             float scale)
{
    cpu_ctx *cc = ctx;
    const int32_t *tg = target;
    for (int r = 0; r < rows; r++)
        if (tg[r] >= (int64_t)V)
            return infer_err(INFER_ERR_OUT_OF_RANGE, "cross_entropy: target %d of row %d outside the vocabulary [0, %zu)",
                             tg[r], r, V);
    ce_job j = {dx, nll, x, tg, V, scale};
    pool_run(cc->pool, rows, ce_task, &j);
    return INFER_OK;
}

/* ---- small vector ops ---- */
int cpu_axpy(void *ctx, void *yv, const void *xv, float alpha, size_t n)
{
    (void)ctx;
    float *y = yv;
    const float *x = xv;
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
    return INFER_OK;
}

int cpu_dropout(void *ctx, void *yv, const void *xv, size_t n, float p, uint64_t seed)
{
    (void)ctx;
    float *y = yv;
    const float *x = xv;
    const float k = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) y[i] = bk_dropout_keep(seed, i, p) ? x[i] * k : 0.0f;
    return INFER_OK;
}

int cpu_scale(void *ctx, void *xv, float alpha, size_t n)
{
    (void)ctx;
    float *x = xv;
    for (size_t i = 0; i < n; i++) x[i] *= alpha;
    return INFER_OK;
}

int cpu_sumsq(void *ctx, const void *xv, size_t n, double *out)
{
    (void)ctx;
    const float *x = xv;
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    *out = s;
    return INFER_OK;
}

/* AdamW as torch.optim.AdamW computes it (float32): p *= 1 - lr wd;
 * m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 * p -= lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
int cpu_adamw(void *ctx, void *pv, const void *gv, void *mv, void *vv, size_t n, const bk_adamw *o)
{
    (void)ctx;
    float *p = pv, *m = mv, *v = vv;
    const float *g = gv;
    /* the scalars in double, as Python forms them */
    const double bc1 = 1.0 - pow(o->beta1, (double)o->step), bc2s = sqrt(1.0 - pow(o->beta2, (double)o->step));
    const float step = (float)(o->lr / bc1), decay = (float)(1.0 - (double)o->lr * o->weight_decay),
                bc2 = (float)bc2s;
    for (size_t i = 0; i < n; i++) {
        p[i] *= decay;
        m[i] += (1.0f - o->beta1) * (g[i] - m[i]); /* torch's lerp */
        v[i] = v[i] * o->beta2 + (1.0f - o->beta2) * g[i] * g[i];
        p[i] -= step * m[i] / (sqrtf(v[i]) / bc2 + o->eps);
    }
    return INFER_OK;
}
