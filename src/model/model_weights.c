/* model_weights.c - finds every tensor the config calls for, checks its
 * dtype and shape, and binds it to the model.
 *
 * Names: <prefix>embed_tokens.weight, <prefix>layers.N.self_attn.q_proj.weight,
 * ..., <prefix>norm.weight, lm_head.weight (absent when tied).  The prefix is
 * "model." for the text-only classes and "language_model.model." or
 * "model.language_model." for the multimodal Gemma 3 checkpoint. */
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "model/model.h"

static const char *const prefixes[] = {"model.", "language_model.model.", "model.language_model."};
static const char *const head_names[] = {"lm_head.weight", "language_model.lm_head.weight"};

typedef struct binder {
    infer_model *m;
    const char *prefix;
    char name[256];
} binder;

static int is_float(infer_dtype t) { return t == DT_F32 || t == DT_F16 || t == DT_BF16; }

static void shape_str(char *buf, size_t cap, const int64_t *shape, int ndim)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

/* Binds the tensor called name with shape [rows, cols] (cols = 0: a vector
 * of rows).  optional: absence leaves w zeroed and is not an error. */
static int bind_named(binder *b, const char *name, bk_weight *w, int64_t rows, int64_t cols,
                      int optional)
{
    memset(w, 0, sizeof *w);
    const st_tensor *t = st_find(b->m->weights_file, name);
    if (!t) {
        if (optional) return INFER_OK;
        return infer_err(INFER_ERR_MISSING, "%s: tensor '%s' is missing", b->m->path, name);
    }
    int64_t want[2] = {rows, cols};
    int want_ndim = cols ? 2 : 1;
    if (!is_float(t->dtype))
        return infer_err(INFER_ERR_SHAPE, "%s: tensor '%s' has dtype %s; expected F32, F16 or BF16",
                         b->m->path, name, dtype_name(t->dtype));
    if (t->ndim != want_ndim || t->shape[0] != rows || (cols && t->shape[1] != cols)) {
        char a[96], f[96];
        shape_str(a, sizeof a, want, want_ndim);
        shape_str(f, sizeof f, t->shape, t->ndim);
        return infer_err(INFER_ERR_SHAPE, "%s: tensor '%s': expected shape %s, found %s", b->m->path,
                         name, a, f);
    }
    w->data = t->data;
    w->dtype = t->dtype;
    w->rows = cols ? rows : 1;
    w->cols = cols ? cols : rows;
    b->m->n_params += rows * (cols ? cols : 1);
    return INFER_OK;
}

static int bind(binder *b, const char *suffix, bk_weight *w, int64_t rows, int64_t cols, int optional)
{
    snprintf(b->name, sizeof b->name, "%s%s", b->prefix, suffix);
    return bind_named(b, b->name, w, rows, cols, optional);
}

/* Visits every tensor of the base model except the output head, in file
 * order: embedding, layers, final norm.  suffix is the name without the
 * prefix; cols = 0 means a vector of rows. */
int model_visit_weights(infer_model *m, weight_visit fn, void *arg)
{
    const model_config *c = &m->cfg;
    int64_t H = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
    int64_t qd = (int64_t)c->n_heads * hd, kvd = (int64_t)c->n_kv_heads * hd;
    char s[128];
    int rc;
    if ((rc = fn(arg, "embed_tokens.weight", &m->embed, c->vocab_size, H))) return rc;
    for (int i = 0; i < c->n_layers; i++) {
        layer_weights *L = &m->layers[i];
#define V(suffix, w, r, cc)                                                        \
    do {                                                                           \
        snprintf(s, sizeof s, "layers.%d.%s", i, suffix);                          \
        if ((rc = fn(arg, s, w, r, cc)) != 0) return rc;                            \
    } while (0)
        V("input_layernorm.weight", &L->input_norm, H, 0);
        V("self_attn.q_proj.weight", &L->q, qd, H);
        V("self_attn.k_proj.weight", &L->k, kvd, H);
        V("self_attn.v_proj.weight", &L->v, kvd, H);
        V("self_attn.o_proj.weight", &L->o, H, qd);
        if (c->qkv_bias) {
            V("self_attn.q_proj.bias", &L->q_bias, qd, 0);
            V("self_attn.k_proj.bias", &L->k_bias, kvd, 0);
            V("self_attn.v_proj.bias", &L->v_bias, kvd, 0);
        }
        if (c->o_bias) V("self_attn.o_proj.bias", &L->o_bias, H, 0);
        if (c->qk_norm) {
            V("self_attn.q_norm.weight", &L->q_norm, hd, 0);
            V("self_attn.k_norm.weight", &L->k_norm, hd, 0);
        }
        V("post_attention_layernorm.weight", &L->post_attn_norm, H, 0);
        if (c->sandwich_norms) {
            V("pre_feedforward_layernorm.weight", &L->pre_ff_norm, H, 0);
            V("post_feedforward_layernorm.weight", &L->post_ff_norm, H, 0);
        }
        V("mlp.gate_proj.weight", &L->gate, I, H);
        V("mlp.up_proj.weight", &L->up, I, H);
        V("mlp.down_proj.weight", &L->down, H, I);
        if (c->mlp_bias) {
            V("mlp.gate_proj.bias", &L->gate_bias, I, 0);
            V("mlp.up_proj.bias", &L->up_bias, I, 0);
            V("mlp.down_proj.bias", &L->down_bias, H, 0);
        }
#undef V
    }
    return fn(arg, "norm.weight", &m->final_norm, H, 0);
}

static int bind_visit(void *arg, const char *suffix, bk_weight *w, int64_t rows, int64_t cols)
{
    return bind(arg, suffix, w, rows, cols, 0);
}

static const char *dtype_long_name(infer_dtype t)
{
    switch (t) {
    case DT_F32: return "float32";
    case DT_F16: return "float16";
    case DT_BF16: return "bfloat16";
    default: return dtype_name(t);
    }
}

int model_bind_weights(infer_model *m)
{
    const model_config *c = &m->cfg;
    binder b = {m, NULL, {0}};
    char name[128];
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0] && !b.prefix; i++) {
        snprintf(name, sizeof name, "%sembed_tokens.weight", prefixes[i]);
        if (st_find(m->weights_file, name)) b.prefix = prefixes[i];
    }
    if (!b.prefix)
        return infer_err(INFER_ERR_MISSING,
                         "%s: tensor 'model.embed_tokens.weight' is missing (also looked for the "
                         "'language_model.model.' and 'model.language_model.' prefixes)",
                         m->path);
    m->n_params = 0;
    int rc = model_visit_weights(m, bind_visit, &b);
    if (rc) return rc;
    snprintf(m->dtype, sizeof m->dtype, "%s", dtype_long_name(m->embed.dtype));
    m->lm_head = m->embed;
    if (!c->tie_word_embeddings) {
        const char *head = NULL;
        for (size_t i = 0; i < sizeof head_names / sizeof head_names[0] && !head; i++)
            if (st_find(m->weights_file, head_names[i])) head = head_names[i];
        if (!head)
            return infer_err(INFER_ERR_MISSING,
                             "%s: tensor 'lm_head.weight' is missing (tie_word_embeddings is false)",
                             m->path);
        rc = bind_named(&b, head, &m->lm_head, c->vocab_size, c->hidden_size, 0);
    }
    return rc;
}
