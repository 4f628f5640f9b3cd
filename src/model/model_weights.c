/* model_weights.c - finds every tensor the config calls for, checks its
 * dtype and shape, and binds it to the model.
 *
 * Names: <prefix>embed_tokens.weight, <prefix>layers.N.self_attn.q_proj.weight,
 * ..., <prefix>norm.weight, lm_head.weight (absent when tied).  The prefix is
 * "model." for the text-only classes and "language_model.model." or
 * "model.language_model." for the multimodal Gemma 3 checkpoint.
 *
 * MLX-quantized folders: a matrix (a linear layer, the embedding, an untied
 * lm_head) is quantized as mlx-lm decides it: the module's own entry in
 * config.json's "quantization" wins (its bits and group size, or false = not
 * quantized); otherwise it is quantized exactly when its `scales` tensor is
 * present, with the top-level bits and group size.  A quantized module has
 * <module>.weight uint32 [out, in * bits / 32] and <module>.scales and
 * <module>.biases [out, in / group_size] in one float dtype.  in is a
 * multiple of the group size (32 at least), so in * bits / 32 is whole for
 * every bits: MLX's uint32 tensor holds the 3-, 5- and 6-bit packs (8, 8
 * and 4 values in 3, 5 and 3 bytes) with no padding.
 *
 * n_params counts the parameters of the model as an unquantized model
 * would have them: a quantized matrix counts out x in (as mlx-lm's
 * get_total_parameters does), its scales and biases are not counted. */
#include <stdio.h>
#include <stdlib.h>
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

static int shape_error(binder *b, const char *name, const int64_t *want, const int64_t *found, int found_ndim,
                       const char *why)
{
    char a[96], f[96];
    shape_str(a, sizeof a, want, 2);
    shape_str(f, sizeof f, found, found_ndim);
    return infer_err(INFER_ERR_SHAPE, "%s: tensor '%s': expected shape %s%s, found %s", b->m->path, name, a, why, f);
}

/* The scales or biases of a quantized module: float [rows, groups]. */
static int bind_qparam(binder *b, const char *module, const char *kind, int64_t rows, int64_t groups, int bits,
                       const st_tensor **out)
{
    char name[320];
    snprintf(name, sizeof name, "%s.%s", module, kind);
    const st_tensor *t = st_find(b->m->weights_file, name);
    if (!t)
        return infer_err(INFER_ERR_MISSING, "%s: tensor '%s' is missing (the %d-bit weight '%s.weight' needs it)",
                         b->m->path, name, bits, module);
    if (!is_float(t->dtype))
        return infer_err(INFER_ERR_SHAPE, "%s: tensor '%s' has dtype %s; expected F32, F16 or BF16", b->m->path,
                         name, dtype_name(t->dtype));
    int64_t want[2] = {rows, groups};
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != groups)
        return shape_error(b, name, want, t->shape, t->ndim, " (one per group of the rows)");
    *out = t;
    return INFER_OK;
}

/* A quantized matrix [rows, cols] with the given bits and group size. */
static int bind_quantized(binder *b, const char *name, const char *module, bk_weight *w, int64_t rows,
                          int64_t cols, int bits, int group_size)
{
    const st_tensor *t = st_find(b->m->weights_file, name);
    if (!t) return infer_err(INFER_ERR_MISSING, "%s: tensor '%s' is missing", b->m->path, name);
    if (t->dtype != DT_U32)
        return infer_err(INFER_ERR_SHAPE, "%s: tensor '%s' has dtype %s; expected U32 (%d-bit MLX-quantized)",
                         b->m->path, name, dtype_name(t->dtype), bits);
    if (cols % group_size != 0)
        return infer_err(INFER_ERR_SHAPE, "%s: module '%s': %lld input columns are not a multiple of the group size %d",
                         b->m->path, module, (long long)cols, group_size);
    int64_t want[2] = {rows, cols * bits / 32};
    char why[96];
    snprintf(why, sizeof why, " (%lld columns at %d bits in uint32 words)", (long long)cols, bits);
    if (t->ndim != 2 || t->shape[0] != want[0] || t->shape[1] != want[1])
        return shape_error(b, name, want, t->shape, t->ndim, why);
    const st_tensor *sc = NULL, *bi = NULL;
    int rc = bind_qparam(b, module, "scales", rows, cols / group_size, bits, &sc);
    if (!rc) rc = bind_qparam(b, module, "biases", rows, cols / group_size, bits, &bi);
    if (rc) return rc;
    if (sc->dtype != bi->dtype)
        return infer_err(INFER_ERR_SHAPE, "%s: module '%s': scales are %s but biases are %s; expected one dtype",
                         b->m->path, module, dtype_name(sc->dtype), dtype_name(bi->dtype));
    memset(w, 0, sizeof *w);
    w->data = t->data;
    w->dtype = DT_U32;
    w->rows = rows;
    w->cols = cols;
    w->bits = bits;
    w->group_size = group_size;
    w->scales = sc->data;
    w->biases = bi->data;
    w->sdtype = sc->dtype;
    b->m->n_params += rows * cols;
    return INFER_OK;
}

/* A matrix (linear layer or embedding) called name, quantized or not by
 * mlx-lm's rule (top of the file). */
static int bind_matrix(binder *b, const char *name, bk_weight *w, int64_t rows, int64_t cols)
{
    const model_config *c = &b->m->cfg;
    char module[256], scales[300];
    size_t n = strlen(name);
    if (n < 7 || strcmp(name + n - 7, ".weight") != 0 || n - 7 >= sizeof module)
        return bind_named(b, name, w, rows, cols, 0);
    memcpy(module, name, n - 7);
    module[n - 7] = 0;
    snprintf(scales, sizeof scales, "%s.scales", module);
    const quant_override *ov = config_quant_override(c, module);
    int has_scales = st_find(b->m->weights_file, scales) != NULL;
    if (ov ? ov->quantized : has_scales) {
        if (!ov && c->quant_bits == 0)
            return infer_err(INFER_ERR_FORMAT,
                             "%s: tensor '%s' is present but config.json has no \"quantization\" object "
                             "(group_size, bits)",
                             b->m->path, scales);
        return bind_quantized(b, name, module, w, rows, cols, ov ? ov->bits : c->quant_bits,
                              ov ? ov->group_size : c->quant_group_size);
    }
    const st_tensor *t = st_find(b->m->weights_file, name);
    if (t && t->dtype == DT_U32) {
        if (ov)
            return infer_err(INFER_ERR_SHAPE,
                             "%s: tensor '%s' has dtype U32 (quantized) but config.json's quantization entry "
                             "for '%s' is false",
                             b->m->path, name, module);
        return infer_err(INFER_ERR_MISSING, "%s: tensor '%s' is missing (the quantized weight '%s' needs it)",
                         b->m->path, scales, name);
    }
    return bind_named(b, name, w, rows, cols, 0);
}

static int bind(binder *b, const char *suffix, bk_weight *w, int64_t rows, int64_t cols, int optional)
{
    snprintf(b->name, sizeof b->name, "%s%s", b->prefix, suffix);
    if (cols && !optional) return bind_matrix(b, b->name, w, rows, cols);
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

/* The prefix of the text model's tensor names in w, or NULL. */
static const char *find_prefix(const st_set *w)
{
    char name[128];
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        snprintf(name, sizeof name, "%sembed_tokens.weight", prefixes[i]);
        if (st_find(w, name)) return prefixes[i];
    }
    return NULL;
}

int model_is_multimodal(const infer_model *m)
{
    const char *p = find_prefix(m->weights_file);
    return p && strcmp(p, "model.") != 0;
}

static int prefix_missing(const char *path)
{
    return infer_err(INFER_ERR_MISSING,
                     "%s: tensor 'model.embed_tokens.weight' is missing (also looked for the "
                     "'language_model.model.' and 'model.language_model.' prefixes)",
                     path);
}

typedef struct name_lister {
    const st_set *w;
    const char *prefix;
    int (*fn)(void *arg, const char *name);
    void *arg;
} name_lister;

static int list_visit(void *arg, const char *suffix, bk_weight *slot, int64_t rows, int64_t cols)
{
    name_lister *l = arg;
    char name[300];
    (void)slot;
    (void)rows;
    if (!cols) return INFER_OK;
    snprintf(name, sizeof name, "%s%s", l->prefix, suffix);
    return st_find(l->w, name) ? l->fn(l->arg, name) : INFER_OK;
}

int model_matrix_names(const model_config *cfg, const st_set *w, const char *path,
                       int (*fn)(void *arg, const char *name), void *arg)
{
    name_lister l = {w, find_prefix(w), fn, arg};
    if (!l.prefix) return prefix_missing(path);
    infer_model *m = calloc(1, sizeof *m);
    if (m) m->layers = calloc((size_t)cfg->n_layers, sizeof *m->layers);
    if (!m || !m->layers) {
        free(m);
        return infer_err(INFER_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    m->cfg = *cfg; /* read only; not freed here */
    int rc = model_visit_weights(m, list_visit, &l);
    for (size_t i = 0; !rc && !cfg->tie_word_embeddings && i < sizeof head_names / sizeof head_names[0]; i++)
        if (st_find(w, head_names[i])) rc = fn(arg, head_names[i]);
    free(m->layers);
    free(m);
    return rc;
}

/* Bytes of a weight as stored (quantized: values, scales and biases). */
static int64_t stored_bytes(const bk_weight *w)
{
    if (!w->data) return 0;
    if (w->dtype != DT_U32) return w->rows * w->cols * (int64_t)dtype_size(w->dtype);
    int64_t groups = w->rows * (w->cols / w->group_size);
    return w->rows * (int64_t)bk_qrow_bytes(w) + 2 * groups * (int64_t)dtype_size(w->sdtype);
}

static int bytes_visit(void *arg, const char *suffix, bk_weight *w, int64_t rows, int64_t cols)
{
    (void)suffix;
    (void)rows;
    (void)cols;
    *(int64_t *)arg += stored_bytes(w);
    return INFER_OK;
}

/* m->weight_bytes and m->decode_bytes (infer_model_info). */
static void count_bytes(infer_model *m)
{
    int64_t all = 0;
    model_visit_weights(m, bytes_visit, &all);
    int tied = m->lm_head.data == m->embed.data;
    int64_t emb = stored_bytes(&m->embed), head = tied ? emb : stored_bytes(&m->lm_head);
    m->weight_bytes = all + (tied ? 0 : head);
    m->decode_bytes = all - emb + (m->embed.rows > 0 ? emb / m->embed.rows : 0) + head;
}

int model_bind_weights(infer_model *m)
{
    const model_config *c = &m->cfg;
    binder b = {m, find_prefix(m->weights_file), {0}};
    if (!b.prefix) return prefix_missing(m->path);
    m->n_params = 0;
    int rc = model_visit_weights(m, bind_visit, &b);
    if (rc) return rc;
    snprintf(m->dtype, sizeof m->dtype, "%s",
             dtype_long_name(m->embed.dtype == DT_U32 ? m->embed.sdtype : m->embed.dtype));
    m->lm_head = m->embed;
    if (!c->tie_word_embeddings) {
        const char *head = NULL;
        for (size_t i = 0; i < sizeof head_names / sizeof head_names[0] && !head; i++)
            if (st_find(m->weights_file, head_names[i])) head = head_names[i];
        if (!head)
            return infer_err(INFER_ERR_MISSING,
                             "%s: tensor 'lm_head.weight' is missing (tie_word_embeddings is false)",
                             m->path);
        rc = bind_matrix(&b, head, &m->lm_head, c->vocab_size, c->hidden_size);
    }
    if (!rc) count_bytes(m);
    return rc;
}

/* ---- Weights on the backend ---- */

static int prepare_visit(void *arg, const char *suffix, bk_weight *w, int64_t rows, int64_t cols)
{
    infer_model *m = arg;
    (void)rows;
    (void)cols;
    if (!w->data) return INFER_OK;
    const bk_weight was = *w;
    int rc = m->be->weight_prepare(m->bctx, w);
    if (rc) return infer_err_prefix(rc, "%s: weight %s", m->path, suffix);
    /* a copy elsewhere (the cpu's repacking; cuda's device copy): the
     * file's pages are not read again */
    if (w->data != was.data) {
        size_t vb = was.dtype == DT_U32 ? (size_t)was.rows * bk_qrow_bytes(&was)
                                        : (size_t)was.rows * (size_t)was.cols * dtype_size(was.dtype);
        st_drop(m->weights_file, was.data, vb);
        if (was.dtype == DT_U32 && w->scales != was.scales) {
            size_t sb = (size_t)was.rows * (size_t)(was.cols / was.group_size) * dtype_size(was.sdtype);
            st_drop(m->weights_file, was.scales, sb);
            st_drop(m->weights_file, was.biases, sb);
        }
    }
    return INFER_OK;
}

static int release_visit(void *arg, const char *suffix, bk_weight *w, int64_t rows, int64_t cols)
{
    infer_model *m = arg;
    (void)suffix;
    (void)rows;
    (void)cols;
    if (w->data) m->be->weight_release(m->bctx, w);
    return INFER_OK;
}

int model_weights_prepare(infer_model *m)
{
    if (!m->be->weight_prepare) return INFER_OK;
    int tied = m->lm_head.data == m->embed.data;
    m->weights_placed = 1;
    int rc = model_visit_weights(m, prepare_visit, m);
    if (!rc && tied) m->lm_head = m->embed;
    else if (!rc && (rc = m->be->weight_prepare(m->bctx, &m->lm_head)))
        rc = infer_err_prefix(rc, "%s: weight lm_head.weight", m->path);
    return rc;
}

/* Every weight back from the backend.  After a failed prepare some are
 * still on the host: a backend's release leaves alone what it did not
 * place. */
void model_weights_release(infer_model *m)
{
    if (!m->weights_placed || !m->be->weight_release) return;
    int tied = m->lm_head.data == m->embed.data;
    if (!tied && m->lm_head.data) m->be->weight_release(m->bctx, &m->lm_head);
    model_visit_weights(m, release_visit, m);
    m->weights_placed = 0;
}
