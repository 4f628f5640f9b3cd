/* forward.c - the transformer, written once for every family.
 *
 * Per layer (pre-norm; "sandwich" adds the Gemma norms in brackets):
 *   h = norm(x); q, k, v = h Wq, h Wk, h Wv (+ biases)
 *   q, k = qk_norm(q, k) (qwen3, gemma3); q, k = rope(q, k)
 *   a = attention(q, k, v) Wo  [a = post_attention_norm(a)]
 *   x = x + a
 *   h = norm(x)  (post_attention_norm, or pre_feedforward_norm)
 *   m = (act(h Wgate) * h Wup) Wdown  [m = post_feedforward_norm(m)]
 *   x = x + m
 * then logits = final_norm(x) Whead, softcapped where the family says so. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/model.h"

static void free_all(const infer_model *m, void **p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        m->be->free(m->bctx, p[i]);
        p[i] = NULL;
    }
}

/* The inputs of a pass (token ids, positions, the batch's layout, output
 * rows, dynamic RoPE tables) live in one backend block, filled on the host
 * in s->host_in and uploaded in one copy: on cuda each upload is a call
 * of its own.  Offsets in 4-byte words. */
typedef struct in_layout {
    size_t ids, pos, q_start, kv_len, slot, out_rows, freq, words;
    size_t amax;  /* after the uploaded words: the backend's argmax, 2 words an output row */
    size_t total; /* words of the block */
} in_layout;

static in_layout inputs_layout(const model_config *c, size_t n, size_t B, size_t max_out)
{
    in_layout l;
    size_t half = c->head_dim / 2 > 0 ? (size_t)c->head_dim / 2 : 1;
    l.ids = 0;
    l.pos = l.ids + n;
    l.q_start = l.pos + n;
    l.kv_len = l.q_start + B + 1;
    l.slot = l.kv_len + B;
    l.out_rows = l.slot + B;
    l.freq = l.out_rows + (max_out ? max_out : 1);
    l.words = l.freq + B * half;
    l.amax = l.words;
    l.total = l.amax + 2 * (max_out ? max_out : 1);
    return l;
}

void fwd_scratch_free(infer_model *m, fwd_scratch *s)
{
    void **p[] = {&s->x,      &s->h,   &s->q,      &s->k,  &s->v,  &s->a, &s->o,
                  &s->g,      &s->u,   &s->inputs, &s->sel, &s->logits, &s->lt, &s->lu};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free_all(m, p[i], 1);
    s->ids = s->pos = s->q_start = s->kv_len = s->slot = s->out_rows = s->inv_freq_dyn = s->amax = NULL;
    s->lt_rank = 0;
    s->lu_cols = 0;
    if (s->graph) m->be->graph_free(m->bctx, s->graph);
    s->graph = NULL;
    free(s->host_in);
    s->host_in = NULL;
}

int fwd_scratch_new(infer_model *m, int max_rows, int max_B, int max_out, fwd_scratch *s)
{
    const model_config *c = &m->cfg;
    size_t H = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t a = BK_ACT_BYTES, n = (size_t)max_rows, B = (size_t)max_B;
    memset(s, 0, sizeof *s);
    s->max_rows = max_rows;
    s->max_B = max_B;
    s->max_out = max_out;
    in_layout l = inputs_layout(c, n, B, (size_t)max_out);
    struct {
        void **p;
        size_t bytes;
    } want[] = {
        {&s->x, n * H * a},   {&s->h, n * H * a},  {&s->q, n * qd * a},      {&s->k, n * kvd * a},
        {&s->v, n * kvd * a}, {&s->a, n * qd * a}, {&s->o, n * H * a},       {&s->g, n * I * a},
        {&s->u, n * I * a},   {&s->inputs, l.total * 4},
        {&s->sel, (size_t)max_out * H * a},
        {&s->logits, (size_t)max_out * (size_t)c->vocab_size * a},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int rc = m->be->alloc(m->bctx, want[i].bytes ? want[i].bytes : 4, want[i].p);
        if (rc) {
            fwd_scratch_free(m, s);
            return rc;
        }
    }
    int32_t *in = s->inputs;
    s->ids = in + l.ids;
    s->pos = in + l.pos;
    s->q_start = in + l.q_start;
    s->kv_len = in + l.kv_len;
    s->slot = in + l.slot;
    s->out_rows = in + l.out_rows;
    s->inv_freq_dyn = in + l.freq;
    s->amax = in + l.amax;
    s->host_in = calloc(l.total, 4);
    if (!s->host_in) {
        fwd_scratch_free(m, s);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "forward: out of memory for %d rows", max_rows);
    }
    return INFER_OK;
}

static const bk_weight *opt(const bk_weight *w) { return w->data ? w : NULL; }

static int is_sliding(const model_config *c, int layer)
{
    return c->layer_sliding && c->layer_sliding[layer] && c->sliding_window > 0;
}

/* RoPE of x [N, heads, hd] for layer li: one table for all rows, or, with
 * dynamic scaling (whose frequencies depend on each sequence's length),
 * one per sequence. */
static int apply_rope(infer_model *m, int li, void *x, int heads, const fwd_batch *fb, const fwd_scratch *s)
{
    const model_config *c = &m->cfg;
    int sliding = c->layer_sliding && c->layer_sliding[li];
    const rope_config *rc = sliding ? &c->rope_local : &c->rope_global;
    if (rc->kind != ROPE_DYNAMIC)
        return m->be->rope(m->bctx, x, s->pos, fb->N, heads, c->head_dim,
                           sliding ? m->inv_freq_local : m->inv_freq_global, 1.0f);
    size_t row = (size_t)heads * c->head_dim * BK_ACT_BYTES;
    for (int b = 0; b < fb->B; b++) {
        int r0 = fb->q_start[b], n = fb->q_start[b + 1] - r0;
        if (n <= 0) continue;
        int rc2 = m->be->rope(m->bctx, (char *)x + (size_t)r0 * row, (const char *)s->pos + (size_t)r0 * 4, n,
                              heads, c->head_dim, (const char *)s->inv_freq_dyn + (size_t)b * c->head_dim / 2 * 4,
                              1.0f);
        if (rc2) return rc2;
    }
    return INFER_OK;
}

/* x += post(o) (post: the block's norm at its end, Gemma's sandwich norm,
 * or NULL), then h =
 * norm(x) (norm NULL: none, after the last layer): one op where the
 * backend fuses them. */
static int add_norm(infer_model *m, fwd_scratch *s, const bk_weight *post, const bk_weight *norm, int T)
{
    const backend_ops *be = m->be;
    const model_config *c = &m->cfg;
    float eps = (float)c->rms_norm_eps;
    int rc;
    if (be->add_rmsnorm && norm)
        return be->add_rmsnorm(m->bctx, s->x, s->o, post, s->h, norm, T, c->hidden_size, eps, c->norm_plus_one);
    if (post && (rc = be->rmsnorm(m->bctx, s->o, s->o, post, T, c->hidden_size, eps, c->norm_plus_one))) return rc;
    if ((rc = be->add(m->bctx, s->x, s->o, (size_t)T * c->hidden_size))) return rc;
    return norm ? be->rmsnorm(m->bctx, s->h, s->x, norm, T, c->hidden_size, eps, c->norm_plus_one) : INFER_OK;
}

/* y [T, out] += scale (x A^T) B^T where the adapter in use adapts module
 * k of layer li. */
static int adapt(infer_model *m, fwd_scratch *s, int li, int k, void *y, const void *x, int T)
{
    const model_adapter *ad = m->adapter;
    if (!ad || !ad->a[li * LM_COUNT + k].data) return INFER_OK;
    const backend_ops *be = m->be;
    if (!be->axpy) return infer_err(INFER_ERR_UNSUPPORTED, "LoRA adapters are not supported on the %s backend", be->name);
    int rc;
    if (s->lt_rank < ad->rank || s->lu_cols < ad->max_out) {
        be->free(m->bctx, s->lt);
        be->free(m->bctx, s->lu);
        s->lt = s->lu = NULL;
        s->lt_rank = 0;
        s->lu_cols = 0;
        if ((rc = be->alloc(m->bctx, (size_t)s->max_rows * ad->rank * 4, &s->lt)) ||
            (rc = be->alloc(m->bctx, (size_t)s->max_rows * ad->max_out * 4, &s->lu)))
            return rc;
        s->lt_rank = ad->rank;
        s->lu_cols = ad->max_out;
    }
    const bk_weight *A = &ad->a[li * LM_COUNT + k], *B = &ad->b[li * LM_COUNT + k];
    if ((rc = be->matmul(m->bctx, s->lt, x, A, NULL, T)) || (rc = be->matmul(m->bctx, s->lu, s->lt, B, NULL, T)))
        return rc;
    return be->axpy(m->bctx, y, s->lu, ad->scale, (size_t)T * (size_t)B->rows);
}

int model_products(infer_model *m, void *const *ys, const void *x, const bk_weight *const *ws,
                   const bk_weight *const *bs, int n, int T)
{
    const backend_ops *be = m->be;
    if (be->matmul_n) return be->matmul_n(m->bctx, ys, x, ws, bs, n, T);
    int rc = INFER_OK;
    for (int i = 0; i < n && !rc; i++) rc = be->matmul(m->bctx, ys[i], x, ws[i], bs[i], T);
    return rc;
}

/* Whether this pass's residual adds go into the products before them and
 * its norms into the products after them (the backend's norm_matmul_n and
 * matmul_add; plain pre-norm layers, no adapter; one row, or where the
 * backend says they pay for a pass whose every row is an output, as a
 * batch's decode step): then s->h is not formed, and each block reads
 * s->x and adds into it. */
static int fused_norms(const infer_model *m, const fwd_batch *fb)
{
    const backend_ops *be = m->be;
    if (!be->norm_matmul_n || !be->matmul_add || m->cfg.sandwich_norms || m->adapter) return 0;
    return fb->N == 1 || (fb->n_out == fb->N && be->fused_pays && be->fused_pays(m->bctx, &m->layers[0].q, fb->N));
}

/* s->h (the normalised x) -> s->o: attention of layer li, output
 * projection included (the sandwich norm after it is add_norm's); fused
 * (fused_norms): s->x -> s->x += attention(input_norm(s->x)). */
static int attention_block(infer_model *m, kv_cache *kv, int li, const fwd_batch *fb, fwd_scratch *s, int fused)
{
    const backend_ops *be = m->be;
    void *ctx = m->bctx;
    const model_config *c = &m->cfg;
    const layer_weights *L = &m->layers[li];
    float eps = (float)c->rms_norm_eps;
    int T = fb->N, rc;
    const bk_weight *qkv[3] = {&L->q, &L->k, &L->v}, *qkv_b[3] = {opt(&L->q_bias), opt(&L->k_bias), opt(&L->v_bias)};
    void *qkv_y[3] = {s->q, s->k, s->v};
    if (fused) {
        if ((rc = be->norm_matmul_n(ctx, qkv_y, s->x, s->h, &L->input_norm, eps, c->norm_plus_one, qkv, qkv_b, 3, T)))
            return rc;
    } else if ((rc = model_products(m, qkv_y, s->h, qkv, qkv_b, 3, T)) || (rc = adapt(m, s, li, LM_Q, s->q, s->h, T)) ||
        (rc = adapt(m, s, li, LM_K, s->k, s->h, T)) || (rc = adapt(m, s, li, LM_V, s->v, s->h, T)))
        return rc;
    int max_n = 0;
    for (int b = 0; b < fb->B; b++)
        if (fb->q_start[b + 1] - fb->q_start[b] > max_n) max_n = fb->q_start[b + 1] - fb->q_start[b];
    bk_attn_kv p = {
        .B = fb->B,
        .N = fb->N,
        .cap = kv->cap[li],
        .q_start = s->q_start,
        .kv_len = s->kv_len,
        .slot = s->slot,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
        .scale = (float)c->attn_scale,
        .softcap = (float)c->attn_softcap,
        .window = is_sliding(c, li) ? c->sliding_window : 0,
        .max_n = max_n,
        .host_kv_len = fb->B == 1 ? fb->kv_len[0] : 0,
        .host_slot = fb->B == 1 ? fb->slot[0] : 0,
        /* weights of 16 bits or fewer: the attention's products may round
         * as coarsely as TF32 (10-bit mantissas), still finer than them */
        .fast = L->o.dtype != DT_F32,
    };
    int sliding = c->layer_sliding && c->layer_sliding[li];
    const rope_config *ropec = sliding ? &c->rope_local : &c->rope_global;
    /* a decode step: the rotations and cache writes inside the attention */
    const int in_att = be->qk_rope_attention_kv && ropec->kind != ROPE_DYNAMIC && fb->N == fb->B && !fb->inspect;
    if (in_att) {
        if ((rc = be->qk_rope_attention_kv(ctx, s->a, s->q, s->k, s->v, kv->k[li], kv->v[li],
                                           c->qk_norm ? &L->q_norm : NULL, c->qk_norm ? &L->k_norm : NULL, eps,
                                           c->norm_plus_one, s->pos, sliding ? m->inv_freq_local : m->inv_freq_global,
                                           1.0f, &p)))
            return rc;
    } else if (be->qk_rope_store && ropec->kind != ROPE_DYNAMIC) {
        /* norms, rotations and the cache writes in one op; the queries
         * and keys inspected after it are the same */
        if ((rc = be->qk_rope_store(ctx, s->q, s->k, s->v, kv->k[li], kv->v[li], c->qk_norm ? &L->q_norm : NULL,
                                    c->qk_norm ? &L->k_norm : NULL, eps, c->norm_plus_one, s->pos,
                                    sliding ? m->inv_freq_local : m->inv_freq_global, 1.0f, &p)))
            return rc;
        if (fb->inspect && (rc = fb->inspect(fb->inspect_user, li, s->q, s->k))) return rc;
    } else {
        if (c->qk_norm &&
            ((rc = be->rmsnorm(ctx, s->q, s->q, &L->q_norm, T * c->n_heads, c->head_dim, eps, c->norm_plus_one)) ||
             (rc = be->rmsnorm(ctx, s->k, s->k, &L->k_norm, T * c->n_kv_heads, c->head_dim, eps,
                               c->norm_plus_one))))
            return rc;
        if ((rc = apply_rope(m, li, s->q, c->n_heads, fb, s)) || (rc = apply_rope(m, li, s->k, c->n_kv_heads, fb, s)))
            return rc;
        if (fb->inspect && (rc = fb->inspect(fb->inspect_user, li, s->q, s->k))) return rc;
        if ((rc = be->kv_store(ctx, kv->k[li], kv->v[li], s->k, s->v, &p))) return rc;
    }
    if (!in_att && (rc = be->attention_kv(ctx, s->a, s->q, kv->k[li], kv->v[li], &p))) return rc;
    if (fused) return be->matmul_add(ctx, s->x, s->a, NULL, BK_ACT_SILU, &L->o, opt(&L->o_bias), s->o, T);
    if ((rc = be->matmul(ctx, s->o, s->a, &L->o, opt(&L->o_bias), T)) || (rc = adapt(m, s, li, LM_O, s->o, s->a, T)))
        return rc;
    return INFER_OK;
}

/* The norm before layer li's MLP. */
static const bk_weight *pre_mlp_norm(const infer_model *m, int li)
{
    const layer_weights *L = &m->layers[li];
    return m->cfg.sandwich_norms ? &L->pre_ff_norm : &L->post_attn_norm;
}

/* s->h -> s->o: the MLP of layer li (the sandwich norm after it is
 * add_norm's); fused (fused_norms): s->x += mlp(pre_mlp_norm(s->x)). */
static int mlp_block(infer_model *m, int li, int T, fwd_scratch *s, int fused)
{
    const backend_ops *be = m->be;
    void *ctx = m->bctx;
    const model_config *c = &m->cfg;
    const layer_weights *L = &m->layers[li];
    bk_act act = c->act == ACT_GELU_TANH ? BK_ACT_GELU_TANH : BK_ACT_SILU;
    int rc;
    const bk_weight *gu[2] = {&L->gate, &L->up}, *gu_b[2] = {opt(&L->gate_bias), opt(&L->up_bias)};
    void *gu_y[2] = {s->g, s->u};
    if (fused) {
        if ((rc = be->norm_matmul_n(ctx, gu_y, s->x, s->h, pre_mlp_norm(m, li), (float)c->rms_norm_eps,
                                    c->norm_plus_one, gu, gu_b, 2, T)))
            return rc;
        return be->matmul_add(ctx, s->x, s->g, s->u, act, &L->down, opt(&L->down_bias), s->o, T);
    }
    if ((rc = model_products(m, gu_y, s->h, gu, gu_b, 2, T)) || (rc = adapt(m, s, li, LM_GATE, s->g, s->h, T)) ||
        (rc = adapt(m, s, li, LM_UP, s->u, s->h, T)))
        return rc;
    if (m->adapter && m->adapter->a[li * LM_COUNT + LM_DOWN].data) {
        /* the down projection's adapter reads act(gate) * up */
        if ((rc = be->glu(ctx, s->g, s->g, s->u, (size_t)T * c->intermediate_size, act)) ||
            (rc = be->matmul(ctx, s->o, s->g, &L->down, opt(&L->down_bias), T)))
            return rc;
        return adapt(m, s, li, LM_DOWN, s->o, s->g, T);
    }
    if (be->matmul_glu)
        rc = be->matmul_glu(ctx, s->o, s->g, s->u, act, &L->down, opt(&L->down_bias), T);
    else if (!(rc = be->glu(ctx, s->g, s->g, s->u, (size_t)T * c->intermediate_size, act)))
        rc = be->matmul(ctx, s->o, s->g, &L->down, opt(&L->down_bias), T);
    return rc;
}

/* Every layer over s->x: h = input_norm(x); x += attention(h);
 * h = pre_mlp_norm(x); x += mlp(h); each add fused with the norms around
 * it.  After the last layer's attention only the output rows matter (the
 * others' keys and values are in the cache): where there are fewer, its
 * MLP runs on them alone, gathered into s->sel, and *pruned says so. */
static int layers(infer_model *m, kv_cache *kv, const fwd_batch *fb, fwd_scratch *s, int *pruned)
{
    const model_config *c = &m->cfg;
    const backend_ops *be = m->be;
    int T = fb->N, sw = c->sandwich_norms, fused = fused_norms(m, fb);
    *pruned = 0;
    int rc = fused ? INFER_OK
                   : be->rmsnorm(m->bctx, s->h, s->x, &m->layers[0].input_norm, T, c->hidden_size,
                                 (float)c->rms_norm_eps, c->norm_plus_one);
    for (int li = 0; !rc && li < c->n_layers; li++) {
        const layer_weights *L = &m->layers[li];
        if ((rc = attention_block(m, kv, li, fb, s, fused))) break;
        if (li == c->n_layers - 1 && fb->n_out == 0) break; /* the cache was all this pass was for */
        if (fused) {
            if ((rc = mlp_block(m, li, T, s, 1))) break;
            continue;
        }
        if (li == c->n_layers - 1 && fb->n_out < T) {
            /* the residual rows to s->sel, the attention's to s->h (free
             * until add_norm writes it), then the buffers trade places for
             * the rest of the layer */
            const size_t H = (size_t)c->hidden_size;
            if ((rc = be->gather_rows(m->bctx, s->sel, s->x, s->out_rows, fb->n_out, H)) ||
                (rc = be->gather_rows(m->bctx, s->h, s->o, s->out_rows, fb->n_out, H)))
                break;
            void *x = s->x, *o = s->o;
            s->x = s->sel, s->sel = x, s->o = s->h, s->h = o;
            T = fb->n_out;
            *pruned = 1;
        }
        if ((rc = add_norm(m, s, sw ? &L->post_attn_norm : NULL, pre_mlp_norm(m, li), T)) ||
            (rc = mlp_block(m, li, T, s, 0)))
            break;
        rc = add_norm(m, s, sw ? &L->post_ff_norm : NULL, li + 1 < c->n_layers ? &m->layers[li + 1].input_norm : NULL,
                      T);
    }
    if (*pruned) { /* back in place: s->sel holds the output rows */
        void *x = s->x, *o = s->o;
        s->x = s->sel, s->sel = x, s->o = s->h, s->h = o;
    }
    return rc;
}

static int check_batch(const infer_model *m, const kv_cache *kv, const fwd_scratch *s, const fwd_batch *fb)
{
    if (fb->B <= 0 || fb->N <= 0 || fb->B > s->max_B || fb->N > s->max_rows || fb->n_out > s->max_out ||
        fb->B > kv->n_slots || fb->q_start[0] != 0 || fb->q_start[fb->B] != fb->N)
        return infer_err(INFER_ERR_INVALID_ARGUMENT, "forward: batch of %d sequences, %d rows does not fit", fb->B,
                         fb->N);
    for (int b = 0; b < fb->B; b++) {
        int n = fb->q_start[b + 1] - fb->q_start[b];
        if (n < 0 || n > kv->max_chunk || fb->kv_len[b] < n || fb->kv_len[b] > m->context_len ||
            fb->kv_len[b] > kv->full_cap || fb->slot[b] < 0 || fb->slot[b] >= kv->n_slots)
            return infer_err(INFER_ERR_INVALID_ARGUMENT, "forward: sequence %d (%d new of %d positions) does not fit",
                             b, n, fb->kv_len[b]);
    }
    /* here, on the host, for every backend: a device cannot report it */
    for (int i = 0; i < fb->N; i++)
        if (fb->ids[i] < 0 || fb->ids[i] >= m->cfg.vocab_size)
            return infer_err(INFER_ERR_OUT_OF_RANGE, "token id %d at position %d is outside the vocabulary [0, %d)",
                             fb->ids[i], i, m->cfg.vocab_size);
    for (int i = 0; i < fb->n_out; i++)
        if (fb->out_rows[i] < 0 || fb->out_rows[i] >= fb->N)
            return infer_err(INFER_ERR_INVALID_ARGUMENT, "forward: output row %d outside [0, %d)", fb->out_rows[i],
                             fb->N);
    return INFER_OK;
}

static int upload_batch(infer_model *m, const fwd_batch *fb, fwd_scratch *s)
{
    const model_config *c = &m->cfg;
    int half = c->head_dim / 2;
    in_layout l = inputs_layout(c, (size_t)s->max_rows, (size_t)s->max_B, (size_t)s->max_out);
    int32_t *in = s->host_in, *pos = in + l.pos;
    float *f = (float *)(in + l.freq);
    const rope_config *dyn = c->rope_global.kind == ROPE_DYNAMIC ? &c->rope_global : &c->rope_local;
    for (int b = 0; b < fb->B; b++) {
        int r0 = fb->q_start[b], n = fb->q_start[b + 1] - r0;
        for (int i = 0; i < n; i++) pos[r0 + i] = fb->kv_len[b] - n + i;
        /* dynamic RoPE depends on the sequence's length (max position + 1) */
        int len = fb->rope_len && fb->rope_len[b] > fb->kv_len[b] ? fb->rope_len[b] : fb->kv_len[b];
        rope_inv_freq(dyn, c->head_dim, c->max_position_embeddings, len, f + (size_t)b * half);
    }
    memcpy(in + l.ids, fb->ids, (size_t)fb->N * 4);
    memcpy(in + l.q_start, fb->q_start, (size_t)(fb->B + 1) * 4);
    memcpy(in + l.kv_len, fb->kv_len, (size_t)fb->B * 4);
    memcpy(in + l.slot, fb->slot, (size_t)fb->B * 4);
    if (fb->n_out) memcpy(in + l.out_rows, fb->out_rows, (size_t)fb->n_out * 4);
    return m->be->upload(m->bctx, s->inputs, in, l.words * 4);
}

/* Everything after the inputs are on the backend: the layers, then the
 * logits of the output rows (left in s->logits). */
static int forward_compute(infer_model *m, kv_cache *kv, fwd_scratch *s, const fwd_batch *fb)
{
    const model_config *c = &m->cfg;
    const backend_ops *be = m->be;
    /* Gemma multiplies embeddings by sqrt(hidden) rounded to the activation
     * dtype: float32 here. */
    float scale = c->embed_scale ? sqrtf((float)c->hidden_size) : 1.0f;
    int rc = be->embed(m->bctx, s->x, s->ids, fb->N, &m->embed, scale);
    if (rc) return rc;
    int pruned;
    if ((rc = layers(m, kv, fb, s, &pruned))) return rc;
    if (fb->n_out == 0) return INFER_OK;
    size_t n = (size_t)fb->n_out * c->vocab_size;
    /* the output rows into s->sel (pruned: there already); every row in
     * order (a decode step): the norm reads them in place */
    int every = fb->n_out == fb->N;
    for (int i = 0; every && i < fb->n_out; i++) every = fb->out_rows[i] == i;
    const void *rows = pruned ? s->sel : every ? s->x : NULL;
    if (rows == s->x && fused_norms(m, fb)) { /* the final norm as the head's kernel stages x */
        void *ys[1] = {s->logits};
        const bk_weight *ws[1] = {&m->lm_head}, *bs[1] = {NULL};
        rc = be->norm_matmul_n(m->bctx, ys, s->x, s->sel, &m->final_norm, (float)c->rms_norm_eps, c->norm_plus_one,
                               ws, bs, 1, fb->n_out);
    } else {
        if (!rows) rc = be->gather_rows(m->bctx, s->sel, s->x, s->out_rows, fb->n_out, (size_t)c->hidden_size);
        if (!rc)
            rc = be->rmsnorm(m->bctx, s->sel, rows ? rows : s->sel, &m->final_norm, fb->n_out, c->hidden_size,
                             (float)c->rms_norm_eps, c->norm_plus_one);
        if (!rc) rc = be->matmul(m->bctx, s->logits, s->sel, &m->lm_head, NULL, fb->n_out);
    }
    if (rc) return rc;
    if (c->final_softcap > 0 && (rc = be->softcap(m->bctx, s->logits, n, (float)c->final_softcap))) return rc;
    if (fb->out_ids && be->argmax) return be->argmax(m->bctx, s->amax, s->logits, fb->n_out, (size_t)c->vocab_size);
    return INFER_OK;
}

/* A decode step (one new token for each of B sequences, B <= GRAPH_MAX_B)
 * runs as a graph where the backend records them: recorded once, replayed
 * every step, so that the host issues one launch instead of one per op.
 * A recording holds the KV cache's buffers and ring sizes and the numbers
 * of rows: this key tells when it must be made again (the cache grew, a
 * sequence finished).  A step is recorded only when the step before it
 * ran the same key without a graph, so that whatever the ops set up on
 * their first run (scratch memory, kernel attributes) is done outside
 * the recording. */
enum { GRAPH_MAX_B = 64 };

static uint64_t graph_key(const infer_model *m, const kv_cache *kv, const fwd_batch *fb)
{
    uint64_t h = 1469598103934665603ull;
#define MIX(v)                                                                                                   \
    do {                                                                                                         \
        h ^= (uint64_t)(v);                                                                                      \
        h *= 1099511628211ull;                                                                                   \
    } while (0)
    for (int l = 0; l < kv->n_layers; l++) {
        MIX((uintptr_t)kv->k[l]);
        MIX((uintptr_t)kv->v[l]);
        MIX(kv->cap[l]);
    }
    MIX(fb->n_out);
    MIX(fb->N);
    MIX(fb->out_ids != NULL);
    MIX((uintptr_t)m->adapter);
#undef MIX
    return h;
}

static int forward_graph(infer_model *m, kv_cache *kv, fwd_scratch *s, const fwd_batch *fb)
{
    const backend_ops *be = m->be;
    uint64_t key = graph_key(m, kv, fb);
    if ((!s->graph || s->graph_key != key) && s->eager_key != key) {
        s->eager_key = key;
        return forward_compute(m, kv, s, fb);
    }
    if (!s->graph || s->graph_key != key) {
        if (s->graph) be->graph_free(m->bctx, s->graph);
        s->graph = NULL;
        int rc = be->graph_begin(m->bctx);
        if (rc) return rc;
        if ((rc = forward_compute(m, kv, s, fb))) {
            be->graph_end(m->bctx, NULL);
            return rc;
        }
        if ((rc = be->graph_end(m->bctx, &s->graph))) return rc;
        s->graph_key = key;
    }
    int rc = be->graph_run(m->bctx, s->graph);
    if (rc != BK_GRAPH_STALE) return rc;
    /* run without a graph, and record at the next step */
    be->graph_free(m->bctx, s->graph);
    s->graph = NULL;
    s->eager_key = key;
    return forward_compute(m, kv, s, fb);
}

int model_forward(infer_model *m, kv_cache *kv, fwd_scratch *s, const fwd_batch *fb)
{
    const model_config *c = &m->cfg;
    const backend_ops *be = m->be;
    int rc = check_batch(m, kv, s, fb);
    if (rc || (rc = upload_batch(m, fb, s))) return rc;
    int graph = be->graph_begin && fb->N == fb->B && fb->B <= GRAPH_MAX_B && (fb->n_out == fb->B || fb->n_out == 0) &&
                !fb->inspect;
    rc = graph ? forward_graph(m, kv, s, fb) : forward_compute(m, kv, s, fb);
    if (rc) return rc;
    if (fb->n_out == 0) return be->synchronize(m->bctx);
    size_t n = (size_t)fb->n_out * c->vocab_size;
    if (!fb->out_ids) return be->download_f32(m->bctx, fb->logits, s->logits, n);
    /* greedy tokens: ids only, unless a row needs the host (NaN, +inf,
     * nothing above -inf) or the backend has no argmax */
    int32_t *am = s->host_in;
    int host = !be->argmax;
    if (!host) {
        if ((rc = be->download(m->bctx, am, s->amax, (size_t)fb->n_out * 8))) return rc;
        for (int i = 0; i < fb->n_out; i++) host |= am[2 * i + 1] != 0;
    }
    for (int i = 0; i < fb->n_out; i++) fb->out_ids[i] = host ? -1 : am[2 * i];
    return host ? be->download_f32(m->bctx, fb->logits, s->logits, n) : INFER_OK;
}

int model_forward_logits(infer_model *m, const int32_t *ids, int T, float *out)
{
    kv_cache kv;
    fwd_scratch s;
    int rc = kv_cache_new(m, 1, T, T, &kv);
    if (rc) return infer_err_prefix(rc, "%s: forward pass of %d tokens", m->path, T);
    if ((rc = fwd_scratch_new(m, T, 1, T, &s))) {
        kv_cache_free(m, &kv);
        return infer_err_prefix(rc, "%s: forward pass of %d tokens", m->path, T);
    }
    int32_t *rows = malloc((size_t)T * sizeof *rows);
    if (!rows) {
        rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: forward pass: out of memory", m->path);
    } else {
        for (int t = 0; t < T; t++) rows[t] = t;
        int32_t q_start[2] = {0, T}, kv_len[1] = {T}, slot[1] = {0};
        fwd_batch fb = {.B = 1, .N = T, .ids = ids, .q_start = q_start, .kv_len = kv_len, .slot = slot,
                        .out_rows = rows, .n_out = T, .logits = out};
        rc = model_forward(m, &kv, &s, &fb);
    }
    free(rows);
    fwd_scratch_free(m, &s);
    kv_cache_free(m, &kv);
    return rc;
}
