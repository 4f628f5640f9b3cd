/* train.c - LoRA training: the forward pass with its activations kept,
 * the loss, the backward pass, AdamW.
 *
 * A micro-batch is B examples padded on the right to the longest, T, as
 * N = B * T rows; example b's tokens sit at positions 0 .. T - 1 (padding
 * is causal-invisible to the real tokens, and its targets do not count).
 * Row b * T + t predicts ids[b][t + 1]: its target, or -1 where that is
 * padding or (prompt_len > 0) inside the prompt.
 *
 * The layer, as forward.c computes it (sandwich: Gemma's extra norms):
 *   h1 = norm(x); q, k, v = lin(h1); q, k = qk_norm(q, k); rope(q, k)
 *   a = attention(q, k, v); o = lin(a); xm = x + [post_attn_norm](o)
 *   h2 = norm(xm); g, u = lin(h2); m = act(g) * u; d = lin(m)
 *   x' = xm + [post_ff_norm](d)
 * where lin(x) = x W^T (+ b) + scale * (x A^T) B^T on adapted modules.
 * Backward walks it in reverse from the top down to the lowest adapted
 * layer; below it nothing has a gradient to collect.
 *
 * The loss of a step is the sum of the target tokens' cross-entropies
 * over all its micro-batches divided by their count: each micro-batch's
 * backward adds up unnormalized gradients, and the sum is scaled once
 * by 1 / count before clipping and the update. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "train/lora.h"

typedef struct layer_acts {
    void *h1, *qp, *kp, *q, *k, *v, *a, *o, *xm, *h2, *g, *u, *ma, *d;
    void *t[LM_COUNT]; /* x A^T of each adapted module [N, rank] */
} layer_acts;

struct infer_trainer {
    infer_lora *l;
    infer_model *m;
    infer_train_opts o;
    int steps;            /* optimizer steps done */
    int lowest;           /* the lowest adapted layer */
    int glu_fused;        /* glu_fused_back: the GLU's backward is the backend's glu_back_dx */
    void *adam_m, *adam_v;
    void *neg_freq_global, *neg_freq_local; /* -inv_freq: RoPE's backward */
    /* dynamic RoPE: the scaled table of this micro-batch's length (as
     * transformers scales a batch for its padded length) and its negation */
    void *dyn_freq, *dyn_neg;
    int dyn_len;          /* the length they hold; 0 = none yet */
    /* this micro-batch: N rows, examples of T positions; buffers for cap rows */
    int N, T, cap;
    int n_acts;           /* layer_acts sets: [0] scratch, [1 + li - lowest] kept */
    layer_acts *acts;
    void **x;             /* [n_layers + 1]: each layer's input, then the last output */
    void *xf, *tmp, *dX, *dH, *dO, *dA, *dQ, *dK, *dV, *dG, *dU, *dM, *dT;
    void *ids, *pos, *targets, *nll, *logits, *dlogits;
    int chunk;            /* rows of logits at once */
    void *xd;             /* an adapter's input after dropout [N, widest in] */
    int dropping;         /* dropout on (training steps, not evaluation) */
    uint64_t drop_seed;   /* this micro-batch's masks */
    int32_t *h_ids, *h_pos, *h_tg;
    float *h_nll;
};

infer_lora *trainer_lora(const infer_trainer *t) { return t->l; }

void infer_train_opts_default(infer_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->lr = 1e-5f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = 0.01f;
    o->schedule = INFER_LR_CONSTANT;
}

static int sliding(const model_config *c, int li) { return c->layer_sliding && c->layer_sliding[li]; }

enum { N_ACT_BUFS = 14 };

/* Buffer j of a layer's activations (the order of the KEEP_ bits below). */
static void **act_buf(layer_acts *a, int j)
{
    void **const f[N_ACT_BUFS] = {&a->h1, &a->qp, &a->kp, &a->q,  &a->k, &a->v,  &a->a,
                                  &a->o,  &a->xm, &a->h2, &a->g, &a->u, &a->ma, &a->d};
    return f[j];
}

static void free_bufs(infer_trainer *t)
{
    const backend_ops *be = t->m->be;
    void *ctx = t->m->bctx;
    for (int i = t->n_acts - 1; i >= 0; i--) {
        layer_acts *a = &t->acts[i];
        for (int j = 0; j < N_ACT_BUFS; j++) {
            void *b = *act_buf(a, j);
            if (i == 0 || b != *act_buf(&t->acts[0], j)) be->free(ctx, b); /* not the scratch set's (kept_acts) */
        }
        for (int k = 0; k < LM_COUNT; k++) be->free(ctx, a->t[k]);
    }
    free(t->acts);
    t->acts = NULL;
    t->n_acts = 0;
    if (t->x)
        for (int i = 0; i <= t->m->cfg.n_layers; i++) be->free(ctx, t->x[i]);
    free(t->x);
    t->x = NULL;
    void **p[] = {&t->xf, &t->tmp, &t->dX, &t->dH, &t->dO, &t->dA, &t->dQ, &t->dK, &t->dV, &t->dG, &t->dU,
                  &t->dM, &t->dT, &t->ids, &t->pos, &t->targets, &t->nll, &t->logits, &t->dlogits, &t->xd};
    for (size_t j = 0; j < sizeof p / sizeof p[0]; j++) {
        be->free(ctx, *p[j]);
        *p[j] = NULL;
    }
    free(t->h_ids);
    free(t->h_pos);
    free(t->h_tg);
    free(t->h_nll);
    t->h_ids = t->h_pos = t->h_tg = NULL;
    t->h_nll = NULL;
    t->N = t->T = t->cap = 0;
}

void infer_trainer_free(infer_trainer *t)
{
    if (!t) return;
    free_bufs(t);
    const backend_ops *be = t->m->be;
    be->free(t->m->bctx, t->adam_m);
    be->free(t->m->bctx, t->adam_v);
    be->free(t->m->bctx, t->neg_freq_global);
    be->free(t->m->bctx, t->neg_freq_local);
    be->free(t->m->bctx, t->dyn_freq);
    be->free(t->m->bctx, t->dyn_neg);
    free(t);
}

static void alloc_into(const backend_ops *be, void *ctx, int *rc, void **p, size_t bytes)
{
    if (!*rc) *rc = be->alloc(ctx, bytes > 0 ? bytes : 4, p);
}

/* The activations of a layer that layer_backward reads, as KEEP_ bits: an
 * adapted module's input (its A gradient), the attention's q, k, v, the
 * norms' inputs, the GLU's inputs; the rest (the q and k before their
 * norms without qk-norms, the outputs of o and down without sandwich norms,
 * the inputs of modules without adapters) are not kept per layer. */
enum {
    KEEP_h1 = 1u << 0, KEEP_qp = 1u << 1, KEEP_kp = 1u << 2, KEEP_q = 1u << 3, KEEP_k = 1u << 4, KEEP_v = 1u << 5,
    KEEP_a = 1u << 6, KEEP_o = 1u << 7, KEEP_xm = 1u << 8, KEEP_h2 = 1u << 9, KEEP_g = 1u << 10, KEEP_u = 1u << 11,
    KEEP_ma = 1u << 12, KEEP_d = 1u << 13
};

static unsigned kept_acts(const infer_trainer *t)
{
    const model_config *c = &t->m->cfg;
    const unsigned kinds = t->l->kinds;
    unsigned k = KEEP_q | KEEP_k | KEEP_v | KEEP_xm | KEEP_g | KEEP_u;
    if (kinds & (1u << LM_Q | 1u << LM_K | 1u << LM_V)) k |= KEEP_h1;
    if (kinds & (1u << LM_O)) k |= KEEP_a;
    if (kinds & (1u << LM_GATE | 1u << LM_UP)) k |= KEEP_h2;
    if (kinds & (1u << LM_DOWN)) k |= KEEP_ma;
    if (c->qk_norm) k |= KEEP_qp | KEEP_kp;
    if (c->sandwich_norms) k |= KEEP_o | KEEP_d;
    return k;
}

/* Whether module k's product of layer li adds into the residual stream
 * itself (the backend's matmul_add): no adapter on it, and no norm
 * between it and the add (no sandwich norms); then its output is not
 * kept, which the backward pass does not read in that case. */
static int adds_into(const infer_trainer *tr, int li, int k)
{
    return tr->m->be->matmul_add && !tr->m->cfg.sandwich_norms && !lora_at(tr->l, li, k);
}

/* Whether the backward of each adapted layer's GLU and its gate and up
 * projections is the backend's one op (glu_back_dx): the backend has it,
 * no layer adapts gate or up, and none of those weights is float32. */
static int glu_fused_back(const infer_trainer *t)
{
    const infer_model *m = t->m;
    if (!m->be->glu_back_dx || (t->l->kinds & (1u << LM_GATE | 1u << LM_UP))) return 0;
    for (int li = t->lowest; li < m->cfg.n_layers; li++)
        if (lora_base(m, li, LM_GATE, NULL)->dtype == DT_F32 || lora_base(m, li, LM_UP, NULL)->dtype == DT_F32)
            return 0;
    return 1;
}

/* Buffers for N rows (B examples of T positions). */
static int ensure_bufs(infer_trainer *t, int N, int T)
{
    if (N <= t->cap) {
        t->N = N;
        t->T = T;
        return INFER_OK;
    }
    free_bufs(t);
    const infer_model *m = t->m;
    const model_config *c = &m->cfg;
    const backend_ops *be = m->be;
    void *ctx = m->bctx;
    const size_t n = (size_t)N, H = (size_t)c->hidden_size, I = (size_t)c->intermediate_size,
                 qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim,
                 r = (size_t)t->l->rank, V = (size_t)c->vocab_size, wide = qd > I ? (qd > H ? qd : H) : (I > H ? I : H);
    const int L = c->n_layers;
    t->n_acts = 1 + (t->o.grad_checkpoint ? 0 : L - t->lowest);
    t->acts = calloc((size_t)t->n_acts, sizeof *t->acts);
    t->x = calloc((size_t)L + 1, sizeof *t->x);
    /* rows of logits at once: 256 MB of them (and as much for their gradient) */
    t->chunk = (int)((256u << 20) / 4 / V);
    if (t->chunk < 1) t->chunk = 1;
    if (t->chunk > N) t->chunk = N;
    t->h_ids = malloc(n * 4);
    t->h_pos = malloc(n * 4);
    t->h_tg = malloc(n * 4);
    t->h_nll = malloc(n * 4);
    if (!t->acts || !t->x || !t->h_ids || !t->h_pos || !t->h_tg || !t->h_nll) {
        free_bufs(t);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "train: out of memory for %d rows", N);
    }
    int rc = INFER_OK;
#define ALLOC(p, bytes) alloc_into(be, ctx, &rc, &(p), (bytes))
    /* The scratch set [0] has every buffer; a kept set only those that
     * layer_backward reads (kept_acts), the others are the scratch set's. */
    const unsigned kept = kept_acts(t);
    /* layer_forward's down projection forms the GLU itself in every layer
     * (adds_into LM_DOWN everywhere) */
    int glu_in_down = 1;
    for (int li = 0; li < L; li++) glu_in_down = glu_in_down && adds_into(t, li, LM_DOWN);
    for (int i = 0; i < t->n_acts; i++) {
        layer_acts *a = &t->acts[i];
        const layer_acts *s0 = &t->acts[0];
#define ACT(f, bytes)                                                                                                  \
    do {                                                                                                               \
        if (i == 0 || (kept & KEEP_##f))                                                                               \
            ALLOC(a->f, bytes);                                                                                        \
        else                                                                                                           \
            a->f = s0->f;                                                                                              \
    } while (0)
        ACT(h1, n * H * 4);
        if (c->qk_norm) {
            ACT(qp, n * qd * 4);
            ACT(kp, n * kvd * 4);
        } else {
            a->qp = a->kp = NULL;
        }
        ACT(q, n * qd * 4);
        ACT(k, n * kvd * 4);
        ACT(v, n * kvd * 4);
        ACT(a, n * qd * 4);
        ACT(o, n * H * 4);
        ACT(xm, n * H * 4);
        ACT(h2, n * H * 4);
        ACT(g, n * I * 4);
        ACT(u, n * I * 4);
        if (glu_in_down) /* nothing reads the GLU's output: the down projection forms it */
            a->ma = NULL;
        else
            ACT(ma, n * I * 4);
        ACT(d, n * H * 4);
#undef ACT
        for (int k = 0; k < LM_COUNT; k++)
            if ((t->l->kinds >> k) & 1) ALLOC(a->t[k], n * r * 4);
    }
    for (int i = 0; i <= L; i++) ALLOC(t->x[i], n * H * 4);
    ALLOC(t->xf, n * H * 4);
    ALLOC(t->tmp, n * wide * 4);
    ALLOC(t->dX, n * H * 4);
    ALLOC(t->dH, n * H * 4);
    ALLOC(t->dO, n * H * 4);
    ALLOC(t->dA, n * qd * 4);
    ALLOC(t->dQ, n * qd * 4);
    ALLOC(t->dK, n * kvd * 4);
    ALLOC(t->dV, n * kvd * 4);
    if (!t->glu_fused) { /* else no gradient of gate or up is kept */
        ALLOC(t->dG, n * I * 4);
        ALLOC(t->dU, n * I * 4);
    }
    ALLOC(t->dM, n * I * 4);
    ALLOC(t->dT, n * r * 4);
    ALLOC(t->xd, t->l->dropout > 0.0f ? n * wide * 4 : 4);
    ALLOC(t->ids, n * 4);
    ALLOC(t->pos, n * 4);
    ALLOC(t->targets, n * 4);
    ALLOC(t->nll, n * 4); /* every row's, read back once (add_losses) */
    ALLOC(t->logits, (size_t)t->chunk * V * 4);
    ALLOC(t->dlogits, (size_t)t->chunk * V * 4);
#undef ALLOC
    if (rc) {
        free_bufs(t);
        return infer_err_prefix(rc, "train: activations of %d rows", N);
    }
    t->N = N;
    t->T = T;
    t->cap = N;
    return INFER_OK;
}

/* The RoPE table of layer li, forward (inv_freq) or backward (-inv_freq). */
static void *layer_freq(const infer_trainer *t, int li, int backward)
{
    const model_config *c = &t->m->cfg;
    const int local = sliding(c, li);
    if ((local ? c->rope_local : c->rope_global).kind == ROPE_DYNAMIC) return backward ? t->dyn_neg : t->dyn_freq;
    if (backward) return local ? t->neg_freq_local : t->neg_freq_global;
    return local ? t->m->inv_freq_local : t->m->inv_freq_global;
}

/* Dynamic RoPE's tables for examples of T positions (position ids 0 .. T -
 * 1: transformers scales for max position + 1 = T). */
static int dyn_tables(infer_trainer *t, int T)
{
    const model_config *c = &t->m->cfg;
    const rope_config *rc = c->rope_global.kind == ROPE_DYNAMIC ? &c->rope_global : &c->rope_local;
    if (rc->kind != ROPE_DYNAMIC || t->dyn_len == T) return INFER_OK;
    const int half = c->head_dim / 2;
    float *f = malloc((size_t)half * 2 * sizeof *f);
    if (!f) return infer_err(INFER_ERR_OUT_OF_MEMORY, "train: out of memory");
    rope_inv_freq(rc, c->head_dim, c->max_position_embeddings, T, f);
    for (int i = 0; i < half; i++) f[half + i] = -f[i];
    int e = t->m->be->upload(t->m->bctx, t->dyn_freq, f, (size_t)half * 4);
    if (!e) e = t->m->be->upload(t->m->bctx, t->dyn_neg, f + half, (size_t)half * 4);
    free(f);
    t->dyn_len = e ? 0 : T;
    return e;
}

static int upload_neg_freq(infer_trainer *t, const rope_config *rc, void **out)
{
    const model_config *c = &t->m->cfg;
    int half = c->head_dim / 2;
    float *f = malloc((size_t)half * sizeof *f);
    if (!f) return infer_err(INFER_ERR_OUT_OF_MEMORY, "train: out of memory");
    rope_inv_freq(rc, c->head_dim, c->max_position_embeddings, c->max_position_embeddings, f);
    for (int i = 0; i < half; i++) f[i] = -f[i];
    int e = t->m->be->alloc(t->m->bctx, (size_t)half * 4, out);
    if (!e) e = t->m->be->upload(t->m->bctx, *out, f, (size_t)half * 4);
    free(f);
    return e;
}

int infer_trainer_new(infer_lora *l, const infer_train_opts *o, infer_trainer **out)
{
    if (!out) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_trainer_new: NULL argument");
    *out = NULL;
    if (!l) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_trainer_new: NULL adapter");
    infer_model *m = l->m;
    const backend_ops *be = m->be;
    const model_config *c = &m->cfg;
    if (!be->matmul_dx || !be->matmul_dw || !be->rmsnorm_back || !be->attention_back || !be->glu_back ||
        !be->softcap_back || !be->cross_entropy || !be->axpy || !be->scale || !be->sumsq || !be->adamw ||
        !be->dropout)
        return infer_err(INFER_ERR_UNSUPPORTED, "train: the %s backend has no training ops yet", be->name);
    infer_train_opts d;
    if (!o) {
        infer_train_opts_default(&d);
        o = &d;
    }
    if (!(o->lr >= 0.0f) || !(o->beta1 >= 0.0f && o->beta1 < 1.0f) || !(o->beta2 >= 0.0f && o->beta2 < 1.0f) ||
        !(o->eps > 0.0f) || !(o->weight_decay >= 0.0f) || !(o->max_grad_norm >= 0.0f) || o->warmup_steps < 0 ||
        (o->schedule != INFER_LR_CONSTANT && o->schedule != INFER_LR_COSINE) ||
        (o->schedule == INFER_LR_COSINE && o->total_steps <= 0))
        return infer_err(INFER_ERR_INVALID_ARGUMENT,
                         "train options: lr %g, betas %g %g, eps %g, weight decay %g, max grad norm %g, warmup %d, "
                         "schedule %d over %d steps",
                         (double)o->lr, (double)o->beta1, (double)o->beta2, (double)o->eps, (double)o->weight_decay,
                         (double)o->max_grad_norm, o->warmup_steps, (int)o->schedule, o->total_steps);
    infer_trainer *t = calloc(1, sizeof *t);
    if (!t) return infer_err(INFER_ERR_OUT_OF_MEMORY, "train: out of memory");
    t->l = l;
    t->m = m;
    t->o = *o;
    t->lowest = c->n_layers;
    for (int i = 0; i < l->n_mods; i++)
        if (l->mods[i].layer < t->lowest) t->lowest = l->mods[i].layer;
    t->glu_fused = glu_fused_back(t);
    size_t bytes = l->n_params * 4;
    float *z = calloc(l->n_params ? l->n_params : 1, 4);
    int rc = z ? INFER_OK : infer_err(INFER_ERR_OUT_OF_MEMORY, "train: out of memory");
    if (!rc) rc = be->alloc(m->bctx, bytes, &t->adam_m);
    if (!rc) rc = be->alloc(m->bctx, bytes, &t->adam_v);
    if (!rc) rc = be->upload(m->bctx, t->adam_m, z, bytes);
    if (!rc) rc = be->upload(m->bctx, t->adam_v, z, bytes);
    free(z);
    if (!rc) rc = upload_neg_freq(t, &c->rope_global, &t->neg_freq_global);
    if (!rc) rc = upload_neg_freq(t, &c->rope_local, &t->neg_freq_local);
    if (!rc && (c->rope_global.kind == ROPE_DYNAMIC || c->rope_local.kind == ROPE_DYNAMIC)) {
        rc = be->alloc(m->bctx, (size_t)(c->head_dim / 2) * 4, &t->dyn_freq);
        if (!rc) rc = be->alloc(m->bctx, (size_t)(c->head_dim / 2) * 4, &t->dyn_neg);
    }
    if (rc) {
        infer_trainer_free(t);
        return rc;
    }
    *out = t;
    return INFER_OK;
}

/* ---- the layer, forward ---- */

static size_t f4(size_t n) { return n * 4; }

/* The dropout mask's seed of module k of layer li in this micro-batch. */
static uint64_t drop_seed(const infer_trainer *tr, int li, int k)
{
    return tr->drop_seed ^ ((uint64_t)(li * LM_COUNT + k + 1) * 0xd1b54a32d192ed03ull);
}

/* The adapter's input: x, or x after dropout (into tr->xd) while training. */
static int adapter_input(infer_trainer *tr, int li, const lora_mod *md, const void *x, const void **out)
{
    *out = x;
    if (!tr->dropping) return INFER_OK;
    *out = tr->xd;
    return tr->m->be->dropout(tr->m->bctx, tr->xd, x, (size_t)tr->N * (size_t)md->in, tr->l->dropout,
                              drop_seed(tr, li, md->kind));
}

/* ys[i] = x W_i^T (+ b_i) + scale (dropout(x) A_i^T) B_i^T for the n <= 4
 * modules ks of layer li that read x (q, k, v; gate, up): the base
 * products as one matmul_n where the backend has it (x converted once);
 * ts[i] keeps scale dropout(x) A_i^T (scaled before B: the adapter's part
 * adds into y in the product itself where the backend has matmul_add). */
static int lin_n(infer_trainer *tr, int li, const int *ks, void *const *ys, const void *x, void *const *ts, int n)
{
    const backend_ops *be = tr->m->be;
    void *ctx = tr->m->bctx;
    const bk_weight *ws[4], *bs[4];
    for (int i = 0; i < n; i++) ws[i] = lora_base(tr->m, li, ks[i], &bs[i]);
    int rc = n > 1 ? model_products(tr->m, ys, x, ws, bs, n, tr->N) : be->matmul(ctx, ys[0], x, ws[0], bs[0], tr->N);
    for (int i = 0; i < n && !rc; i++) {
        const lora_mod *md = lora_at(tr->l, li, ks[i]);
        if (!md) continue;
        const void *xa;
        if ((rc = adapter_input(tr, li, md, x, &xa)) || (rc = be->matmul(ctx, ts[i], xa, &md->A, NULL, tr->N)) ||
            (rc = be->scale(ctx, ts[i], tr->l->scale, (size_t)tr->N * (size_t)tr->l->rank)))
            return rc;
        if (be->matmul_add) {
            rc = be->matmul_add(ctx, ys[i], ts[i], NULL, BK_ACT_SILU, &md->B, NULL, tr->tmp, tr->N);
        } else if (!(rc = be->matmul(ctx, tr->tmp, ts[i], &md->B, NULL, tr->N))) {
            rc = be->axpy(ctx, ys[i], tr->tmp, 1.0f, (size_t)tr->N * (size_t)md->out);
        }
    }
    return rc;
}

/* y = x W^T (+ b) + scale (dropout(x) A^T) B^T; t keeps scale dropout(x) A^T. */
static int lin(infer_trainer *tr, int li, int k, void *y, const void *x, void *t)
{
    void *ys[1] = {y}, *ts[1] = {t};
    return lin_n(tr, li, &k, ys, x, ts, 1);
}

/* y += x W^T (+ b) for a module without an adapter */
static int lin_add(infer_trainer *tr, int li, int k, void *y, const void *x)
{
    const bk_weight *b, *w = lora_base(tr->m, li, k, &b);
    return tr->m->be->matmul_add(tr->m->bctx, y, x, NULL, BK_ACT_SILU, w, b, tr->tmp, tr->N);
}

static const bk_weight *pre_mlp_norm(const infer_model *m, int li)
{
    const layer_weights *L = &m->layers[li];
    return m->cfg.sandwich_norms ? &L->pre_ff_norm : &L->post_attn_norm;
}

/* Every example's attention (back: its backward) in one op, example b in rows b T .. b T + T - 1. */
static int attend(infer_trainer *tr, int li, const layer_acts *a, int back)
{
    const model_config *c = &tr->m->cfg;
    const int window = sliding(c, li) && c->sliding_window > 0 ? c->sliding_window : 0, B = tr->N / tr->T;
    bk_attn p = {tr->T, tr->T, c->n_heads, c->n_kv_heads, c->head_dim, (float)c->attn_scale, (float)c->attn_softcap,
                 window, B, 1};
    const backend_ops *be = tr->m->be;
    return back ? be->attention_back(tr->m->bctx, tr->dQ, tr->dK, tr->dV, tr->dA, a->q, a->k, a->v, &p)
                : be->attention(tr->m->bctx, a->a, a->q, a->k, a->v, &p);
}

/* x (tr->x[li]) -> x_out, keeping the activations in a; x_out NULL: the
 * recomputation of checkpointing, which stops once the backward has all
 * it reads. */
static int layer_forward(infer_trainer *tr, int li, layer_acts *a, void *x_out)
{
    infer_model *m = tr->m;
    const backend_ops *be = m->be;
    void *ctx = m->bctx;
    const model_config *c = &m->cfg;
    const layer_weights *L = &m->layers[li];
    const int N = tr->N, H = c->hidden_size, sw = c->sandwich_norms, pl = c->norm_plus_one;
    const float eps = (float)c->rms_norm_eps;
    const void *x = tr->x[li];
    void *freq = layer_freq(tr, li, 0);
    int rc;
    static const int qkv[3] = {LM_Q, LM_K, LM_V}, gu[2] = {LM_GATE, LM_UP};
    /* q and k straight into the rotated buffers where there is no
     * per-head norm between (the backward reads qp and kp only through it) */
    void *const qkv_y[3] = {c->qk_norm ? a->qp : a->q, c->qk_norm ? a->kp : a->k, a->v},
                *const qkv_t[3] = {a->t[LM_Q], a->t[LM_K], a->t[LM_V]};
    void *const gu_y[2] = {a->g, a->u}, *const gu_t[2] = {a->t[LM_GATE], a->t[LM_UP]};
    if ((rc = be->rmsnorm(ctx, a->h1, x, &L->input_norm, N, H, eps, pl)) ||
        (rc = lin_n(tr, li, qkv, qkv_y, a->h1, qkv_t, 3)))
        return rc;
    if (c->qk_norm && ((rc = be->rmsnorm(ctx, a->q, a->qp, &L->q_norm, N * c->n_heads, c->head_dim, eps, pl)) ||
                       (rc = be->rmsnorm(ctx, a->k, a->kp, &L->k_norm, N * c->n_kv_heads, c->head_dim, eps, pl))))
        return rc;
    if ((rc = be->rope(ctx, a->q, tr->pos, N, c->n_heads, c->head_dim, freq, 1.0f)) ||
        (rc = be->rope(ctx, a->k, tr->pos, N, c->n_kv_heads, c->head_dim, freq, 1.0f)) || (rc = attend(tr, li, a, 0)))
        return rc;
    if (adds_into(tr, li, LM_O)) { /* xm = x + a W_o^T, the sum taken by the product */
        if ((rc = be->copy(ctx, a->xm, x, f4((size_t)N * H))) || (rc = lin_add(tr, li, LM_O, a->xm, a->a))) return rc;
    } else if ((rc = lin(tr, li, LM_O, a->o, a->a, a->t[LM_O])) || (rc = be->copy(ctx, a->xm, x, f4((size_t)N * H)))) {
        return rc;
    } else if (sw) {
        if ((rc = be->rmsnorm(ctx, tr->tmp, a->o, &L->post_attn_norm, N, H, eps, pl)) ||
            (rc = be->add(ctx, a->xm, tr->tmp, (size_t)N * H)))
            return rc;
    } else if ((rc = be->add(ctx, a->xm, a->o, (size_t)N * H))) {
        return rc;
    }
    bk_act act = c->act == ACT_GELU_TANH ? BK_ACT_GELU_TANH : BK_ACT_SILU;
    if ((rc = be->rmsnorm(ctx, a->h2, a->xm, pre_mlp_norm(m, li), N, H, eps, pl)) ||
        (rc = lin_n(tr, li, gu, gu_y, a->h2, gu_t, 2)))
        return rc;
    /* recomputed for the backward, which reads the down projection's
     * input and output only through its adapter or a sandwich norm: the
     * layer stops at gate and up where it has neither */
    if (!x_out && !sw && !lora_at(tr->l, li, LM_DOWN)) return INFER_OK;
    if (x_out && adds_into(tr, li, LM_DOWN)) { /* x_out = xm + (act(g) u) W_down^T, the GLU formed by the product */
        const bk_weight *db, *dw = lora_base(m, li, LM_DOWN, &db);
        if ((rc = be->copy(ctx, x_out, a->xm, f4((size_t)N * H)))) return rc;
        return be->matmul_add(ctx, x_out, a->g, a->u, act, dw, db, tr->tmp, N);
    }
    if ((rc = be->glu(ctx, a->ma, a->g, a->u, (size_t)N * c->intermediate_size, act))) return rc;
    if (!x_out) return lin(tr, li, LM_DOWN, a->d, a->ma, a->t[LM_DOWN]);
    if ((rc = lin(tr, li, LM_DOWN, a->d, a->ma, a->t[LM_DOWN])) || (rc = be->copy(ctx, x_out, a->xm, f4((size_t)N * H))))
        return rc;
    if (sw) {
        if ((rc = be->rmsnorm(ctx, tr->tmp, a->d, &L->post_ff_norm, N, H, eps, pl))) return rc;
        return be->add(ctx, x_out, tr->tmp, (size_t)N * H);
    }
    return be->add(ctx, x_out, a->d, (size_t)N * H);
}

/* ---- the layer, backward ---- */

/* Given dy of lin(x): the adapter's gradients added, and dx (NULL: not
 * wanted) set (acc 0) or added to (acc 1). */
static int lin_back(infer_trainer *tr, int li, int k, const void *dy, const void *x, const void *t, void *dx, int acc)
{
    const backend_ops *be = tr->m->be;
    void *ctx = tr->m->bctx;
    const int N = tr->N;
    int rc = INFER_OK;
    if (dx && (rc = be->matmul_dx(ctx, dx, dy, lora_base(tr->m, li, k, NULL), N, 1.0f, acc ? 1.0f : 0.0f))) return rc;
    const lora_mod *md = lora_at(tr->l, li, k);
    if (!md) return INFER_OK;
    const float s = tr->l->scale;
    const int r = tr->l->rank;
    float *gA = (float *)tr->l->grads + md->a_off, *gB = (float *)tr->l->grads + md->b_off;
    const void *xa;
    if ((rc = be->matmul_dw(ctx, gB, dy, t, N, (int)md->out, r, 1.0f)) || /* t is already scaled */
        (rc = be->matmul_dx(ctx, tr->dT, dy, &md->B, N, s, 0.0f)) || (rc = adapter_input(tr, li, md, x, &xa)) ||
        (rc = be->matmul_dw(ctx, gA, tr->dT, xa, N, r, (int)md->in, 1.0f)))
        return rc;
    if (!dx) return INFER_OK;
    if (!tr->dropping) return be->matmul_dx(ctx, dx, tr->dT, &md->A, N, 1.0f, 1.0f);
    /* through the dropout: the same mask on dT A */
    const size_t n = (size_t)N * (size_t)md->in;
    if ((rc = be->matmul_dx(ctx, tr->tmp, tr->dT, &md->A, N, 1.0f, 0.0f)) ||
        (rc = be->dropout(ctx, tr->tmp, tr->tmp, n, tr->l->dropout, drop_seed(tr, li, md->kind))))
        return rc;
    return be->axpy(ctx, dx, tr->tmp, 1.0f, n);
}

/* tr->dH = the gradient of the gate and up projections' input, from dM
 * (the GLU output's): in one backend op where it has one and no layer
 * adapts gate or up (tr->glu_fused), else the GLU's backward into dG and
 * dU and then each projection's. */
static int glu_in_back(infer_trainer *tr, int li, const layer_acts *a, bk_act act)
{
    const backend_ops *be = tr->m->be;
    void *ctx = tr->m->bctx;
    if (tr->glu_fused)
        return be->glu_back_dx(ctx, tr->dH, tr->dM, a->g, a->u, act, lora_base(tr->m, li, LM_GATE, NULL),
                               lora_base(tr->m, li, LM_UP, NULL), tr->N, 0.0f);
    int rc = be->glu_back(ctx, tr->dG, tr->dU, tr->dM, a->g, a->u, (size_t)tr->N * tr->m->cfg.intermediate_size, act);
    if (!rc) rc = lin_back(tr, li, LM_GATE, tr->dG, a->h2, a->t[LM_GATE], tr->dH, 0);
    return rc ? rc : lin_back(tr, li, LM_UP, tr->dU, a->h2, a->t[LM_UP], tr->dH, 1);
}

/* tr->dX: the gradient of layer li's output in, of its input out (not
 * computed for the lowest adapted layer). */
static int layer_backward(infer_trainer *tr, int li, const layer_acts *a)
{
    infer_model *m = tr->m;
    const backend_ops *be = m->be;
    void *ctx = m->bctx;
    const model_config *c = &m->cfg;
    const layer_weights *L = &m->layers[li];
    const int N = tr->N, H = c->hidden_size, sw = c->sandwich_norms, pl = c->norm_plus_one, last = li == tr->lowest;
    const float eps = (float)c->rms_norm_eps;
    void *freq = layer_freq(tr, li, 1);
    bk_act act = c->act == ACT_GELU_TANH ? BK_ACT_GELU_TANH : BK_ACT_SILU;
    int rc;
    const void *dd = tr->dX;
    if (sw) {
        if ((rc = be->rmsnorm_back(ctx, tr->dO, tr->dX, a->d, &L->post_ff_norm, N, H, eps, pl, 0))) return rc;
        dd = tr->dO;
    }
    if ((rc = lin_back(tr, li, LM_DOWN, dd, a->ma, a->t[LM_DOWN], tr->dM, 0)) ||
        (rc = glu_in_back(tr, li, a, act)) ||
        (rc = be->rmsnorm_back(ctx, tr->dX, tr->dH, a->xm, pre_mlp_norm(m, li), N, H, eps, pl, 1)))
        return rc;
    const void *dout = tr->dX;
    if (sw) {
        if ((rc = be->rmsnorm_back(ctx, tr->dO, tr->dX, a->o, &L->post_attn_norm, N, H, eps, pl, 0))) return rc;
        dout = tr->dO;
    }
    if ((rc = lin_back(tr, li, LM_O, dout, a->a, a->t[LM_O], tr->dA, 0)) || (rc = attend(tr, li, a, 1)) ||
        (rc = be->rope(ctx, tr->dQ, tr->pos, N, c->n_heads, c->head_dim, freq, 1.0f)) ||
        (rc = be->rope(ctx, tr->dK, tr->pos, N, c->n_kv_heads, c->head_dim, freq, 1.0f)))
        return rc;
    if (c->qk_norm &&
        ((rc = be->rmsnorm_back(ctx, tr->dQ, tr->dQ, a->qp, &L->q_norm, N * c->n_heads, c->head_dim, eps, pl, 0)) ||
         (rc = be->rmsnorm_back(ctx, tr->dK, tr->dK, a->kp, &L->k_norm, N * c->n_kv_heads, c->head_dim, eps, pl, 0))))
        return rc;
    void *dh = last ? NULL : tr->dH;
    if ((rc = lin_back(tr, li, LM_Q, tr->dQ, a->h1, a->t[LM_Q], dh, 0)) ||
        (rc = lin_back(tr, li, LM_K, tr->dK, a->h1, a->t[LM_K], dh, 1)) ||
        (rc = lin_back(tr, li, LM_V, tr->dV, a->h1, a->t[LM_V], dh, 1)))
        return rc;
    if (last) return INFER_OK;
    return be->rmsnorm_back(ctx, tr->dX, tr->dH, tr->x[li], &L->input_norm, N, H, eps, pl, 1);
}

/* ---- a micro-batch ---- */

static int check_batch(const infer_trainer *tr, const infer_train_batch *b, int idx, int *T)
{
    const infer_model *m = tr->m;
    if (!b || !b->examples || b->n == 0)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "train: micro-batch %d is empty", idx);
    size_t most = 0;
    for (size_t e = 0; e < b->n; e++) {
        const infer_train_example *x = &b->examples[e];
        if (!x->ids || x->n_ids < 2)
            return infer_err(INFER_ERR_INVALID_ARGUMENT, "train: example %zu of micro-batch %d has %zu tokens (want 2 or more)",
                             e, idx, x->n_ids);
        if (x->n_ids > (size_t)m->context_len)
            return infer_err(INFER_ERR_OUT_OF_RANGE, "train: example %zu of micro-batch %d: %zu tokens exceed the context length %d",
                             e, idx, x->n_ids, m->context_len);
        if (x->prompt_len > x->n_ids)
            return infer_err(INFER_ERR_INVALID_ARGUMENT, "train: example %zu of micro-batch %d: prompt of %zu tokens in %zu",
                             e, idx, x->prompt_len, x->n_ids);
        for (size_t i = 0; i < x->n_ids; i++)
            if (x->ids[i] < 0 || x->ids[i] >= m->cfg.vocab_size)
                return infer_err(INFER_ERR_OUT_OF_RANGE,
                                 "train: example %zu of micro-batch %d: token id %d at position %zu is outside the "
                                 "vocabulary [0, %d)",
                                 e, idx, x->ids[i], i, m->cfg.vocab_size);
        if (x->n_ids > most) most = x->n_ids;
    }
    if ((size_t)most * b->n > (size_t)INT32_MAX / 4)
        return infer_err(INFER_ERR_OUT_OF_RANGE, "train: micro-batch %d is too large", idx);
    *T = (int)most;
    return INFER_OK;
}

/* The micro-batch's row losses (tr->nll) added to *loss in row order.
 * They come back once, at its end: a download waits for the device,
 * which then idles until the host's next launch. */
static int add_losses(infer_trainer *tr, double *loss)
{
    int rc = tr->m->be->download(tr->m->bctx, tr->h_nll, tr->nll, f4((size_t)tr->N));
    for (int i = 0; !rc && i < tr->N; i++) *loss += tr->h_nll[i];
    return rc;
}

/* Forward, loss and (want_grad) backward of one micro-batch; its summed
 * cross-entropy and target count added to *loss and *count, its
 * unnormalized gradient to the adapter's. */
static int micro_step(infer_trainer *tr, const infer_train_batch *b, int T, int want_grad, double *loss, int64_t *count)
{
    infer_model *m = tr->m;
    const backend_ops *be = m->be;
    void *ctx = m->bctx;
    const model_config *c = &m->cfg;
    const int B = (int)b->n, N = B * T, H = c->hidden_size, L = c->n_layers, pl = c->norm_plus_one;
    const float eps = (float)c->rms_norm_eps;
    const size_t V = (size_t)c->vocab_size;
    int rc = ensure_bufs(tr, N, T);
    if (!rc) rc = dyn_tables(tr, T);
    if (rc) return rc;
    for (int e = 0; e < B; e++) {
        const infer_train_example *x = &b->examples[e];
        for (int t = 0; t < T; t++) {
            int r = e * T + t;
            tr->h_ids[r] = (size_t)t < x->n_ids ? x->ids[t] : 0;
            tr->h_pos[r] = t;
            int keep = (size_t)t + 1 < x->n_ids && (size_t)t + 1 >= x->prompt_len;
            tr->h_tg[r] = keep ? x->ids[t + 1] : -1;
            *count += keep;
        }
    }
    if ((rc = be->upload(ctx, tr->ids, tr->h_ids, f4((size_t)N))) ||
        (rc = be->upload(ctx, tr->pos, tr->h_pos, f4((size_t)N))) ||
        (rc = be->upload(ctx, tr->targets, tr->h_tg, f4((size_t)N))))
        return rc;
    float escale = c->embed_scale ? sqrtf((float)H) : 1.0f;
    if ((rc = be->embed(ctx, tr->x[0], tr->ids, N, &m->embed, escale))) return rc;
    for (int li = 0; li < L; li++) {
        layer_acts *a = tr->o.grad_checkpoint || li < tr->lowest ? &tr->acts[0] : &tr->acts[1 + li - tr->lowest];
        if ((rc = layer_forward(tr, li, a, tr->x[li + 1]))) return rc;
    }
    if ((rc = be->rmsnorm(ctx, tr->xf, tr->x[L], &m->final_norm, N, H, eps, pl))) return rc;
    /* the head and the loss, a chunk of rows at a time; dH collects the
     * gradient of the normed output */
    for (int r0 = 0; r0 < N; r0 += tr->chunk) {
        int n = N - r0 < tr->chunk ? N - r0 : tr->chunk;
        const float *xr = (const float *)tr->xf + (size_t)r0 * H;
        if ((rc = be->matmul(ctx, tr->logits, xr, &m->lm_head, NULL, n))) return rc;
        if (c->final_softcap > 0 && (rc = be->softcap(ctx, tr->logits, (size_t)n * V, (float)c->final_softcap)))
            return rc;
        if ((rc = be->cross_entropy(ctx, tr->dlogits, (float *)tr->nll + r0, tr->logits, (const int32_t *)tr->targets + r0,
                                    n, V, 1.0f)))
            return rc;
        if (!want_grad) continue;
        if (c->final_softcap > 0 &&
            (rc = be->softcap_back(ctx, tr->dlogits, tr->dlogits, tr->logits, (size_t)n * V, (float)c->final_softcap)))
            return rc;
        if ((rc = be->matmul_dx(ctx, (float *)tr->dH + (size_t)r0 * H, tr->dlogits, &m->lm_head, n, 1.0f, 0.0f)))
            return rc;
    }
    if (!want_grad) return add_losses(tr, loss);
    if ((rc = be->rmsnorm_back(ctx, tr->dX, tr->dH, tr->x[L], &m->final_norm, N, H, eps, pl, 0))) return rc;
    for (int li = L - 1; li >= tr->lowest; li--) {
        layer_acts *a = tr->o.grad_checkpoint ? &tr->acts[0] : &tr->acts[1 + li - tr->lowest];
        /* checkpointing: the layer again from its kept input, without its
         * output (x[li + 1] is not needed any more): the down projection
         * runs only where the backward reads its output (a sandwich norm)
         * or its adapter's */
        if (tr->o.grad_checkpoint && (rc = layer_forward(tr, li, a, NULL))) return rc;
        if ((rc = layer_backward(tr, li, a))) return rc;
    }
    return add_losses(tr, loss);
}

static int run_batches(infer_trainer *t, const infer_train_batch *micro, int n_micro, int want_grad,
                       infer_step_result *res)
{
    if (!t || !micro || n_micro <= 0 || !res)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "train: NULL argument or no micro-batch");
    memset(res, 0, sizeof *res);
    int T[64], *Ts = n_micro <= 64 ? T : malloc((size_t)n_micro * sizeof *Ts);
    if (!Ts) return infer_err(INFER_ERR_OUT_OF_MEMORY, "train: out of memory");
    int rc = INFER_OK;
    for (int i = 0; i < n_micro && !rc; i++) rc = check_batch(t, &micro[i], i, &Ts[i]);
    if (!rc && want_grad) rc = lora_zero_grads(t->l);
    double loss = 0.0;
    int64_t count = 0;
    for (int i = 0; i < n_micro && !rc; i++) {
        t->drop_seed = (t->o.seed + 1) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)t->steps << 20) ^ (uint64_t)i;
        rc = micro_step(t, &micro[i], Ts[i], want_grad, &loss, &count);
    }
    if (Ts != T) free(Ts);
    if (rc) return rc;
    if (count == 0) return infer_err(INFER_ERR_INVALID_ARGUMENT, "train: no target token counts (all masked)");
    res->loss = loss / (double)count;
    res->n_tokens = count;
    if (!want_grad) return INFER_OK;
    const backend_ops *be = t->m->be;
    void *ctx = t->m->bctx;
    double ss;
    if ((rc = be->scale(ctx, t->l->grads, (float)(1.0 / (double)count), t->l->n_params)) ||
        (rc = be->sumsq(ctx, t->l->grads, t->l->n_params, &ss)))
        return rc;
    res->grad_norm = sqrt(ss);
    return be->synchronize(ctx);
}

int infer_train_loss(infer_trainer *t, const infer_train_batch *micro, int n_micro, int want_grad,
                     infer_step_result *out)
{
    return run_batches(t, micro, n_micro, want_grad, out);
}

/* The learning rate of step s (0 for the first), as transformers'
 * schedules give it. */
static float lr_at(const infer_train_opts *o, int s)
{
    double f = 1.0;
    if (s < o->warmup_steps)
        f = (double)s / (double)(o->warmup_steps > 1 ? o->warmup_steps : 1);
    else if (o->schedule == INFER_LR_COSINE) {
        int span = o->total_steps - o->warmup_steps;
        double progress = (double)(s - o->warmup_steps) / (double)(span > 1 ? span : 1);
        f = 0.5 * (1.0 + cos(M_PI * progress));
        if (f < 0.0) f = 0.0;
    }
    return (float)(o->lr * f);
}

int infer_train_step(infer_trainer *t, const infer_train_batch *micro, int n_micro, infer_step_result *out)
{
    if (!t) return infer_err(INFER_ERR_INVALID_ARGUMENT, "infer_train_step: NULL trainer");
    /* dropout in training steps only (infer_train_loss evaluates) */
    t->dropping = t->l->dropout > 0.0f;
    int rc = run_batches(t, micro, n_micro, 1, out);
    t->dropping = 0;
    if (rc) return rc;
    const backend_ops *be = t->m->be;
    void *ctx = t->m->bctx;
    if (t->o.max_grad_norm > 0.0f) {
        /* torch's clip_grad_norm_: a factor max / (norm + 1e-6), when below 1 */
        double f = (double)t->o.max_grad_norm / (out->grad_norm + 1e-6);
        if (f < 1.0 && (rc = be->scale(ctx, t->l->grads, (float)f, t->l->n_params))) return rc;
    }
    out->lr = lr_at(&t->o, t->steps);
    bk_adamw a = {out->lr, t->o.beta1, t->o.beta2, t->o.eps, t->o.weight_decay, t->steps + 1};
    if ((rc = be->adamw(ctx, t->l->params, t->l->grads, t->adam_m, t->adam_v, t->l->n_params, &a))) return rc;
    t->steps++;
    return be->synchronize(ctx);
}
