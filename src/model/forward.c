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

/* Scratch buffers of one forward pass, in the backend's memory. */
typedef struct fwd_bufs {
    void *x, *h, *q, *k, *v, *a, *o, *g, *u, *ids, *pos, *logits, *inv_freq_dyn;
} fwd_bufs;

static void bufs_free(const infer_model *m, fwd_bufs *b)
{
    void **p = (void **)b;
    for (size_t i = 0; i < sizeof *b / sizeof(void *); i++) m->be->free(m->bctx, p[i]);
    memset(b, 0, sizeof *b);
}

static int bufs_alloc(const infer_model *m, int T, fwd_bufs *b)
{
    const model_config *c = &m->cfg;
    size_t H = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t a = BK_ACT_BYTES, n = (size_t)T;
    struct {
        void **p;
        size_t bytes;
    } want[] = {
        {&b->x, n * H * a},   {&b->h, n * H * a},   {&b->q, n * qd * a},  {&b->k, n * kvd * a},
        {&b->v, n * kvd * a}, {&b->a, n * qd * a},  {&b->o, n * H * a},   {&b->g, n * I * a},
        {&b->u, n * I * a},   {&b->ids, n * 4},     {&b->pos, n * 4},
        {&b->logits, n * (size_t)c->vocab_size * a},
        {&b->inv_freq_dyn, (size_t)c->head_dim / 2 * 4},
    };
    memset(b, 0, sizeof *b);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int rc = m->be->alloc(m->bctx, want[i].bytes, want[i].p);
        if (rc) {
            bufs_free(m, b);
            return rc;
        }
    }
    return INFER_OK;
}

static const bk_weight *opt(const bk_weight *w) { return w->data ? w : NULL; }

/* The inverse-frequency table a layer uses. */
static const void *layer_freqs(const infer_model *m, int layer, const fwd_bufs *b)
{
    const model_config *c = &m->cfg;
    int sliding = c->layer_sliding && c->layer_sliding[layer];
    const rope_config *rc = sliding ? &c->rope_local : &c->rope_global;
    if (rc->kind == ROPE_DYNAMIC) return b->inv_freq_dyn;
    return sliding ? m->inv_freq_local : m->inv_freq_global;
}

static int attention_block(infer_model *m, int li, int T, fwd_bufs *b)
{
    const backend_ops *be = m->be;
    void *ctx = m->bctx;
    const model_config *c = &m->cfg;
    const layer_weights *L = &m->layers[li];
    float eps = (float)c->rms_norm_eps;
    int rc;
    if ((rc = be->rmsnorm(ctx, b->h, b->x, &L->input_norm, T, c->hidden_size, eps, c->norm_plus_one)) ||
        (rc = be->matmul(ctx, b->q, b->h, &L->q, opt(&L->q_bias), T)) ||
        (rc = be->matmul(ctx, b->k, b->h, &L->k, opt(&L->k_bias), T)) ||
        (rc = be->matmul(ctx, b->v, b->h, &L->v, opt(&L->v_bias), T)))
        return rc;
    if (c->qk_norm &&
        ((rc = be->rmsnorm(ctx, b->q, b->q, &L->q_norm, T * c->n_heads, c->head_dim, eps, c->norm_plus_one)) ||
         (rc = be->rmsnorm(ctx, b->k, b->k, &L->k_norm, T * c->n_kv_heads, c->head_dim, eps, c->norm_plus_one))))
        return rc;
    const void *freqs = layer_freqs(m, li, b);
    if ((rc = be->rope(ctx, b->q, b->pos, T, c->n_heads, c->head_dim, freqs, 1.0f)) ||
        (rc = be->rope(ctx, b->k, b->pos, T, c->n_kv_heads, c->head_dim, freqs, 1.0f)))
        return rc;
    bk_attn p = {
        .T = T,
        .S = T,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
        .scale = (float)c->attn_scale,
        .softcap = (float)c->attn_softcap,
        .window = c->layer_sliding && c->layer_sliding[li] ? c->sliding_window : 0,
    };
    if ((rc = be->attention(ctx, b->a, b->q, b->k, b->v, &p)) ||
        (rc = be->matmul(ctx, b->o, b->a, &L->o, opt(&L->o_bias), T)))
        return rc;
    if (c->sandwich_norms &&
        (rc = be->rmsnorm(ctx, b->o, b->o, &L->post_attn_norm, T, c->hidden_size, eps, c->norm_plus_one)))
        return rc;
    return be->add(ctx, b->x, b->o, (size_t)T * c->hidden_size);
}

static int mlp_block(infer_model *m, int li, int T, fwd_bufs *b)
{
    const backend_ops *be = m->be;
    void *ctx = m->bctx;
    const model_config *c = &m->cfg;
    const layer_weights *L = &m->layers[li];
    float eps = (float)c->rms_norm_eps;
    const bk_weight *pre = c->sandwich_norms ? &L->pre_ff_norm : &L->post_attn_norm;
    bk_act act = c->act == ACT_GELU_TANH ? BK_ACT_GELU_TANH : BK_ACT_SILU;
    int rc;
    if ((rc = be->rmsnorm(ctx, b->h, b->x, pre, T, c->hidden_size, eps, c->norm_plus_one)) ||
        (rc = be->matmul(ctx, b->g, b->h, &L->gate, opt(&L->gate_bias), T)) ||
        (rc = be->matmul(ctx, b->u, b->h, &L->up, opt(&L->up_bias), T)) ||
        (rc = be->glu(ctx, b->g, b->g, b->u, (size_t)T * c->intermediate_size, act)) ||
        (rc = be->matmul(ctx, b->o, b->g, &L->down, opt(&L->down_bias), T)))
        return rc;
    if (c->sandwich_norms &&
        (rc = be->rmsnorm(ctx, b->o, b->o, &L->post_ff_norm, T, c->hidden_size, eps, c->norm_plus_one)))
        return rc;
    return be->add(ctx, b->x, b->o, (size_t)T * c->hidden_size);
}

static int upload_inputs(infer_model *m, const int32_t *ids, int T, fwd_bufs *b)
{
    const model_config *c = &m->cfg;
    int32_t *pos = malloc((size_t)T * sizeof *pos);
    float *f = malloc((size_t)c->head_dim / 2 * sizeof *f);
    int rc = INFER_OK;
    if (!pos || !f) {
        rc = infer_err(INFER_ERR_OUT_OF_MEMORY, "forward: out of memory");
        goto done;
    }
    for (int t = 0; t < T; t++) pos[t] = t;
    /* dynamic RoPE depends on the sequence length (max position + 1) */
    const rope_config *dyn = c->rope_global.kind == ROPE_DYNAMIC ? &c->rope_global : &c->rope_local;
    rope_inv_freq(dyn, c->head_dim, c->max_position_embeddings, T, f);
    if ((rc = m->be->upload(m->bctx, b->ids, ids, (size_t)T * 4)) ||
        (rc = m->be->upload(m->bctx, b->pos, pos, (size_t)T * 4)) ||
        (rc = m->be->upload(m->bctx, b->inv_freq_dyn, f, (size_t)c->head_dim / 2 * 4)))
        goto done;
done:
    free(pos);
    free(f);
    return rc;
}

int model_forward_logits(infer_model *m, const int32_t *ids, int T, float *out)
{
    const model_config *c = &m->cfg;
    const backend_ops *be = m->be;
    fwd_bufs b;
    int rc = bufs_alloc(m, T, &b);
    if (rc) return infer_err_prefix(rc, "%s: forward pass of %d tokens", m->path, T);
    /* Gemma multiplies embeddings by sqrt(hidden) rounded to the activation
     * dtype: float32 here. */
    float scale = c->embed_scale ? sqrtf((float)c->hidden_size) : 1.0f;
    if ((rc = upload_inputs(m, ids, T, &b)) ||
        (rc = be->embed(m->bctx, b.x, b.ids, T, &m->embed, scale)))
        goto done;
    for (int li = 0; li < c->n_layers; li++)
        if ((rc = attention_block(m, li, T, &b)) || (rc = mlp_block(m, li, T, &b))) goto done;
    size_t n = (size_t)T * c->vocab_size;
    if ((rc = be->rmsnorm(m->bctx, b.h, b.x, &m->final_norm, T, c->hidden_size, (float)c->rms_norm_eps,
                          c->norm_plus_one)) ||
        (rc = be->matmul(m->bctx, b.logits, b.h, &m->lm_head, NULL, T)))
        goto done;
    if (c->final_softcap > 0 && (rc = be->softcap(m->bctx, b.logits, n, (float)c->final_softcap)))
        goto done;
    rc = be->download_f32(m->bctx, out, b.logits, n);
done:
    bufs_free(m, &b);
    return rc;
}
